"""A training run, and the follow-up after a detected change.

A retrain takes a snapshot of the window, holds out its newest rows that the champion was not fitted on,
fits a candidate on the rest (in the executor the spec names), judges it against the champion on the
holdout, registers it when it passes and hands it to the deployer. Runs are idempotent by run key: a
restart that ticks at the same time again does not train twice.

A retrain that answers a detected change trains mostly on rows from before the change (the window reaches
back); once enough labels have matured after it, one follow-up trains on the rows after the change alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..clock import parse_duration
from ..data.snapshot import Snapshot
from ..evaluate.gate import Verdict, judge, paired_bootstrap
from ..evaluate.metrics import balance_weights
from ..policy import Decision, Retrain, first_change, moves_concept, run_key
from ..spec import WindowSpec
from ..store import RunRecord, VerdictRecord
from ..train import Candidate, TrainingFailed, TrainRequest, train_candidate
from .context import Context, TickReport
from .deploy import Deployer
from .recall import rows_seen
from .window import Tried, WindowChoice, window_lengths

__all__ = ["FollowUp", "PendingFollowUp", "PendingRefit", "TrainingRun", "follow_up_steps"]

# A retrain for a moved concept (policy.moves_concept) chooses its window: rows from before the move may mislead.
# Drift of the inputs alone (a season) does not: the whole window holds the seasons it has seen. Nor does the gain
# trigger: on the streams of bench/streams.py, choosing the window for its retrains too scored lower on Usenet2 and
# on average.
_GAINS_KEPT = 20  # the gains a training run keeps for the policy (it reads the last few)


@dataclass(frozen=True)
class PendingFollowUp:
    since: float  # when the change was found
    steps: tuple[int, ...]  # the labels after it at which each follow-up trains
    done: int = 0  # follow-ups trained since the change
    reacting: bool = False  # the change's own retrain waited for them (a moved concept, ``model.window.react``)

    @property
    def need(self) -> int:
        """Labels to mature after the change before the next follow-up trains."""
        return self.steps[self.done]


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


def follow_up_steps(first: int, last: int) -> list[int]:
    """The labels after a change at which each follow-up trains: ``first``, doubling while a step is less than
    a third of ``last``, then ``last``.

    >>> follow_up_steps(60, 250)  # model.window.rows 1000, gate.min_holdout_rows 30
    [60, 120, 250]
    >>> follow_up_steps(60, 750)
    [60, 120, 240, 480, 750]
    >>> follow_up_steps(100, 60)
    [100]
    """
    out = [first]
    while out[-1] * 3 < last:
        out.append(out[-1] * 2)
    return out + [last] if out[-1] < last else out


class FollowUp:
    """The retrains on the rows after a detected change alone (only with a window counted in rows:
    ``model.window.rows``). With ``model.window.react`` set, a moved concept's own retrain waits for
    that many labels to mature after the change and trains on those rows alone; the next ones follow as the
    count doubles, up to a quarter of the window, each judged by the gate, and no other retrain comes in
    between. Off (``react: 0``, and for drift of the inputs alone), the change's retrain fits the window at
    once and one follow-up comes at a quarter of it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.pending: PendingFollowUp | None = None
        self._window: WindowSpec | None = None  # the follow-up's window, for the run it starts
        self.floor: float | None = None  # with react: the last moved concept, before which rows are not trained on

    @property
    def enabled(self) -> bool:
        return bool(self.ctx.spec.model.window.rows)

    @property
    def reacts(self) -> bool:
        """Whether a change's retrain waits for rows after it (``model.window.react``)."""
        return self.enabled and self.ctx.spec.model.window.react != 0

    def size(self) -> int:
        rows = self.ctx.spec.model.window.rows or 0
        return max(2 * self.ctx.spec.gate.min_holdout_rows, rows // 4)

    def steps(self, reacting: bool) -> tuple[int, ...]:
        """The labels after a change at which each follow-up trains (see :func:`follow_up_steps`); one at a
        quarter of the window when the change's own retrain did not wait (drift of the inputs, or ``react: 0``)."""
        last = self.size()
        return tuple(follow_up_steps(self.ctx.spec.model.window.react, last)) if reacting else (last,)

    def restore(self) -> None:
        """The follow-up a restart would otherwise forget, read back from the decision log: after the latest
        retrain for a detected change, the step its follow-ups since have reached."""
        if not self.enabled:
            return
        since, done, moved = None, 0, False
        for d in self.ctx.meta.decisions.list("retrain"):
            triggers = d.triggers or []
            if "follow-up" in triggers:
                done += 1
            elif first_change(triggers) is not None:
                since, done, moved = float(d.at), 0, moves_concept(triggers)
                if moved and self.reacts:
                    self.floor = since
        if since is not None:
            reacting = moved and self.reacts
            steps = self.steps(reacting)
            self.pending = PendingFollowUp(since, steps, done, reacting) if done < len(steps) else None

    def amend(self, decision: Decision, now: float) -> Decision:
        """The policy's decision with the follow-up taken into account: a due follow-up retrains (with the
        policy's own triggers, if any fired); a pending one holds a retrain for what is most likely the same
        change, and, while it reacts, any other retrain (which would train on the rows before the change)."""
        follow = self._due(now)
        if follow is not None:  # its window (the rows after the change) applies to this tick's run
            return decision.also("follow-up", follow) if isinstance(decision, Retrain) \
                else Retrain(run_key("follow-up", now), (follow,), decision.streaks, ("follow-up",))
        if self.pending is not None and isinstance(decision, Retrain) and (decision.answers_change
                                                                           or self.pending.reacting):
            # the model still trains mostly on rows from before the change it answered: a second change
            # signal now is most likely the same change; the follow-up will train on the rows after it
            return decision.held("follow-up pending", f"follow-up pending: the change found at "
                                 f"{self.pending.since:g} is answered once {self.pending.need} labels have "
                                 "matured since")
        return decision

    def _due(self, now: float) -> str | None:
        if self.pending is None or self.ctx.active_rollout() is not None:
            return None  # a rollout in progress: the follow-up waits for it
        pending = self.pending
        since, need, steps = pending.since, pending.need, pending.steps
        lt = self.ctx.data.label_times()
        have = int(np.count_nonzero((lt > since) & (lt <= now)))
        if have < need:
            return None
        done = pending.done + 1
        self.pending = replace(pending, done=done) if done < len(steps) else None
        self._window = WindowSpec(period=now - since)  # seconds, as a number: no text to parse back
        which = f" {done} of {len(steps)}" if len(steps) > 1 else ""
        return (f"follow-up{which}: {have} labels since the change found at {since:g} (>= {need}); "
                f"training on the rows after it")

    def take_window(self, now: float) -> WindowSpec:
        """The window of the run starting now: the rows after the change for a follow-up; while it reacts, the
        spec's cut at the last change (the rows before it are of the concept that left); else the spec's."""
        window, self._window = self._window, None
        spec = self.ctx.spec.model.window
        if window is not None:
            return window
        if self.floor is not None and spec.rows is not None:
            after = int(np.count_nonzero(self.ctx.data.view.times > self.floor))
            if after < spec.rows:
                return WindowSpec(period=now - self.floor)
        return spec

    def answered(self, decision: Retrain, now: float) -> bool:
        """A run starts for ``decision``: when it answers a change, follow-ups will replace its model, or, when
        the follow-up reacts, train in its place (it is kept in the decision log too, so a restart reads it).
        Returns whether it did."""
        interim = self.enabled and decision.answers_change and "follow-up" not in decision.triggers
        if interim:  # (a follow-up that came with a change signal trains on the rows after the change already)
            self._changed(now, moved=moves_concept(decision.triggers))
        return interim

    def _changed(self, now: float, *, moved: bool) -> None:
        """A change found at ``now``: its follow-ups are due; when the concept moved (not the inputs alone) and
        the follow-up reacts, they start as soon as ``react`` labels have matured, and rows before ``now`` are
        not trained on again."""
        reacting = moved and self.reacts
        self.pending = PendingFollowUp(now, self.steps(reacting), 0, reacting)
        if reacting:
            self.floor = now


class TrainingRun:
    """Snapshot → holdout → fit → gate → register → deploy; and the refit of a gated fit."""

    def __init__(self, ctx: Context, follow_up: FollowUp, deployer: Deployer, *, serve_before_refit: bool) -> None:
        self.ctx, self.follow_up, self.deployer = ctx, follow_up, deployer
        # With gate.refit: serve the gated fit at once and promote its refit when that is done (a server on the
        # wall clock), or serve the refit alone (a replay or a one-shot tick: no request would see the interim).
        self.serve_before_refit = serve_before_refit
        self.last_trained_at: float | None = None
        self.retrain_times: tuple[float, ...] = ()
        self.retrain_seconds: tuple[float, ...] = ()  # each run's training seconds: all its fits, refit included
        self.refit_due: PendingRefit | None = None
        self.gains: tuple[float, ...] = ()  # each judged candidate's gain over its champion (see ``_gain``)

    def restore(self) -> None:
        runs = self.ctx.meta.runs.list()
        if runs:
            self.last_trained_at = max(r.created_at for r in runs)
            self.retrain_times = tuple(r.created_at for r in runs)
            refits: dict[str, float] = {}
            for mv in self.ctx.meta.versions.list():
                refits[mv.run_id] = refits.get(mv.run_id, 0.0) + float(mv.lineage.get("refit_seconds") or 0.0)
            self.retrain_seconds = tuple(r.train_seconds + refits.get(r.id, 0.0) for r in runs)
        for v in self.ctx.meta.runs.verdicts():
            self._gain(v.body)

    def _gain(self, verdict: dict[str, Any]) -> None:
        """Keep how much a verdict's candidate beat its champion on the holdout, relative to the champion's score
        (the policy's gain trigger reads the mean of the last few, which evens out one holdout's luck). A first
        model, judged against a constant, has no champion to beat."""
        versus = next((c.get("evidence") for c in verdict.get("checks", []) if c.get("name") == "vs_champion"), None)
        if not versus or versus.get("delta") is None or not versus.get("champion"):
            return
        gain = float(versus["delta"]) / max(abs(float(versus["champion"])), 1e-12)
        self.gains = (*self.gains[-(_GAINS_KEPT - 1):], round(float(gain), 6))

    def run(self, decision: Retrain, now: float, report: TickReport) -> None:
        ctx, gate = self.ctx, self.ctx.spec.gate
        if ctx.meta.runs.find(decision.run_key):  # the same tick ran before (a restart): runs are idempotent
            ctx.events.record("run_exists", f"run {decision.run_key} was already trained; not training it twice",
                              {"run_key": decision.run_key})
            return
        run_id = "run-" + hashlib.sha256(decision.run_key.encode()).hexdigest()[:12]
        report.run_id = run_id
        snap = ctx.data.snapshot(self.follow_up.take_window(now), cutoff=now, now=now)
        interim = self.follow_up.answered(decision, now)
        pending = self.follow_up.pending
        if interim and pending is not None and pending.reacting:  # the rows after the change: not labeled yet
            self._started(now)
            self._defer(run_id, decision, snap, now, f"not trained: the window holds the rows from before the "
                        f"change; the follow-up trains on the rows after it once {pending.need} labels have "
                        "matured since (model.window.react)", report)
            return
        frame = ctx.data.read_snapshot(snap)
        self.deployer.keep_snapshot(snap.id, frame)  # promoting this run's model reads its snapshot again
        self._started(now)
        n = len(frame)
        n_hold = int(np.clip(round(gate.holdout * n), gate.min_holdout_rows, gate.max_holdout_rows))
        if n - n_hold < gate.min_holdout_rows:
            self._fail(run_id, decision, snap, now, f"snapshot {snap.id} has {n} labeled rows; need {n_hold} to "
                       f"judge and {gate.min_holdout_rows} to train", report)
            return
        in_hold, unseen = self._holdout(frame, n_hold)
        if in_hold.sum() < gate.min_holdout_rows:
            self._defer(run_id, decision, snap, now, f"not trained: the champion was fitted on all but {unseen} "
                        f"of the {n} labeled rows of snapshot {snap.id}, and the gate needs {gate.min_holdout_rows} "
                        "rows neither model has seen to compare them; the champion keeps serving until more "
                        "labels arrive", report)
            return
        seen_newest = n_hold - int(in_hold[n - n_hold:].sum())  # of the newest n_hold rows, those it was fitted on
        train, hold = frame[~in_hold], frame[in_hold].reset_index(drop=True)
        cand, train = self._fit(decision, snap, train, hold, run_id, now, report)
        if cand is None:
            return
        verdict_id = "v-" + run_id[4:]
        verdict = self._gate(cand, train, hold, seen_newest, verdict_id, run_id, snap.id, now)
        report.verdict = verdict
        if verdict.passed:
            chosen = frame
            if "window" in cand.lineage:  # the refit learns the chosen window and the holdout, not the rows before
                start = np.flatnonzero(~in_hold)[-len(train)]
                chosen = frame[in_hold | (np.arange(n) >= start)].reset_index(drop=True)
            self._register(cand, decision, snap, chosen, train, run_id, verdict_id, verdict, now, report,
                           refit=ctx.spec.gate.refit and ctx.spec.model.mode != "online"
                           and cand.lineage.get("base") is None and not interim)  # a full fit, warm or not

    def _started(self, now: float) -> None:
        self.last_trained_at = now
        self.retrain_times += (now,)
        self.retrain_seconds += (0.0,)
        with self.ctx.lock:
            self.ctx.monitor().trained()
            self.ctx.outcomes.detector_restarted(now)

    def _holdout(self, frame: pd.DataFrame, n_hold: int) -> tuple[np.ndarray, int]:
        """The holdout is the newest rows the champion was not fitted on: a model scored on rows it learned
        is scored in-sample, and a fresher candidate would lose to it for that alone. Returns the holdout's
        mask and how many rows the champion has not seen."""
        unseen = np.flatnonzero(~self._champion_saw(frame))
        in_hold = np.zeros(len(frame), dtype=bool)
        in_hold[unseen[-n_hold:]] = True
        return in_hold, len(unseen)

    def _champion_saw(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows of ``frame`` the champion may have been fitted on: those no later than its newest
        training row and labeled by its training cutoff (its lineage; a row labeled after the cutoff was not in
        its snapshot, however old). Without that lineage, none are taken as seen."""
        return rows_seen(self.ctx.champion.lineage if self.ctx.champion is not None else {}, frame)

    def _fit(self, decision: Retrain, snap: Snapshot, train: pd.DataFrame, hold: pd.DataFrame, run_id: str,
             now: float, report: TickReport) -> tuple[Candidate | None, pd.DataFrame]:
        """The candidate, fitted in the executor (warm-started from the champion on the rows it has not
        learned, when the mode says so; on the window the holdout chooses, for a full fit), and its run
        recorded; None when training failed. Returns the rows it was fitted on too."""
        ctx, model = self.ctx, self.ctx.spec.model
        assert ctx.schema is not None
        schema, base, mode = ctx.schema, None, self.mode_for(decision)
        anew = None  # why a warm retrain fits anew on the window
        if mode in ("warm_start", "online") and ctx.champion is not None:
            base = ctx.champion.bundle
            t_last = ctx.champion.lineage.get("t_last")
            new = train[train["_time"] > t_last] if t_last is not None else train
            anew = base.why_not_grow(new["_label"]) if base.trees() is not None else None
            if anew is None:
                train = new
            else:  # an ensemble that cannot grow on these rows is fitted anew on the window
                base = None

        def request(rows: pd.DataFrame, half_life: float | None = None, balance: tuple[str, ...] = ()) -> TrainRequest:
            return TrainRequest(decision.run_key, snap.id, schema, model.estimator, model.params, mode,
                                model.seed, model.scale, rows.reset_index(drop=True), base, half_life, balance)

        choice = None
        try:
            # the window is chosen (and rows weighted by age tried) when the concept moved; balanced classes or
            # slices are tried at every full retrain when the spec asks
            moved = (len(model.window.choose) > 1 or bool(model.window.decay)) and moves_concept(decision.triggers)
            if base is None and len(hold) and (moved or model.balance):
                cand, train, choice = self._choose(request, train, hold, moved=moved)
            else:
                cand = self._fitted(request(train))
        except TrainingFailed as e:
            self._fail(run_id, decision, snap, now, str(e), report)
            return None, train
        ctx.stats.retrains += 1
        cand.lineage.update({"t_last": float(train["_time"].max()) if len(train) else snap.t_last,
                             "cutoff": float(train["_label_time"].max()) if "_label_time" in train and len(train)
                             else now, "newest_arrival": snap.newest_arrival, "reasons": list(decision.reasons)})
        if choice is not None:
            cand.lineage["window"] = report.window = choice.to_dict()
        if base is not None and ctx.champion is not None:  # the version it learned on from
            cand.lineage["base"] = ctx.champion.version
        if anew is not None:
            cand.lineage["anew"] = anew
        if cand.bundle.trees() is not None:
            cand.lineage["trees"] = cand.bundle.trees()
        ctx.meta.runs.add(RunRecord(id=run_id, run_key=decision.run_key, snapshot_id=snap.id, mode=mode,
                                    status="trained", lineage=cand.lineage, train_rows=cand.train_rows,
                                    train_seconds=self.retrain_seconds[-1], created_at=now))
        how = f"; {choice.describe()}" if choice is not None else ""
        ctx.events.record("run_trained", f"{cand.train_rows} rows from snapshot {snap.id}{how}",
                          {"run_id": run_id, "snapshot_id": snap.id, "mode": mode})
        return cand, train

    def mode_for(self, decision: Retrain) -> str:
        """How this retrain learns: the spec's ``model.mode``; for ``auto``, a full fit when the retrain answers
        a moved concept (the detector, a quality drop, the follow-up after them) or is a first model, and a
        warm start (the rows after the champion's learned into a copy of it) for the others: the gain
        trigger's, the schedule's, drift of the inputs, volume and staleness, where the concept is not known
        to have moved and the champion's rows still hold."""
        mode = self.ctx.spec.model.mode
        if mode != "auto":
            return mode
        full = moves_concept(decision.triggers) or bool({"follow-up", "bootstrap"} & set(decision.triggers))
        return "full" if full or self.ctx.champion is None else "warm_start"

    def _fitted(self, req: TrainRequest) -> Candidate:
        """A fit in the executor, its rows and seconds counted in the loop's training cost."""
        cand: Candidate = self.ctx.executor.submit(train_candidate, req).result()
        self.ctx.stats.train_rows += cand.train_rows
        self.ctx.stats.train_seconds += cand.train_seconds
        if self.retrain_seconds:  # the run's cost, which the policy's budget weighs
            self.retrain_seconds = (*self.retrain_seconds[:-1], self.retrain_seconds[-1] + cand.train_seconds)
        return cand

    def _choose(self, request: Callable[..., TrainRequest], train: pd.DataFrame, hold: pd.DataFrame, *,
                moved: bool) -> tuple[Candidate, pd.DataFrame, WindowChoice]:
        """One candidate per window length (the newest rows of ``train``), longest first, each scored on the
        holdout; the whole window unless a shorter one surely beats it (see :mod:`.window`); then the kept
        window's rows weighted (see :meth:`_weigh`). Unless the concept ``moved``, the whole window alone is
        fitted before the weighting. Every fit counts in the loop's training cost."""
        ctx, window = self.ctx, self.ctx.spec.model.window
        budget = parse_duration(window.choose_budget) if window.choose_budget is not None else float("inf")
        lengths = window_lengths(len(train), window.choose if moved else [1.0], least=ctx.spec.gate.min_holdout_rows)
        y = None
        tried: list[Tried] = []
        fitted: dict[int, tuple[Candidate, np.ndarray]] = {}
        spent, error, stopped = 0.0, None, None
        for k in lengths:
            if spent > budget and fitted:
                stopped = "time budget spent"
                break
            try:
                cand = self._fitted(request(train.iloc[len(train) - k:]))
            except TrainingFailed as e:  # e.g. one class in a short window
                tried.append(Tried(k, None, 0.0, str(e)))
                error = error or e
                continue
            spent += cand.train_seconds
            y = cand.bundle.target(hold["_label"]).to_numpy() if y is None else y
            p, pr = cand.bundle.predict(hold)
            rows = ctx.metric.per_row(y, p, pr, ctx.classes)
            score = float(ctx.metric.aggregate(rows))
            last = next((t.score for t in reversed(tried) if t.score is not None), None)
            tried.append(Tried(k, score, round(cand.train_seconds, 4)))
            fitted[k] = (cand, rows)
            if last is not None and ctx.metric.better(score, last) < 0:
                stopped = "a longer window scored better"
                break  # shorter scored worse: the shorter ones still are not expected to win
        if not fitted:
            assert error is not None
            raise error
        rows_kept, why = self._pick(tried, fitted)
        skipped = tuple(k for k in lengths if all(t.rows != k for t in tried))
        kept = train.iloc[len(train) - rows_kept:]
        cand, weighed = fitted[rows_kept][0], ""
        weights: list[tuple[int | None, tuple[str, ...]]] = [(max(1, round(share * len(kept))), ())
                                                             for share in (window.decay if moved else [])]
        label, task = ctx.spec.data.label, ctx.schema.task if ctx.schema is not None else None
        balance = tuple(c for c in ctx.spec.model.balanced(label) if c != label or task == "classification")
        if balance:
            weights.append((None, balance))
        kept_weights: tuple[int | None, tuple[str, ...]] = (None, ())
        if weights and y is not None and spent <= budget:
            cand, kept_weights, weighed = self._weigh(request, kept, hold, y, fitted[rows_kept], tried, weights)
        choice = WindowChoice(ctx.metric.name, tuple(tried), rows_kept, why + weighed, skipped,
                              stopped if skipped else None, *kept_weights, chose=moved)
        return cand, kept, choice

    def _weigh(self, request: Callable[..., TrainRequest], kept: pd.DataFrame, hold: pd.DataFrame, y: np.ndarray,
               unweighted: tuple[Candidate, np.ndarray], tried: list[Tried],
               weights: list[tuple[int | None, tuple[str, ...]]]
               ) -> tuple[Candidate, tuple[int | None, tuple[str, ...]], str]:
        """The kept window fitted again with its rows weighted, one candidate per ``(half-life, balanced)`` of
        ``weights``: by age, halving every half-life rows back (``model.window.decay``), and so that each value of
        the ``balanced`` columns counts the same (``model.balance``: the label's classes, a feature's slices).
        The best of them replaces the unweighted fit only when surely better on the holdout; with balanced
        slices, better on the mean over the slices (each holdout row's score weighted by the inverse of its
        slice's share there), since that is what weighting them is for. Returns the candidate, its weights
        ((None, ()): unweighted) and what to add to the window's why."""
        ctx, gate, label = self.ctx, self.ctx.spec.gate, self.ctx.spec.data.label
        best: tuple[tuple[int | None, tuple[str, ...]], Candidate, np.ndarray, float] | None = None
        for h, balanced in weights:
            try:
                cand = self._fitted(request(kept, None if h is None else float(h), balanced))
            except TrainingFailed as e:  # e.g. an estimator whose fit takes no sample_weight
                tried.append(Tried(len(kept), None, 0.0, str(e), h, balanced))
                continue
            p, pr = cand.bundle.predict(hold)
            rows = ctx.metric.per_row(y, p, pr, ctx.classes)
            score = float(ctx.metric.aggregate(rows))
            tried.append(Tried(len(kept), score, round(cand.train_seconds, 4), None, h, balanced))
            if best is None or ctx.metric.better(score, best[3]) > 0:
                best = ((h, balanced), cand, rows, score)
        if best is None:
            return unweighted[0], (None, ()), ""
        kept_weights, cand, rows, _ = best
        h, balanced = kept_weights
        slices = [c for c in balanced if c != label]
        how = f"weighted by age, half-life {h} rows" if h is not None else \
            " and ".join(["classes" if c == label else repr(c) for c in balanced]) + " balanced"
        base_rows = unweighted[1]
        if slices:  # judged on the slices' mean: each row weighs as its slice is rare on the holdout
            w = np.prod([balance_weights(hold[c]) for c in slices], axis=0)
            rows, base_rows, how = rows * w, base_rows * w, how + " (judged on the mean over the slices)"
        d = paired_bootstrap(rows, base_rows, ctx.metric, n=gate.bootstrap, confidence=gate.confidence,
                             seed=ctx.spec.model.seed)
        if d.low > 0:
            return cand, kept_weights, f"; {how}: surely better than unweighted, by {d.delta:+.4f}, CI low " \
                                       f"{d.low:+.4f}"
        return unweighted[0], (None, ()), f"; unweighted: {how} not surely better, by {d.delta:+.4f}, CI low " \
                                          f"{d.low:+.4f}"

    def _pick(self, tried: list[Tried], fitted: dict[int, tuple[Candidate, np.ndarray]]) -> tuple[int, str]:
        """The length to keep: the best-scoring one if it beats the longest fitted surely (the low end of the
        gate's confidence interval of their difference above zero), else the longest."""
        ctx, gate = self.ctx, self.ctx.spec.gate
        longest = max(fitted)
        best = max((t for t in tried if t.score is not None),
                   key=lambda t: (ctx.metric.better(float(t.score or 0.0), 0.0), t.rows)).rows
        if best == longest:
            return longest, "the longest scored best" if len(fitted) > 1 else "the only one fitted"
        d = paired_bootstrap(fitted[best][1], fitted[longest][1], ctx.metric, n=gate.bootstrap,
                             confidence=gate.confidence, seed=ctx.spec.model.seed)
        if d.low > 0:
            return best, f"surely better than {longest} rows: by {d.delta:+.4f}, CI low {d.low:+.4f}"
        return longest, f"{best} rows scored best, but not surely better than {longest} rows: by {d.delta:+.4f}, " \
                        f"CI low {d.low:+.4f}"

    def _gate(self, candidate: Candidate, train: pd.DataFrame, hold: pd.DataFrame, seen: int, verdict_id: str,
              run_id: str, snapshot_id: str, now: float) -> Verdict:
        """The candidate against the champion on the holdout (a first model against a constant), recorded with
        the window it was fitted on and how that was chosen."""
        ctx, cand = self.ctx, candidate.bundle
        assert ctx.schema is not None
        metric, classes = ctx.metric, ctx.classes
        y = cand.target(hold["_label"]).to_numpy()
        p, pr = cand.predict(hold)
        cand_rows = metric.per_row(y, p, pr, classes)
        champ_rows = base_rows = None
        if ctx.champion is not None:
            hp, hpr = ctx.champion.bundle.predict(hold)
            champ_rows = metric.per_row(y, hp, hpr, classes)
        else:  # a first model must beat a constant: the majority class, or the mean
            ytrain = cand.target(train["_label"]) if len(train) else pd.Series(y)
            if ctx.schema.task == "classification":
                freq = np.array([(ytrain == c).mean() for c in classes])
                bp = np.full(len(y), classes[int(freq.argmax())], dtype=object).astype(type(classes[0]))
                base_rows = metric.per_row(y, bp, np.tile(freq, (len(y), 1)), classes)
            else:
                base_rows = metric.per_row(y, np.full(len(y), float(ytrain.mean())), None, classes)
        verdict = judge(ctx.spec.gate, metric, hold, y, cand_rows, champ_rows, base_rows, seed=ctx.spec.model.seed,
                        champion_seen=seen)
        window = candidate.lineage.get("window") or {"rows": len(train), "tried": []}
        body = {**verdict.to_dict(), "snapshot_id": snapshot_id, "window": window}
        ctx.meta.runs.add_verdict(VerdictRecord(verdict_id, run_id, verdict.passed, body, now))
        ctx.events.record("verdict", ("passed: " if verdict.passed else "rejected: ") + verdict.reason,
                          {"run_id": run_id, "verdict_id": verdict_id, "passed": verdict.passed})
        self._gain(body)
        if verdict.passed:
            ctx.stats.gate_passed += 1
        else:
            ctx.stats.gate_failed += 1
        return verdict

    def _register(self, cand: Candidate, decision: Retrain, snap: Snapshot, frame: pd.DataFrame,
                  train: pd.DataFrame, run_id: str, verdict_id: str, verdict: Verdict, now: float,
                  report: TickReport, *, refit: bool) -> None:
        """A passed candidate registered (refitted on the whole snapshot first, unless it serves before its
        refit) and deployed. A model a follow-up will soon replace is not refitted: a second full fit for a
        short stay."""
        ctx = self.ctx
        cand.lineage["gate_score"] = verdict.candidate_score
        # Serving first: the gated fit serves as soon as it is judged and the refit replaces it when done, so
        # the newest data is not held back by a second fit. Only for an immediate promotion: a staged rollout
        # gathers its evidence on the version that will stay.
        serve_first = refit and self.serve_before_refit and self.deployer.auto_promotion and (
            ctx.champion is None or ctx.spec.rollout.strategy == "immediate")
        if serve_first and "_arrived" in train and len(train):
            cand.lineage["newest_arrival"] = float(train["_arrived"].max())  # the holdout is not in this fit
        elif refit and not serve_first:
            cand = self._refit(cand, decision, snap, frame, run_id)
        mv = ctx.registry.register(cand.bundle, run_id=run_id, verdict_id=verdict_id, lineage=cand.lineage, now=now)
        report.registered = mv.version
        ctx.events.record("model_registered", f"version {mv.version} from {run_id}",
                          {"version": mv.version, "sha256": mv.artifact_sha256})
        self.deployer.deploy(mv.version, now, report, verdict.reason)
        if serve_first and report.promoted == mv.version:
            self.refit_due = PendingRefit(mv.version, cand, decision, snap, frame, run_id, verdict_id)

    def _refit(self, cand: Candidate, decision: Retrain, snap: Snapshot, frame: pd.DataFrame,
               run_id: str) -> Candidate:
        """The gated candidate's settings (its rows' weights by age too) fitted again on the whole snapshot
        (holdout included); the gated fit itself if that fails."""
        ctx, model = self.ctx, self.ctx.spec.model
        assert ctx.schema is not None
        full = TrainRequest(decision.run_key, snap.id, ctx.schema, model.estimator, model.params, "full",
                            model.seed, model.scale, frame, None, cand.lineage.get("half_life"),
                            tuple(cand.lineage.get("balance") or ()))
        try:
            refit = self._fitted(full)
        except TrainingFailed as e:
            ctx.events.record("refit_failed", f"{e}; serving the gated fit", {"run_id": run_id})
            return cand
        return Candidate(refit.bundle, {**cand.lineage, "refit_rows": refit.train_rows,
                                        "refit_seconds": refit.train_seconds, "t_last": snap.t_last,
                                        "cutoff": snap.cutoff, "newest_arrival": snap.newest_arrival},
                         cand.train_rows, cand.train_seconds)

    def finish_refit(self) -> int | None:
        """Fit the version that is serving again on its whole snapshot, register that as the next version and
        promote it if the first is still the champion. Returns the refit's version, if one was registered."""
        due, self.refit_due = self.refit_due, None
        if due is None:
            return None
        ctx = self.ctx
        version, snap, frame = due.version, due.snapshot, due.frame
        refit = self._refit(due.candidate, due.decision, snap, frame, due.run_id)
        if refit is due.candidate:
            return None
        mv = ctx.registry.register(refit.bundle, run_id=due.run_id, verdict_id=due.verdict_id,
                                   lineage={**refit.lineage, "refit_of": version}, now=ctx.clock.now())
        ctx.events.record("model_registered", f"version {mv.version}: version {version} refitted on all "
                          f"{len(frame)} rows of snapshot {snap.id}",
                          {"version": mv.version, "sha256": mv.artifact_sha256, "refit_of": version})
        if ctx.champion is None or ctx.champion.version != version or ctx.active_rollout() is not None:
            ctx.events.record("refit_not_promoted", f"version {version} no longer serves alone; version "
                              f"{mv.version} stays registered", {"version": mv.version})
            return mv.version
        self.deployer.promote(mv.version, actor=ctx.actor, reason=f"refit of version {version} on the whole "
                              f"snapshot {snap.id} (holdout included)")
        return mv.version

    def _fail(self, run_id: str, decision: Retrain, snap: Snapshot, now: float, why: str,
              report: TickReport) -> None:
        report.run_error = why
        self.ctx.stats.failed_runs += 1
        if self.ctx.stats.first_failure is None:
            self.ctx.stats.first_failure = why
        self._untrained(run_id, decision, snap, now, "failed", {"error": why})

    def _defer(self, run_id: str, decision: Retrain, snap: Snapshot, now: float, why: str,
               report: TickReport) -> None:
        report.deferred = why
        self.ctx.stats.deferred_runs += 1
        self._untrained(run_id, decision, snap, now, "deferred", {"reason": why})

    def _untrained(self, run_id: str, decision: Retrain, snap: Snapshot, now: float, status: str,
                   lineage: dict[str, str]) -> None:
        """A run that produced no model (failed or deferred): its row, so a restart counts it, and its event."""
        ctx = self.ctx
        ctx.meta.runs.add(RunRecord(id=run_id, run_key=decision.run_key, snapshot_id=snap.id, mode=ctx.spec.model.mode,
                                    status=status, lineage=lineage, train_rows=0, train_seconds=0.0, created_at=now))
        ctx.events.record(f"run_{status}", next(iter(lineage.values())), {"run_id": run_id, "snapshot_id": snap.id})
