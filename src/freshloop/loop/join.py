"""The label join: labels meet the predictions they grade, and what was served is scored.

A label that arrives (with a batch, or on its own later) is matched by row id to the prediction log; each
matched row is scored with the gate's metric. The champion's scores feed the monitor's live quality and
change detector (in label order: the detector is order-sensitive) and the outcome log a restart reads
back; during a rollout, rows both sides answered become the step's paired evidence, and rows the online
companion answered beside the champion become the evidence of which of the two serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.store import IngestResult
from ..labels import Served
from .companion import COMPANION, Companion
from .context import Context

__all__ = ["FeedbackResult", "LabelJoin"]


@dataclass
class FeedbackResult:
    ingest: IngestResult
    at: list[float]  # when each matured row was predicted
    scores: list[float]  # per-row metric of what was served
    unmatched: list[str]  # labeled ids with no logged prediction
    joined: list[str] = field(default_factory=list)  # labeled ids joined to a logged prediction, in label order
    labels: list[Any] = field(default_factory=list)  # the joined rows' labels, typed, in the same order
    served: list[Any] = field(default_factory=list)  # and what each was served


class LabelJoin:
    """Joins labels the data store took to the prediction log, and scores what was served."""

    def __init__(self, ctx: Context, companion: Companion) -> None:
        self.ctx, self.companion = ctx, companion

    def observe(self, row_ids: list[str], res: IngestResult) -> FeedbackResult:
        out = FeedbackResult(res, [], [], [])
        if res.replayed:
            return out
        ctx = self.ctx
        if res.quarantined:
            ctx.events.record("labels_quarantined", f"{res.quarantined} labels quarantined: "
                              + "; ".join(res.reasons[:3]), res.to_dict())
        # the join uses the labels just accepted, typed, whether or not their rows are ingested yet
        acc = res.accepted_frame
        typed = dict(zip(acc["_row_id"], acc["_label"], strict=True)) if acc is not None else {}
        with ctx.lock:
            ctx.monitor().new_labels += res.accepted
            matured = [(r, rec) for r in row_ids if r in typed and (rec := ctx.predictions.pop(r)) is not None]
            out.joined = [r for r, _ in matured]
            if matured:
                recs = [rec for _, rec in matured]
                scores = self._score_served(np.array([typed[r] for r in out.joined]), recs)
                out.labels.extend(typed[r] for r in out.joined)
                out.served.extend(rec.pred for rec in recs)
                out.at.extend(rec.at for rec in recs)
                out.scores.extend(float(v) for v in scores)
        joined = set(out.joined)
        out.unmatched = [r for r in row_ids if r not in joined]
        self._record(res, len(out.joined))
        return out

    def _score_served(self, y: np.ndarray, recs: list[Served]) -> np.ndarray:
        """Score what each row was served; the champion's scores go to the monitor and the outcome log."""
        ctx = self.ctx
        scores = ctx.score(y, [(rec.pred, rec.proba) for rec in recs])
        champ = ctx.champion.version if ctx.champion is not None else None
        champ_scores, keep = scores.copy(), np.array([rec.version == champ for rec in recs])
        if champ is not None:
            self._score_companion(y, recs, champ, champ_scores, keep)
        r = ctx.active_rollout()
        if r is not None and r.champion_version is not None:
            cv, hv = r.version, r.champion_version
            both = [i for i, rec in enumerate(recs) if rec.at >= r.step_started_at
                    and {cv, hv} <= {rec.version, *rec.alternatives}]
            if both:
                cs, hs = (ctx.score(y[both], [recs[i].alternatives.get(v, (recs[i].pred, recs[i].proba))
                                              for i in both]) for v in (cv, hv))
                for c_, h_ in zip(cs, hs, strict=True):
                    r.observe(float(c_), float(h_))
                ctx.outcomes.step_pairs(r.version, ctx.clock.now(), cs, hs)
                if hv == champ:  # rows the candidate served still tell how the champion does
                    champ_scores[both], keep[both] = hs, True
        ctx.monitor().observe_outcomes(champ_scores[keep], 0)
        if champ is not None:
            ctx.outcomes.append(champ, ctx.clock.now(), champ_scores[keep])
        return scores

    def _score_companion(self, y: np.ndarray, recs: list[Served], champ: int, champ_scores: np.ndarray,
                         keep: np.ndarray) -> None:
        """Rows the online companion answered beside the champion: both scored, the pairs handed to it; where
        it served, the champion's own answer is what the monitor is fed."""
        both = [i for i, rec in enumerate(recs) if COMPANION in rec.alternatives and champ in rec.alternatives]
        if not both:
            return
        comp, own = (self.ctx.score(y[both], [recs[i].alternatives[v] for i in both]) for v in (COMPANION, champ))
        self.companion.observe(comp, own)
        champ_scores[both], keep[both] = own, True

    def _record(self, res: IngestResult, scored: int) -> None:
        events = self.ctx.events
        if res.accepted:
            events.record("labels_accepted", f"{res.accepted}/{res.submitted} labels accepted; {scored} joined to "
                          "served predictions and scored", {"batch_id": res.batch_id, "accepted": res.accepted,
                                                            "scored": scored, "relabeled": res.relabeled})
        if res.relabeled:
            ex = ", ".join(f"{e['row_id']}: {e['before']!r} -> {e['after']!r}" for e in res.relabel_examples)
            events.record("labels_relabeled", f"{res.relabeled} rows had a label already; the newest counts and the "
                          f"earlier stay stored (e.g. {ex})", {"batch_id": res.batch_id, "relabeled": res.relabeled,
                                                               "examples": res.relabel_examples})
