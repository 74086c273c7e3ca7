"""Snapshots: named dataset versions that every training run and verdict refers to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from ..clock import parse_duration
from ..spec import WindowSpec

__all__ = ["Snapshot", "snapshot_id"]


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
    body = json.dumps([list(batch_ids), list(label_batch_ids), window.model_dump(), cutoff, rows])
    return "s-" + hashlib.sha256(body.encode()).hexdigest()[:16]


def window_start(window: WindowSpec, cutoff: float) -> float | None:
    return cutoff - parse_duration(window.period) if window.period is not None else None
