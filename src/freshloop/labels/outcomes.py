"""The outcome log: the live evidence the loop gathers from matured labels, in the order it gathered it.

A label that meets a logged prediction gives per-row scores. The monitor builds its quality window, its
reference and its streaming detector from the champion's scores alone, and starts them again at two
moments, also logged: a new champion and a training run (which restarts the detector). A rollout step
judges the candidate on paired scores (candidate and champion on the same rows), the candidate's
prediction errors and both sides' predict time, gathered since the step started. Written to Parquet
parts with the prediction log, this lets a loop that opens again (a restart, each CLI call) rebuild all
of it instead of starting empty. Reads go newest part first and stop at the last marker needed: a loop
that opens pays for its champion's life, not the log's.

Examples
--------
>>> from freshloop.store.blobs import LocalBlobStore
>>> import tempfile, numpy as np
>>> log = OutcomeLog(LocalBlobStore(tempfile.mkdtemp()))
>>> log.append(2, 5.0, np.array([0.0, 0.0]))
>>> log.champion_changed(3, 9.0)
>>> log.append(3, 10.0, np.array([1.0, 0.0]))
>>> log.flush()
>>> log.detector_restarted(11.0)
>>> log.append(3, 12.0, np.array([1.0]))
>>> log.current()  # the scores since version 3 took over, and how many came before the detector restarted
(array([1., 0., 1.]), 2)
>>> log.step_started(4, 13.0)
>>> log.step_pairs(4, 14.0, np.array([1.0, 1.0]), np.array([0.0, 1.0]))
>>> log.step_latency(4, 14.0, 0.02, 0.01)
>>> log.step_evidence(4)["cand_scores"], log.step_evidence(4)["cand_seconds"]
([1.0, 1.0], 0.02)
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..store import BlobStore

__all__ = ["OutcomeLog"]

# row kinds: the champion's scores and the monitor's restarts; a rollout step's start and evidence
_SCORE, _CHAMPION, _DETECTOR, _STEP, _PAIR, _ERRORS, _LATENCY = range(7)
_SCHEMA = pa.schema([("kind", pa.int8()), ("version", pa.int64()), ("at", pa.float64()), ("score", pa.float64()),
                     ("other", pa.float64()), ("note", pa.string())])
_Block = tuple[int, int, float, np.ndarray, np.ndarray, "str | None"]
_NONE = np.full(1, np.nan)


class OutcomeLog:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._buffer: list[_Block] = []
        self._lock = threading.Lock()
        self._part = 0
        while blobs.exists(self._key(self._part)):
            self._part += 1

    @staticmethod
    def _key(part: int) -> str:
        return f"outcomes/part-{part:06d}.parquet"

    # -- writing ------------------------------------------------------------------------------
    def append(self, version: int, at: float, scores: np.ndarray) -> None:
        """The champion ``version``'s scores on labels that matured at ``at``, in the monitor's order."""
        if len(scores):
            scores = np.asarray(scores, dtype=float)
            self._add((_SCORE, version, at, scores, np.full(len(scores), np.nan), None))

    def champion_changed(self, version: int, at: float) -> None:
        self._add((_CHAMPION, version, at, _NONE, _NONE, None))

    def detector_restarted(self, at: float) -> None:
        self._add((_DETECTOR, -1, at, _NONE, _NONE, None))

    def step_started(self, version: int, at: float) -> None:
        """A rollout of ``version`` started a step: its evidence starts again."""
        self._add((_STEP, version, at, _NONE, _NONE, None))

    def step_pairs(self, version: int, at: float, cand: np.ndarray, champ: np.ndarray) -> None:
        if len(cand):
            self._add((_PAIR, version, at, np.asarray(cand, dtype=float), np.asarray(champ, dtype=float), None))

    def step_errors(self, version: int, at: float, rows: int, error: str) -> None:
        self._add((_ERRORS, version, at, np.full(1, float(rows)), _NONE, error))

    def step_latency(self, version: int, at: float, cand_seconds: float, champ_seconds: float) -> None:
        self._add((_LATENCY, version, at, np.full(1, cand_seconds), np.full(1, champ_seconds), None))

    def _add(self, block: _Block) -> None:
        with self._lock:
            self._buffer.append((block[0], int(block[1]), float(block[2]), *block[3:]))

    def flush(self) -> None:
        with self._lock:
            blocks, self._buffer = self._buffer, []
            part = self._part
            self._part += bool(blocks)
        if blocks:
            with self.blobs.open_write(self._key(part)) as f:
                pq.write_table(_table(blocks), f)

    # -- reading back -------------------------------------------------------------------------
    def _back_to(self, found: Callable[[np.ndarray, np.ndarray], bool]) -> dict[str, np.ndarray | list[Any]]:
        """The log's columns from the newest part back to the first part in which ``found(kind, version)``."""
        with self._lock:
            tables = [_table(self._buffer)] if self._buffer else []
            part = self._part
        if not (tables and found(tables[0].column("kind").to_numpy(), tables[0].column("version").to_numpy())):
            for p in reversed(range(part)):
                t = pq.read_table(io.BytesIO(self.blobs.get_bytes(self._key(p))))
                tables.append(t)
                if found(t.column("kind").to_numpy(), t.column("version").to_numpy()):
                    break
        t = pa.concat_tables(reversed(tables)) if tables else _SCHEMA.empty_table()
        cols: dict[str, np.ndarray | list[Any]] = {n: t.column(n).to_numpy() for n in _SCHEMA.names if n != "note"}
        cols["note"] = t.column("note").to_pylist()
        return cols

    def current(self) -> tuple[np.ndarray, int]:
        """The champion's scores since it took over, oldest first, and how many of them came before the
        detector last restarted (it was fed the rest)."""
        c = self._back_to(lambda kind, _: bool((kind == _CHAMPION).any()))
        kind = np.asarray(c["kind"])
        changes = np.flatnonzero(kind == _CHAMPION)
        start = int(changes[-1]) + 1 if len(changes) else 0
        kind, score = kind[start:], np.asarray(c["score"])[start:]
        restarts = np.flatnonzero(kind == _DETECTOR)
        before = int(np.count_nonzero(kind[:restarts[-1]] == _SCORE)) if len(restarts) else 0
        return score[kind == _SCORE], before

    def step_evidence(self, version: int) -> dict[str, Any]:
        """What the current step of ``version``'s rollout gathered: paired scores, errors, predict time."""
        c = self._back_to(lambda kind, v: bool(((kind == _STEP) & (v == version)).any()))
        kind, ver = np.asarray(c["kind"]), np.asarray(c["version"])
        starts = np.flatnonzero((kind == _STEP) & (ver == version))
        lo = int(starts[-1]) + 1 if len(starts) else 0
        mine = np.arange(len(kind)) >= lo
        mine &= ver == version
        score, other = np.asarray(c["score"]), np.asarray(c["other"])
        pair, err, lat = mine & (kind == _PAIR), mine & (kind == _ERRORS), mine & (kind == _LATENCY)
        notes = [n for n, e in zip(c["note"], err, strict=True) if e and n]
        return {"cand_scores": score[pair].tolist(), "champ_scores": other[pair].tolist(),
                "errors": int(score[err].sum()), "last_error": notes[-1] if notes else "",
                "cand_seconds": float(score[lat].sum()), "champ_seconds": float(other[lat].sum())}


def _table(blocks: list[_Block]) -> pa.Table:
    sizes = [len(b[3]) for b in blocks]
    return pa.Table.from_arrays(
        [pa.array(np.repeat([b[0] for b in blocks], sizes).astype(np.int8)),
         pa.array(np.repeat([b[1] for b in blocks], sizes).astype(np.int64)),
         pa.array(np.repeat([b[2] for b in blocks], sizes).astype(float)),
         pa.array(np.concatenate([b[3] for b in blocks])), pa.array(np.concatenate([b[4] for b in blocks])),
         pa.array([b[5] for b, k in zip(blocks, sizes, strict=True) for _ in range(k)], pa.string())],
        schema=_SCHEMA)
