"""What the loop's stages share: the spec, the clock, the stores and the serving state, behind one lock.

Each stage (:mod:`.router`, :mod:`.join`, :mod:`.training`, :mod:`.deploy`, :mod:`.online`) holds the same
:class:`Context`; none holds another stage's state. What a request reads (the champion, a rollout's
candidate, the prediction log, the monitor's windows) is guarded by ``Context.lock`` alone, held briefly:
ingest, training and the gate run outside it, so a server answers predictions while its worker ingests or
retrains.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..clock import Clock, parse_duration
from ..data.schema import Schema
from ..data.store import DataStore
from ..errors import NotFoundError
from ..evaluate.gate import Verdict
from ..evaluate.metrics import Metric, default_metric, get_metric
from ..events import EventLog
from ..labels import OutcomeLog, PredictionLog
from ..monitor import Monitor, Signals
from ..policy import Decision
from ..registry import Registry
from ..rollout import Action, Rollout
from ..spec import LoopSpec
from ..store import BlobStore, MetadataStore
from ..store.keys import signed_pickle, unpickle_signed
from ..train import Executor, ModelBundle

__all__ = ["Champion", "Context", "LoopStats", "PredictResult", "RolloutCandidate", "TickReport", "prediction_scores"]


@dataclass
class LoopStats:
    """Running totals the replay summary and the metrics endpoint read."""

    retrains: int = 0
    failed_runs: int = 0
    gate_passed: int = 0
    gate_failed: int = 0
    promotions: int = 0
    rollbacks: int = 0
    train_rows: int = 0
    train_seconds: float = 0.0
    online_rows: int = 0
    companion_rows: int = 0  # rows the online companion learned (``model.companion``)
    companion_served: int = 0  # rows it answered in the champion's place
    companion_switches: int = 0  # times serving moved between the champion and the companion
    companion_errors: int = 0  # requests the companion failed to answer (the champion answered)
    deferred_runs: int = 0  # retrains not trained: too few rows the champion was not fitted on to judge them
    first_failure: str | None = None  # the reason the first failed training run gave
    deployments: list[tuple[float, float]] = field(default_factory=list)  # (promoted at, snapshot cutoff)


@dataclass
class PredictResult:
    row_ids: list[str]
    predictions: np.ndarray
    proba: np.ndarray | None
    versions: np.ndarray
    at: float  # when they were served, on the loop's clock


@dataclass
class TickReport:
    """What one tick did, filled in by the stages it called."""

    now: float
    decision: Decision | None = None
    signals: Signals | None = None
    run_id: str | None = None
    verdict: Verdict | None = None
    registered: int | None = None
    promoted: int | None = None
    refit: int | None = None  # the version a served gated fit was refitted into (``serve_before_refit``)
    rolled_back: int | None = None
    rollout_action: Action | None = None
    data_age: float | None = None  # the age of the champion's newest training row (a summary's "staleness")
    run_error: str | None = None  # why this tick's training run failed
    deferred: str | None = None  # why this tick's retrain was not trained (no fair holdout yet)
    window: dict[str, Any] | None = None  # the window its candidate was fitted on, when the retrain chose one
    serving: str | None = None  # why serving moved between the champion and the online companion this tick
    recalled: int | None = None  # a past version promoted back without training (``gate.recall``)

    def to_dict(self) -> dict[str, Any]:
        """What an orchestrator reads of one tick (``freshloop tick --json``)."""
        d = self.decision
        return {"now": self.now, "decision": None if d is None else {"kind": d.kind, "reasons": list(d.reasons),
                                                                     "triggers": list(d.triggers), "guard": d.guard},
                "run_id": self.run_id, "run_failed": self.run_error is not None, "run_error": self.run_error,
                "deferred": self.deferred,
                "verdict": None if self.verdict is None else {"passed": self.verdict.passed,
                                                              "reason": self.verdict.reason},
                "registered": self.registered, "promoted": self.promoted, "refit": self.refit,
                "rolled_back": self.rolled_back, "rollout_action": self.rollout_action, "data_age": self.data_age,
                "window": self.window, "serving": self.serving, "recalled": self.recalled}


@dataclass
class Champion:
    """The version serving by default, its model and its lineage (online learning moves ``t_last`` and
    ``cutoff`` as the served model learns)."""

    version: int
    bundle: ModelBundle
    lineage: dict[str, Any]


@dataclass(frozen=True)
class RolloutCandidate:
    """The version a rollout in progress routes a share of requests to, or shadows."""

    version: int
    bundle: ModelBundle


def prediction_scores(preds: np.ndarray, proba: np.ndarray | None) -> np.ndarray:
    """One number per prediction for the monitor's output drift: the positive class's probability, the top
    probability of several classes, or the value itself."""
    if proba is not None:
        return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
    return np.asarray(preds, dtype=float)


class Context:
    """The stores and state every stage reads; built once by :class:`~freshloop.loop.Loop`."""

    def __init__(self, spec: LoopSpec, clock: Clock, *, actor: str, meta: MetadataStore, blobs: BlobStore,
                 data: DataStore, executor: Executor) -> None:
        self.spec, self.clock, self.actor = spec, clock, actor
        self.meta, self.blobs, self.data, self.executor = meta, blobs, data, executor
        self.registry = Registry(meta, blobs)
        self.events = EventLog(meta, clock)
        horizon = spec.data.label_horizon
        self.predictions = PredictionLog(blobs, horizon=parse_duration(horizon) if horizon else None)
        self.outcomes = OutcomeLog(blobs)  # what the monitor was fed of live quality, for a loop opened later
        self.stats = LoopStats()
        self.lock = threading.RLock()
        self.champion: Champion | None = None
        self.candidate: RolloutCandidate | None = None
        self.rollout: Rollout | None = None
        self._metric: Metric | None = None
        self._monitor: Monitor | None = None

    @property
    def schema(self) -> Schema | None:
        return self.data.schema

    @property
    def classes(self) -> list[Any]:
        return list(self.schema.classes or []) if self.schema is not None else []

    @property
    def metric(self) -> Metric:
        if self._metric is None:
            if self.schema is None:
                raise NotFoundError("no schema yet: ingest a first batch.", field="schema")
            self._metric = get_metric(self.spec.gate.metric or default_metric(self.schema.task), self.schema.task)
        return self._metric

    @property
    def metric_known(self) -> Metric | None:
        """The metric once the schema has fixed it, without fixing it."""
        return self._metric

    def monitor(self) -> Monitor:
        """Drift windows, live quality and the change detector (made once the schema is known)."""
        if self._monitor is None:
            assert self.schema is not None
            self._monitor = Monitor(self.schema, self.spec.policy.triggers, self.metric, self.spec.gate.confidence)
        return self._monitor

    @property
    def monitor_if_made(self) -> Monitor | None:
        return self._monitor

    def active_rollout(self) -> Rollout | None:
        return self.rollout if self.rollout is not None and self.rollout.active else None

    def champion_or_raise(self) -> Champion:
        if self.champion is None:
            raise NotFoundError("no champion yet: the loop has not trained a model that passed the gate.",
                                field="champion")
        return self.champion

    def saved_state(self, key: str, discarded: str, what: str) -> Any | None:
        """The state a stage saved under ``key`` (:meth:`save_state`); None when there is none, or when this
        machine's artifact key did not sign it: then it is not unpickled, and a ``discarded`` event says that
        ``what`` learns again from the stored labels."""
        if not self.blobs.exists(key):
            return None
        state = unpickle_signed(self.blobs.get_bytes(key))
        if state is None:
            self.events.record(discarded, f"the saved {what} is not signed with this machine's artifact key; it "
                               "learns again from the stored labels", {"key": key})
        return state

    def save_state(self, key: str, state: Any) -> None:
        """A stage's state for the loop opened next (an online model as it learned), signed."""
        self.blobs.put_bytes(key, signed_pickle(state))

    def typed_predictions(self, text: pd.Series) -> np.ndarray:
        """Predictions as the log's text gives them back, typed as the model returns them."""
        assert self.schema is not None
        if self.schema.task == "regression":
            return text.astype(float).to_numpy()
        lookup = {str(c): c for c in self.schema.classes or ()}
        return np.array([lookup.get(t, t) for t in text], dtype=object)

    def score(self, y: np.ndarray, answers: list[tuple[Any, np.ndarray | None]]) -> np.ndarray:
        """Per-row metric of logged answers (prediction, probabilities) against their labels, in one call."""
        preds = np.array([p for p, _ in answers])
        probas = [pr for _, pr in answers if pr is not None]
        proba = np.stack(probas) if len(probas) == len(answers) else None
        shares = self.champion.lineage.get("class_shares") if self.champion is not None else None
        return np.asarray(self.metric.per_row(y, preds, proba, self.classes, shares), dtype=float)
