"""Recurring concepts: a past version brought back when it serves the newest rows surely better.

Real streams recur (interests flip back, seasons return, a market regime comes again), and the registry keeps
every version a loop trained. With ``gate.recall: N``, every tick at which labels have matured scores the
versions of the last ``N`` concepts (see :meth:`Recall.pool`), beside the champion, on the newest
``gate.min_holdout_rows`` labeled rows none of them was fitted on. When the best of them beats the champion
surely (the low end of the gate's paired-bootstrap interval of their difference above zero), it is promoted
back at once, without training, and the tick trains nothing. The decision log records it as its own kind
(``recall``), with the evidence; the event log too (``version_recalled``). Only surely better, unlike a
candidate (which the gate lets through unless clearly worse): a version fitted on older rows has to earn its
way back."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import pandas as pd

from ..evaluate.gate import paired_bootstrap
from ..policy import first_change
from ..train import ModelBundle
from .context import Context, TickReport
from .deploy import Deployer

__all__ = ["Recall", "rows_seen"]


def rows_seen(lineage: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Which rows of ``frame`` a version with ``lineage`` may have been fitted on: those no later than its
    newest training row and labeled by its training cutoff (a row labeled after the cutoff was not in its
    snapshot, however old). Without that lineage, none are taken as seen."""
    if lineage.get("t_last") is None:
        return np.zeros(len(frame), dtype=bool)
    seen = frame["_time"].to_numpy(dtype=float) <= float(lineage["t_last"])
    if lineage.get("cutoff") is not None and "_label_time" in frame:
        seen &= frame["_label_time"].to_numpy(dtype=float) <= float(lineage["cutoff"])
    return seen


class Recall:
    """Scores past versions on a retrain's holdout and promotes one back when it is surely better."""

    def __init__(self, ctx: Context, deployer: Deployer) -> None:
        self.ctx, self.deployer = ctx, deployer
        self._looked_to = -np.inf  # the newest label time :meth:`watch` has tested
        self._bundles: dict[int, ModelBundle] = {}

    def pool(self, hold: pd.DataFrame) -> list[int]:
        """The versions to score: one per past concept, the newest version fitted within it, for the last
        ``gate.recall`` concepts other than the champion's. A concept is the stretch between two retrains for a
        detected change (the detector, a quality drop, drift), and a version belongs to the one its newest
        training row fell in; so the retrains within one concept (the gain trigger's, a schedule's) do not
        crowd the others out. A gated fit whose refit is registered is left out (the refit is what served), and
        so is any version that may have been fitted on a holdout row (one newer than the champion, after a
        rollback)."""
        ctx = self.ctx
        changes = sorted(d.at for d in ctx.meta.decisions.list("retrain")
                         if first_change(d.triggers or ()) is not None)
        versions = ctx.registry.versions()
        refitted = {v.lineage.get("refit_of") for v in versions}

        def concept(lineage: dict[str, Any]) -> int:
            return bisect.bisect_right(changes, float(lineage.get("t_last") or -np.inf))

        taken = {concept(ctx.champion.lineage)} if ctx.champion is not None else set()
        champion = ctx.champion.version if ctx.champion is not None else None
        out: list[int] = []
        for v in reversed(versions):
            if len(out) >= ctx.spec.gate.recall:
                break
            if v.version == champion or v.version in refitted or concept(v.lineage) in taken:
                continue
            if not rows_seen(v.lineage, hold).any():
                taken.add(concept(v.lineage))
                out.append(v.version)
        return out

    def watch(self, now: float, report: TickReport) -> int | None:
        """At every tick, between retrains: the same check on the newest ``gate.min_holdout_rows`` labeled rows
        the champion was not fitted on, once labels have matured since the last look. A concept that returns
        is found as soon as that many of its labels are in, not at the next retrain (which waits for a
        detector to fire, and for a cooldown). Returns the version promoted back, or None."""
        ctx, gate = self.ctx, self.ctx.spec.gate
        if not gate.recall or ctx.champion is None or ctx.active_rollout() is not None \
                or not self.deployer.auto_promotion:
            return None
        after = ctx.champion.lineage.get("cutoff")
        rows = ctx.data.labeled_between(float(after) if after is not None else -np.inf, now,
                                        most=gate.min_holdout_rows)
        newest = float(rows["_label_time"].max()) if len(rows) else -np.inf
        if len(rows) < gate.min_holdout_rows or newest <= self._looked_to:
            return None  # too few rows, or none new since the last look: the same rows are not tested twice
        self._looked_to = newest
        hold = rows.sort_values("_time", kind="stable").reset_index(drop=True)
        return self._promote_best(hold, now, report)

    def _promote_best(self, hold: pd.DataFrame, now: float, report: TickReport) -> int | None:
        """Promote back the pool's version that beats the champion surely on ``hold``; its number, or None."""
        ctx, gate = self.ctx, self.ctx.spec.gate
        assert ctx.champion is not None
        champ = ctx.champion.bundle
        y = champ.target(hold["_label"]).to_numpy()
        hp, hpr = champ.predict(hold)
        champ_rows = ctx.metric.per_row(y, hp, hpr, ctx.classes)
        best: tuple[int, np.ndarray, float] | None = None
        scores: dict[str, float] = {}
        pool = self.pool(hold)
        self._bundles = {v: b for v, b in self._bundles.items() if v in pool}  # only the pool's stay loaded
        for version in pool:
            try:
                bundle = self._load(version)
                p, pr = bundle.predict(hold)
            except Exception as e:  # noqa: BLE001 - a version that cannot answer is left out, and said
                ctx.events.record("recall_skipped", f"version {version} could not be scored: {e}",
                                  {"version": version})
                continue
            rows = ctx.metric.per_row(y, p, pr, ctx.classes)
            scores[str(version)] = score = round(float(ctx.metric.aggregate(rows)), 6)
            if best is None or ctx.metric.better(score, best[2]) > 0:
                best = (version, rows, score)
        if best is None:
            return None
        version, rows, _ = best
        d = paired_bootstrap(rows, champ_rows, ctx.metric, n=gate.bootstrap, confidence=gate.confidence,
                             seed=ctx.spec.model.seed)
        if d.low <= 0:
            return None
        reason = (f"recall: version {version} beats champion version {ctx.champion.version} surely on the "
                  f"{len(hold)} newest labeled rows: {ctx.metric.name} {d.candidate:.4f} against {d.champion:.4f}, "
                  f"by {d.delta:+.4f} ({gate.confidence:.0%} CI low {d.low:+.4f}); promoted back without training")
        evidence = {"version": version, "champion": ctx.champion.version, "rows": len(hold), "scores": scores,
                    "candidate": d.candidate, "champion_score": d.champion, "delta": d.delta, "low": d.low}
        if not self.deployer.promote(version, actor=ctx.actor, reason=reason):
            return None
        last = ctx.meta.decisions.last()
        ctx.meta.decisions.add(now, "recall", None, [reason], last.state if last is not None else {},
                               triggers=["recall"], guard=None)
        ctx.events.record("version_recalled", reason, evidence)
        report.promoted = report.recalled = version
        return version

    def _load(self, version: int) -> ModelBundle:
        """A registered version's model, loaded once (the registry's artifacts do not change)."""
        if version not in self._bundles:
            self._bundles[version] = self.ctx.registry.load(version)
        return self._bundles[version]
