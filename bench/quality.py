"""Adaptation quality: prequential metric of the served model under one label delay for every contender."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from arf import arf_delayed, refit_batches

from freshloop.clock import parse_duration
from freshloop.datasets import STREAMS, load_stream
from freshloop.errors import SpecError
from freshloop.replay import compare
from freshloop.spec import CompanionSpec, LoopSpec, load_spec, load_spec_dict, preset_period
from freshloop.suggest import suggest_spec
from freshloop.train.model import check_model

ROOT = Path(__file__).resolve().parents[1]


ARF_SEEDS = (42, 43, 44)
ONLINE = "online:river.forest.ARFClassifier"  # freshloop's online mode, with the model ARF-alone runs
# rainfall's spec model is a logistic regression; the same default policy also runs with scikit-learn's forest,
# untuned, to tell the model's share of its gap to ARF (itself a forest) from the policy's
FOREST = "sklearn.ensemble.RandomForestClassifier"
HYBRID = "hybrid"  # the default policy with ARF as an online companion beside its champion
FOREST_ROW = f"default, {FOREST.rsplit('.', 1)[1]} (default settings) in place of the spec's model"


def arf_seeds(frame: pd.DataFrame, label: str, features: list[str], delay_rows: int, warmup: int,
              workers: int) -> dict[str, Any]:
    """ARF over several seeds (its accuracy moves by tenths of a point with the seed, or with the last bit of
    an input), in parallel processes; ``seconds`` is one run's median time."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        runs = list(pool.map(arf_delayed, *zip(*[(frame, label, features, delay_rows, warmup, s)
                                                   for s in ARF_SEEDS], strict=True)))
    metrics = [r["metric"] for r in runs]
    return {"metric": sum(metrics) / len(metrics), "min": min(metrics), "max": max(metrics),
            "seconds": sorted(r["seconds"] for r in runs)[len(runs) // 2], "rows": len(frame)}


def stream_spec(name: str, frame: pd.DataFrame, info: dict[str, Any]
                ) -> tuple[LoopSpec, list[str], list[str], int]:
    """The spec a user would get: the demo's for rainfall, `freshloop init`'s for the rest; the policies
    whose comparison is timed, more fixed periods for the oracle search, and ARF's delay in rows."""
    if name == "rainfall":
        spec = load_spec(ROOT / "examples" / "rainfall.yaml")
        # timed: the comparison the demo runs (the spec's replay.compare); 90d only widens the oracle search
        return spec, list(spec.replay.compare or []), ["periodic:90d", HYBRID], 1
    own_time = info.get("time") if name not in STREAMS else None  # a file's time column, if it has one
    found = suggest_spec(frame, label=info["label"], name=name, time=own_time)
    raw = found.spec
    info["model_choice"] = found.choice
    batch = raw["replay"]["batch"]
    every = parse_duration(batch["period"]) if "period" in batch else batch["rows"]  # a batch's seconds or rows
    if "time" not in raw["data"]:
        raw["replay"]["label_delay"] = f"{every // 2}s"  # labels arrive half a batch later (1 row = 1 s)
    spec = load_spec_dict(raw)
    own_time = raw["data"].get("time")  # the clock init chose: the one given, or the time column it found
    policies = ["never", f"periodic:{5 * every:g}s", f"periodic:{20 * every:g}s", f"periodic:{80 * every:g}s",
                "default", HYBRID]
    delay = parse_duration(raw["replay"]["label_delay"])
    if own_time is not None:  # ARF's delay is in rows: the median number of rows per time unit of delay
        steps = pd.to_numeric(frame[own_time], errors="coerce").diff().median()
        delay = delay / steps if steps and steps > 0 else 0
    return spec, policies, [], int(delay)


REFIT_ROWS = (60, 100)  # the window lengths the refit-every-batch baseline tries; the better one is shown


def refit_best(spec: LoopSpec, frame: pd.DataFrame, label: str, features: list[str], delay_rows: int,
               workers: int) -> dict[str, Any] | None:
    """The refit-every-batch baseline (see ``arf.refit_batches``) at its better window of ``REFIT_ROWS``, under
    the same label delay, the windows in parallel processes; None for a stream batched by time (a day of
    rainfall is one row)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    batch = spec.replay.batch.rows
    if not batch:
        return None
    model = spec.model
    scale = model.scale if model.scale is not None else not model.estimator.startswith(("sklearn.ensemble",
                                                                                          "sklearn.tree"))
    args = [(frame, label, features, batch, delay_rows, spec.replay.warmup, model.estimator, dict(model.params),
             scale, k) for k in REFIT_ROWS]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        runs = [{**r, "last": k} for r, k in zip(pool.map(refit_batches, *zip(*args, strict=True)), REFIT_ROWS,
                                                 strict=True)]
    return max(runs, key=lambda r: r["metric"])


def _period(policy: str) -> float:
    """A fixed period's length in seconds (other policies: 0), to list periods in order."""
    return preset_period(policy) or 0.0


def load_file(path: str, label: str, time_col: str | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A stream from a CSV or Parquet file (rows in arrival order); no known drift points."""
    frame = pd.read_parquet(path) if path.endswith((".parquet", ".pq")) else pd.read_csv(path)
    for col in (label, time_col):
        if col is not None and col not in frame.columns:
            raise SystemExit(f"{path}: no column {col!r} (columns: {list(frame.columns)})")
    return frame, {"label": label, "time": time_col, "drift_points": []}


def detection(retrain_at: list[float], drift: list[int]) -> tuple[float | None, int]:
    """Mean delay from each known drift point to the first retrain before the next one (points with none
    are missed), and false alarms: retrains before the first drift point."""
    delays = []
    for i, p in enumerate(drift):
        end = drift[i + 1] if i + 1 < len(drift) else float("inf")
        hits = [t for t in retrain_at if p <= t < end]
        if hits:
            delays.append(hits[0] - p)
    return (sum(delays) / len(delays) if delays else None), sum(1 for t in retrain_at if t < drift[0])


def windows(summary: dict[str, Any]) -> dict[str, int]:
    """How a replay's retrains chose their window: how many chose, kept a shorter one than the whole, tried
    rows weighted by age (``model.window.decay``) and kept them."""
    chose = [v for v in summary.get("verdicts", []) if v.get("window_of")]
    return {"chose": len(chose), "shorter": sum(v["window"] < v["window_of"] for v in chose),
            "weighed": sum(bool(v.get("weighed")) for v in chose), "weighted": sum(bool(v.get("half_life"))
                                                                             for v in chose)}


def with_refit(spec: LoopSpec, refit: int | None, every: int | None = None) -> LoopSpec:
    """The spec with ``model.companion.refit: refit`` and ``every`` (refit 0 or None: no companion)."""
    companion = CompanionSpec(refit=refit, every=every) if refit else None
    return spec.model_copy(update={"model": spec.model.model_copy(update={"companion": companion})})


def run_stream(name: str, n: int | None, workers: int, loaded: tuple[pd.DataFrame, dict[str, Any]] | None = None,
               decay: list[float] | None = None, mode: str | None = None,
               recall: int | None = None, react: int | None = None, refit: int | None = None) -> dict[str, Any]:
    from speed import ChildrenPeak, peak_rss_mb, reset_peak_rss

    frame, info = loaded if loaded is not None else load_stream(name, n=n)
    spec, policies, extra, delay_rows = stream_spec(name, frame, info)
    if decay:  # rows weighted by age, tried beside the unweighted fit (model.window.decay)
        window = spec.model.window.model_copy(update={"decay": sorted(set(decay), reverse=True)})
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"window": window})})
    if mode:  # how a retrain learns (model.mode): warm_start grows the champion on the new rows
        model = spec.model.model_copy(update={"mode": mode})
        try:
            check_model(model)
        except SpecError as e:  # a model that cannot learn new rows (init's linear model) keeps the full mode
            print(f"{name}: model.mode stays {spec.model.mode}: {e}", file=sys.stderr)
        else:
            spec = spec.model_copy(update={"model": model})
    if recall is not None:  # past concepts' versions scored at every tick, promoted back when surely better
        spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"recall": recall})})
    if refit is not None:  # the spec's model refitted at every tick on the newest labels, serving when better
        spec = with_refit(spec, refit)
    if react is not None and spec.model.window.rows:  # a moved concept answered on the rows after it alone
        window = spec.model.window.model_copy(update={"react": react})
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"window": window})})
    reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp, ChildrenPeak() as kids:
        started = time.perf_counter()
        res = compare(spec, frame, Path(tmp), policies, workers=workers)
        compare_s = time.perf_counter() - started
    compare_rss = {"here": peak_rss_mb(), "workers": kids.total_mb}
    if extra:
        with tempfile.TemporaryDirectory() as tmp:
            res.update(compare(spec, frame, Path(tmp), extra, workers=workers))
        res = {k: res[k] for k in sorted(res, key=lambda k: (k != "never", k == "default", _period(k)))}
    with tempfile.TemporaryDirectory() as tmp:  # online mode: River's ARF learning inside the loop
        started = time.perf_counter()
        res.update(compare(spec, frame, Path(tmp), [ONLINE], workers=1))
        online_s = time.perf_counter() - started
    if name == "rainfall":
        forest = spec.model_copy(update={"model": spec.model.model_copy(update={"estimator": FOREST, "params": {}})})
        with tempfile.TemporaryDirectory() as tmp:
            res[FOREST_ROW] = compare(forest, frame, Path(tmp), ["default"], workers=1)["default"]
    feats = [f.name for f in spec.data.features] if spec.data.features else \
        [c for c in frame.columns if c not in (info["label"], info["time"])]
    with ChildrenPeak() as arf_kids:
        arf = arf_seeds(frame, info["label"], feats, delay_rows, spec.replay.warmup, workers)
    refit = refit_best(spec, frame, info["label"], feats, delay_rows, workers)
    drift = info.get("drift_points") or []
    rows = []
    for pol, s in res.items():
        retrain_at = [d["at"] for d in s["decisions"]["retrain"] if d["triggers"][:1] != ["bootstrap"]]
        delay = false_alarms = None
        if drift and pol != ONLINE:  # the synthetic streams' time is the row number: decisions are in rows
            delay, false_alarms = detection(retrain_at, drift)
        rows.append({"contender": f"online (loop + {ONLINE.split(':')[1]})" if pol == ONLINE else pol,
                     "metric": s["metric"], "training_rows": s["training_rows"],
                     "training_s": round(s["training_seconds"], 2), "retrains": s["retrains"],
                     "mean_staleness": s["mean_staleness"], "max_staleness": s["max_staleness"],
                     "detection_delay": delay, "false_alarms": false_alarms})
    if refit is not None:
        rows.append({"contender": f"refit every batch (last {refit['last']} rows)", "metric": round(refit["metric"], 6),
                     "training_rows": refit["rows"], "training_s": round(refit["seconds"], 2),
                     "retrains": "every batch", "mean_staleness": None, "max_staleness": None,
                     "detection_delay": None, "false_alarms": None})
    rows.append({"contender": f"River ARF (per row, label delay {delay_rows} rows; mean of seeds "
                              f"{', '.join(str(x) for x in ARF_SEEDS)}: {arf['min']:.4f} to {arf['max']:.4f})",
                 "metric": round(arf["metric"], 6),
                 "training_rows": arf["rows"], "training_s": round(arf["seconds"], 2), "retrains": "online",
                 "mean_staleness": None, "max_staleness": None, "detection_delay": None, "false_alarms": None})
    periodic = [r for r in rows if str(r["contender"]).startswith("periodic:")]
    oracle = max(periodic, key=lambda r: r["metric"])
    default = next(r for r in rows if r["contender"] == "default")
    checks = {
        "oracle": oracle["contender"],
        "default_vs_oracle_points": round(100 * (default["metric"] - oracle["metric"]), 2),
        "default_rows_share_of_oracle": round(default["training_rows"] / max(oracle["training_rows"], 1), 3),
        "default_vs_arf_points": round(100 * (default["metric"] - arf["metric"]), 2),
    }
    if refit is not None:
        checks["refit"] = f"{refit['metric']:.4f} ({refit['last']} rows)"
        checks["default_vs_refit_points"] = round(100 * (default["metric"] - refit["metric"]), 2)
    hybrid = next((r for r in rows if r["contender"] == HYBRID), None)
    if hybrid is not None:
        checks["hybrid_vs_arf_points"] = round(100 * (hybrid["metric"] - arf["metric"]), 2)
        checks["hybrid_vs_oracle_points"] = round(100 * (hybrid["metric"] - oracle["metric"]), 2)
    checks["meets_target"] = (checks["default_vs_oracle_points"] >= -0.5 and
                              checks["default_rows_share_of_oracle"] <= 0.25 and checks["default_vs_arf_points"] >= 0)
    return {"stream": name, "rows": len(frame), "drift_points": drift, "metric": spec.gate.metric or "accuracy",
            "label_delay": spec.replay.label_delay, "spec": yaml.safe_dump(spec.model_dump(mode="json",
                                                                                          exclude_none=True)),
            "table": rows, "checks": checks, "compare_seconds": round(compare_s, 1), "compared": policies,
            "model": spec.model.estimator, "model_choice": info.get("model_choice"),
            "default_retrains_by_reason": res["default"]["decisions"]["retrain_counts"],
            "online_seconds": round(online_s, 1), "arf_min": round(arf["min"], 6), "arf_max": round(arf["max"], 6),
            "arf_seconds": round(arf["seconds"], 1), "compare_peak_rss_mb": compare_rss,
            "hybrid_companion": res[HYBRID].get("companion") if HYBRID in res else None,
            "default_windows": windows(res["default"]),
            "arf_peak_rss_mb": arf_kids.largest_mb}
