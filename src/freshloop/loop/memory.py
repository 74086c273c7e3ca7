"""What the monitor and the policy remember between ticks, kept in the store and rebuilt when a loop opens.

A loop opened by each CLI call, a restarted server and one long replay must decide alike. So each
decision is stored with the policy's streaks (hysteresis) and the drift the monitor saw, and opening a
loop rebuilds from the store the window of recent rows (drift), the labels since the last training run
(volume and the ``min_new_labels`` guard), the streaks and the drift the last run was trained under.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..policy import PolicyState
from .context import Context
from .training import TrainingRun

__all__ = ["PolicyMemory"]


class PolicyMemory:
    """The policy's streaks and retrain times, and the monitor's state, across ticks and restarts."""

    def __init__(self, ctx: Context, training: TrainingRun) -> None:
        self.ctx, self.training = ctx, training
        self.streaks: tuple[tuple[str, int], ...] = ()

    @property
    def state(self) -> PolicyState:
        """What the policy is given at a tick: when it retrained and what each run cost, and its triggers' streaks."""
        return PolicyState(self.training.retrain_times, self.streaks, self.training.retrain_seconds)

    def to_store(self) -> dict[str, Any]:
        """What the policy needs from this tick at the next one, kept with the decision: its streaks and the
        drift it saw (a training run remembers it, so drift a retrain cannot remove is not re-alarmed)."""
        mon = self.ctx.monitor_if_made
        return {"streaks": [list(s) for s in self.streaks], "drift": mon.last_drift if mon is not None else {}}

    def restore(self) -> None:
        ctx = self.ctx
        if ctx.schema is not None:
            mon = ctx.monitor()
            for frame in ctx.data.recent_batches(mon.drift_window):
                mon.observe_rows(frame)
            if ctx.champion is not None:  # its live quality, reference and detector, from the outcome log
                mon.restore_outcomes(*ctx.outcomes.current())
            lt = ctx.data.label_times()
            since = self.training.last_trained_at
            mon.new_labels = int(np.count_nonzero(np.isfinite(lt) & (lt > (-np.inf if since is None else since))))
            promoted_at = ctx.champion.lineage.get("promoted_at") if ctx.champion else None
            if since is not None and (promoted_at is None or since > promoted_at):  # trained, not yet promoted
                mon.drift_at_training = next(
                    (dict(d.state.get("drift", {})) for d in reversed(ctx.meta.decisions.list("retrain"))
                     if d.at == since and d.state), {})
        last = ctx.meta.decisions.last()
        if last is not None and last.state:
            self.streaks = tuple((str(k), int(v)) for k, v in last.state.get("streaks", []))
