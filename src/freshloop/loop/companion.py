"""An online model beside the batch champion (``model.companion``): of the two, the better one serves.

The champion is refitted now and then on a window of rows; an online learner (River's adaptive random forest
by default) learns every label as it matures. Neither wins everywhere: a batch model where the concept holds
still and its window is large, an online learner where the concept keeps moving faster than retrains can
follow. The companion runs beside the champion:

- at each tick it learns the labels matured since the last it learned, read from the data store, so a loop
  driven by separate processes, or opened again after a crash, learns each label once;
- it answers every request into the prediction log beside the champion, so when the labels come the two are
  scored on the same rows;
- the pairs since the last change in who is better, at most the latest ``rows``, decide who serves, by the
  gate's rule: the side not serving takes over when it beats the serving one surely (the low end of the
  paired-bootstrap interval of their difference above zero), so one lucky stretch does not flip it back and
  forth. A change detector (ADWIN) watches the per-row difference between the two: when it moves (a concept
  change one side follows faster, a new champion much better or worse than the last), the pairs from before
  are dropped, and the next choice is made on the rows since, as soon as there are the gate's
  ``min_holdout_rows`` of them, not after ``rows`` more. The pairs outlive a retrain: the question is which of
  the two processes serves better lately, and a loop that retrains every batch would otherwise never gather
  the evidence to hand over.

The companion answers as version 0 (:data:`COMPANION`) in the prediction log and in a prediction's answer.
The champion's own answers still feed the monitor's live quality and change detector, which decide when to
retrain it. The companion's state is saved when the loop closes, signed like a registered artifact.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from river.drift import ADWIN

from ..evaluate.gate import paired_bootstrap
from ..spec import CompanionSpec
from ..train import ModelBundle
from ..train.model import Rows, check_companion
from .context import Context, TickReport

__all__ = ["COMPANION", "Companion"]

COMPANION = 0  # the companion's version in the prediction log and in answers (registered versions start at 1)
_FIRST_ROWS = 10_000  # a companion made on a loop with a long history first learns its newest labeled rows
_STATE = "companion/state.pkl"


class Companion:
    """An online model learning every matured label beside the champion, serving while it is surely better."""

    def __init__(self, ctx: Context) -> None:
        check_companion(ctx.spec.model)  # refused when the loop opens, not at its first tick
        self.ctx = ctx
        self.bundle: ModelBundle | None = None
        self.leads = False  # whether it serves in the champion's place
        self.learned_to = float("-inf")  # the newest label time it has learned
        self._pairs: deque[tuple[float, float]] = deque()  # (companion, champion) per-row scores, oldest first
        self._shift = ADWIN()  # watches the per-row difference between the two for a change
        self._cut = False  # the pairs were cut at such a change
        self._fresh = False  # pairs came since the last choice
        self.last_error: str | None = None  # why it last failed to answer, while it still fails

    @property
    def spec(self) -> CompanionSpec | None:
        return self.ctx.spec.model.companion

    @property
    def ready(self) -> bool:
        return self.spec is not None and self.bundle is not None and self.bundle.rows_seen_ > 0

    @property
    def serving(self) -> bool:
        return self.leads and self.ready

    def estimator(self) -> str:
        spec, schema = self.spec, self.ctx.schema
        assert spec is not None and schema is not None
        if spec.refit is not None:
            return self.ctx.spec.model.estimator
        if spec.estimator:
            return spec.estimator
        return "river.forest.ARFRegressor" if schema.task == "regression" else "river.forest.ARFClassifier"

    def name(self) -> str:
        """What it is, for the event log: the online companion, or the refit one and on how many labels."""
        spec = self.spec
        return f"the refit companion (on the newest {spec.refit} labels)" if spec and spec.refit \
            else "the online companion"

    # -- learning -----------------------------------------------------------------------------
    def learn(self, now: float) -> None:
        """Learn the labels matured since the last ones learned, oldest first (under the context's lock)."""
        ctx, spec = self.ctx, self.spec
        if spec is None or ctx.schema is None:
            return
        if spec.refit is not None:
            self._refit(now, spec.refit, spec.every or 1)
            return
        rows = ctx.data.labeled_between(self.learned_to, now, most=_FIRST_ROWS if self.bundle is None else None)
        if not len(rows):
            return
        if self.bundle is None:
            self.bundle = ModelBundle(ctx.schema, self.estimator(), spec.params, seed=ctx.spec.model.seed)
        self.bundle.learn(rows, rows["_label"])
        self.learned_to = float(rows["_label_time"].max())
        ctx.stats.companion_rows += len(rows)

    def _refit(self, now: float, most: int, every: int) -> None:
        """``model.companion.refit``: the spec's own model fitted anew on the newest ``most`` matured labels,
        once ``every`` labels (``model.companion.every``, at most ``most``) matured since the last fit. A fit
        that fails (one class alone in so few rows) keeps the last fitted model, and the failure is counted."""
        ctx, model = self.ctx, self.ctx.spec.model
        assert ctx.schema is not None
        rows = ctx.data.labeled_between(float("-inf"), now, most=most)
        new = int(np.count_nonzero(rows["_label_time"].to_numpy(dtype=float) > self.learned_to)) if len(rows) else 0
        if new == 0 or (new < every and self.bundle is not None):
            return  # too few labels matured since the last fit (the first fit waits for none)
        self.learned_to = float(rows["_label_time"].max())
        started = time.perf_counter()
        try:
            bundle = ModelBundle(ctx.schema, model.estimator, model.params, seed=model.seed, scale=model.scale)
            self.bundle = bundle.fit(rows, rows["_label"])
        except Exception:  # too few rows for this model (one class alone): the last fit serves on
            ctx.stats.companion_errors += 1
            return
        ctx.stats.companion_rows += len(rows)
        # its fits are training, counted with the retrains' (as an online champion's learning is)
        ctx.stats.train_rows += len(rows)
        ctx.stats.train_seconds += time.perf_counter() - started

    # -- serving ------------------------------------------------------------------------------
    def answer(self, frame: Rows) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Its answers to ``frame``; None before it has learned, or when it fails (the champion answers, and
        the failure is counted)."""
        if not self.ready:
            return None
        assert self.bundle is not None
        try:
            answers = self.bundle.predict(frame)
        except Exception as e:  # a failing companion never fails a request: the champion answers
            self.ctx.stats.companion_errors += 1
            if self.last_error is None:  # the first failure of a run of them is an event, with its error
                self.last_error = f"{type(e).__name__}: {e}"[:500]
                self.ctx.events.record("companion_failed", f"{self.name()} ({self.estimator()}) failed to "
                                       f"answer {len(frame)} rows, the champion answered them: {self.last_error}",
                                       {"estimator": self.estimator(), "rows": len(frame), "error": self.last_error})
            return None
        self.last_error = None
        return answers

    # -- judging ------------------------------------------------------------------------------
    def observe(self, companion_scores: np.ndarray, champion_scores: np.ndarray) -> None:
        """Per-row scores of both on rows whose labels matured, oldest first (called by the label join); the
        pairs from before a change in their difference are dropped."""
        spec = self.spec
        if spec is None or not len(companion_scores):
            return
        if self._pairs.maxlen != spec.rows:
            self._pairs = deque(self._pairs, maxlen=spec.rows)
        for pair in zip(map(float, companion_scores), map(float, champion_scores), strict=True):
            self._pairs.append(pair)
            self._shift.update(pair[0] - pair[1])
            if self._shift.drift_detected:  # who is better changed: the evidence from before says nothing now
                for _ in range(len(self._pairs) - min(int(self._shift.width), len(self._pairs))):
                    self._pairs.popleft()
                    self._cut = True
        self._fresh = True

    def choose(self, now: float, report: TickReport) -> None:
        """Hand serving to the other side when it is surely better on the latest pairs (the gate's rule)."""
        ctx, gate = self.ctx, self.ctx.spec.gate
        if not self._fresh or ctx.champion is None or not self.ready:
            return
        self._fresh = False
        if len(self._pairs) < gate.min_holdout_rows:
            return
        comp, champ = np.array(self._pairs, dtype=float).T
        new, old = (champ, comp) if self.leads else (comp, champ)
        d = paired_bootstrap(new, old, ctx.metric, n=gate.bootstrap, confidence=gate.confidence,
                             seed=ctx.spec.model.seed)
        if d.low <= 0:
            return
        self.leads = not self.leads
        cut = self._cut and len(self._pairs) != self._pairs.maxlen
        since = " (all since the last change in which of the two is better)" if cut else ""
        who = self.name() if self.leads else f"the champion (version {ctx.champion.version})"
        text = (f"{who} serves: surely better on the last {d.n} matured rows both answered{since} ({ctx.metric.name} "
                f"{d.candidate:.4f} against {d.champion:.4f}; difference {d.delta:+.4f}, CI low {d.low:+.4f})")
        ctx.events.record("serving_switched", text, {
            "serves": "companion" if self.leads else "champion", "champion": ctx.champion.version,
            "estimator": self.estimator(), "rows": d.n, "metric": ctx.metric.name, "score": d.candidate,
            "other": d.champion, "delta": d.delta, "low": d.low, "high": d.high})
        ctx.stats.companion_switches += 1
        report.serving = text

    # -- keeping ------------------------------------------------------------------------------
    def save(self) -> None:
        """Its model and evidence, signed, for the loop opened next (called when the loop closes)."""
        if self.bundle is None:
            return
        self.ctx.save_state(_STATE, self._state())

    def _state(self) -> dict[str, Any]:
        # the pairs a label-feedback process scored are judged by the next tick's process
        return {"bundle": self.bundle, "refit": self.spec.refit if self.spec else None, "leads": self.leads,
                "learned_to": self.learned_to, "pairs": list(self._pairs), "shift": self._shift, "cut": self._cut,
                "fresh": self._fresh}

    def restore(self) -> None:
        """The state the last loop saved, when its signature is this machine's and its estimator the spec's;
        else it learns again from the data store's labels."""
        if self.spec is None or self.ctx.schema is None:
            return
        state = self.ctx.saved_state(_STATE, "companion_discarded", self.name().removeprefix("the "))
        if state is None or state["bundle"].estimator != self.estimator() or state.get("refit") != self.spec.refit:
            return  # the spec names another model now: it learns from the stored labels
        self.bundle, self.leads, self.learned_to = state["bundle"], state["leads"], state["learned_to"]
        self._fresh, self._shift = state.get("fresh", False), state.get("shift") or ADWIN()
        self._cut = state.get("cut", False)
        self._pairs = deque(state["pairs"], maxlen=self.spec.rows)
