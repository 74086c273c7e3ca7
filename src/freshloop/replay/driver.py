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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..clock import SimulatedClock, parse_duration
from ..data.validate import to_seconds
from ..errors import DataError, SpecError
from ..loop import Loop
from ..spec import LoopSpec, ModelSpec, PolicySpec, policy_preset
from ..train.model import import_estimator, is_river

__all__ = ["default_compare", "replay", "resolve_policy", "supports_online"]

Progress = Callable[[int, int], None]
_SERIES_POINTS = 120


def supports_online(model: ModelSpec) -> bool:
    if is_river(model.estimator):
        return True
    return hasattr(import_estimator(model.estimator), "partial_fit")


def default_compare(spec: LoopSpec) -> list[str]:
    """never, periodic at a few periods, the default policy, and online when the model supports it."""
    names = ["never", "periodic:30d", "periodic:90d", "periodic:365d", "default"]
    if spec.data.time is None:
        n = spec.replay.batch.rows or 100
        names = ["never", f"periodic:{n * 5}s", f"periodic:{n * 20}s", "default"]
    if supports_online(spec.model):
        names.append("online")
    return names


def resolve_policy(spec: LoopSpec, name: str) -> LoopSpec:
    """The spec with policy ``name`` (``online:<estimator>`` also swaps the model)."""
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
    if name == spec.policy.name:
        return spec
    return spec.with_policy(policy_preset(name))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def replay(spec: LoopSpec, frame: pd.DataFrame, out_dir: str | Path, *, policy: PolicySpec | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """Replay ``frame`` through a fresh loop under ``out_dir``; returns the summary (also written as JSON)."""
    if policy is not None:
        spec = spec.with_policy(policy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store_root = out / "store"
    if store_root.exists() and any(store_root.iterdir()):
        import shutil

        shutil.rmtree(store_root)
    spec = spec.model_copy(update={"store": spec.store.model_copy(update={"root": str(store_root), "url": None})})
    label = spec.data.label
    if label not in frame.columns:
        raise DataError(f"column {label!r}: the label column is missing from the replayed data (rule: data.label "
                        f"must name a column). Columns are {list(frame.columns)!r}.", field="data.label",
                        value=label)
    if len(frame) == 0:
        raise DataError("data: empty (rule: a replay needs rows).", field="data")
    frame = frame.reset_index(drop=True)
    if spec.data.time:
        if spec.data.time not in frame.columns:
            raise DataError(f"column {spec.data.time!r}: the time column is missing (rule: data.time must name a "
                            f"column).", field="data.time", value=spec.data.time)
        secs, bad = to_seconds(frame[spec.data.time], spec.data.time_unit)
        secs = secs.where(~bad, np.nan).ffill().bfill().fillna(0.0)
    else:
        secs = pd.Series(np.arange(len(frame), dtype=float), index=frame.index)
    order = np.argsort(secs.to_numpy(), kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    times = secs.to_numpy()[order]
    labels = frame[label].tolist()
    features = frame.drop(columns=[label])
    delay = parse_duration(spec.replay.label_delay)

    clock = SimulatedClock(start=float(times[0]))
    loop = Loop(spec, clock=clock, durable=False, actor="replay")
    # What exists now (imported libraries, the stream, its label list) lives for the whole replay: frozen,
    # it is not walked by every full garbage collection, which took a fifth of a 1M-row replay's time.
    # Unfrozen at the end, so a caller's objects are collected as before.
    gc.freeze()
    try:
        return _drive(spec, loop, clock, frame, features, labels, times, order, delay, out, progress)
    finally:
        gc.unfreeze()


def _drive(spec: LoopSpec, loop: Loop, clock: SimulatedClock, frame: pd.DataFrame, features: pd.DataFrame,
           labels: list[Any], times: np.ndarray, order: np.ndarray, delay: float, out: Path,
           progress: Progress | None) -> dict[str, Any]:
    warm = min(spec.replay.warmup, len(frame) - 1)
    clock.advance_to(float(times[warm - 1]))
    # Rows keep the ids the store generates ("<batch id>:<row>"): nothing is held per row for them, so a
    # long replay's memory is its data, not a map of ids. ``firsts``/``keys`` find a row's batch.
    loop.ingest(frame.iloc[:warm], source="replay", batch_id="warmup")
    loop.tick()

    # batches of the rest, by rows or by period
    rest = np.arange(warm, len(frame))
    if spec.replay.batch.rows:
        cuts = [rest[i:i + spec.replay.batch.rows] for i in range(0, len(rest), spec.replay.batch.rows)]
    else:
        period = parse_duration(spec.replay.batch.period or "1d")
        keys = np.floor((times[rest] - times[warm]) / period).astype(np.int64)
        _, starts = np.unique(keys, return_index=True)
        cuts = np.split(rest, starts[1:])
    due = times + delay
    next_label = warm
    firsts = np.array([int(c[0]) for c in cuts], dtype=np.int64)
    keys = [f"batch-{f}" for f in firsts]
    scored_at: list[np.ndarray] = []
    scores: list[np.ndarray] = []

    def ids_of(lo: int, hi: int) -> list[str]:
        """The generated ids of sorted rows lo..hi (all after the warm-up), batch by batch."""
        out: list[str] = []
        k = int(np.searchsorted(firsts, lo, side="right")) - 1
        while lo < hi:
            end = int(firsts[k + 1]) if k + 1 < len(firsts) else hi
            ids = loop.data.row_ids_for("replay", keys[k], min(end, hi) - int(firsts[k]))
            out += ids[lo - int(firsts[k]):]
            lo, k = min(end, hi), k + 1
        return out
    unserved = 0
    staleness: list[float] = []
    retrain_at: list[float] = []
    drift_series: list[dict[str, float]] = []
    drift_at: list[float] = []

    def mature(now: float) -> None:
        nonlocal next_label
        hi = int(np.searchsorted(due[warm:], now, side="right")) + warm
        hi = min(hi, batch_end)
        if hi > next_label:
            ids = ids_of(next_label, hi)
            fb = loop.feedback(ids, labels[next_label:hi], source="replay", batch_id=f"labels-{next_label}")
            scored_at.append(np.asarray(fb.at, dtype=float))
            scores.append(np.asarray(fb.scores, dtype=float))
            next_label = hi

    total = len(cuts)
    every = max(1, total // 200)
    batch_end = warm
    for k, idx in enumerate(cuts):
        now = float(times[idx[-1]])
        clock.advance_to(max(now, clock.now()))
        batch = features.iloc[idx]
        ids = loop.data.row_ids_for("replay", keys[k], len(idx))
        if loop.champion_version is not None:
            loop.predict(batch, row_ids=ids, keys=[f"r{order[i]}" for i in idx])  # routed by original row
        else:
            unserved += len(idx)
        loop.ingest(batch, source="replay", batch_id=keys[k])
        batch_end = int(idx[-1]) + 1
        mature(clock.now())
        rep = loop.tick()
        if loop.rollout is not None and loop.rollout.status == "awaiting_approval":
            loop.approve(loop.rollout.id, actor="replay", reason="replay approves manual steps automatically")
        if rep.staleness is not None:
            staleness.append(rep.staleness)
        if rep.run_id:
            retrain_at.append(rep.now)
        if rep.signals is not None and rep.signals.drift and k % max(1, total // _SERIES_POINTS) == 0:
            drift_at.append(rep.now)
            drift_series.append({f: round(s.value, 6) for f, s in rep.signals.drift.items()})
        if progress and (k % every == 0 or k == total - 1):
            progress(k + 1, total)
    # let the last labels mature so every served prediction is scored
    if next_label < len(frame):
        clock.advance_to(max(clock.now(), float(due[-1])))
        mature(clock.now())
    loop.close()
    return _summarise(spec, loop, out, np.concatenate(scored_at or [np.empty(0)]),
                      np.concatenate(scores or [np.empty(0)]), unserved, staleness, retrain_at, drift_at, drift_series,
                      times)


def _summarise(spec: LoopSpec, loop: Loop, out: Path, scored_at: np.ndarray, scores: np.ndarray, unserved: int,
               staleness: list[float], retrain_at: list[float], drift_at: list[float],
               drift_series: list[dict[str, float]], times: np.ndarray) -> dict[str, Any]:
    metric = loop.metric
    arr = np.array(scores)
    at = np.array(scored_at)
    order = np.argsort(at, kind="stable")
    arr, at = arr[order], at[order]
    chunks = np.array_split(np.arange(len(arr)), min(_SERIES_POINTS, max(len(arr), 1)))
    series = [{"t": float(at[c[-1]]), "metric": float(metric.aggregate(arr[c]))} for c in chunks if len(c)]
    decisions = loop.meta.list_decisions()
    retrains = [{"at": d["at"], "run_key": d["run_key"], "reasons": d["reasons"]} for d in decisions
                if d["kind"] == "retrain"]
    counts: dict[str, dict[str, int]] = {"retrain": {}, "skip": {}}  # decisions by kind, then by first reason
    for d in decisions:
        head = d["reasons"][0].split(":", 1)[0] if d["reasons"] else "?"
        by = counts.setdefault(d["kind"], {})
        by[head] = by.get(head, 0) + 1
    verdicts = loop.meta.list_verdicts()
    # data-to-deploy: for each label that matured after the first model went live, the time until a
    # promoted model had been trained on it (labels no later model used are counted as never deployed)
    label_times = loop.data.label_times()
    deployed = sorted(st_ for st_ in loop.stats.deployments)
    lags = np.array([])
    never_deployed = 0
    if deployed:
        at_d = np.array([d[0] for d in deployed])
        cut = np.maximum.accumulate(np.array([d[1] for d in deployed]))
        later = label_times[np.isfinite(label_times) & (label_times > at_d[0])]
        j = np.searchsorted(cut, later, side="left")
        ok = j < len(cut)
        lags = at_d[j[ok]] - later[ok]
        never_deployed = int((~ok).sum())
    unit = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[spec.data.time_unit if spec.data.time else "s"]
    st = loop.stats
    summary = {
        "policy": spec.policy.name,
        "metric_name": metric.name,
        "bigger_is_better": metric.bigger_is_better,
        "metric": round(float(metric.aggregate(arr)), 6) if len(arr) else None,
        "predictions_scored": int(len(arr)),
        "rows_unserved": int(unserved),
        "retrains": st.retrains,
        "failed_runs": st.failed_runs,
        "gate_passed": st.gate_passed,
        "gate_rejected": st.gate_failed,
        "promotions": st.promotions,
        "rollbacks": st.rollbacks,
        "training_rows": st.train_rows,
        "online_rows": st.online_rows,
        "time_unit": spec.data.time_unit if spec.data.time else "s",
        "max_staleness": round(max(staleness) / unit, 4) if staleness else None,
        "mean_staleness": round(float(np.mean(staleness)) / unit, 4) if staleness else None,
        "mean_data_to_deploy": round(float(np.mean(lags)) / unit, 4) if len(lags) else None,
        "labels_never_deployed": never_deployed,
        "decisions": {"retrain": retrains, "retrain_counts": counts["retrain"], "skip_counts": counts["skip"]},
        "verdicts": [{"at": v["created_at"], "passed": v["passed"], "reason": v["body"]["reason"]} for v in verdicts],
        "series": series,
        "retrain_times": retrain_at,
        "drift": {"t": drift_at, "values": drift_series},
        "stream": {"rows": int(len(times)), "t_first": float(times[0]), "t_last": float(times[-1])},
        "spec": spec.model_dump(mode="json", exclude={"store"}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    (out / "timings.json").write_text(json.dumps({"training_seconds": st.train_seconds}, indent=2))
    summary["training_seconds"] = st.train_seconds
    return summary


def policy_dir(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / "runs" / _safe(name)

