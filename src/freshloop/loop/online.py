"""Online learning (``policy.online``): the serving model learns each matured label at the next tick.

Rows that arrive labeled, and labels joined to served predictions, are queued; ``apply`` hands the queue
to the champion's ``learn`` (River's ``learn_many``, scikit-learn's ``partial_fit``) and moves its lineage
(newest row learned, label cutoff), so staleness and data-to-deploy count what it learned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .context import Context

__all__ = ["OnlineUpdater"]


class OnlineUpdater:
    """Queues labeled rows for the champion to learn, and teaches them at the next tick."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._queue: list[tuple[pd.DataFrame, pd.Series]] = []

    @property
    def enabled(self) -> bool:
        return self.ctx.spec.policy.online

    def rows_arrived(self, labeled: pd.DataFrame) -> None:
        """Rows ingested with their label (called under the context's lock): their label matured on arrival."""
        assert self.ctx.schema is not None
        if self.enabled and len(labeled):
            self._queue.append((self._learnable(labeled.assign(_label_time=labeled["_arrived"])),
                                labeled[self.ctx.schema.label]))

    def labels_joined(self, row_ids: list[str]) -> None:
        """Labels joined to served predictions: their rows, as the data store holds them."""
        if self.enabled and row_ids:
            rows = self.ctx.data.labeled_rows(row_ids)
            if len(rows):
                self._queue.append((self._learnable(rows), rows["_label"]))

    def apply(self, now: float) -> None:
        ctx = self.ctx
        if not self.enabled or ctx.champion is None or not self._queue:
            return
        frames = pd.concat([f for f, _ in self._queue], ignore_index=True)
        y = pd.concat([y for _, y in self._queue], ignore_index=True)
        self._queue = []
        ctx.champion.bundle.learn(frames, y)
        # the served model now holds these rows: staleness and data-to-deploy move with them
        lineage = ctx.champion.lineage
        lineage["t_last"] = max(float(frames["_time"].max()), float(lineage.get("t_last") or 0))
        labeled_at = frames["_label_time"].max() if "_label_time" in frames else np.nan
        cutoff = float(labeled_at) if np.isfinite(labeled_at) else now
        lineage["cutoff"] = max(cutoff, float(lineage.get("cutoff") or cutoff))
        ctx.stats.deployments.append((now, cutoff))
        ctx.stats.online_rows += len(y)
        ctx.stats.train_rows += len(y)

    def _learnable(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What online learning reads of a labeled frame: the features, when the row happened and when its
        label matured (the same columns from every source, so queued frames stack without filling)."""
        assert self.ctx.schema is not None
        return frame[[f.name for f in self.ctx.schema.features if f.name in frame] + ["_time", "_label_time"]]
