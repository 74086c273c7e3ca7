"""First contact: a user's own file through `init` → `replay --compare` → CLI-driven `ingest`/`tick` →
`serve`, once per kind of data people bring (their time forms, categories that appear later, missing
values, a regression or multiclass or bool label, numbers with blanks, XGBoost and LightGBM models, an online
companion beside the champion). A classification's spec carries the refit companion ``init`` writes.

Every stream changes its concept halfway, so the right answer is known: retraining (`default`) must
score better than `never`, no training run may fail, and the served answers must have the label's type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from freshloop.api import BackgroundServer, LoopService, Settings, create_app
from freshloop.clock import SimulatedClock

pytestmark = pytest.mark.slow  # init, replay, CLI and serve on each kind of file

N = 2400
ENV = {**os.environ, "FRESHLOOP_ALLOWED_ESTIMATORS": "xgboost.,lightgbm."}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "freshloop.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=ENV)


def stream(label: str = "binary", seed: int = 0) -> pd.DataFrame:
    """Hourly rows; the relation of the label to x1 + x2 reverses at the middle."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, N), rng.normal(0, 1, N)
    sign = np.where(np.arange(N) < N // 2, 1.0, -1.0)
    z = sign * 2 * (x1 + x2)
    frame = pd.DataFrame({"t": np.arange(N) * 3600.0, "x1": x1, "x2": x2.round(4),
                          "c": rng.choice(["a", "b", "c"], N)})
    if label == "binary":
        frame["y"] = (rng.random(N) < 1 / (1 + np.exp(-z))).astype(int)
    elif label == "bool":
        frame["y"] = rng.random(N) < 1 / (1 + np.exp(-z))
    elif label == "multiclass":
        frame["y"] = np.select([z < -1, z > 1], ["low", "high"], "mid")
    else:
        frame["y"] = 3 * z + rng.normal(0, 1, N)
    return frame


def iso(frame: pd.DataFrame, fmt: str) -> pd.DataFrame:
    when = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(frame["t"], unit="s")
    return frame.assign(t=when.dt.tz_convert("Asia/Kolkata").dt.strftime(fmt) if "%z" in fmt else when.dt.strftime(fmt))


def case(name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(the file's rows, extra init arguments and spec changes) of one first contact."""
    if name == "iso_datetime":
        return iso(stream(), "%Y-%m-%dT%H:%M:%S"), {}
    if name == "tz_aware":
        return iso(stream(), "%Y-%m-%dT%H:%M:%S%z"), {}
    if name == "epoch_ms":
        f = stream()
        return f.assign(t=(1.7e12 + f["t"] * 1000).astype(np.int64)), {"time_unit": "ms"}
    if name == "unseen_categories":
        f = stream()
        late = np.arange(N) >= N // 2
        f.loc[late, "c"] = np.random.default_rng(1).choice(["c", "d", "e"], int(late.sum()))
        return f, {}
    if name == "missing_values":
        f = stream()
        rng = np.random.default_rng(2)
        f.loc[rng.random(N) < 0.1, "x1"] = np.nan
        f.loc[rng.random(N) < 0.1, "c"] = None
        return f, {}
    if name == "numbers_with_blanks":
        f = stream()
        f["x2"] = f["x2"].astype(object)
        f.loc[np.arange(N) % 9 == 4, "x2"] = ""
        return f, {}
    if name == "regression":
        return stream("regression"), {}
    if name == "multiclass":
        return stream("multiclass"), {}
    if name == "bool_label":
        return stream("bool"), {}
    if name == "xgboost_bool_label":
        return stream("bool"), {"estimator": "xgboost.XGBClassifier", "params": {"n_estimators": 50}}
    if name == "tz_aware_companion":  # an online companion beside the champion, on times with a zone
        return iso(stream(), "%Y-%m-%dT%H:%M:%S%z"), {"companion": {}}
    if name == "regression_companion":
        return stream("regression"), {"companion": {}}
    if name == "lightgbm_multiclass":
        return stream("multiclass"), {"estimator": "lightgbm.LGBMClassifier",
                                      "params": {"n_estimators": 50, "verbose": -1}}
    raise KeyError(name)


CASES = ["iso_datetime", "tz_aware", "epoch_ms", "unseen_categories", "missing_values", "numbers_with_blanks",
         "regression", "multiclass", "bool_label", "xgboost_bool_label", "lightgbm_multiclass", "tz_aware_companion",
         "regression_companion"]


@pytest.mark.parametrize("name", CASES)
def test_first_contact(tmp_path: Path, name: str) -> None:
    frame, extra = case(name)
    frame.to_csv(tmp_path / "data.csv", index=False)
    init = run("init", "--data", "data.csv", "--label", "y", "--time", "t", "--out", "loop.yaml",
               "--time-unit", extra.get("time_unit", "s"), cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    spec = yaml.safe_load((tmp_path / "loop.yaml").read_text())
    assert spec["data"]["task"] == ("regression" if name.startswith("regression") else "classification")
    assert {f["name"] for f in spec["data"]["features"]} == {"x1", "x2", "c"}
    if "estimator" in extra:
        spec["model"].update(estimator=extra["estimator"], params=extra["params"], scale=False)
    if "companion" in extra:
        spec["model"]["companion"] = extra["companion"]
    spec["store"] = {"root": str(tmp_path / "store")}
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert run("check", "loop.yaml", cwd=tmp_path).returncode == 0

    # replay: retraining must beat never on a stream whose concept reverses, and no run may fail
    rep = run("replay", "loop.yaml", "--data", "data.csv", "--out", "out", "--workers", "1",
              "--compare", "never,default", cwd=tmp_path)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["policies"]
    never, default = summary["never"], summary["default"]
    assert default["error"] is None and default["failed_runs"] == 0, default.get("first_failure")
    better = default["metric"] - never["metric"] if default["bigger_is_better"] else never["metric"] - default["metric"]
    if "companion" in extra:  # every contender has it: a champion never retrained is served for by the companion
        comp, stuck = default["companion"], never["companion"]
        assert comp["errors"] == stuck["errors"] == 0 and comp["rows_learned"] > N // 2, comp
        assert stuck["switches"] >= 1 and stuck["rows_served"] > N // 10, stuck
        assert default["retrains"] >= 2 and better > -0.01 * abs(never["metric"]), (never["metric"], default["metric"])
    else:
        assert default["retrains"] >= 2 and better > 0.05 * abs(never["metric"]), (never["metric"], default["metric"])
    refit = (spec["model"].get("companion") or {}).get("refit")
    if "companion" not in extra and spec["data"]["task"] == "classification":  # init's refit companion
        assert refit == max(60, 30 * frame["y"].nunique()), spec["model"]
        comp = default["companion"]
        assert comp["refit"] == refit and comp["errors"] == 0 and comp["rows_learned"] > N, comp

    # CLI-driven: a warm-up and two later batches, each its own ingest and tick process
    cuts = [0, spec["replay"]["warmup"], N // 2 + 400, N]
    for k in range(3):
        frame.iloc[cuts[k]:cuts[k + 1]].to_csv(tmp_path / f"b{k}.csv", index=False)
        ing = run("ingest", "loop.yaml", f"b{k}.csv", "--batch-id", f"b{k}", cwd=tmp_path)
        assert ing.returncode == 0, ing.stdout + ing.stderr
        tick = run("tick", "loop.yaml", "--json", cwd=tmp_path)
        assert tick.returncode == 0, tick.stderr
        assert json.loads(tick.stdout)["run_failed"] is False
    models = run("models", "loop.yaml", cwd=tmp_path)
    assert models.returncode == 0 and "champion" in models.stdout, models.stdout

    # serve: the champion answers rows with an unseen category and missing values, in the label's type
    settings = Settings(spec_path=tmp_path / "loop.yaml", tick_every=0)
    server = BackgroundServer(create_app(settings, service=LoopService(settings, clock=SimulatedClock(1e10))))
    try:
        last = frame["t"].tolist()[-1]
        rows = [{"t": last, "x1": 0.5, "x2": -0.2, "c": "zzz"}, {"t": last, "c": "a"}]
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/v1/predict", json={"rows": rows})
            status = c.get("/v1/status").json()
        assert r.status_code == 200, r.text
        answers = [d["prediction"] for d in r.json()["data"]]
    finally:
        server.stop()
    if refit:  # the refit companion the tick processes fitted serves beside the champion
        assert status["companion"]["refit"] == refit and status["companion"]["rows_learned"] > 0, status
    labels = set(frame["y"].tolist())
    if name.startswith("regression"):
        assert all(isinstance(a, float) for a in answers)
    else:
        assert all(a in labels and type(a) is type(next(iter(labels))) for a in answers), (answers, labels)
