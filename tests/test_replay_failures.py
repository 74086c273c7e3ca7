"""A failure is seen: a policy that breaks in a comparison keeps the others, a failed training run is in the
table and the report, and ``freshloop tick`` exits non-zero with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from freshloop.replay import replay
from freshloop.spec import load_spec_dict

from .conftest import make_frame, spec_dict

pytestmark = pytest.mark.slow  # replays in worker processes

ROOT = Path(__file__).resolve().parents[1]
FRAGILE = "tests.estimators.FragileClassifier"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # tests.estimators, too
    env = {**os.environ, "FRESHLOOP_ALLOWED_ESTIMATORS": "tests.", "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "freshloop.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def _spec(tmp_path: Path, **model: object) -> Path:
    d = spec_dict(tmp_path / "store", model={"estimator": FRAGILE, **model})
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_one_failing_policy_does_not_lose_the_others(tmp_path: Path) -> None:
    # "never" trains once, on the first labeled rows; a period retrains on more rows, where the estimator breaks
    make_frame(2000, seed=3).to_csv(tmp_path / "data.csv", index=False)
    _spec(tmp_path, params={"max_rows": 1000, "error": "runtime"})
    for workers in ("1", "2"):
        res = run("replay", "loop.yaml", "--data", "data.csv", "--out", f"out{workers}", "--workers", workers,
                  "--compare", "never,periodic:200s", cwd=tmp_path)
        assert res.returncode == 1, res.stderr
        assert "1 of 2 policies failed: periodic:200s" in res.stderr
        summary = json.loads((tmp_path / f"out{workers}" / "summary.json").read_text())["policies"]
        assert summary["never"]["error"] is None and summary["never"]["metric"] is not None
        assert summary["never"]["predictions_scored"] > 1500
        error = summary["periodic:200s"]["error"]
        assert "RuntimeError: fragile:" in error and "> max_rows=1000" in error
        assert "periodic:200s" in res.stdout and "failed" in res.stdout and "replay stopped at t=" in res.stdout
        report = (tmp_path / f"out{workers}" / "report.html").read_text()
        assert "<h2>Failures</h2>" in report and "RuntimeError: fragile:" in report


def test_failed_training_runs_are_counted_with_their_first_reason(tmp_path: Path) -> None:
    spec = load_spec_dict(spec_dict(tmp_path / "store", model={"estimator": FRAGILE, "params": {"max_rows": 400}},
                                    policy={"name": "periodic:200s", "triggers": {"schedule": "200s"},
                                            "cooldown": "0s"}))
    os.environ["FRESHLOOP_ALLOWED_ESTIMATORS"] = "tests."
    try:
        summary = replay(spec, make_frame(1500, seed=3), tmp_path / "out")
    finally:
        del os.environ["FRESHLOOP_ALLOWED_ESTIMATORS"]
    assert summary["error"] is None  # a failed run is the loop's business: the replay goes on
    assert summary["failed_runs"] >= 3
    assert "fragile:" in summary["first_failure"] and "> max_rows=400" in summary["first_failure"]


def test_tick_exits_non_zero_when_its_run_fails(tmp_path: Path) -> None:
    _spec(tmp_path, params={"max_rows": 100})
    make_frame(300, seed=1).to_csv(tmp_path / "batch.csv", index=False)
    ing = run("ingest", "loop.yaml", "batch.csv", cwd=tmp_path)
    assert ing.returncode == 0, ing.stderr
    res = run("tick", "loop.yaml", "--json", cwd=tmp_path)
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["decision"]["kind"] == "retrain" and report["run_failed"] is True
    assert "fragile: " in report["run_error"]
    assert "training run" in res.stderr and "failed" in res.stderr and "max_rows=100" in res.stderr
    ok = _spec(tmp_path, params={"max_rows": 10_000})
    res = run("tick", str(ok), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["run_failed"] is False
