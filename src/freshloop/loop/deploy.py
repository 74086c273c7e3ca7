"""Deployment: a registered version becomes the champion, at once or through a rollout, and can go back.

A version is made ready to serve (loaded, compiled, its reference rows scored for the monitor) before the
``champion`` alias moves, so a version that cannot serve leaves the champion where it was and requests wait
only for the swap. A shadow or canary rollout gathers paired evidence step by step (the label join feeds
it) and promotes or aborts; consecutive automatic rollbacks stop automatic promotion until an operator
promotes a version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..data.snapshot import Snapshot
from ..errors import ConflictError, NotFoundError
from ..rollout import Rollout, Status, analyze_step
from ..train import ModelBundle
from .context import Champion, Context, RolloutCandidate, TickReport, prediction_scores

__all__ = ["Deployer"]

_MAX_REFERENCE_ROWS = 5000


@dataclass(frozen=True)
class _Staged:
    """A version made ready to serve, not yet serving (see ``Deployer._stage``)."""

    version: int
    bundle: ModelBundle
    lineage: dict[str, Any]
    reference: pd.DataFrame | None  # the monitor's new reference rows (None before the schema is known)
    reference_scores: Any
    new: bool  # a promotion, not a loop opening again on its champion


class Deployer:
    """Promotions, rollouts and rollbacks: every move of the ``champion`` alias goes through here."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.on_promote: Callable[[int, str], None] | None = None  # (version, actor), after each alias move
        self.auto_promotion = True
        self.auto_rollbacks = 0
        self._snapshot_read: tuple[str, pd.DataFrame] | None = None  # the last run's snapshot, as read

    # -- opening again ------------------------------------------------------------------------
    def restore(self) -> None:
        """The champion the alias names, and a rollout a restart interrupted, with what its step gathered."""
        ctx = self.ctx
        version = ctx.registry.alias("champion")
        if version is not None:
            moves = [m for m in ctx.meta.versions.alias_history("champion") if m.new_version == version]
            self._install(self._stage(version, ctx.registry.load(version),
                                      promoted_at=moves[-1].at if moves else None))
        for rec in ctx.meta.rollouts.list():
            if rec.status in ("running", "awaiting_approval") and ctx.champion:
                ctx.rollout = Rollout.from_record(rec, tuple(ctx.spec.rollout.steps))
                for k, v in ctx.outcomes.step_evidence(rec.version).items():  # what the step gathered so far
                    setattr(ctx.rollout, k, v)
                ctx.candidate = RolloutCandidate(rec.version, ctx.registry.load(rec.version))
                ctx.candidate.bundle.compile()

    def restore_rollbacks(self) -> None:
        """The consecutive automatic rollbacks so far, from the event log: enough of them stop promotion."""
        ctx = self.ctx
        events = sorted((e for kind in ("rollout_rolled_back", "alias_moved", "auto_promotion_resumed")
                         for e in ctx.meta.events.list(kind)), key=lambda e: e.id)
        for e in events:
            if e.kind == "rollout_rolled_back":
                self.auto_rollbacks += bool(e.payload.get("automatic"))
            elif e.kind == "auto_promotion_resumed" or e.payload.get("automatic", True):
                self.auto_rollbacks = 0  # an automatic promotion, or the operator's that resumed them
        self.auto_promotion = self.auto_rollbacks < ctx.spec.rollout.max_auto_rollbacks

    def keep_snapshot(self, snapshot_id: str, frame: pd.DataFrame) -> None:
        """A training run's snapshot as read: promoting its model reads it again for the monitor's reference."""
        self._snapshot_read = (snapshot_id, frame)

    # -- a gated version ----------------------------------------------------------------------
    def deploy(self, version: int, now: float, report: TickReport, why: str) -> None:
        """A version that passed the gate: promoted at once, or a rollout started (as the spec says)."""
        ctx = self.ctx
        strategy = ctx.spec.rollout.strategy
        if ctx.champion is not None and not self.auto_promotion:
            ctx.events.record("promotion_held", f"version {version} passed the gate but automatic promotion is "
                              f"stopped after {self.auto_rollbacks} consecutive rollbacks", {})
            return
        if ctx.champion is None or strategy == "immediate":
            self.promote(version, actor=ctx.actor, reason=f"gate passed: {why}")
            report.promoted = version
            return
        rid = f"ro-{version}"
        bundle = ctx.registry.load(version)
        bundle.compile()  # compiled before it takes traffic, so no request waits for it
        with ctx.lock:
            ctx.rollout = Rollout(rid, version, ctx.champion.version, strategy, tuple(ctx.spec.rollout.steps), now)
            ctx.candidate = RolloutCandidate(version, bundle)
            ctx.outcomes.step_started(version, now)
        ctx.registry.set_alias(strategy, version, actor=ctx.actor, reason=f"rollout {rid} started", now=now)
        ctx.meta.rollouts.save(ctx.rollout.to_record(now))
        ctx.events.record("rollout_started", f"{strategy} of version {version} against champion "
                          f"{ctx.champion.version}", {"rollout_id": rid, "version": version})

    def advance(self, now: float, report: TickReport) -> None:
        """One look at the rollout's step: wait, go to the next share, promote, or abort."""
        ctx, r = self.ctx, self.ctx.rollout
        assert r is not None
        if r.status == "awaiting_approval":
            return
        out = analyze_step(r, ctx.spec.rollout, ctx.spec.gate, ctx.metric, now, seed=ctx.spec.model.seed)
        report.rollout_action = out.action
        if out.action == "wait":
            return
        r.evidence.append({"step": r.step, "share": r.share, "action": out.action, "detail": out.detail,
                           **out.evidence, "at": now})
        if out.action == "abort":
            self._end(r, "rolled_back", now, f"rollout {r.id} aborted at {r.share:g}%: {out.detail}", automatic=True)
            report.rolled_back = r.version
            ctx.stats.rollbacks += 1
            self._count_automatic_rollback()
        elif out.action == "continue":
            r.next_step(now)
            ctx.outcomes.step_started(r.version, now)
            if ctx.spec.rollout.manual_approval and r.step == len(r.steps) - 1:
                r.status = "awaiting_approval"
            ctx.meta.rollouts.save(r.to_record(now))
            ctx.events.record("rollout_step", f"rollout {r.id} to {r.share:g}%: {out.detail}",
                              {"rollout_id": r.id, "step": r.step})
        else:
            self.promote(r.version, actor=ctx.actor, reason=f"rollout {r.id} passed: {out.detail}")
            self._end(r, "promoted", now, f"rollout {r.id} promoted version {r.version}")
            report.promoted = r.version

    def _count_automatic_rollback(self) -> None:
        self.auto_rollbacks += 1
        if self.auto_rollbacks >= self.ctx.spec.rollout.max_auto_rollbacks and self.auto_promotion:
            self.auto_promotion = False
            self.ctx.events.record("auto_promotion_stopped", f"{self.auto_rollbacks} consecutive automatic "
                                   "rollbacks; an operator must promote the next version", {})

    def _end(self, r: Rollout, status: Status, now: float, reason: str, *, automatic: bool = False) -> None:
        ctx = self.ctx
        with ctx.lock:
            r.status = status
            ctx.candidate = None
        ctx.meta.rollouts.save(r.to_record(now))
        if ctx.registry.alias(r.strategy) == r.version:
            ctx.registry.set_alias(r.strategy, None, actor=ctx.actor, reason=reason, now=now)
        ctx.events.record("rollout_" + status, reason, {"rollout_id": r.id, "version": r.version,
                                                        "automatic": automatic})
        if status == "rolled_back":
            ctx.registry.forget(r.version)

    # -- an operator's actions ----------------------------------------------------------------
    def approve(self, rollout_id: str, *, actor: str, reason: str) -> None:
        ctx, r = self.ctx, self.ctx.rollout
        if r is None or r.id != rollout_id or r.status != "awaiting_approval":
            raise NotFoundError(f"no rollout {rollout_id!r} awaiting approval.", field="rollout_id", value=rollout_id)
        with ctx.lock:
            r.status = "running"
        ctx.meta.rollouts.save(r.to_record(ctx.clock.now()))
        ctx.events.record("rollout_approved", reason, {"rollout_id": r.id}, actor=actor)

    def promote(self, version: int, *, actor: str, reason: str) -> bool:
        """Make ``version`` the champion: loaded and made ready to serve first (a version that cannot serve
        leaves the champion where it was), then one compare-and-set alias move. Returns False, with nothing
        recorded as a move, when ``version`` already is the champion (an operator's confirmation still resumes
        automatic promotion after consecutive rollbacks stopped it)."""
        ctx = self.ctx
        now = ctx.clock.now()
        old, rev = ctx.meta.versions.alias("champion")
        automatic = actor == ctx.actor
        if old == version:
            if not automatic:
                self._resume_auto_promotion(version, actor)
            return False
        staged = self._stage(version, ctx.registry.load(version))
        ctx.registry.set_alias("champion", version, actor=actor, reason=reason, now=now, expected_revision=rev)
        self._install(staged)
        ctx.stats.promotions += 1
        if automatic:
            self.auto_rollbacks = 0
        else:
            self._resume_auto_promotion(version, actor)
        if staged.lineage.get("cutoff") is not None:
            ctx.stats.deployments.append((now, float(staged.lineage["cutoff"])))
        ctx.events.record("alias_moved", reason, {"alias": "champion", "from": old, "to": version,
                                                  "serving": staged.bundle.serving, "automatic": automatic},
                          actor=actor)
        if self.on_promote is not None:
            self.on_promote(version, actor)
        return True

    def _resume_auto_promotion(self, version: int, actor: str) -> None:
        """The operator's promotion the stop asked for: the loop may promote again."""
        if not self.auto_promotion:
            self.auto_promotion, self.auto_rollbacks = True, 0
            self.ctx.events.record("auto_promotion_resumed", f"{actor} promoted version {version}; automatic "
                                   "promotion resumes", {"version": version}, actor=actor)

    def rollback(self, *, actor: str, reason: str) -> int:
        """Abort an active rollout, or move the champion back to the version it replaced."""
        ctx = self.ctx
        now = ctx.clock.now()
        r = ctx.active_rollout()
        if r is not None:
            self._end(r, "rolled_back", now, f"operator rollback: {reason}")
            ctx.stats.rollbacks += 1
            return int(r.champion_version or 0)
        current = ctx.registry.alias("champion")
        target = self._replaced_by(current)
        # a refit's gated fit served only while the refit trained: back is the champion before both
        while target is not None and current is not None and \
                ctx.registry.get(current).lineage.get("refit_of") == target:
            current, target = target, self._replaced_by(target)
        if target is None:
            raise ConflictError("no earlier champion to roll back to.", field="champion", rule="history")
        self.promote(target, actor=actor, reason=f"rollback: {reason}")
        ctx.stats.rollbacks += 1
        return target

    def abort(self, rollout_id: str, *, actor: str, reason: str) -> None:
        r = self.ctx.active_rollout()
        if r is None or r.id != rollout_id:
            raise NotFoundError(f"no active rollout {rollout_id!r}.", field="rollout_id", value=rollout_id)
        self.rollback(actor=actor, reason=f"abort: {reason}")

    def _replaced_by(self, version: int | None) -> int | None:
        """The champion that ``version`` replaced when it was last promoted."""
        previous = [m.old_version for m in self.ctx.registry.history("champion")
                    if m.new_version == version and m.old_version != version]  # not a promotion that moved nothing
        return previous[-1] if version is not None and previous else None

    # -- the swap -----------------------------------------------------------------------------
    def _stage(self, version: int, bundle: ModelBundle, *, promoted_at: float | None = None) -> _Staged:
        """Everything a version needs before it serves: compiled, its lineage read, the monitor's reference
        rows read and scored. A version that fails here never serves; requests wait only for the swap."""
        ctx = self.ctx
        bundle.compile()  # compiled before it takes traffic, so no request waits for it
        lineage = dict(ctx.registry.get(version).lineage)
        # a loop opened later reads when its champion was promoted from the alias history, not its own clock
        lineage["promoted_at"] = ctx.clock.now() if promoted_at is None else promoted_at
        if ctx.schema is None:
            return _Staged(version, bundle, lineage, None, None, promoted_at is None)
        ref = self._reference_rows(lineage.get("snapshot_id")).iloc[-_MAX_REFERENCE_ROWS:]
        ref_pred = None
        if len(ref):
            p, pr = bundle.predict(ref)
            ref_pred = prediction_scores(p, pr)
        return _Staged(version, bundle, lineage, ref, ref_pred, promoted_at is None)

    def _reference_rows(self, snapshot_id: str | None) -> pd.DataFrame:
        """The rows a version was trained on (its snapshot): the monitor's reference for drift."""
        kept, self._snapshot_read = self._snapshot_read, None
        if kept is not None and kept[0] == snapshot_id:
            return kept[1]
        if not snapshot_id:
            return pd.DataFrame()
        data = self.ctx.data
        try:
            body = data.meta.runs.snapshot(snapshot_id).body
            return data.read_snapshot(Snapshot(**{**body, "batch_ids": tuple(body["batch_ids"]),
                                                  "label_batch_ids": tuple(body["label_batch_ids"])}))
        except NotFoundError:
            return pd.DataFrame()

    def _install(self, staged: _Staged) -> None:
        ctx = self.ctx
        with ctx.lock:
            ctx.champion = Champion(staged.version, staged.bundle, staged.lineage)
            if staged.reference is None:
                return
            ctx.monitor().reset(staged.reference, staged.reference_scores)
            if staged.new:  # a new champion, not one a loop opening again reloads
                ctx.outcomes.champion_changed(staged.version, staged.lineage["promoted_at"])
