"""Replay: a simulated clock feeds a historical stream through the very same ``Loop``.

Per batch, at the batch's time: the serving model predicts the rows (logged), the rows are ingested
without their labels, labels whose delay has passed are fed back, and the loop ticks. Quality is
prequential: every prediction is scored when its label matures, against what was served.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..clock import SimulatedClock, parse_duration, round_duration
from ..data.store import DataStore
from ..data.times import to_seconds, unit_seconds
from ..errors import DataError, SpecError
from ..loop import Loop
from ..spec import CompanionSpec, LoopSpec, ModelSpec, PolicySpec, policy_preset
from ..store import DecisionRecord, open_stores
from ..train.model import import_estimator, learns_online

__all__ = ["default_compare", "replay", "replay_together", "resolve_policy", "supports_online"]

Progress = Callable[[int, int], None]
_SERIES_POINTS = 120


def supports_online(model: ModelSpec) -> bool:
    return learns_online(model.estimator)


def default_compare(spec: LoopSpec) -> list[str]:
    """never, periodic at a few periods, the default policy, and online when the model supports it."""
    names = ["never", "periodic:30d", "periodic:90d", "periodic:365d", "default"]
    if spec.data.time is not None and spec.replay.batch.period is not None:  # every 5 and 20 batches, rounded
        every = parse_duration(spec.replay.batch.period)
        names = ["never", f"periodic:{round_duration(5 * every)}", f"periodic:{round_duration(20 * every)}", "default"]
    elif spec.data.time is None:
        n = spec.replay.batch.rows or 100
        names = ["never", f"periodic:{n * 5}rows", f"periodic:{n * 20}rows", "default"]
    if supports_online(spec.model):
        names.append("online")
    return names


def resolve_policy(spec: LoopSpec, name: str) -> LoopSpec:
    """The spec with policy ``name`` (``online:<estimator>`` also swaps the model). A companion that refits the
    spec's model (``model.companion.refit``) retrains it at every tick: ``never`` and the online contenders,
    which fit the spec's model once, go without it."""
    if spec.model.companion and spec.model.companion.refit and (name == "never" or name.startswith("online")):
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"companion": None})})
    if name.startswith("online:"):
        est = name.split(":", 1)[1]
        import_estimator(est)
        model = spec.model.model_copy(update={"estimator": est, "params": {}, "mode": "online",
                                              "scale": spec.model.scale})
        pol = policy_preset("online").model_copy(update={"name": name})
        return spec.model_copy(update={"model": model, "policy": pol})
    if name == "online":
        if not supports_online(spec.model):
            raise SpecError(f"replay.compare: 'online' needs a River model or an estimator with partial_fit; "
                            f"{spec.model.estimator} has neither.", field="replay.compare", value=name)
        return spec.model_copy(update={"policy": policy_preset("online"),
                                       "model": spec.model.model_copy(update={"mode": "online"})})
    if name == "hybrid":  # the spec's policy, with an online companion beside its champion
        online = spec.model.companion if spec.model.companion and spec.model.companion.refit is None else None
        model = spec.model.model_copy(update={"companion": online or CompanionSpec()})
        return spec.model_copy(update={"model": model, "policy": spec.policy.model_copy(update={"name": name})})
    if name == spec.policy.name:
        return spec
    return spec.with_policy(policy_preset(name))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _prepared(spec: LoopSpec, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The stream in time order, its times in seconds, and each sorted row's original position."""
    label = spec.data.label
    if label not in frame.columns:
        raise DataError(f"column {label!r}: the label column is missing from the replayed data (rule: data.label "
                        f"must name a column). Columns are {list(frame.columns)!r}.", field="data.label",
                        value=label)
    if len(frame) == 0:
        raise DataError("data: empty (rule: a replay needs rows).", field="data")
    if not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1):
        frame = frame.reset_index(drop=True)
    if spec.data.time:
        if spec.data.time not in frame.columns:
            raise DataError(f"column {spec.data.time!r}: the time column is missing (rule: data.time must name a "
                            f"column).", field="data.time", value=spec.data.time)
        secs, bad = to_seconds(frame[spec.data.time], spec.data.time_unit)
        secs = secs.where(~bad, np.nan).ffill().bfill().fillna(0.0)
    else:
        secs = pd.Series(np.arange(len(frame), dtype=float), index=frame.index)
    secs_a = secs.to_numpy()
    if (np.diff(secs_a) >= 0).all():  # already in time order: the stream is read as it is, not copied
        return frame, secs_a, np.arange(len(frame))
    order = np.argsort(secs_a, kind="stable")
    return frame.iloc[order].reset_index(drop=True), secs_a[order], order


def _fresh(root: Path) -> Path:
    if root.exists() and any(root.iterdir()):
        import shutil

        shutil.rmtree(root)
    return root


def _in_store(spec: LoopSpec, root: Path) -> LoopSpec:
    return spec.model_copy(update={"store": spec.store.model_copy(update={"root": str(_fresh(root)), "url": None})})


def replay(spec: LoopSpec, frame: pd.DataFrame, out_dir: str | Path, *, policy: PolicySpec | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """Replay ``frame`` through a fresh loop under ``out_dir``; returns the summary (also written as JSON)."""
    if policy is not None:
        spec = spec.with_policy(policy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = _in_store(spec, out / "store")
    frame, times, order = _prepared(spec, frame)
    clock = SimulatedClock(start=float(times[0]))
    loop = Loop(spec, clock=clock, durable=False, actor="replay")
    return _drive([_Run(spec, loop, out, progress)], loop.data, clock, frame, times, order)[0]


def replay_together(specs: dict[str, LoopSpec], frame: pd.DataFrame, out_dir: str | Path, *,
                    progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict[str, Any]]:
    """Replay several policies of one stream in step, storing the stream once.

    Ingest and label arrival do not depend on the policy, so one data store under ``<out_dir>/data``
    validates and versions each batch once, and every policy's loop observes it (its monitor, its event
    log). Each policy keeps its own registry, runs, decisions and prediction log under
    ``policy_dir(out_dir, name)/store``, and its summary is what :func:`replay` alone would give.
    """
    if len(specs) == 1:
        (name, spec), = specs.items()
        return {name: replay(spec, frame, policy_dir(out_dir, name),
                             progress=(lambda d, t: progress(name, d, t)) if progress else None)}
    first = next(iter(specs.values()))
    frame, times, order = _prepared(first, frame)
    clock = SimulatedClock(start=float(times[0]))
    data_root = _fresh(Path(out_dir) / "data" / "-".join(_safe(n) for n in specs))
    meta, blobs = open_stores(data_root, None, durable=False)
    data = DataStore(first.name, first.data, meta, blobs, view_bytes=first.store.view_mb * 2**20)
    runs = []
    for name, spec in specs.items():
        if spec.data != first.data or spec.replay != first.replay:
            raise SpecError(f"replay: policy {name!r} reads the stream differently (rule: policies replayed "
                            "together share data and replay settings).", field="replay", value=name)
        out = policy_dir(out_dir, name)
        out.mkdir(parents=True, exist_ok=True)
        spec = _in_store(spec, out / "store")
        tell = (lambda d, t, name=name: progress(name, d, t)) if progress else None
        runs.append(_Run(spec, Loop(spec, clock=clock, durable=False, actor="replay", data=data), out, tell))
    try:
        results = _drive(runs, data, clock, frame, times, order)
    finally:
        meta.close()
    return dict(zip(specs, results, strict=True))


@dataclass
class _Run:
    """One policy's loop in a replay, and what the replay records of it."""

    spec: LoopSpec
    loop: Loop
    out: Path
    progress: Progress | None = None
    unserved: int = 0
    staleness: list[float] = field(default_factory=list)
    retrain_at: list[float] = field(default_factory=list)
    drift_at: list[float] = field(default_factory=list)
    drift_series: list[dict[str, float]] = field(default_factory=list)
    scored_at: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)  # each scored row's label and what it was served, in order
    served: list[Any] = field(default_factory=list)
    #: why this policy's replay stopped early (the first error its loop raised), or None; the policies replayed
    #: beside it go on
    error: str | None = None

    def guard(self, now: float, step: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run one step of this policy's loop; an error ends this policy's replay, not the others'."""
        if self.error is not None:
            return
        try:
            step(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure of one policy is reported in its row
            self.error = f"at t={now:g}: {type(e).__name__}: {e}"
            self.loop.events.record("replay_failed", self.error, {"policy": self.spec.policy.name})


def _drive(runs: list[_Run], data: DataStore, clock: SimulatedClock, frame: pd.DataFrame, times: np.ndarray,
           order: np.ndarray) -> list[dict[str, Any]]:
    # What exists now (imported libraries, the stream, its label list) lives for the whole replay: frozen,
    # it is not walked by every full garbage collection, which took a fifth of a 1M-row replay's time.
    # Unfrozen at the end, so a caller's objects are collected as before.
    gc.freeze()
    try:
        return _steps(runs, data, clock, frame, times, order)
    finally:
        gc.unfreeze()


def _steps(runs: list[_Run], data: DataStore, clock: SimulatedClock, frame: pd.DataFrame, times: np.ndarray,
           order: np.ndarray) -> list[dict[str, Any]]:
    spec = runs[0].spec
    label = spec.data.label
    labels = frame[label].to_numpy()
    features = frame.drop(columns=[label])
    warm = min(spec.replay.warmup, len(frame) - 1)
    _warm_up(runs, data, clock, frame, times, warm)
    firsts = _batch_starts(spec, times, warm)
    ends = np.r_[firsts[1:], len(frame)]
    due = times + parse_duration(spec.replay.label_delay)
    next_label = warm
    # Rows keep the ids the store generates ("<batch id>:<row>"): nothing is held per row for them, so a
    # long replay's memory is its data, not a map of ids. ``firsts``/``keys`` find a row's batch.
    keys = [f"batch-{f}" for f in firsts]

    def mature(now: float) -> None:
        nonlocal next_label
        hi = int(np.searchsorted(due[warm:], now, side="right")) + warm
        hi = min(hi, batch_end)
        if hi > next_label:
            ids = _ids_of(data, firsts, keys, next_label, hi)
            res = data.ingest_labels(ids, labels[next_label:hi].tolist(), now=now, source="replay",
                                     batch_id=f"labels-{next_label}")
            for r in runs:
                r.guard(now, _observe_labels, r, ids, res)
            next_label = hi

    total = len(firsts)
    every = max(1, total // 200)
    batch_end = warm
    for k, (lo, hi) in enumerate(zip(firsts.tolist(), ends.tolist(), strict=True)):
        now = float(times[hi - 1])
        clock.advance_to(max(now, clock.now()))
        batch = features.iloc[lo:hi]
        ids = data.row_ids_for("replay", keys[k], hi - lo)
        routing = [f"r{o}" for o in order[lo:hi].tolist()]  # rollouts route by the original row
        for r in runs:
            if r.error is not None or r.loop.champion_version is None:
                r.unserved += hi - lo
            else:
                r.guard(now, r.loop.predict, batch, row_ids=ids, keys=routing)
        ingested = data.ingest(batch, now=clock.now(), source="replay", batch_id=keys[k])
        for r in runs:
            r.guard(now, r.loop.observe_ingest, ingested)
        batch_end = hi
        mature(clock.now())
        for r in runs:
            r.guard(now, _tick, r, k, total)
            if r.progress and (k % every == 0 or k == total - 1):
                r.progress(k + 1, total)
    # let the last labels mature so every served prediction is scored
    if next_label < len(frame):
        clock.advance_to(max(clock.now(), float(due[-1])))
        mature(clock.now())
    return [_closed_summary(r, clock.now(), times) for r in runs]


def _warm_up(runs: list[_Run], data: DataStore, clock: SimulatedClock, frame: pd.DataFrame, times: np.ndarray,
             warm: int) -> None:
    """The first ``warm`` rows, labels included, stored at once; each loop observes them and ticks."""
    clock.advance_to(float(times[warm - 1]))
    ingested = data.ingest(frame.iloc[:warm], now=clock.now(), source="replay", batch_id="warmup")
    for r in runs:
        r.guard(clock.now(), r.loop.observe_ingest, ingested)
        r.guard(clock.now(), r.loop.tick)


def _batch_starts(spec: LoopSpec, times: np.ndarray, warm: int) -> np.ndarray:
    """Where each batch after the warm-up starts, by rows or by period: batch k is the sorted rows
    firsts[k] up to the next batch's first."""
    if spec.replay.batch.rows:
        return np.arange(warm, len(times), spec.replay.batch.rows, dtype=np.int64)
    period = parse_duration(spec.replay.batch.period or "1d")
    _, starts = np.unique(np.floor((times[warm:] - times[warm]) / period).astype(np.int64), return_index=True)
    return warm + starts.astype(np.int64)


def _ids_of(data: DataStore, firsts: np.ndarray, keys: list[str], lo: int, hi: int) -> list[str]:
    """The generated ids of sorted rows lo..hi (all after the warm-up), batch by batch."""
    out: list[str] = []
    k = int(np.searchsorted(firsts, lo, side="right")) - 1
    while lo < hi:
        end = int(firsts[k + 1]) if k + 1 < len(firsts) else hi
        ids = data.row_ids_for("replay", keys[k], min(end, hi) - int(firsts[k]))
        out += ids[lo - int(firsts[k]):]
        lo, k = min(end, hi), k + 1
    return out


def _closed_summary(r: _Run, now: float, times: np.ndarray) -> dict[str, Any]:
    r.guard(now, r.loop.close)
    try:
        return _summarise(r, times)
    except Exception as e:  # noqa: BLE001 - a loop that failed before it had a schema has nothing to sum up
        return failed_summary(r.spec, r.spec.policy.name, r.error or f"{type(e).__name__}: {e}")


def _observe_labels(r: _Run, ids: list[str], res: Any) -> None:
    fb = r.loop.observe_labels(ids, res)
    r.scored_at.append(np.asarray(fb.at, dtype=float))
    r.scores.append(np.asarray(fb.scores, dtype=float))
    r.labels.extend(fb.labels)
    r.served.extend(fb.served)


def _tick(r: _Run, k: int, total: int) -> None:
    loop = r.loop
    rep = loop.tick()
    if loop.rollout is not None and loop.rollout.status == "awaiting_approval":
        loop.approve(loop.rollout.id, actor="replay", reason="replay approves manual steps automatically")
    if rep.data_age is not None:
        r.staleness.append(rep.data_age)
    if rep.run_id:
        r.retrain_at.append(rep.now)
    if rep.signals is not None and rep.signals.drift and k % max(1, total // _SERIES_POINTS) == 0:
        r.drift_at.append(rep.now)
        r.drift_series.append({f: round(s.value, 6) for f, s in rep.signals.drift.items()})


def _decisions(decisions: list[DecisionRecord]) -> dict[str, Any]:
    """The retrain decisions, how many decisions of each kind each trigger (retrains, by the first) or guard
    (skips) made, and the past versions promoted back (``gate.recall``)."""
    retrains = [{"at": d.at, "run_key": d.run_key, "reasons": d.reasons, "triggers": d.triggers}
                for d in decisions if d.kind == "retrain"]
    counts: dict[str, dict[str, int]] = {"retrain": {}, "skip": {}}
    for d in decisions:
        head = (d.triggers or ["?"])[0] if d.kind == "retrain" else d.guard or "?"
        by = counts.setdefault(d.kind, {})
        by[head] = by.get(head, 0) + 1
    recalls = [{"at": d.at, "reasons": d.reasons} for d in decisions if d.kind == "recall"]
    return {"retrain": retrains, "retrain_counts": counts["retrain"], "skip_counts": counts["skip"],
            "recall": recalls}


def _data_to_deploy(loop: Loop) -> tuple[np.ndarray, int]:
    """For each label that matured after the first model went live, the time until a promoted model had
    been trained on it; and how many labels no later model used (never deployed)."""
    label_times = loop.data.label_times()
    deployed = sorted(loop.stats.deployments)
    if not deployed:
        return np.array([]), 0
    at_d = np.array([d[0] for d in deployed])
    cut = np.maximum.accumulate(np.array([d[1] for d in deployed]))
    later = label_times[np.isfinite(label_times) & (label_times > at_d[0])]
    j = np.searchsorted(cut, later, side="left")
    ok = j < len(cut)
    return at_d[j[ok]] - later[ok], int((~ok).sum())


def _summarise(run: _Run, times: np.ndarray) -> dict[str, Any]:
    spec, loop, out, staleness = run.spec, run.loop, run.out, run.staleness
    metric = loop.metric
    arr = np.concatenate(run.scores or [np.empty(0)])
    at = np.concatenate(run.scored_at or [np.empty(0)])
    order = np.argsort(at, kind="stable")
    arr, at = arr[order], at[order]
    chunks = np.array_split(np.arange(len(arr)), min(_SERIES_POINTS, max(len(arr), 1)))
    series = [{"t": float(at[c[-1]]), "metric": float(metric.aggregate(arr[c]))} for c in chunks if len(c)]
    verdicts = loop.meta.runs.verdicts()
    lags, never_deployed = _data_to_deploy(loop)
    unit_name = _time_unit(spec)
    unit = unit_seconds(unit_name)
    st = loop.stats
    classes = _by_class(run.labels, run.served) if loop.schema is not None and \
        loop.schema.task == "classification" else None
    summary = {
        "policy": spec.policy.name,
        "metric_name": metric.name,
        "bigger_is_better": metric.bigger_is_better,
        "metric": round(float(metric.aggregate(arr)), 6) if len(arr) else None,
        "classes": classes,
        "predictions_scored": int(len(arr)),
        "rows_unserved": int(run.unserved),
        "retrains": st.retrains,
        "failed_runs": st.failed_runs,
        "deferred_runs": st.deferred_runs,
        "first_failure": st.first_failure,
        "error": run.error,
        "gate_passed": st.gate_passed,
        "gate_rejected": st.gate_failed,
        "promotions": st.promotions,
        "rollbacks": st.rollbacks,
        "training_rows": st.train_rows,
        "online_rows": st.online_rows,
        "companion": None if spec.model.companion is None else {
            "estimator": loop.companion.estimator(), "refit": spec.model.companion.refit,
            "every": spec.model.companion.every,
            "rows_learned": st.companion_rows,
            "rows_served": st.companion_served, "switches": st.companion_switches, "errors": st.companion_errors,
            "switched": [{"at": e.at, "serves": e.payload["serves"], "why": e.reason}
                         for e in loop.events.list("serving_switched")]},
        "time_unit": unit_name,  # of the staleness and data-to-deploy figures: the time column's, or rows
        "units": _units(unit_name),
        "max_staleness": round(max(staleness) / unit, 4) if staleness else None,
        "mean_staleness": round(float(np.mean(staleness)) / unit, 4) if staleness else None,
        "mean_data_to_deploy": round(float(np.mean(lags)) / unit, 4) if len(lags) else None,
        "labels_never_deployed": never_deployed,
        "decisions": _decisions(loop.meta.decisions.list()),
        "verdicts": [_verdict(v.created_at, v.passed, v.body) for v in verdicts],
        "series": series,
        "retrain_times": run.retrain_at,
        "drift": {"t": run.drift_at, "values": run.drift_series},
        "stream": {"rows": int(len(times)), "t_first": float(times[0]), "t_last": float(times[-1])},
        "spec": spec.model_dump(mode="json", exclude={"store"}),
    }
    if metric.by_class and classes:  # exact over the stream, not a mean of per-batch weights
        summary["metric"] = classes["balanced_accuracy"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    (out / "timings.json").write_text(json.dumps({"training_seconds": st.train_seconds}, indent=2))
    summary["training_seconds"] = st.train_seconds
    return summary


def _by_class(labels: list[Any], served: list[Any]) -> dict[str, Any] | None:
    """How each class fared over the stream: its rows, and the share of them served their class (recall); and
    the mean of those recalls (balanced accuracy), exact, over every scored row at once.

    >>> _by_class([0, 0, 0, 1], [0, 0, 1, 0])
    {'balanced_accuracy': 0.333333, 'recall': {'0': 0.666667, '1': 0.0}, 'rows': {'0': 3, '1': 1}}
    """
    if not labels:
        return None
    y, p = pd.Series(labels).astype(str), pd.Series(served).astype(str)
    hit = (y == p).groupby(y).mean()
    recall = {str(k): round(float(v), 6) for k, v in hit.items()}
    return {"balanced_accuracy": round(float(hit.mean()), 6), "recall": recall,
            "rows": {str(k): int(v) for k, v in y.value_counts().sort_index().items()}}


def _verdict(at: float, passed: bool, body: dict[str, Any]) -> dict[str, Any]:
    """A verdict in the summary: when, whether it passed and why, and the window its candidate was fitted on
    (``window`` rows of the ``window_of`` its retrain could have used, and why; no ``window_of`` when the
    retrain fitted the whole window without choosing, with or without trying its weights; ``half_life`` when
    its rows were weighted by age, and ``weighed`` when that was tried; ``balanced`` when its rows were
    weighted so that each class counts the same)."""
    window = body.get("window") or {}
    tried = [t["rows"] for t in window.get("tried", [])] if window.get("chose", True) else []
    weighed = any(t.get("half_life") for t in window.get("tried", []))
    return {"at": at, "passed": passed, "reason": body["reason"], "window": window.get("rows"),
            "window_of": max(tried) if tried else None, "window_why": window.get("why"),
            "half_life": window.get("half_life"), "weighed": weighed, "balanced": bool(window.get("balanced"))}


def _time_unit(spec: LoopSpec) -> str:
    """The unit a summary gives durations in: the time column's, or rows when the row number is the clock."""
    return spec.data.time_unit if spec.data.time else "rows"


def _units(unit: str) -> dict[str, str]:
    return {"max_staleness": unit, "mean_staleness": unit, "mean_data_to_deploy": unit, "training_rows": "rows",
            "online_rows": "rows", "training_seconds": "s (wall clock, timings.json)"}


def failed_summary(spec: LoopSpec, name: str, error: str) -> dict[str, Any]:
    """The row of a policy (``spec`` holds its policy) whose replay produced nothing: the error, no figures."""
    from ..evaluate.metrics import default_metric, get_metric

    metric = get_metric(spec.gate.metric or default_metric(spec.data.task or "classification"))
    return {"policy": name, "metric_name": metric.name, "bigger_is_better": metric.bigger_is_better, "metric": None,
            "predictions_scored": 0, "rows_unserved": 0, "retrains": 0, "failed_runs": 0, "deferred_runs": 0,
            "first_failure": None, "classes": None,
            "error": error, "gate_passed": 0, "gate_rejected": 0, "promotions": 0, "rollbacks": 0,
            "training_rows": 0, "online_rows": 0, "time_unit": _time_unit(spec),
            "units": _units(_time_unit(spec)),
            "max_staleness": None, "mean_staleness": None, "mean_data_to_deploy": None, "labels_never_deployed": 0,
            "decisions": {"retrain": [], "retrain_counts": {}, "skip_counts": {}}, "verdicts": [], "series": [],
            "retrain_times": [], "drift": {"t": [], "values": []}, "stream": {},
            "spec": spec.model_dump(mode="json", exclude={"store"}), "training_seconds": 0.0}


def policy_dir(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / "runs" / _safe(name)

