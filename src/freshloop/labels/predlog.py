"""The prediction log: what was served, by which version, joined later to labels by id.

Records wait in memory until their label matures (then they are scored and released) and are
appended to Parquet files in batches off the hot path, so the log survives a restart.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..store import BlobStore

__all__ = ["PredictionLog", "Served"]


@dataclass
class Served:
    """One logged prediction; ``alternatives`` holds what other live versions (shadow/canary) said."""

    at: float
    version: int
    pred: Any
    proba: np.ndarray | None
    alternatives: dict[int, tuple[Any, np.ndarray | None]]


class PredictionLog:
    def __init__(self, blobs: BlobStore, *, flush_every: int = 5000) -> None:
        self.blobs = blobs
        self.flush_every = flush_every
        self._open: dict[str, Served] = {}
        self._buffer: list[dict[str, Any]] = []
        self._part = 0
        self._lock = threading.Lock()  # guards the buffer and part numbers; the write happens outside it
        while blobs.exists(self._key(self._part)):
            self._part += 1

    def _key(self, part: int) -> str:
        return f"predictions/part-{part:06d}.parquet"

    def log(self, row_ids: list[str], at: float, version: int, preds: np.ndarray, proba: np.ndarray | None,
            served_by: np.ndarray, alternatives: dict[int, tuple[np.ndarray, np.ndarray | None]]) -> None:
        """``preds``/``proba`` are what was served; ``served_by`` the version per row."""
        records = []
        for i, rid in enumerate(row_ids):
            alts = {v: (p[i], None if pr is None else pr[i]) for v, (p, pr) in alternatives.items()}
            self._open[rid] = Served(at, int(served_by[i]), preds[i], None if proba is None else proba[i], alts)
            records.append({"prediction_id": rid, "at": at, "version": int(served_by[i]), "prediction": str(preds[i])})
        with self._lock:
            self._buffer.extend(records)

    @property
    def due(self) -> bool:
        """Enough records are buffered to write a part (the caller flushes, outside its own locks)."""
        return len(self._buffer) >= self.flush_every

    def get(self, row_id: str) -> Served | None:
        return self._open.get(row_id)

    def pop(self, row_id: str) -> Served | None:
        return self._open.pop(row_id, None)

    def __contains__(self, row_id: str) -> bool:
        return row_id in self._open

    @property
    def pending(self) -> int:
        return len(self._open)

    def flush(self) -> None:
        with self._lock:
            records, self._buffer = self._buffer, []
            part = self._part
            self._part += bool(records)
        if not records:
            return
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(pd.DataFrame(records), preserve_index=False), buf)
        self.blobs.put_bytes(self._key(part), buf.getvalue())
