"""Snapshots: named dataset versions that every training run and verdict refers to.

A snapshot is the labeled rows known at its cutoff inside its window; it names the batches it draws on,
so the same snapshot is rebuilt from the stored batches whenever it is read again.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..clock import parse_duration
from ..errors import NotFoundError
from ..spec import WindowSpec
from ..store import MetadataStore, SnapshotRecord
from .view import View

__all__ = ["Snapshot", "Snapshots", "snapshot_id"]

SNAPSHOTS_KEPT = 16  # snapshots whose rows are kept for reading; older ones are rebuilt


@dataclass(frozen=True)
class Snapshot:
    """A dataset version: labeled rows known at ``cutoff`` inside the window rule.

    ``batch_ids`` are the accepted feature batches and ``label_batch_ids`` the label batches it draws on;
    ``t_first``/``t_last`` bound the rows' event times; ``rows`` is the labeled row count.
    """

    id: str
    cutoff: float
    window: dict[str, Any]
    batch_ids: tuple[str, ...]
    label_batch_ids: tuple[str, ...]
    rows: int
    t_first: float | None
    t_last: float | None
    newest_arrival: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot_id(batch_ids: tuple[str, ...], label_batch_ids: tuple[str, ...], window: WindowSpec,
                cutoff: float, rows: int) -> str:
    body = json.dumps([list(batch_ids), list(label_batch_ids), window.model_dump(include={"rows", "period"}),
                       cutoff, rows])
    return "s-" + hashlib.sha256(body.encode()).hexdigest()[:16]


def window_start(window: WindowSpec, cutoff: float) -> float | None:
    return cutoff - parse_duration(window.period) if window.period is not None else None


class Snapshots:
    """Takes snapshots of a view and reads them back; the rows of the last :data:`SNAPSHOTS_KEPT` are kept
    (a server that retrains often on a large window would otherwise keep every snapshot's row positions), an
    older one is rebuilt from the view as of its cutoff."""

    def __init__(self, view: View, meta: MetadataStore) -> None:
        self.view, self.meta = view, meta
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()

    def take(self, window: WindowSpec, *, cutoff: float, now: float) -> Snapshot:
        """Freeze the labeled rows known at ``cutoff`` within ``window`` as a named dataset version."""
        pos = self.view.window(window.rows, window_start(window, cutoff), cutoff)
        batch_ids, label_ids, newest = self.view.provenance(pos)
        times = self.view.times[pos]
        sid = snapshot_id(batch_ids, label_ids, window, cutoff, len(pos))
        snap = Snapshot(sid, float(cutoff), window.model_dump(include={"rows", "period"}), batch_ids, label_ids,
                        int(len(pos)), float(times.min()) if len(pos) else None,
                        float(times.max()) if len(pos) else None, newest)
        self._rows[sid] = pos
        self._rows.move_to_end(sid)
        while len(self._rows) > SNAPSHOTS_KEPT:
            self._rows.popitem(last=False)
        self.meta.runs.add_snapshot(SnapshotRecord(sid, snap.to_dict(), snap.rows, cutoff, now))
        return snap

    def positions(self, snapshot_id: str) -> np.ndarray | None:
        """The view positions of a kept snapshot's rows, oldest first (None: not kept, rebuilt when read)."""
        return self._rows.get(snapshot_id)

    def read(self, snap: Snapshot) -> pd.DataFrame:
        """The snapshot's rows (features, ``_time``, ``_arrived``) with their labels in ``_label``."""
        pos = self._rows.get(snap.id)
        if pos is None:
            again = self.take(WindowSpec(**snap.window), cutoff=snap.cutoff, now=snap.cutoff)
            if again.id != snap.id:
                raise NotFoundError(f"snapshot {snap.id!r} cannot be rebuilt from the stored batches.",
                                    field="snapshot_id", value=snap.id)
            pos = self._rows[snap.id]
        return self.view.labeled_rows_at(pos)
