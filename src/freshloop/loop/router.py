"""Serving: which model answers a request, and what the prediction log keeps of it.

The champion answers every row, or the online companion in its place while that is surely better (see
:mod:`.companion`; both answers are logged). During a canary step the candidate answers the share of keys the step
routes to it (by a hash of the key, so a key stays on one side); in shadow it answers only into the log,
scored later off the request path when the caller defers it. The log keeps both answers, so the label join
can compare the two on the same rows. A candidate that raises never fails a request: the champion answers
and the rollout's step counts the error.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd

from ..rollout import Rollout, route_to_candidate
from ..train.model import Rows
from .companion import COMPANION, Companion
from .context import Context, PredictResult, prediction_scores

__all__ = ["Router", "predicted_batch_id"]


def predicted_batch_id(ids: list[str]) -> str:
    """The batch id of predicted rows stored as a batch, named by the first row's id: a server starting again
    gives the rows a crash left in its journal the same id (so rows the worker stored are not stored twice),
    and a scoring job run twice on the same ids stores them once."""
    return f"predict-{ids[0]}"


class Router:
    """Answers requests from the champion and a rollout's candidate, and logs what each row was served."""

    def __init__(self, ctx: Context, companion: Companion) -> None:
        self.ctx, self.companion = ctx, companion
        self._shadow_queue: list[tuple[Rows, list[str]]] = []

    def predict(self, frame: Rows, row_ids: list[str] | None, keys: list[str] | None,
                defer_shadow: bool) -> PredictResult:
        """Called under the context's lock."""
        ctx = self.ctx
        champion = ctx.champion_or_raise()
        now = ctx.clock.now()
        if row_ids is None:
            base = hashlib.sha256(f"{now}:{ctx.predictions.pending}:{id(frame)}".encode()).hexdigest()[:12]
            row_ids = [f"p-{base}-{i}" for i in range(len(frame))]
        champ_v = champion.version
        started = time.perf_counter()
        preds, proba = champion.bundle.predict(frame)
        champ_seconds = time.perf_counter() - started
        versions = np.full(len(frame), champ_v)
        ctx.monitor().observe_rows(pd.DataFrame(), prediction_scores(preds, proba))
        # the online companion answers beside the champion, and in its place while it is surely better
        own, alts = (preds, proba), {}
        companion = self.companion.answer(frame)
        if companion is not None:
            alts = {champ_v: own, COMPANION: companion}
            if self.companion.leads:
                (preds, proba), versions = companion, np.full(len(frame), COMPANION)
                ctx.stats.companion_served += len(frame)
        r = ctx.active_rollout() if ctx.candidate is not None else None
        if r is None or (defer_shadow and r.share == 0):
            ctx.predictions.log(row_ids, now, champ_v, preds, proba, versions, alts)
            if r is not None:
                self._shadow_queue.append((frame, row_ids))
            return PredictResult(row_ids, preds, proba, versions, now)
        assert ctx.candidate is not None
        cand_v = ctx.candidate.version
        started = time.perf_counter()
        try:
            c_preds, c_proba = ctx.candidate.bundle.predict(frame)
        except Exception as e:  # a failing candidate never fails a request: the champion answers
            self._candidate_failed(r, len(frame), e, now)
            ctx.predictions.log(row_ids, now, champ_v, preds, proba, versions, alts)
            return PredictResult(row_ids, preds, proba, versions, now)
        cand_seconds = time.perf_counter() - started
        r.observe_latency(cand_seconds, champ_seconds)
        ctx.outcomes.step_latency(r.version, now, cand_seconds, champ_seconds)
        routed = route_to_candidate(keys or row_ids, r.share)
        served = np.where(routed, c_preds, preds)
        served_proba = None if proba is None or c_proba is None else np.where(routed[:, None], c_proba, proba)
        versions = np.where(routed, cand_v, versions)
        # the log keeps every answer, so each side can be scored when the label matures
        ctx.predictions.log(row_ids, now, champ_v, served, served_proba, versions,
                            {champ_v: own, **alts, cand_v: (c_preds, c_proba)})
        return PredictResult(row_ids, served, served_proba, versions, now)

    def _candidate_failed(self, r: Rollout, rows: int, error: Exception, now: float) -> None:
        r.errors += rows
        r.last_error = f"{type(error).__name__}: {error}"[:500]
        self.ctx.outcomes.step_errors(r.version, now, rows, r.last_error)

    def score_shadow(self) -> int:
        """Score deferred shadow rows with the candidate and attach its answers to the log; returns rows.

        The candidate scores outside the serving lock; its answers are attached under it."""
        ctx = self.ctx
        with ctx.lock:
            queue, self._shadow_queue = self._shadow_queue, []
            r = ctx.active_rollout()
            if r is None or ctx.candidate is None or ctx.champion is None:
                return 0
            cand_v, cand = ctx.candidate.version, ctx.candidate.bundle
            champ_v = ctx.champion.version
        answers = []
        for frame, ids in queue:
            try:
                answers.append((ids, *cand.predict(frame)))
            except Exception as e:
                with ctx.lock:
                    self._candidate_failed(r, len(frame), e, ctx.clock.now())
        with ctx.lock:
            if ctx.candidate is None or ctx.candidate.version != cand_v:
                return 0  # the rollout ended meanwhile
            return self._attach_shadow(answers, cand_v, champ_v)

    def _attach_shadow(self, answers: list[tuple[list[str], np.ndarray, np.ndarray | None]], cand_v: int,
                       champ_v: int) -> int:
        done = 0
        for ids, c_preds, c_proba in answers:
            for i, rid in enumerate(ids):
                rec = self.ctx.predictions.get(rid)
                if rec is not None and rec.version in (champ_v, COMPANION):
                    rec.alternatives[cand_v] = (c_preds[i], None if c_proba is None else c_proba[i])
                    rec.alternatives.setdefault(champ_v, (rec.pred, rec.proba))
                    done += 1
        return done
