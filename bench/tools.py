"""freshloop beside the tools users would otherwise pick, in one process on the same frames and models.

Needs the ``bench`` extra (Evidently, MLflow). Each comparison alternates the two sides (A B A B …)
and reports medians; nothing here asserts a speed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from speed import alternate, wide_frame

# imported up front, so that one run measures one version of the code
import freshloop.api  # noqa: F401
from freshloop.monitor import drift_report
from freshloop.registry import Registry
from freshloop.store import open_stores
from freshloop.train.model import ModelBundle  # noqa: TC001


def available() -> dict[str, str | None]:
    """Installed versions of the tools compared here (None: not installed, the comparison is skipped)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("evidently", "mlflow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def drift_frames(rows: int, cols: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames: 90 % continuous numeric columns, 10 % categorical (strings), a third
    of the columns shifted in the current frame."""
    rng = np.random.default_rng(seed)
    n_cat = max(1, cols // 10)
    frames = []
    for shift in (0.0, 1.0):
        data: dict[str, Any] = {}
        for i in range(cols - n_cat):
            moved = shift * (i % 3 == 0)
            data[f"x{i}"] = rng.normal(0.3 * moved, 1 + 0.2 * moved, rows)
        for j in range(n_cat):
            p = np.array([0.4, 0.3, 0.2, 0.1]) if not shift or j % 3 else np.array([0.1, 0.2, 0.3, 0.4])
            data[f"c{j}"] = rng.choice(["a", "b", "c", "d"], rows, p=p)
        frames.append(pd.DataFrame(data))
    return frames[0], frames[1]


def evidently_values(snapshot: Any) -> dict[str, tuple[str, float]]:
    """Per-column (method, value) from an Evidently 0.7 report snapshot."""
    out = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m["config"]
        if cfg.get("type", "").endswith("ValueDrift"):
            out[cfg["column"]] = (cfg["method"], float(m["value"]))
    return out


def drift_vs_evidently(rows: int, cols: int, repeats: int) -> dict[str, Any]:
    """freshloop's drift report vs Evidently's ``DataDriftPreset`` (its defaults) on the same frames."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = drift_frames(rows, cols)
    num = [c for c in ref.columns if c.startswith("x")]
    cat = [c for c in ref.columns if c.startswith("c")]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    results: dict[str, Any] = {}

    def ours() -> None:
        results["freshloop"] = drift_report(ref, cur)

    def theirs() -> None:
        report = Report([DataDriftPreset()])
        results["evidently"] = report.run(Dataset.from_pandas(cur, data_definition=definition),
                                          Dataset.from_pandas(ref, data_definition=definition))

    ta, tb, rss = alternate(ours, theirs, repeats)
    mine, other = results["freshloop"], evidently_values(results["evidently"])
    same = {"Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensen_shannon"}
    diffs = [abs(mine[c].value - v) for c, (method, v) in other.items()
             if same.get(method) == mine[c].statistic]
    return {"rows": rows, "cols": cols, "freshloop_median_s": statistics.median(ta),
            "baseline_median_s": statistics.median(tb), "speedup": statistics.median(tb) / statistics.median(ta),
            "freshloop_peak_rss_mb": rss[0], "baseline_peak_rss_mb": rss[1], "columns_compared": len(diffs),
            "max_abs_difference": max(diffs) if diffs else None,
            "drifted_agree": sum((mine[c].drifted == (v >= 0.1)) for c, (_, v) in other.items()),
            "evidently_methods": sorted({m for m, _ in other.values()})}


def _trained_service(tmp: Path) -> tuple[Any, Any, pd.DataFrame]:
    """A LoopService whose champion is a HistGradientBoosting pipeline trained on 5,000 rows."""
    from freshloop.api import LoopService, Settings

    spec_path = tmp / "loop.yaml"
    spec_path.write_text("name: bench\ndata: {label: y, time: t}\n"
                         "model: {estimator: sklearn.ensemble.HistGradientBoostingClassifier}\n"
                         "store: {root: " + str(tmp / "store") + "}\n")
    settings = Settings(spec_path=spec_path, tick_every=0)
    service = LoopService(settings)
    frame = wide_frame(5000, 12, seed=5)
    service.ingest(frame.to_dict(orient="records"), batch_id="warm", source="bench")
    service.tick()
    return settings, service, frame


# what MLflow's skops format asks a user to vouch for before it stores a HistGradientBoosting model
_TRUSTED = ["numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def register_vs_mlflow(repeats: int) -> dict[str, Any]:
    """Register a version and move the champion alias: freshloop's registry vs MLflow's (``log_model`` +
    ``create_model_version`` + ``set_registered_model_alias``), both on SQLite and local files."""
    import mlflow
    from mlflow import MlflowClient

    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    _, service, _ = _trained_service(tmp)
    bundle: ModelBundle = service.loop.champion()
    meta, blobs = open_stores(str(tmp / "freshloop"), None)
    registry = Registry(meta, blobs)
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    # artifacts go beside the database in the temporary folder (MLflow's default is ./mlruns under the cwd)
    experiment = mlflow.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    client = MlflowClient()
    client.create_registered_model("bench")
    estimator = bundle.model_  # the fitted scikit-learn pipeline inside the bundle
    clock = iter(range(1, 10_000))

    def ours() -> None:
        mv = registry.register(bundle, run_id="bench", verdict_id=None, lineage={}, now=float(next(clock)))
        registry.set_alias("champion", mv.version, actor="bench", reason="bench", now=float(next(clock)))

    def theirs() -> None:
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(estimator, name="model", skops_trusted_types=_TRUSTED)
        mv = client.create_model_version("bench", info.model_uri, run.info.run_id)
        client.set_registered_model_alias("bench", "champion", mv.version)

    ours(), theirs()  # first calls create tables and caches on both sides: not timed
    ta, tb, rss = alternate(ours, theirs, repeats)
    meta.close()
    service.loop.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"freshloop_median_s": statistics.median(ta), "baseline_median_s": statistics.median(tb),
            "speedup": statistics.median(tb) / statistics.median(ta), "repeats": repeats,
            "freshloop_peak_rss_mb": rss[0], "baseline_peak_rss_mb": rss[1]}


def _wait_ready(proc: subprocess.Popen[str], url: str, what: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{what} did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.5)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load(url: str, body: Path, requests: int, concurrency: int) -> dict[str, Any]:
    """One bounded run of bench/load.py in its own process."""
    import json

    out = subprocess.run([sys.executable, str(Path(__file__).with_name("load.py")), url, str(body),
                          "--requests", str(requests), "--concurrency", str(concurrency)],
                         check=True, capture_output=True, text=True, timeout=600)
    result: dict[str, Any] = json.loads(out.stdout)
    if result["errors"]:
        raise RuntimeError(f"{url}: {result['errors']} of {result['requests']} requests failed")
    return result


def serve_vs_mlflow(requests: int, concurrency: tuple[int, ...] = (1, 16)) -> dict[str, Any]:
    """One-row predict throughput under a bounded closed-loop load (bench/load.py, its own process):
    `freshloop serve` (validation, routing, prediction log, ingest of every predicted row) vs
    `mlflow models serve --env-manager local` with the same fitted scikit-learn model, each server in its
    own process with one worker, alternating rounds at each concurrency."""
    import json

    import mlflow

    from freshloop.api import free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    settings, service, frame = _trained_service(tmp)
    bundle: ModelBundle = service.loop.champion()
    one = frame.drop(columns=["y"]).iloc[:1]
    ours_body, theirs_body = tmp / "ours.json", tmp / "theirs.json"
    ours_body.write_text(json.dumps({"rows": one.to_dict(orient="records")}))
    # MLflow serves the bare pipeline: it gets the encoded row (no validation, encoding or logging on its side)
    x = bundle.encode(one)
    theirs_body.write_text(json.dumps({"inputs": x.tolist()}))
    # the model call each server makes per request: MLflow calls the fitted pipeline on the encoded row;
    # freshloop encodes the request's record and calls the pipeline's compiled form (or the pipeline)
    calls = timeit.repeat(lambda: bundle.model_.predict_proba(x), number=200, repeat=7)
    serving = bundle.compile()
    records = one.to_dict(orient="records")
    ours_calls = timeit.repeat(lambda: bundle.predict(records), number=200, repeat=7)
    model_dir = tmp / "mlflow-model"
    mlflow.sklearn.save_model(bundle.model_, str(model_dir), skops_trusted_types=_TRUSTED)
    service.loop.close()  # `freshloop serve` reopens the same store in its own process
    bindir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow runs `uvicorn`
    ports = {"freshloop": free_port(), "mlflow": free_port()}
    procs = {
        "freshloop": subprocess.Popen([str(bindir / "freshloop"), "serve", str(settings.spec_path), "--no-auth",
                                       "--port", str(ports["freshloop"]), "--tick-every", "0"], env=env, cwd=tmp,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
        "mlflow": subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
                                    "--env-manager", "local", "--host", "127.0.0.1", "--port", str(ports["mlflow"])],
                                   env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)}
    urls = {"freshloop": f"http://127.0.0.1:{ports['freshloop']}/v1/predict",
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}/invocations"}
    bodies = {"freshloop": ours_body, "mlflow": theirs_body}
    out: dict[str, Any] = {"requests": requests, "rounds": 3, "model_call_ms": 1000 * statistics.median(calls) / 200,
                           "served_call_ms": 1000 * statistics.median(ours_calls) / 200, "serving": serving}
    try:
        _wait_ready(procs["freshloop"], f"http://127.0.0.1:{ports['freshloop']}/v1/status", "freshloop serve")
        _wait_ready(procs["mlflow"], f"http://127.0.0.1:{ports['mlflow']}/ping", "mlflow models serve")
        for name in procs:  # warm both: first requests import and compile lazily
            _load(urls[name], bodies[name], 50, 1)
        for c in concurrency:
            runs: dict[str, list[dict[str, Any]]] = {"freshloop": [], "mlflow": []}
            for _ in range(3):
                for name in procs:
                    runs[name].append(_load(urls[name], bodies[name], requests, c))
            row: dict[str, Any] = {}
            for name, rs in runs.items():
                row[name] = {k: statistics.median(r[k] for r in rs) for k in ("requests_per_s", "p50_ms", "p99_ms")}
            row["ratio"] = row["freshloop"]["requests_per_s"] / row["mlflow"]["requests_per_s"]
            out[f"c{c}"] = row
        out["peak_rss_mb"] = {name: _peak_rss_mb(p.pid) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return out
