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


def serve_vs_mlflow(requests: int) -> dict[str, Any]:
    """Sequential one-row predict throughput: `freshloop serve` (routing + prediction log + ingest) vs
    `mlflow models serve` (``--env-manager local``) with the same fitted scikit-learn model."""
    import httpx
    import mlflow

    from freshloop.api import BackgroundServer, create_app, free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    settings, service, frame = _trained_service(tmp)
    bundle: ModelBundle = service.loop.champion()
    model_dir = tmp / "mlflow-model"
    features = frame.drop(columns=["y"])
    mlflow.sklearn.save_model(bundle.model_, str(model_dir), skops_trusted_types=_TRUSTED)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # it runs `uvicorn`
    mlf = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager",
                            "local", "--host", "127.0.0.1", "--port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = BackgroundServer(create_app(settings, service=service))
    one = features.iloc[:1]
    ours_body = {"rows": one.to_dict(orient="records")}
    # MLflow serves the bare pipeline: it gets the encoded row (no validation, encoding or logging on its side)
    theirs_body = {"inputs": bundle.encode(one).tolist()}
    try:
        with httpx.Client(timeout=30) as c:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if c.get(f"http://127.0.0.1:{port}/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if mlf.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow models serve did not start: {mlf.stderr.read() if mlf.stderr else ''}")
                time.sleep(0.5)
            r = c.post(f"http://127.0.0.1:{port}/invocations", json=theirs_body)
            assert r.status_code == 200, r.text
            walls: dict[str, list[float]] = {"freshloop": [], "mlflow": []}
            for _ in range(3):
                for name, url, body in (("freshloop", server.url + "/v1/predict", ours_body),
                                        ("mlflow", f"http://127.0.0.1:{port}/invocations", theirs_body)):
                    t = time.perf_counter()
                    for _ in range(requests):
                        assert c.post(url, json=body).status_code == 200
                    walls[name].append(requests / (time.perf_counter() - t))
    finally:
        mlf.terminate()
        mlf.wait(timeout=30)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = statistics.median(walls["freshloop"]), statistics.median(walls["mlflow"])
    return {"freshloop_rps": a, "mlflow_rps": b, "ratio": a / b, "requests": 3 * requests}
