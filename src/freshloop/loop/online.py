"""Online learning (``policy.online``): the serving model learns each matured label at the next tick.

At each tick the champion learns the labels that matured after its label cutoff (its lineage's ``cutoff``: the
newest label its training snapshot or its last update held), read from the data store in the order they
matured, whether their rows arrived labeled or the labels were joined later. ``learn`` is River's
``learn_one`` or scikit-learn's ``partial_fit``. Its lineage moves with what it learned, so staleness and
data-to-deploy count it.

The model it learned is saved, signed, when the loop closes: a loop driven by separate processes
(``freshloop ingest`` and ``freshloop tick`` from cron) or opened again goes on from where the last one left
off. Without that state (another champion serves, or the file is not signed with this machine's key) the
champion learns from the store again, from its registered cutoff.
"""

from __future__ import annotations

from .context import Context

__all__ = ["OnlineUpdater"]

_STATE = "online/champion.pkl"


class OnlineUpdater:
    """Teaches the champion the labels matured since its cutoff, at each tick."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._learned = False  # the champion learned since the loop opened (its state is saved on close)

    @property
    def enabled(self) -> bool:
        return self.ctx.spec.policy.online

    def apply(self, now: float) -> None:
        ctx = self.ctx
        if not self.enabled or ctx.champion is None:
            return
        lineage = ctx.champion.lineage
        since = lineage.get("cutoff")
        rows = ctx.data.labeled_between(float(since) if since is not None else float("-inf"), now)
        if not len(rows):
            return
        ctx.champion.bundle.learn(rows, rows["_label"])
        self._learned = True
        # the served model now holds these rows: staleness and data-to-deploy move with them
        lineage["t_last"] = max(float(rows["_time"].max()), float(lineage.get("t_last") or 0))
        lineage["cutoff"] = cutoff = float(rows["_label_time"].max())
        ctx.stats.deployments.append((now, cutoff))
        ctx.stats.online_rows += len(rows)
        ctx.stats.train_rows += len(rows)

    def save(self) -> None:
        """The champion as it learned, for the loop opened next (called when the loop closes)."""
        champion = self.ctx.champion
        if not self._learned or champion is None:
            return
        self.ctx.save_state(_STATE, {
            "version": champion.version, "bundle": champion.bundle,
            "t_last": champion.lineage.get("t_last"), "cutoff": champion.lineage.get("cutoff")})

    def restore(self) -> None:
        """The champion as the last loop left it, when it is the same version and the state is signed here."""
        ctx = self.ctx
        if not self.enabled or ctx.champion is None:
            return
        state = ctx.saved_state(_STATE, "online_state_discarded", "online champion")
        if state is None or state["version"] != ctx.champion.version:
            return
        ctx.champion.bundle = state["bundle"]
        ctx.champion.lineage.update(t_last=state["t_last"], cutoff=state["cutoff"])
