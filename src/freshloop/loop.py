"""The loop: one pass through the stages per ``tick()``, on whatever clock it is given.

``freshloop replay`` drives it with a simulated clock over a historical stream; ``freshloop serve``
drives it with the wall clock behind HTTP. No code path here knows which one is running.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .clock import Clock, parse_duration
from .data.files import MalformedRow
from .data.schema import Schema
from .data.snapshot import Snapshot
from .data.store import DataStore, IngestResult
from .errors import ConflictError, NotFoundError, SpecError
from .evaluate.gate import Verdict, judge
from .evaluate.metrics import Metric, default_metric, get_metric
from .events import EventLog
from .labels import OutcomeLog, PredictionLog
from .monitor import Monitor, Signals
from .policy import CHANGE_TRIGGERS, Decision, Policy, PolicyState, Retrain, Skip, run_key
from .registry import Registry
from .rollout import Action, Rollout, Status, analyze_step, route_to_candidate
from .spec import LoopSpec, WindowSpec
from .store import open_stores
from .train import Candidate, Executor, ModelBundle, TrainingFailed, TrainRequest, make_executor, train_candidate
from .train.model import Rows

__all__ = ["Loop", "LoopStats", "PredictResult", "TickReport"]

_MAX_REFERENCE_ROWS = 5000


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


@dataclass(frozen=True)
class PendingRefit:
    """A gated fit serving while its refit on the whole snapshot (holdout included) is still to come."""

    version: int  # the gated fit's version, serving now
    candidate: Candidate
    decision: Retrain
    snapshot: Snapshot
    frame: pd.DataFrame  # the snapshot, as read
    run_id: str
    verdict_id: str


@dataclass(frozen=True)
class _Staged:
    """A version made ready to serve, not yet serving (see ``Loop._stage_champion``)."""

    version: int
    bundle: ModelBundle
    lineage: dict[str, Any]
    reference: pd.DataFrame | None  # the monitor's new reference rows (None before the schema is known)
    reference_scores: Any
    new: bool  # a promotion, not a loop opening again on its champion


@dataclass
class FeedbackResult:
    ingest: IngestResult
    at: list[float]  # when each matured row was predicted
    scores: list[float]  # per-row metric of what was served
    unmatched: list[str]  # labeled ids with no logged prediction


@dataclass
class TickReport:
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
    staleness: float | None = None
    run_error: str | None = None  # why this tick's training run failed
    deferred: str | None = None  # why this tick's retrain was not trained (no fair holdout yet)

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
                "rolled_back": self.rolled_back, "rollout_action": self.rollout_action, "staleness": self.staleness}


class Loop:
    """Ingest → validate → version → monitor → decide → train → gate → register → roll out."""

    def __init__(self, spec: LoopSpec, *, clock: Clock, executor: Executor | None = None, durable: bool = True,
                 actor: str = "loop", serve_before_refit: bool | None = None, data: DataStore | None = None) -> None:
        if spec.store.root is None:
            raise SpecError("store.root: required to open a loop (rule: a folder for data and artifacts).",
                            field="store.root")
        self.spec = spec
        self.clock = clock
        self._own_executor = executor is None  # made from the spec here, so shut down with the loop
        self.executor = executor or make_executor(spec.model.executor)
        self.actor = actor
        # With gate.refit: serve the gated fit at once and promote its refit when that is done (a server on the
        # wall clock), or serve the refit alone (a replay or a one-shot tick: no request would see the interim).
        # The caller says, or gate.serve_before_refit; unset, a clock that moves while the loop trains does.
        if serve_before_refit is None:
            serve_before_refit = spec.gate.serve_before_refit
        self.serve_before_refit = clock.moves_while_working if serve_before_refit is None else serve_before_refit
        self.on_promote: Callable[[int, str], None] | None = None  # (version, actor), after each alias move
        self._refit_due: PendingRefit | None = None
        self.meta, self.blobs = open_stores(spec.store.root, spec.store.url, durable=durable)
        # a data store of its own, or one several loops share (a replay of several policies stores the stream
        # once); the loop's registry, runs, decisions and events are always its own
        self.data = data if data is not None else DataStore(spec.name, spec.data, self.meta, self.blobs,
                                                            view_bytes=spec.store.view_mb * 2**20)
        self.registry = Registry(self.meta, self.blobs)
        self.events = EventLog(self.meta, clock)
        horizon = spec.data.label_horizon
        self.predictions = PredictionLog(self.blobs, horizon=parse_duration(horizon) if horizon else None)
        self.outcomes = OutcomeLog(self.blobs)  # what the monitor was fed of live quality, for a loop opened later
        self.stats = LoopStats()
        self.state = PolicyState()
        self.rollout: Rollout | None = None
        self.auto_promotion = True
        self._auto_rollbacks = 0
        self._champion: Champion | None = None
        self._candidate: RolloutCandidate | None = None
        self._monitor: Monitor | None = None
        self._online_queue: list[tuple[pd.DataFrame, pd.Series]] = []
        self._shadow_queue: list[tuple[Rows, list[str]]] = []
        self._last_trained_at: float | None = None
        # after a retrain for a detected change: (when, labels wanted) for one follow-up on the rows after it
        self._follow_up: tuple[float, int] | None = None
        self._snapshot_read: tuple[str, pd.DataFrame] | None = None  # the last run's snapshot, as read
        self._window: WindowSpec | None = None  # the follow-up's window, for the run it starts
        self._metric: Metric | None = None
        # What a request reads (champion, candidate, rollout, prediction log, monitor windows) is guarded
        # by this lock alone, held briefly: ingest, training and the gate run outside it, so a server can
        # answer predictions while its worker ingests or retrains.
        self._serving = threading.RLock()
        self._policies: dict[bool, Policy] = {}
        if self.policy.online and spec.model.mode == "full":
            self.spec = spec = spec.model_copy(update={"model": spec.model.model_copy(update={"mode": "online"})})
        self._restore()

    # -- state --------------------------------------------------------------------------------
    @property
    def schema(self) -> Schema | None:
        return self.data.schema

    @property
    def metric(self) -> Metric:
        if self._metric is None:
            if self.schema is None:
                raise NotFoundError("no schema yet: ingest a first batch.", field="schema")
            self._metric = get_metric(self.spec.gate.metric or default_metric(self.schema.task), self.schema.task)
        return self._metric

    @property
    def policy(self) -> Policy:
        """The spec's policy; its quality trigger knows which way is worse once the metric is known."""
        better = self._metric is None or self._metric.bigger_is_better
        if better not in self._policies:
            self._policies[better] = Policy.from_spec(self.spec.policy, bigger_is_better=better,
                                                      rows=self.spec.data.time is None)
        return self._policies[better]

    @property
    def champion_version(self) -> int | None:
        return self._champion.version if self._champion else None

    @property
    def champion_lineage(self) -> dict[str, Any]:
        """The serving version's lineage (snapshot, rows, gate score, newest arrival, promoted at)."""
        return dict(self._champion.lineage) if self._champion else {}

    def champion(self) -> ModelBundle:
        if self._champion is None:
            raise NotFoundError("no champion yet: the loop has not trained a model that passed the gate.",
                                field="champion")
        return self._champion.bundle

    def _restore(self) -> None:
        version = self.registry.alias("champion")
        if version is not None:
            moves = [m for m in self.meta.alias_history("champion") if m.new_version == version]
            self._set_champion(version, promoted_at=moves[-1].at if moves else None)
        if self.schema is not None:  # predictions served before a restart still meet their labels
            self.predictions.restore(lambda ids: ~self.data.has_label(ids), self.typed_predictions)
        self._follow_up = self._pending_follow_up()
        runs = self.meta.list_runs()
        if runs:
            self._last_trained_at = max(r["created_at"] for r in runs)
            self.state = PolicyState(retrain_times=tuple(r["created_at"] for r in runs))
        for row in self.meta.list_rollouts():
            if row["status"] in ("running", "awaiting_approval") and self._champion:
                spec = self.spec.rollout
                self.rollout = Rollout(row["id"], row["version"], row["champion_version"], row["strategy"],
                                       tuple(spec.steps), row["started_at"], row["step"], row["step_started_at"],
                                       row["status"], list(row["evidence"]))
                for k, v in self.outcomes.step_evidence(row["version"]).items():  # what the step gathered so far
                    setattr(self.rollout, k, v)
                self._candidate = RolloutCandidate(row["version"], self.registry.load(row["version"]))
                self._candidate.bundle.prepare()
        self._restore_policy_memory()

    def _policy_memory(self) -> dict[str, Any]:
        """What the policy needs from this tick at the next one, kept with the decision: its streaks and the
        drift it saw (a training run remembers it, so drift a retrain cannot remove is not re-alarmed)."""
        drift = self._monitor.last_drift if self._monitor is not None else {}
        return {"streaks": [list(s) for s in self.state.streaks], "drift": drift}

    def _restore_policy_memory(self) -> None:
        """Rebuild from the store what the monitor and the policy held in memory, so a loop opened by each
        CLI call, a restarted server and one long replay decide alike: the window of recent rows (drift), the
        labels since the last training run (volume and the min_new_labels guard), the streaks (hysteresis),
        the drift the last run was trained under, and the consecutive automatic rollbacks."""
        if self.schema is not None:
            mon = self._ensure_monitor()
            for frame in self.data.recent_batches(mon.drift_window):
                mon.observe_rows(frame)
            if self._champion is not None:  # its live quality, reference and detector, from the outcome log
                mon.restore_outcomes(*self.outcomes.current())
            lt = self.data.label_times()
            since = self._last_trained_at
            mon.new_labels = int(np.count_nonzero(np.isfinite(lt) & (lt > (-np.inf if since is None else since))))
            promoted_at = self._champion.lineage.get("promoted_at") if self._champion else None
            if since is not None and (promoted_at is None or since > promoted_at):  # trained, not yet promoted
                mon.drift_at_training = next(
                    (dict(d["state"].get("drift", {})) for d in reversed(self.meta.list_decisions("retrain"))
                     if d["at"] == since and d.get("state")), {})
        last = self.meta.last_decision()
        if last is not None and last.get("state"):
            self.state = PolicyState(self.state.retrain_times,
                                     tuple((str(k), int(v)) for k, v in last["state"].get("streaks", [])))
        events = sorted((e for kind in ("rollout_rolled_back", "alias_moved", "auto_promotion_resumed")
                         for e in self.meta.list_events(kind)), key=lambda e: e["id"])
        for e in events:
            if e["kind"] == "rollout_rolled_back":
                self._auto_rollbacks += bool(e["payload"].get("automatic"))
            elif e["kind"] == "auto_promotion_resumed" or e["payload"].get("automatic", True):
                self._auto_rollbacks = 0  # an automatic promotion, or the operator's that resumed them
        self.auto_promotion = self._auto_rollbacks < self.spec.rollout.max_auto_rollbacks

    def typed_predictions(self, text: pd.Series) -> np.ndarray:
        """Predictions as the log's text gives them back, typed as the model returns them."""
        assert self.schema is not None
        if self.schema.task == "regression":
            return text.astype(float).to_numpy()
        lookup = {str(c): c for c in self.schema.classes or ()}
        return np.array([lookup.get(t, t) for t in text], dtype=object)

    def _ensure_monitor(self) -> Monitor:
        if self._monitor is None:
            assert self.schema is not None
            self._monitor = Monitor(self.schema, self.spec.policy.triggers, self.metric, self.spec.gate.confidence)
        return self._monitor

    # -- data ---------------------------------------------------------------------------------
    def ingest(self, frame: pd.DataFrame, *, source: str = "api", batch_id: str | None = None,
               row_ids: list[str] | None = None, malformed: list[MalformedRow] | None = None,
               raw: bytes | None = None) -> IngestResult:
        """Validate and store a batch; ``malformed`` rows (that could not become rows of ``frame``) are
        quarantined with it, and ``raw``, the submission's bytes, is kept as it came."""
        res = self.data.ingest(frame, now=self.clock.now(), source=source, batch_id=batch_id, row_ids=row_ids,
                               malformed=malformed, raw=raw)
        self.observe_ingest(res)
        return res

    def ingest_file(self, path: str, *, source: str = "file", batch_id: str | None = None) -> IngestResult:
        res = self.data.ingest_file(path, now=self.clock.now(), source=source, batch_id=batch_id)
        self.observe_ingest(res)
        return res

    def observe_ingest(self, res: IngestResult) -> None:
        """What the loop makes of a batch its data store took: events, the monitor's windows, online rows.
        ``ingest`` calls it; a driver that stores a batch once for several loops calls it on each."""
        if res.replayed:
            return
        payload = res.to_dict()
        if res.accepted:
            self.events.record("batch_accepted", f"{res.accepted}/{res.submitted} rows accepted", payload)
        if res.quarantined:
            self.events.record("batch_quarantined", f"{res.quarantined}/{res.submitted} rows quarantined: "
                               + "; ".join(res.reasons[:3]), payload)
        if res.warnings:
            self.events.record("batch_warning", "; ".join(res.warnings[:3]), payload)
        acc = res.accepted_frame
        if acc is not None and len(acc) and self.schema is not None:
            with self._serving:
                mon = self._ensure_monitor()
                mon.observe_rows(acc)
                if self.schema.label in acc:
                    labeled = acc[acc[self.schema.label].notna()]
                    mon.new_labels += len(labeled)
                    if self.policy.online and len(labeled):
                        self._online_queue.append((self._learnable(labeled.assign(_label_time=labeled["_arrived"])),
                                                   labeled[self.schema.label]))

    def feedback(self, row_ids: list[str], labels: list[Any], *, source: str = "feedback",
                 batch_id: str | None = None) -> FeedbackResult:
        """Labels for earlier predictions: joined to the log, scored, and stored as training data."""
        res = self.data.ingest_labels(row_ids, labels, now=self.clock.now(), source=source, batch_id=batch_id)
        return self.observe_labels(row_ids, res)

    def observe_labels(self, row_ids: list[str], res: IngestResult) -> FeedbackResult:
        """Labels the data store took, joined to this loop's prediction log and scored; ``feedback`` calls it,
        as ``ingest`` calls ``observe_ingest``."""
        self.score_shadow()  # deferred shadow answers must be in the log before their labels are joined
        out = FeedbackResult(res, [], [], [])
        if res.replayed:
            return out
        if res.quarantined:
            self.events.record("labels_quarantined", f"{res.quarantined} labels quarantined: "
                               + "; ".join(res.reasons[:3]), res.to_dict())
        assert self.schema is not None
        classes = list(self.schema.classes or [])
        # the join uses the labels just accepted, typed, whether or not their rows are ingested yet
        acc = res.accepted_frame
        typed = dict(zip(acc["_row_id"], acc["_label"], strict=True)) if acc is not None else {}
        with self._serving:
            mon = self._ensure_monitor()
            mon.new_labels += res.accepted
            matured = [(r, rec) for r in row_ids if r in typed and (rec := self.predictions.pop(r)) is not None]
            served_ok = [r for r, _ in matured]
            if matured:
                recs = [rec for _, rec in matured]
                y = np.array([typed[r] for r in served_ok])
                scores = self._score(y, [(rec.pred, rec.proba) for rec in recs], classes)
                out.at.extend(rec.at for rec in recs)
                out.scores.extend(float(v) for v in scores)
                champ = self.champion_version
                # the champion's scores, in label order (the detector is order-sensitive)
                champ_scores, keep = scores.copy(), np.array([rec.version == champ for rec in recs])
                r = self.rollout if self.rollout and self.rollout.active else None
                if r is not None and r.champion_version is not None:
                    cv, hv = r.version, r.champion_version
                    both = [i for i, rec in enumerate(recs) if rec.at >= r.step_started_at
                            and {cv, hv} <= {rec.version, *rec.alternatives}]
                    if both:
                        cs, hs = (self._score(y[both], [recs[i].alternatives.get(v, (recs[i].pred, recs[i].proba))
                                                        for i in both], classes) for v in (cv, hv))
                        for c_, h_ in zip(cs, hs, strict=True):
                            r.observe(float(c_), float(h_))
                        self.outcomes.step_pairs(r.version, self.clock.now(), cs, hs)
                        if hv == champ:  # rows the candidate served still tell how the champion does
                            champ_scores[both], keep[both] = hs, True
                mon.observe_outcomes(champ_scores[keep], 0)
                if champ is not None:
                    self.outcomes.append(champ, self.clock.now(), champ_scores[keep])
        scored = set(served_ok)
        out.unmatched = [r for r in row_ids if r not in scored]
        if res.accepted:
            self.events.record("labels_accepted", f"{res.accepted}/{res.submitted} labels accepted; "
                               f"{len(served_ok)} joined to served predictions and scored",
                               {"batch_id": res.batch_id, "accepted": res.accepted, "scored": len(served_ok),
                                "relabeled": res.relabeled})
        if res.relabeled:
            ex = ", ".join(f"{e['row_id']}: {e['before']!r} -> {e['after']!r}" for e in res.relabel_examples)
            self.events.record("labels_relabeled", f"{res.relabeled} rows had a label already; the newest counts "
                               f"and the earlier stay stored (e.g. {ex})",
                               {"batch_id": res.batch_id, "relabeled": res.relabeled,
                                "examples": res.relabel_examples})
        if self.policy.online and served_ok:
            rows = self.data.labeled_rows(served_ok)
            if len(rows):
                self._online_queue.append((self._learnable(rows), rows["_label"]))
        return out

    def _learnable(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What online learning reads of a labeled frame: the features, when the row happened and when its
        label matured (the same columns from every source, so queued frames stack without filling)."""
        assert self.schema is not None
        return frame[[f.name for f in self.schema.features if f.name in frame] + ["_time", "_label_time"]]

    # -- serving ------------------------------------------------------------------------------
    def predict(self, frame: Rows, *, row_ids: list[str] | None = None, keys: list[str] | None = None,
                defer_shadow: bool = False) -> PredictResult:
        """Predictions from the serving model(s); logged for the label join. Routing is by key.

        With ``defer_shadow`` a shadow candidate scores the rows later (:meth:`score_shadow`), off the
        request path; its answers are only ever logged.
        """
        with self._serving:
            out = self._predict(frame, row_ids, keys, defer_shadow)
        if self.predictions.due:
            self.flush()
        return out

    def _predict(self, frame: Rows, row_ids: list[str] | None, keys: list[str] | None,
                 defer_shadow: bool) -> PredictResult:
        if self._champion is None:
            raise NotFoundError("no champion yet: the loop has not trained a model that passed the gate.",
                                field="champion")
        now = self.clock.now()
        if row_ids is None:
            base = hashlib.sha256(f"{now}:{self.predictions.pending}:{id(frame)}".encode()).hexdigest()[:12]
            row_ids = [f"p-{base}-{i}" for i in range(len(frame))]
        champ_v, champ = self._champion.version, self._champion.bundle
        started = time.perf_counter()
        preds, proba = champ.predict(frame)
        champ_seconds = time.perf_counter() - started
        versions = np.full(len(frame), champ_v)
        self._ensure_monitor().observe_rows(pd.DataFrame(), self._pred_score(preds, proba))
        r = self.rollout if self.rollout and self.rollout.active and self._candidate else None
        if r is None or (defer_shadow and r.share == 0):
            self.predictions.log(row_ids, now, champ_v, preds, proba, versions, {})
            if r is not None:
                self._shadow_queue.append((frame, row_ids))
            return PredictResult(row_ids, preds, proba, versions, now)
        assert self._candidate is not None
        cand_v, cand = self._candidate.version, self._candidate.bundle
        started = time.perf_counter()
        try:
            c_preds, c_proba = cand.predict(frame)
        except Exception as e:  # a failing candidate never fails a request: the champion answers
            self._candidate_failed(r, len(frame), e, now)
            self.predictions.log(row_ids, now, champ_v, preds, proba, versions, {})
            return PredictResult(row_ids, preds, proba, versions, now)
        cand_seconds = time.perf_counter() - started
        r.observe_latency(cand_seconds, champ_seconds)
        self.outcomes.step_latency(r.version, now, cand_seconds, champ_seconds)
        routed = route_to_candidate(keys or row_ids, r.share)
        served = np.where(routed, c_preds, preds)
        served_proba = None if proba is None or c_proba is None else np.where(routed[:, None], c_proba, proba)
        versions = np.where(routed, cand_v, champ_v)
        # the log keeps both answers, so either side can be scored when the label matures
        self.predictions.log(row_ids, now, champ_v, served, served_proba, versions,
                             {cand_v: (c_preds, c_proba), champ_v: (preds, proba)})
        return PredictResult(row_ids, served, served_proba, versions, now)

    def _candidate_failed(self, r: Rollout, rows: int, error: Exception, now: float) -> None:
        r.errors += rows
        r.last_error = f"{type(error).__name__}: {error}"[:500]
        self.outcomes.step_errors(r.version, now, rows, r.last_error)

    def score_shadow(self) -> int:
        """Score deferred shadow rows with the candidate and attach its answers to the log; returns rows.

        The candidate scores outside the serving lock; its answers are attached under it."""
        with self._serving:
            queue, self._shadow_queue = self._shadow_queue, []
            r = self.rollout
            if r is None or not r.active or self._candidate is None or self._champion is None:
                return 0
            cand_v, cand = self._candidate.version, self._candidate.bundle
            champ_v = self._champion.version
        answers = []
        for frame, ids in queue:
            try:
                answers.append((ids, *cand.predict(frame)))
            except Exception as e:
                with self._serving:
                    self._candidate_failed(r, len(frame), e, self.clock.now())
        with self._serving:
            if self._candidate is None or self._candidate.version != cand_v:
                return 0  # the rollout ended meanwhile
            return self._attach_shadow(answers, cand_v, champ_v)

    def _attach_shadow(self, answers: list[tuple[list[str], np.ndarray, np.ndarray | None]], cand_v: int,
                       champ_v: int) -> int:
        done = 0
        for ids, c_preds, c_proba in answers:
            for i, rid in enumerate(ids):
                rec = self.predictions.get(rid)
                if rec is not None and rec.version == champ_v:
                    rec.alternatives[cand_v] = (c_preds[i], None if c_proba is None else c_proba[i])
                    rec.alternatives[champ_v] = (rec.pred, rec.proba)
                    done += 1
        return done

    def _score(self, y: np.ndarray, answers: list[tuple[Any, np.ndarray | None]], classes: list[Any]) -> np.ndarray:
        """Per-row metric of logged answers (prediction, probabilities) against their labels, in one call."""
        preds = np.array([p for p, _ in answers])
        probas = [pr for _, pr in answers if pr is not None]
        proba = np.stack(probas) if len(probas) == len(answers) else None
        return np.asarray(self.metric.per_row(y, preds, proba, classes), dtype=float)

    @staticmethod
    def _pred_score(preds: np.ndarray, proba: np.ndarray | None) -> np.ndarray:
        if proba is not None:
            return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
        return np.asarray(preds, dtype=float)

    # -- the tick -----------------------------------------------------------------------------
    def tick(self) -> TickReport:
        now = self.clock.now()
        report = TickReport(now)
        if self.schema is None:
            report.decision = Skip("bootstrap: no data yet", guard="bootstrap")
            return report
        with self._serving:  # the decision reads what requests write; training runs after, outside the lock
            decision = self._decide(now, report)
        report.decision = decision
        self.meta.add_decision(now, decision.kind, getattr(decision, "run_key", None), list(decision.reasons),
                               self._policy_memory(), triggers=list(decision.triggers), guard=decision.guard)
        if isinstance(decision, Retrain):
            self.events.record("decision_retrain", "; ".join(decision.reasons),
                               {"run_key": decision.run_key, "triggers": list(decision.triggers)})
            self._retrain(decision, now, report)
            if self._refit_due is not None:
                report.refit = self.finish_refit()
                if report.refit is not None and self.champion_version == report.refit:
                    report.promoted = report.refit
        return report

    def _decide(self, now: float, report: TickReport) -> Decision:
        self.predictions.expire(now)  # predictions past the label horizon stop waiting, even when none are served
        self._apply_online(now)
        if self.rollout and self.rollout.active:
            self._advance_rollout(now, report)
        mon = self._ensure_monitor()
        decision: Decision
        if self._champion is None:
            labeled = self._labeled_rows()
            need = 2 * self.spec.gate.min_holdout_rows
            if self.meta.find_run(run_key("bootstrap", now)):
                decision = Skip("bootstrap: already tried at this time", guard="bootstrap")
            elif labeled >= need:
                decision = Retrain(run_key("bootstrap", now), (f"bootstrap: no champion yet; {labeled} labeled rows",),
                                   triggers=("bootstrap",))
            else:
                decision = Skip(f"bootstrap: {labeled} labeled rows < {need} needed for a first model",
                                guard="bootstrap")
        else:
            signals = mon.signals(now, last_trained_at=self._last_trained_at,
                                  champion_since=self._champion.lineage.get("promoted_at"))
            report.signals = signals
            decision = self.policy.decide(signals, self.state)
            self.state = PolicyState(self.state.retrain_times, decision.streaks)
            follow = self._follow_up_due(now)
            if follow is None and self._follow_up is not None and isinstance(decision, Retrain) \
                    and decision.answers_change:
                # the model still trains mostly on rows from before the change it answered: a second change
                # signal now is most likely the same change; the follow-up will train on the rows after it
                since, need = self._follow_up
                decision = decision.held("follow-up pending", f"follow-up pending: the change found at {since:g} is "
                                         f"answered once {need} labels have matured since")
            if follow is not None:  # its window (the rows after the change) applies to this tick's run
                decision = decision.also("follow-up", follow) if isinstance(decision, Retrain) \
                    else Retrain(run_key("follow-up", now), (follow,), decision.streaks, ("follow-up",))
            if isinstance(decision, Retrain) and self.rollout and self.rollout.active:
                decision = decision.held("rollout in progress", f"rollout of version {self.rollout.version} in "
                                         "progress")
            report.staleness = now - float(self._champion.lineage.get("t_last") or now)
        return decision

    def _follow_up_size(self) -> int:
        rows = self.spec.model.window.rows or 0
        return max(2 * self.spec.gate.min_holdout_rows, rows // 4)

    def _pending_follow_up(self) -> tuple[float, int] | None:
        """The follow-up a restart would otherwise forget, read back from the decision log: the latest
        retrain for a detected change that no later follow-up has answered."""
        if not self.spec.model.window.rows:
            return None
        since = None
        for d in self.meta.list_decisions("retrain"):
            triggers = d["triggers"] or []
            if "follow-up" in triggers:
                since = None
            if triggers and triggers[0] in CHANGE_TRIGGERS:
                since = float(d["at"])
        return None if since is None else (since, self._follow_up_size())

    def _follow_up_due(self, now: float) -> str | None:
        """A retrain for a detected change trains mostly on rows from before it (the window reaches back).
        Once enough labels have matured since, one follow-up trains on the rows after the change alone."""
        if self._follow_up is None or (self.rollout and self.rollout.active):
            return None  # a rollout in progress: the follow-up waits for it
        since, need = self._follow_up
        lt = self.data.label_times()
        have = int(np.count_nonzero((lt > since) & (lt <= now)))
        if have < need:
            return None
        self._follow_up = None
        self._window = WindowSpec(period=now - since)  # seconds, as a number: no text to parse back
        return (f"follow-up: {have} labels since the change found at {since:g} (>= {need}); "
                f"training on the rows after it")

    def _labeled_rows(self) -> int:
        return int(np.isfinite(self.data.label_times()).sum())

    def _apply_online(self, now: float) -> None:
        if not self.policy.online or self._champion is None or not self._online_queue:
            return
        frames = pd.concat([f for f, _ in self._online_queue], ignore_index=True)
        y = pd.concat([y for _, y in self._online_queue], ignore_index=True)
        self._online_queue = []
        self._champion.bundle.learn(frames, y)
        # the served model now holds these rows: staleness and data-to-deploy move with them
        lineage = self._champion.lineage
        lineage["t_last"] = max(float(frames["_time"].max()), float(lineage.get("t_last") or 0))
        labeled_at = frames["_label_time"].max() if "_label_time" in frames else np.nan
        cutoff = float(labeled_at) if np.isfinite(labeled_at) else now
        lineage["cutoff"] = max(cutoff, float(lineage.get("cutoff") or cutoff))
        self.stats.deployments.append((now, cutoff))
        self.stats.online_rows += len(y)
        self.stats.train_rows += len(y)

    def _retrain(self, decision: Retrain, now: float, report: TickReport) -> None:
        spec = self.spec
        assert self.schema is not None
        if self.meta.find_run(decision.run_key):  # the same tick ran before (a restart): runs are idempotent
            self.events.record("run_exists", f"run {decision.run_key} was already trained; not training it twice",
                               {"run_key": decision.run_key})
            return
        run_id = "run-" + hashlib.sha256(decision.run_key.encode()).hexdigest()[:12]
        report.run_id = run_id
        window, self._window = self._window or spec.model.window, None
        snap = self.data.snapshot(window, cutoff=now, now=now)
        interim = bool(spec.model.window.rows) and decision.answers_change
        if interim:  # a follow-up on the rows after the change will replace this run's model
            self._follow_up = (now, self._follow_up_size())  # kept in the decision log too (a restart reads it)
        frame = self.data.read_snapshot(snap)
        self._snapshot_read = (snap.id, frame)  # promoting this run's model reads its snapshot again: kept
        n = len(frame)
        n_hold = int(np.clip(round(spec.gate.holdout * n), spec.gate.min_holdout_rows, spec.gate.max_holdout_rows))
        self._last_trained_at = now
        self.state = PolicyState(self.state.retrain_times + (now,), self.state.streaks)
        with self._serving:
            self._ensure_monitor().trained()
            self.outcomes.detector_restarted(now)
        if n - n_hold < spec.gate.min_holdout_rows:
            self._fail_run(run_id, decision, snap, now, f"snapshot {snap.id} has {n} labeled rows; need "
                           f"{n_hold} to judge and {spec.gate.min_holdout_rows} to train", report)
            return
        # The holdout is the newest rows the champion was not fitted on: a model scored on rows it learned
        # is scored in-sample, and a fresher candidate would lose to it for that alone.
        unseen = np.flatnonzero(~self._champion_saw(frame))
        in_hold = np.zeros(n, dtype=bool)
        in_hold[unseen[-n_hold:]] = True
        seen_newest = n_hold - int(in_hold[n - n_hold:].sum())  # of the newest n_hold rows, those it was fitted on
        if in_hold.sum() < spec.gate.min_holdout_rows:
            self._defer_run(run_id, decision, snap, now, f"not trained: the champion was fitted on all but "
                            f"{len(unseen)} of the {n} labeled rows of snapshot {snap.id}, and the gate needs "
                            f"{spec.gate.min_holdout_rows} rows neither model has seen to compare them; the "
                            "champion keeps serving until more labels arrive", report)
            return
        train, hold = frame[~in_hold], frame[in_hold].reset_index(drop=True)
        mode = spec.model.mode
        base = None
        if mode in ("warm_start", "online") and self._champion is not None:
            base = self._champion.bundle
            t_last = self._champion.lineage.get("t_last")
            if t_last is not None:
                train = train[train["_time"] > t_last]
        req = TrainRequest(decision.run_key, snap.id, self.schema, spec.model.estimator, spec.model.params,
                           mode, spec.model.seed, spec.model.scale, train.reset_index(drop=True), base)
        try:
            cand: Candidate = self.executor.submit(train_candidate, req).result()
        except TrainingFailed as e:
            self._fail_run(run_id, decision, snap, now, str(e), report)
            return
        self.stats.retrains += 1
        self.stats.train_rows += cand.train_rows
        self.stats.train_seconds += cand.train_seconds
        cand.lineage.update({"t_last": float(train["_time"].max()) if len(train) else snap.t_last,
                             "cutoff": float(train["_label_time"].max()) if "_label_time" in train and len(train)
                             else now,
                             "newest_arrival": snap.newest_arrival, "reasons": list(decision.reasons)})
        self.meta.add_run(dict(id=run_id, run_key=decision.run_key, snapshot_id=snap.id, mode=mode,
                               status="trained", lineage=cand.lineage, train_rows=cand.train_rows,
                               train_seconds=cand.train_seconds, created_at=now))
        self.events.record("run_trained", f"{cand.train_rows} rows from snapshot {snap.id}",
                           {"run_id": run_id, "snapshot_id": snap.id, "mode": mode})
        verdict = self._judge(cand.bundle, train, hold, seen_newest)
        report.verdict = verdict
        verdict_id = "v-" + run_id[4:]
        self.meta.add_verdict(verdict_id, run_id, verdict.passed, {**verdict.to_dict(), "snapshot_id": snap.id}, now)
        self.events.record("verdict", ("passed: " if verdict.passed else "rejected: ") + verdict.reason,
                           {"run_id": run_id, "verdict_id": verdict_id, "passed": verdict.passed})
        if not verdict.passed:
            self.stats.gate_failed += 1
            return
        self.stats.gate_passed += 1
        cand.lineage["gate_score"] = verdict.candidate_score
        # A model a follow-up will soon replace is not refitted: a second full fit for a short stay (on the
        # synthetic benchmark streams: a fifth to a quarter fewer training rows, at most 0.11 points less)
        refit = spec.gate.refit and mode == "full" and not interim
        # Serving first: the gated fit serves as soon as it is judged and the refit replaces it when done, so
        # the newest data is not held back by a second fit. Only for an immediate promotion: a staged rollout
        # gathers its evidence on the version that will stay.
        serve_first = refit and self.serve_before_refit and self.auto_promotion and (
            self._champion is None or spec.rollout.strategy == "immediate")
        if serve_first and "_arrived" in train and len(train):
            cand.lineage["newest_arrival"] = float(train["_arrived"].max())  # the holdout is not in this fit
        elif refit and not serve_first:
            cand = self._refit(cand, decision, snap, frame, run_id)
        mv = self.registry.register(cand.bundle, run_id=run_id, verdict_id=verdict_id, lineage=cand.lineage, now=now)
        report.registered = mv.version
        self.events.record("model_registered", f"version {mv.version} from {run_id}",
                           {"version": mv.version, "sha256": mv.artifact_sha256})
        self._start_rollout(mv.version, now, report, verdict.reason)
        if serve_first and report.promoted == mv.version:
            self._refit_due = PendingRefit(mv.version, cand, decision, snap, frame, run_id, verdict_id)

    def _refit(self, cand: Candidate, decision: Retrain, snap: Snapshot, frame: pd.DataFrame,
               run_id: str) -> Candidate:
        """The gated candidate's settings fitted again on the whole snapshot (holdout included); the gated fit
        itself if that fails."""
        spec = self.spec
        assert self.schema is not None
        full = TrainRequest(decision.run_key, snap.id, self.schema, spec.model.estimator, spec.model.params,
                            spec.model.mode, spec.model.seed, spec.model.scale, frame, None)
        try:
            refit: Candidate = self.executor.submit(train_candidate, full).result()
        except TrainingFailed as e:
            self.events.record("refit_failed", f"{e}; serving the gated fit", {"run_id": run_id})
            return cand
        self.stats.train_rows += refit.train_rows
        self.stats.train_seconds += refit.train_seconds
        return Candidate(refit.bundle, {**cand.lineage, "refit_rows": refit.train_rows, "t_last": snap.t_last,
                                        "cutoff": snap.cutoff, "newest_arrival": snap.newest_arrival},
                         cand.train_rows, cand.train_seconds)

    def finish_refit(self) -> int | None:
        """Fit the version that is serving again on its whole snapshot, register that as the next version and
        promote it if the first is still the champion; ``tick()`` does this right after serving a gated fit
        when ``serve_before_refit`` is set. Returns the refit's version, if one was registered."""
        due, self._refit_due = self._refit_due, None
        if due is None:
            return None
        version, snap, frame, run_id = due.version, due.snapshot, due.frame, due.run_id
        refit = self._refit(due.candidate, due.decision, snap, frame, run_id)
        if refit is due.candidate:
            return None
        now = self.clock.now()
        mv = self.registry.register(refit.bundle, run_id=run_id, verdict_id=due.verdict_id,
                                    lineage={**refit.lineage, "refit_of": version}, now=now)
        self.events.record("model_registered", f"version {mv.version}: version {version} refitted on all "
                           f"{len(frame)} rows of snapshot {snap.id}",
                           {"version": mv.version, "sha256": mv.artifact_sha256, "refit_of": version})
        if self.champion_version != version or (self.rollout and self.rollout.active):
            self.events.record("refit_not_promoted", f"version {version} no longer serves alone; version "
                               f"{mv.version} stays registered", {"version": mv.version})
            return mv.version
        self.promote(mv.version, actor=self.actor, reason=f"refit of version {version} on the whole snapshot "
                     f"{snap.id} (holdout included)")
        return mv.version

    def _fail_run(self, run_id: str, decision: Retrain, snap: Snapshot, now: float, why: str,
                  report: TickReport) -> None:
        report.run_error = why
        self.stats.failed_runs += 1
        if self.stats.first_failure is None:
            self.stats.first_failure = why
        self._untrained_run(run_id, decision, snap, now, "failed", {"error": why})

    def _champion_saw(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows of ``frame`` the champion may have been fitted on: those no later than its newest
        training row and labeled by its training cutoff (its lineage; a row labeled after the cutoff was not in
        its snapshot, however old). Without that lineage, none are taken as seen."""
        seen = np.zeros(len(frame), dtype=bool)
        lineage = self._champion.lineage if self._champion is not None else {}
        if lineage.get("t_last") is None:
            return seen
        seen = frame["_time"].to_numpy(dtype=float) <= float(lineage["t_last"])
        if lineage.get("cutoff") is not None and "_label_time" in frame:
            seen &= frame["_label_time"].to_numpy(dtype=float) <= float(lineage["cutoff"])
        return seen

    def _defer_run(self, run_id: str, decision: Retrain, snap: Snapshot, now: float, why: str,
                   report: TickReport) -> None:
        report.deferred = why
        self.stats.deferred_runs += 1
        self._untrained_run(run_id, decision, snap, now, "deferred", {"reason": why})

    def _untrained_run(self, run_id: str, decision: Retrain, snap: Snapshot, now: float, status: str,
                       lineage: dict[str, str]) -> None:
        """A run that produced no model (failed or deferred): its row, so a restart counts it, and its event."""
        self.meta.add_run(dict(id=run_id, run_key=decision.run_key, snapshot_id=snap.id, mode=self.spec.model.mode,
                               status=status, lineage=lineage, train_rows=0, train_seconds=0.0, created_at=now))
        self.events.record(f"run_{status}", next(iter(lineage.values())), {"run_id": run_id, "snapshot_id": snap.id})

    def _judge(self, cand: ModelBundle, train: pd.DataFrame, hold: pd.DataFrame, seen: int = 0) -> Verdict:
        assert self.schema is not None
        metric = self.metric
        classes = list(self.schema.classes or [])
        y = cand._target(hold["_label"]).to_numpy()
        p, pr = cand.predict(hold)
        cand_rows = metric.per_row(y, p, pr, classes)
        champ_rows = None
        if self._champion is not None:
            hp, hpr = self._champion.bundle.predict(hold)
            champ_rows = metric.per_row(y, hp, hpr, classes)
        base_rows = None
        if champ_rows is None:  # a first model must beat a constant: the majority class, or the mean
            ytrain = cand._target(train["_label"]) if len(train) else pd.Series(y)
            if self.schema.task == "classification":
                freq = np.array([(ytrain == c).mean() for c in classes])
                bp = np.full(len(y), classes[int(freq.argmax())], dtype=object).astype(type(classes[0]))
                base_rows = metric.per_row(y, bp, np.tile(freq, (len(y), 1)), classes)
            else:
                base_rows = metric.per_row(y, np.full(len(y), float(ytrain.mean())), None, classes)
        return judge(self.spec.gate, metric, hold, y, cand_rows, champ_rows, base_rows, seed=self.spec.model.seed,
                     champion_seen=seen)

    # -- rollout and aliases ------------------------------------------------------------------
    def _start_rollout(self, version: int, now: float, report: TickReport, why: str) -> None:
        strategy = self.spec.rollout.strategy
        if self._champion is not None and not self.auto_promotion:
            self.events.record("promotion_held", f"version {version} passed the gate but automatic promotion is "
                               f"stopped after {self._auto_rollbacks} consecutive rollbacks", {})
            return
        if self._champion is None or strategy == "immediate":
            self.promote(version, actor=self.actor, reason=f"gate passed: {why}")
            report.promoted = version
            return
        rid = f"ro-{version}"
        bundle = self.registry.load(version)
        bundle.prepare()  # compiled before it takes traffic, so no request waits for it
        with self._serving:
            self.rollout = Rollout(rid, version, self._champion.version, strategy, tuple(self.spec.rollout.steps), now)
            self._candidate = RolloutCandidate(version, bundle)
            self.outcomes.step_started(version, now)
        self.registry.set_alias(strategy, version, actor=self.actor, reason=f"rollout {rid} started", now=now)
        self.meta.save_rollout(self.rollout.to_row(now))
        self.events.record("rollout_started", f"{strategy} of version {version} against champion "
                           f"{self._champion.version}", {"rollout_id": rid, "version": version})

    def _advance_rollout(self, now: float, report: TickReport) -> None:
        r = self.rollout
        assert r is not None
        if r.status == "awaiting_approval":
            return
        out = analyze_step(r, self.spec.rollout, self.spec.gate, self.metric, now, seed=self.spec.model.seed)
        report.rollout_action = out.action
        if out.action == "wait":
            return
        r.evidence.append({"step": r.step, "share": r.share, "action": out.action, "detail": out.detail,
                           **out.evidence, "at": now})
        if out.action == "abort":
            self._end_rollout(r, "rolled_back", now, f"rollout {r.id} aborted at {r.share:g}%: {out.detail}",
                              automatic=True)
            report.rolled_back = r.version
            self.stats.rollbacks += 1
            self._auto_rollbacks += 1
            if self._auto_rollbacks >= self.spec.rollout.max_auto_rollbacks and self.auto_promotion:
                self.auto_promotion = False
                self.events.record("auto_promotion_stopped", f"{self._auto_rollbacks} consecutive automatic "
                                   "rollbacks; an operator must promote the next version", {})
            return
        if out.action == "continue":
            r.next_step(now)
            self.outcomes.step_started(r.version, now)
            if self.spec.rollout.manual_approval and r.step == len(r.steps) - 1:
                r.status = "awaiting_approval"
            self.meta.save_rollout(r.to_row(now))
            self.events.record("rollout_step", f"rollout {r.id} to {r.share:g}%: {out.detail}",
                               {"rollout_id": r.id, "step": r.step})
            return
        self.promote(r.version, actor=self.actor, reason=f"rollout {r.id} passed: {out.detail}")
        self._end_rollout(r, "promoted", now, f"rollout {r.id} promoted version {r.version}")
        report.promoted = r.version

    def _end_rollout(self, r: Rollout, status: Status, now: float, reason: str, *, automatic: bool = False) -> None:
        with self._serving:
            r.status = status
            self._candidate = None
        self.meta.save_rollout(r.to_row(now))
        if self.registry.alias(r.strategy) == r.version:
            self.registry.set_alias(r.strategy, None, actor=self.actor, reason=reason, now=now)
        self.events.record("rollout_" + status, reason, {"rollout_id": r.id, "version": r.version,
                                                         "automatic": automatic})
        if status == "rolled_back":
            self.registry.forget(r.version)

    def approve(self, rollout_id: str, *, actor: str, reason: str) -> None:
        r = self.rollout
        if r is None or r.id != rollout_id or r.status != "awaiting_approval":
            raise NotFoundError(f"no rollout {rollout_id!r} awaiting approval.", field="rollout_id", value=rollout_id)
        with self._serving:
            r.status = "running"
        self.meta.save_rollout(r.to_row(self.clock.now()))
        self.events.record("rollout_approved", reason, {"rollout_id": r.id}, actor=actor)

    def promote(self, version: int, *, actor: str, reason: str) -> bool:
        """Make ``version`` the champion: loaded and made ready to serve first (a version that cannot serve
        leaves the champion where it was), then one compare-and-set alias move. Returns False, with nothing
        recorded as a move, when ``version`` already is the champion (an operator's confirmation still resumes
        automatic promotion after consecutive rollbacks stopped it)."""
        now = self.clock.now()
        old, rev = self.meta.get_alias("champion")
        automatic = actor == self.actor
        if old == version:
            if not automatic:
                self._resume_auto_promotion(version, actor)
            return False
        staged = self._stage_champion(version, self.registry.load(version))
        self.registry.set_alias("champion", version, actor=actor, reason=reason, now=now, expected_revision=rev)
        self._install_champion(staged)
        self.stats.promotions += 1
        if automatic:
            self._auto_rollbacks = 0
        else:
            self._resume_auto_promotion(version, actor)
        lineage = self._champion.lineage if self._champion else {}
        if lineage.get("cutoff") is not None:
            self.stats.deployments.append((now, float(lineage["cutoff"])))
        self.events.record("alias_moved", reason, {"alias": "champion", "from": old, "to": version,
                                                        "serving": staged.bundle.serving, "automatic": automatic},
                           actor=actor)
        if self.on_promote is not None:
            self.on_promote(version, actor)
        return True

    def _resume_auto_promotion(self, version: int, actor: str) -> None:
        """The operator's promotion the stop asked for: the loop may promote again."""
        if not self.auto_promotion:
            self.auto_promotion, self._auto_rollbacks = True, 0
            self.events.record("auto_promotion_resumed", f"{actor} promoted version {version}; automatic "
                               "promotion resumes", {"version": version}, actor=actor)

    def rollback(self, *, actor: str, reason: str) -> int:
        """Abort an active rollout, or move the champion back to the version it replaced."""
        now = self.clock.now()
        if self.rollout and self.rollout.active:
            r = self.rollout
            self._end_rollout(r, "rolled_back", now, f"operator rollback: {reason}")
            self.stats.rollbacks += 1
            return int(r.champion_version or 0)
        current = self.registry.alias("champion")
        target = self._replaced_by(current)
        # a refit's gated fit served only while the refit trained: back is the champion before both
        while target is not None and current is not None and \
                self.registry.get(current).lineage.get("refit_of") == target:
            current, target = target, self._replaced_by(target)
        if target is None:
            raise ConflictError("no earlier champion to roll back to.", field="champion", rule="history")
        self.promote(target, actor=actor, reason=f"rollback: {reason}")
        self.stats.rollbacks += 1
        return target

    def _replaced_by(self, version: int | None) -> int | None:
        """The champion that ``version`` replaced when it was last promoted."""
        previous = [m.old_version for m in self.registry.history("champion")
                    if m.new_version == version and m.old_version != version]  # not a promotion that moved nothing
        return previous[-1] if version is not None and previous else None

    def _set_champion(self, version: int, bundle: ModelBundle | None = None, *,
                      promoted_at: float | None = None) -> None:
        self._install_champion(self._stage_champion(version, bundle or self.registry.load(version),
                                                    promoted_at=promoted_at))

    def _stage_champion(self, version: int, bundle: ModelBundle, *, promoted_at: float | None = None) -> _Staged:
        """Everything a version needs before it serves: compiled, its lineage read, the monitor's reference
        rows read and scored. A version that fails here never serves; requests wait only for the swap."""
        bundle.prepare()  # compiled before it takes traffic, so no request waits for it
        lineage = dict(self.registry.get(version).lineage)
        # a loop opened later reads when its champion was promoted from the alias history, not its own clock
        lineage["promoted_at"] = self.clock.now() if promoted_at is None else promoted_at
        if self.schema is None:
            return _Staged(version, bundle, lineage, None, None, promoted_at is None)
        ref = pd.DataFrame()
        snap_id = lineage.get("snapshot_id")
        kept, self._snapshot_read = self._snapshot_read, None
        if kept is not None and kept[0] == snap_id:
            ref = kept[1]
        elif snap_id:
            try:
                body = self.data.meta.get_snapshot(snap_id)["body"]
                ref = self.data.read_snapshot(Snapshot(**{**body, "batch_ids": tuple(body["batch_ids"]),
                                                          "label_batch_ids": tuple(body["label_batch_ids"])}))
            except NotFoundError:
                ref = pd.DataFrame()
        ref = ref.iloc[-_MAX_REFERENCE_ROWS:]
        ref_pred = None
        if len(ref):
            p, pr = bundle.predict(ref)
            ref_pred = self._pred_score(p, pr)
        return _Staged(version, bundle, lineage, ref, ref_pred, promoted_at is None)

    def _install_champion(self, staged: _Staged) -> None:
        with self._serving:
            self._champion = Champion(staged.version, staged.bundle, staged.lineage)
            if staged.reference is None:
                return
            self._ensure_monitor().reset(staged.reference, staged.reference_scores)
            if staged.new:  # a new champion, not one a loop opening again reloads
                self.outcomes.champion_changed(staged.version, staged.lineage["promoted_at"])

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Write the buffered prediction and outcome logs (a server does it off the request path)."""
        self.predictions.flush()
        self.outcomes.flush()

    def close(self) -> None:
        self.flush()
        self.meta.close()
        if self._own_executor:
            self.executor.shutdown()
