"""The command line, run as a user would: a real process, real files, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import make_frame

pytestmark = pytest.mark.slow  # the CLI as real processes


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "freshloop.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_init_then_replay_an_unseen_csv(tmp_path: Path) -> None:
    frame = make_frame(2500, seed=4)
    frame.loc[1500:, "y"] = 1 - frame.loc[1500:, "y"]
    frame.insert(0, "Unnamed: 0", range(len(frame)))  # a saved index column, as pandas writes it
    frame = frame.drop(columns="t")
    frame.to_csv(tmp_path / "data.csv", index=False)
    init = run("init", "--data", "data.csv", "--label", "y", "--out", "loop.yaml", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    spec = yaml.safe_load((tmp_path / "loop.yaml").read_text())
    assert [f["name"] for f in spec["data"]["features"]] == ["x1", "x2", "c"]
    header = [ln for ln in (tmp_path / "loop.yaml").read_text().splitlines() if ln.startswith("#")]
    assert any("'Unnamed: 0': left out" in ln for ln in header), header
    # y is a logistic function of x1 + x2: on the first rows the linear model scores better and is chosen
    chosen = next(ln for ln in header if ln.startswith("# model chosen"))
    assert chosen.startswith("# model chosen on the first 250 rows") and "LogisticRegression" in chosen
    assert spec["model"]["estimator"] == "sklearn.linear_model.LogisticRegression" and spec["model"]["scale"]
    rep = run("replay", "loop.yaml", "--data", "data.csv", "--out", "out", "--workers", "1",
              "--compare", "never,default", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["policies"]
    assert summary["default"]["metric"] > summary["never"]["metric"]
    assert (tmp_path / "out" / "report.html").exists()
    assert "default" in rep.stdout and "never" in rep.stdout


def test_spec_typo_is_one_line_and_nonzero(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").write_text("name: x\ndata:\n  label: y\npolicy:\n  coldown: 3d\n")
    res = run("check", "loop.yaml", cwd=tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "policy.coldown: unknown field" in lines[0] and "loop.yaml" in lines[0]


def test_ingest_bad_rows_then_quarantine_and_history(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").write_text("name: x\ndata:\n  label: y\n  time: t\n")
    make_frame(200).to_csv(tmp_path / "good.csv", index=False)
    ok = run("ingest", "loop.yaml", "good.csv", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "bad.csv").write_text("t,x1,x2,c,y\n300,0.1,0.2,a,1\n301,abc,0.2,a,1\n302,0.1,0.2,a,9\n303,1\n")
    bad = run("ingest", "loop.yaml", "bad.csv", cwd=tmp_path)
    assert bad.returncode == 3
    assert "field 'x1': must be a number (got 'abc')" in bad.stderr
    assert "bad.csv" in bad.stderr
    out = json.loads(bad.stdout)
    assert (out["accepted"], out["quarantined"], out["submitted"]) == (1, 3, 4)
    listed = run("quarantine", "list", "loop.yaml", cwd=tmp_path)
    assert out["quarantine_id"] in listed.stdout
    shown = run("quarantine", "show", "loop.yaml", out["quarantine_id"], cwd=tmp_path)
    assert "abc" in shown.stdout and "303,1" in shown.stdout
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    e = run("ingest", "loop.yaml", "empty.csv", cwd=tmp_path)
    assert e.returncode == 2 and "empty file" in e.stderr
    nolabel = tmp_path / "nolabel.csv"
    make_frame(5, t0=400).drop(columns="y").to_csv(nolabel, index=False)
    assert run("ingest", "loop.yaml", "nolabel.csv", cwd=tmp_path).returncode == 0  # labels may come later
    tick = run("tick", "loop.yaml", cwd=tmp_path)
    assert tick.returncode == 0 and "promoted version 1" in tick.stdout
    models = run("models", "loop.yaml", cwd=tmp_path)
    assert "champion" in models.stdout
    hist = run("history", "loop.yaml", cwd=tmp_path)
    for kind in ("batch_accepted", "batch_quarantined", "decision_retrain", "verdict", "alias_moved"):
        assert kind in hist.stdout
    rb = run("rollback", "loop.yaml", "--reason", "test", cwd=tmp_path)
    assert rb.returncode == 1 and "no earlier champion" in rb.stderr
    pr = run("promote", "loop.yaml", "7", "--reason", "x", cwd=tmp_path)
    assert pr.returncode == 1 and "model version 7 not found" in pr.stderr


def test_drift_report_on_two_files(tmp_path: Path) -> None:
    ref, same, moved = (make_frame(n, seed=i, shift=shift).drop(columns="t")
                        for n, i, shift in ((3000, 1, 0.0), (2000, 2, 0.0), (2000, 3, 1.0)))
    ref.to_csv(tmp_path / "ref.csv", index=False)
    same.to_parquet(tmp_path / "same.parquet")
    moved.to_csv(tmp_path / "moved.csv", index=False)
    calm = run("drift", "ref.csv", "same.parquet", "--json", "calm.json", cwd=tmp_path)
    assert calm.returncode == 0, calm.stdout + calm.stderr
    report = json.loads((tmp_path / "calm.json").read_text())
    assert report["x1"]["statistic"] == "wasserstein" and report["c"]["statistic"] == "jensen_shannon"
    shifted = run("drift", "ref.csv", "moved.csv", "--json", "moved.json", cwd=tmp_path)
    assert shifted.returncode == 1 and "x1" in shifted.stdout
    moved_report = json.loads((tmp_path / "moved.json").read_text())
    assert moved_report["x1"]["drifted"] and not moved_report["x2"]["drifted"]
    assert moved_report["x1"]["value"] > 10 * report["x1"]["value"]
    bad = run("drift", "ref.csv", "moved.csv", "--numeric", "median", cwd=tmp_path)
    assert bad.returncode == 2 and "--numeric: unknown statistic 'median'" in bad.stderr


def test_check_refuses_what_replay_would(tmp_path: Path) -> None:
    cases = {
        "sklearn.ensemble.NoSuchForest": ({}, "model.estimator", "must be an importable class"),
        "os.system": ({}, "model.estimator", "must be an import path under sklearn."),
        "sklearn.linear_model.LogisticRegression": ({"max_iters": 100}, "model.params.max_iters",
                                                    "takes no parameter 'max_iters'"),
    }
    for estimator, (params, field, words) in cases.items():
        (tmp_path / "loop.yaml").write_text(yaml.safe_dump(
            {"name": "x", "data": {"label": "y"}, "model": {"estimator": estimator, "params": params}}))
        res = run("check", "loop.yaml", cwd=tmp_path)
        assert res.returncode == 2, (estimator, res.stdout)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and words in lines[0], lines
        assert field.split(".")[0] in lines[0]
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(
        {"name": "x", "data": {"label": "y", "task": "regression"}, "gate": {"metric": "log_loss"}}))
    res = run("check", "loop.yaml", cwd=tmp_path)
    assert res.returncode == 2 and "does not score a regression" in res.stderr
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(
        {"name": "x", "data": {"label": "y"}, "model": {"estimator": "sklearn.linear_model.LogisticRegression",
                                                        "params": {"max_iter": 100}}}))
    ok = run("check", "loop.yaml", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
