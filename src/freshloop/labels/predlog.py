"""The prediction log: what was served, by which version, joined later to labels by id.

Records wait in memory until their label matures (then they are scored and released) and are
appended to Parquet files in batches off the hot path, with their probabilities and the other live
versions' answers, so the log survives a restart: :meth:`PredictionLog.restore` reads the records
whose labels have not arrived back into memory.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..store import BlobStore

__all__ = ["PredictionLog", "Served"]


@dataclass(slots=True)
class Served:
    """One logged prediction; ``alternatives`` holds what other live versions (shadow/canary) said."""

    at: float
    version: int
    pred: Any
    proba: np.ndarray | None
    alternatives: dict[int, tuple[Any, np.ndarray | None]]


class PredictionLog:
    def __init__(self, blobs: BlobStore, *, flush_every: int = 5000, max_open: int = 1_000_000,
                 horizon: float | None = None) -> None:
        self.blobs = blobs
        self.flush_every = flush_every
        # Records wait in memory for their labels, oldest first; past ``max_open`` records, or once older than
        # ``horizon`` seconds, the oldest are dropped from memory (they stay in the Parquet parts): a server whose
        # rows mostly never get labels would otherwise grow without bound. A label arriving for a dropped record
        # is stored for training but not scored.
        self.max_open = max_open
        self.horizon = horizon
        self.expired = 0
        self._open: dict[str, Served] = {}
        self._buffer: list[_Block] = []  # the logged batches' arrays, made into one table when written
        self._buffered = 0
        self._part = 0
        self._lock = threading.Lock()  # guards the buffer and part numbers; the write happens outside it
        while blobs.exists(self._key(self._part)):
            self._part += 1

    def _key(self, part: int) -> str:
        return f"predictions/part-{part:06d}.parquet"

    def log(self, row_ids: list[str], at: float, version: int, preds: np.ndarray, proba: np.ndarray | None,
            served_by: np.ndarray, alternatives: dict[int, tuple[np.ndarray, np.ndarray | None]]) -> None:
        """``preds``/``proba`` are what was served; ``served_by`` the version per row."""
        texts: list[str | None] = []
        n = len(row_ids)
        versions = np.asarray(served_by).tolist()
        probas: list[Any] = list(proba) if proba is not None else [None] * n  # row views, made in one call
        if alternatives:
            for i, rid in enumerate(row_ids):
                alts = {v: (p[i], None if pr is None else pr[i]) for v, (p, pr) in alternatives.items()}
                self._open[rid] = Served(at, versions[i], preds[i], probas[i], alts)
                texts.append(_alternatives_text(alts))
        else:  # the common case: one model answered; its records are made without a per-row comprehension
            self._open.update(zip(row_ids, map(Served, [at] * n, versions, preds, probas, ({} for _ in range(n))),
                                  strict=True))
        self.expire(at)
        block = (list(row_ids), at, np.asarray(served_by), np.asarray(preds), proba, texts or None)
        with self._lock:
            self._buffer.append(block)
            self._buffered += len(row_ids)

    def expire(self, now: float | None = None) -> int:
        """Drop the oldest records over ``max_open`` and, at time ``now``, those older than the horizon; returns
        how many. Records are held in logged order, so the scan stops at the first one young enough."""
        drop = max(0, len(self._open) - self.max_open)
        if self.horizon is not None and now is not None:
            oldest = now - self.horizon
            for rec in islice(self._open.values(), drop, None):
                if rec.at >= oldest:
                    break
                drop += 1
        if drop:
            for rid in list(islice(self._open, drop)):
                del self._open[rid]
            self.expired += drop
        return drop

    @property
    def due(self) -> bool:
        """Enough records are buffered to write a part (the caller flushes, outside its own locks)."""
        return self._buffered >= self.flush_every

    def get(self, row_id: str) -> Served | None:
        return self._open.get(row_id)

    def pop(self, row_id: str) -> Served | None:
        return self._open.pop(row_id, None)

    def __contains__(self, row_id: str) -> bool:
        return row_id in self._open

    @property
    def pending(self) -> int:
        return len(self._open)

    def waiting(self) -> list[str]:
        """The ids of the records waiting for their labels, oldest first."""
        return list(self._open)

    def flush(self) -> None:
        with self._lock:
            blocks, self._buffer, self._buffered = self._buffer, [], 0
            part = self._part
            self._part += bool(blocks)
        if not blocks:
            return
        with self.blobs.open_write(self._key(part)) as f:
            pq.write_table(_merged(blocks), f)

    def restore(self, waiting: Callable[[list[str]], np.ndarray], typed: Callable[[pd.Series], np.ndarray]) -> int:
        """Read the logged records whose labels have not arrived (``waiting`` says which ids still wait) back
        into memory, predictions typed by ``typed``; returns how many. For a loop that restarts: labels for
        predictions served before the restart are joined and scored as if it had not."""
        # newest part first, until ``max_open`` records wait: a long-running server's older parts (predictions
        # whose labels came or never will) are not read at every start
        frames: list[pd.DataFrame] = []
        seen: set[str] = set()
        held = 0
        for part in reversed(range(self._part)):
            frame = pq.read_table(io.BytesIO(self.blobs.get_bytes(self._key(part)))).to_pandas()
            frame = frame.iloc[::-1].drop_duplicates("prediction_id")  # newest first; an id logged twice: its last
            frame = frame[~frame["prediction_id"].isin(seen)]
            seen.update(frame["prediction_id"])
            frame = frame[waiting(frame["prediction_id"].tolist())]
            frames.append(frame)
            held += len(frame)
            if held >= self.max_open:
                break
        if not held:
            return 0
        # the newest ``max_open`` records, put back in logged order (oldest first, as the log holds them)
        log = pd.concat(frames, ignore_index=True).iloc[:self.max_open].iloc[::-1]
        preds = typed(log["prediction"])
        probas = log["proba"] if "proba" in log else pd.Series([None] * len(log))
        alts = log["alternatives"] if "alternatives" in log else pd.Series([None] * len(log))
        for rid, at, v, pred, pr, alt in zip(log["prediction_id"], log["at"], log["version"], preds, probas, alts,
                                             strict=True):
            if rid not in self._open:
                proba = np.asarray(pr, dtype=float) if isinstance(pr, (list, np.ndarray)) else None
                self._open[rid] = Served(float(at), int(v), pred, proba, _alternatives_from(alt, typed))
        self.expire()
        return len(log)


_SCHEMA = pa.schema([("prediction_id", pa.string()), ("at", pa.float64()), ("version", pa.int64()),
                     ("prediction", pa.string()), ("proba", pa.list_(pa.float64())), ("alternatives", pa.string())])


_Block = tuple[list[str], float, np.ndarray, np.ndarray, "np.ndarray | None", "list[str | None] | None"]


def _table(row_ids: list[str], at: np.ndarray, served_by: np.ndarray, preds: np.ndarray, proba: np.ndarray | None,
           alternatives: list[str | None] | None) -> pa.Table:
    """Logged rows as the log's columns, built from their arrays (no per-row records)."""
    n = len(row_ids)
    if proba is None:
        probas: pa.Array = pa.nulls(n, pa.list_(pa.float64()))
    else:
        flat = np.ascontiguousarray(proba, dtype=float)
        probas = pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32)),
                                          pa.array(flat.ravel()))
    return pa.Table.from_arrays(
        [pa.array(row_ids, pa.string()), pa.array(np.asarray(at, dtype=float)),
         pa.array(np.asarray(served_by, dtype=np.int64)), pa.array(np.asarray(preds).astype(str), pa.string()),
         probas, pa.nulls(n, pa.string()) if alternatives is None else pa.array(alternatives, pa.string())],
        schema=_SCHEMA)


def _merged(blocks: list[_Block]) -> pa.Table:
    """The blocks as one table: their arrays joined first when they agree (one request's rows each, on a
    server), else one table per block."""
    times = [np.full(len(b[0]), b[1], dtype=float) for b in blocks]
    widths = {None if b[4] is None else b[4].shape[1] for b in blocks}
    if len(widths) > 1 or any(b[5] is not None for b in blocks):
        return pa.concat_tables([_table(b[0], t, *b[2:]) for b, t in zip(blocks, times, strict=True)])
    ids = [r for b in blocks for r in b[0]]
    probas = None if widths == {None} else np.concatenate([b[4] for b in blocks if b[4] is not None])
    return _table(ids, np.concatenate(times), np.concatenate([b[2] for b in blocks]),
                  np.concatenate([np.asarray(b[3]).astype(str) for b in blocks]), probas, None)


def _alternatives_text(alts: dict[int, tuple[Any, np.ndarray | None]]) -> str | None:
    if not alts:
        return None
    return json.dumps({str(v): [str(p), None if pr is None else [float(x) for x in pr]] for v, (p, pr) in alts.items()})


def _alternatives_from(text: str | None, typed: Callable[[pd.Series], np.ndarray]
                       ) -> dict[int, tuple[Any, np.ndarray | None]]:
    if not isinstance(text, str) or not text:  # a null comes back as None or NaN
        return {}
    raw = json.loads(text)
    preds = typed(pd.Series([p for p, _ in raw.values()]))
    return {int(v): (pred, None if pr is None else np.asarray(pr, dtype=float))
            for (v, (_, pr)), pred in zip(raw.items(), preds, strict=True)}
