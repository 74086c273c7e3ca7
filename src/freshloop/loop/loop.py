"""The loop: one pass through the stages per ``tick()``, on whatever clock it is given.

``freshloop replay`` drives it with a simulated clock over a historical stream; ``freshloop serve``
drives it with the wall clock behind HTTP. No code path here knows which one is running.

:class:`Loop` conducts; each stage does its own work on the shared :class:`~.context.Context`:
:class:`~.intake.Intake` takes in stored batches, :class:`~.router.Router` answers requests,
:class:`~.join.LabelJoin` grades what was served when labels come, :class:`~.online.OnlineUpdater` teaches
an online champion, :class:`~.companion.Companion` runs an online model beside it,
:class:`~.training.TrainingRun` and :class:`~.training.FollowUp` train and judge
candidates, and :class:`~.deploy.Deployer` moves the champion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..clock import Clock
from ..data.files import MalformedRow
from ..data.schema import Schema
from ..data.store import DataStore, IngestResult
from ..errors import SpecError
from ..evaluate.metrics import Metric
from ..policy import Decision, Policy, PolicyState, Retrain, Skip, bootstrap, run_key
from ..rollout import Rollout
from ..spec import LoopSpec
from ..store import open_stores
from ..train import Executor, ModelBundle, make_executor
from ..train.model import Rows
from .companion import Companion
from .context import Context, LoopStats, PredictResult, TickReport
from .deploy import Deployer
from .intake import Intake
from .join import FeedbackResult, LabelJoin
from .memory import PolicyMemory
from .online import OnlineUpdater
from .recall import Recall
from .router import Router
from .training import FollowUp, TrainingRun

__all__ = ["FeedbackResult", "Loop", "LoopStats", "PredictResult", "TickReport"]


class Loop:
    """Ingest → validate → version → monitor → decide → train → gate → register → roll out."""

    def __init__(self, spec: LoopSpec, *, clock: Clock, executor: Executor | None = None, durable: bool = True,
                 actor: str = "loop", serve_before_refit: bool | None = None, data: DataStore | None = None) -> None:
        root = spec.store.root
        if root is None:
            raise SpecError("store.root: required to open a loop (rule: a folder for data and artifacts).",
                            field="store.root")
        if spec.policy.online and spec.model.mode == "full":
            spec = spec.model_copy(update={"model": spec.model.model_copy(update={"mode": "online"})})
        self._own_executor = executor is None  # made from the spec here, so shut down with the loop
        meta, blobs = open_stores(root, spec.store.url, durable=durable)
        # a data store of its own, or one several loops share (a replay of several policies stores the stream
        # once); the loop's registry, runs, decisions and events are always its own
        data = data if data is not None else DataStore(spec.name, spec.data, meta, blobs,
                                                       view_bytes=spec.store.view_mb * 2**20)
        self.ctx = ctx = Context(spec, clock, actor=actor, meta=meta, blobs=blobs, data=data,
                                 executor=executor or make_executor(spec.model.executor))
        self.clock, self.actor, self.executor = clock, actor, ctx.executor
        self.meta, self.blobs, self.data, self.registry, self.events = meta, blobs, data, ctx.registry, ctx.events
        self.predictions, self.outcomes, self.stats = ctx.predictions, ctx.outcomes, ctx.stats
        # With gate.refit, the gated fit serves while its refit trains when the caller says, or
        # gate.serve_before_refit; unset, when the clock moves while the loop trains (a server, not a replay).
        if serve_before_refit is None:
            serve_before_refit = spec.gate.serve_before_refit
        self.companion = companion = Companion(ctx)
        self.router, self.join, self.online, self.deployer, self.follow_up = \
            Router(ctx, companion), LabelJoin(ctx, companion), OnlineUpdater(ctx), Deployer(ctx), FollowUp(ctx)
        self.intake = Intake(ctx)
        self.training = TrainingRun(ctx, self.follow_up, self.deployer, serve_before_refit=clock.moves_while_working
                                    if serve_before_refit is None else serve_before_refit)
        self.recall = Recall(ctx, self.deployer)
        self.memory = PolicyMemory(ctx, self.training)
        self._policies: dict[bool, Policy] = {}
        self._restore()

    # -- what it holds ------------------------------------------------------------------------
    @property
    def spec(self) -> LoopSpec:
        return self.ctx.spec

    @spec.setter
    def spec(self, spec: LoopSpec) -> None:
        """A spec changed on an open loop: every stage reads it from the next call on."""
        self.ctx.spec = spec

    @property
    def schema(self) -> Schema | None:
        return self.ctx.schema

    @property
    def metric(self) -> Metric:
        return self.ctx.metric

    @property
    def policy(self) -> Policy:
        """The spec's policy; its quality trigger knows which way is worse once the metric is known."""
        known = self.ctx.metric_known
        better = known is None or known.bigger_is_better
        if better not in self._policies:
            self._policies[better] = Policy.from_spec(self.spec.policy, bigger_is_better=better,
                                                      rows=self.spec.data.time is None)
        return self._policies[better]

    @property
    def state(self) -> PolicyState:
        """What the policy remembers between ticks: when it retrained, and its triggers' streaks."""
        return self.memory.state

    @property
    def rollout(self) -> Rollout | None:
        return self.ctx.rollout

    @property
    def auto_promotion(self) -> bool:
        return self.deployer.auto_promotion

    @property
    def serve_before_refit(self) -> bool:
        """With gate.refit: whether the gated fit serves while its refit trains."""
        return self.training.serve_before_refit

    @serve_before_refit.setter
    def serve_before_refit(self, value: bool) -> None:
        self.training.serve_before_refit = value

    @property
    def on_promote(self) -> Callable[[int, str], None] | None:
        """Called with (version, actor) after each move of the champion alias."""
        return self.deployer.on_promote

    @on_promote.setter
    def on_promote(self, hook: Callable[[int, str], None] | None) -> None:
        self.deployer.on_promote = hook

    @property
    def champion_version(self) -> int | None:
        return self.ctx.champion.version if self.ctx.champion else None

    @property
    def champion_lineage(self) -> dict[str, Any]:
        """The serving version's lineage (snapshot, rows, gate score, newest arrival, promoted at)."""
        return dict(self.ctx.champion.lineage) if self.ctx.champion else {}

    def champion(self) -> ModelBundle:
        return self.ctx.champion_or_raise().bundle

    def typed_predictions(self, text: pd.Series) -> np.ndarray:
        """Predictions as the log's text gives them back, typed as the model returns them."""
        return self.ctx.typed_predictions(text)

    # -- opening again ------------------------------------------------------------------------
    def _restore(self) -> None:
        """Rebuild from the store what the stages held in memory (see :mod:`.memory`)."""
        self.deployer.restore()
        self.online.restore()
        if self.schema is not None:  # predictions served before a restart still meet their labels
            self.predictions.restore(lambda ids: ~self.data.has_label(ids), self.typed_predictions)
        self.follow_up.restore()
        self.companion.restore()
        self.training.restore()
        self.memory.restore()
        self.deployer.restore_rollbacks()

    # -- data and labels ----------------------------------------------------------------------
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
        """What the loop makes of a batch its data store took (:class:`~.intake.Intake`). ``ingest`` calls it;
        a driver that stores a batch once for several loops calls it on each."""
        self.intake.observe(res)

    def feedback(self, row_ids: list[str], labels: list[Any], *, source: str = "feedback",
                 batch_id: str | None = None) -> FeedbackResult:
        """Labels for earlier predictions: joined to the log, scored, and stored as training data."""
        res = self.data.ingest_labels(row_ids, labels, now=self.clock.now(), source=source, batch_id=batch_id)
        return self.observe_labels(row_ids, res)

    def observe_labels(self, row_ids: list[str], res: IngestResult) -> FeedbackResult:
        """Labels the data store took, joined to this loop's prediction log and scored; ``feedback`` calls it,
        as ``ingest`` calls ``observe_ingest``."""
        self.score_shadow()  # deferred shadow answers must be in the log before their labels are joined
        return self.join.observe(row_ids, res)

    # -- serving ------------------------------------------------------------------------------
    def predict(self, frame: Rows, *, row_ids: list[str] | None = None, keys: list[str] | None = None,
                defer_shadow: bool = False) -> PredictResult:
        """Predictions from the serving model(s); logged for the label join. Routing is by key.

        With ``defer_shadow`` a shadow candidate scores the rows later (:meth:`score_shadow`), off the
        request path; its answers are only ever logged.
        """
        with self.ctx.lock:
            out = self.router.predict(frame, row_ids, keys, defer_shadow)
        if self.predictions.due:
            self.flush()
        return out

    def score_shadow(self) -> int:
        return self.router.score_shadow()

    # -- the tick -----------------------------------------------------------------------------
    def tick(self) -> TickReport:
        now = self.clock.now()
        report = TickReport(now)
        if self.schema is None:
            report.decision = Skip("bootstrap: no data yet", guard="bootstrap")
            return report
        with self.ctx.lock:  # the decision reads what requests write; training runs after, outside the lock
            decision = self._decide(now, report)
        report.decision = decision
        self.meta.decisions.add(now, decision.kind, getattr(decision, "run_key", None), list(decision.reasons),
                               self.memory.to_store(), triggers=list(decision.triggers), guard=decision.guard)
        if isinstance(decision, Retrain):
            self.events.record("decision_retrain", "; ".join(decision.reasons),
                               {"run_key": decision.run_key, "triggers": list(decision.triggers)})
            self.training.run(decision, now, report)
            if self.training.refit_due is not None:
                report.refit = self.training.finish_refit()
                if report.refit is not None and self.champion_version == report.refit:
                    report.promoted = report.refit
        return report

    def _decide(self, now: float, report: TickReport) -> Decision:
        self.predictions.expire(now)  # predictions past the label horizon stop waiting, even when none are served
        self.online.apply(now)
        self.companion.learn(now)
        self.companion.choose(now, report)
        if self.ctx.active_rollout() is not None:
            self.deployer.advance(now, report)
        if self.ctx.champion is None:  # a first model, once there are labeled rows enough to train and judge one
            return bootstrap(now, labeled=int(np.isfinite(self.data.label_times()).sum()),
                             needed=2 * self.spec.gate.min_holdout_rows,
                             tried=self.meta.runs.find(run_key("bootstrap", now)) is not None)
        if self.recall.watch(now, report) is not None:  # a past concept returned: no training needed
            self.training.gains = ()  # what past retrains gained was over the champion that left
            return Skip(f"recalled: version {report.recalled} promoted back (gate.recall); no retrain this tick",
                        guard="recalled")
        run, since = self.training, self.ctx.champion.lineage.get("promoted_at")
        report.signals = signals = self.ctx.monitor().signals(now, last_trained_at=run.last_trained_at,
                                                              champion_since=since, gains=run.gains)
        decision = self.policy.decide(signals, self.state)
        self.memory.streaks = decision.streaks
        decision = self.follow_up.amend(decision, now)
        r = self.ctx.active_rollout()
        if isinstance(decision, Retrain) and r is not None:
            decision = decision.held("rollout in progress", f"rollout of version {r.version} in progress")
        report.data_age = now - float(self.ctx.champion.lineage.get("t_last") or now)
        return decision

    def finish_refit(self) -> int | None:
        """Fit the version that is serving again on its whole snapshot, register that as the next version and
        promote it if the first is still the champion; ``tick()`` does this right after serving a gated fit
        when ``serve_before_refit`` is set. Returns the refit's version, if one was registered."""
        return self.training.finish_refit()

    # -- an operator's actions ----------------------------------------------------------------
    def approve(self, rollout_id: str, *, actor: str, reason: str) -> None:
        self.deployer.approve(rollout_id, actor=actor, reason=reason)

    def promote(self, version: int, *, actor: str, reason: str) -> bool:
        """Make ``version`` the champion (see :meth:`Deployer.promote`); False when it already is."""
        return self.deployer.promote(version, actor=actor, reason=reason)

    def rollback(self, *, actor: str, reason: str) -> int:
        """Abort an active rollout, or move the champion back to the version it replaced."""
        return self.deployer.rollback(actor=actor, reason=reason)

    def abort(self, rollout_id: str, *, actor: str, reason: str) -> None:
        """Abort the active rollout ``rollout_id`` (an operator's rollback that names the rollout)."""
        self.deployer.abort(rollout_id, actor=actor, reason=reason)

    # -- closing ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered prediction and outcome logs (a server does it off the request path)."""
        self.predictions.flush()
        self.outcomes.flush()

    def close(self) -> None:
        self.flush()
        self.companion.save()
        self.online.save()
        self.meta.close()
        if self._own_executor:
            self.executor.shutdown()

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
