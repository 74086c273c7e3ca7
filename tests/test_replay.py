"""Replay: the loop driven over a stream on a simulated clock, policies compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshloop.datasets import load_stream
from freshloop.replay import compare, replay, resolve_policy, write_report
from freshloop.spec import load_spec_dict
from freshloop.store import open_stores

from .conftest import make_frame, spec_dict


def test_replay_is_deterministic_and_reports(tmp_path: Path) -> None:
    frame = make_frame(1500, seed=1)
    frame.loc[800:, "y"] = 1 - frame.loc[800:, "y"]
    spec = load_spec_dict(spec_dict(tmp_path / "unused", policy={"cooldown": "100s"}))
    a = replay(spec, frame, tmp_path / "a")
    replay(spec, frame, tmp_path / "b")
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
    assert a["predictions_scored"] == 1500 - 300
    assert a["retrains"] >= 2 and a["decisions"]["retrain"][0]["triggers"] == ["bootstrap"]
    assert any(k == "t" for k in a["series"][0])
    report = write_report({"default": a}, tmp_path / "r.html", title="t")
    text = report.read_text()
    assert text.count("<svg") == 2 and "default" in text
    # the retrains that answered the flip chose their window: the summary and the report say which
    chose = [v for v in a["verdicts"] if v["window_of"]]
    assert chose and all(v["window"] <= v["window_of"] and v["window_why"] for v in chose)
    shorter = sum(v["window"] < v["window_of"] for v in chose)
    assert f"default: {shorter} of {len(chose)} retrains that chose their window" in text
    assert f"{chose[0]['window']:,} of {chose[0]['window_of']:,} rows" in text
    # how each class fared, over every scored row at once
    served = a["classes"]
    assert sum(served["rows"].values()) == a["predictions_scored"] and set(served["recall"]) == {"0", "1"}
    assert served["balanced_accuracy"] == pytest.approx(sum(served["recall"].values()) / 2, abs=1e-6)


@pytest.mark.slow
def test_default_beats_never_after_a_known_abrupt_drift(tmp_path: Path) -> None:
    frame, info = load_stream("sea_abrupt", n=6000, seed=3)
    spec = load_spec_dict({"name": "sea", "data": {"label": "y", "time": "t"},
                           "policy": {"cooldown": "300s", "triggers": {"drift": {}, "quality": {},
                                                                       "detector": "adwin"}},
                           "model": {"window": {"rows": 1000}},
                           "replay": {"batch": {"rows": 100}, "label_delay": "50s", "warmup": 500}})
    res = compare(spec, frame, tmp_path, ["never", "default"])
    drift_at = info["drift_points"][0]
    assert res["default"]["metric"] > res["never"]["metric"] + 0.02
    after = [d["at"] for d in res["default"]["decisions"]["retrain"] if d["at"] >= drift_at]
    assert after and after[0] - drift_at < 600  # detection delay, in rows (time = row index here)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["policies"]) == {"never", "default"}


@pytest.mark.slow
def test_policies_replayed_together_store_the_stream_once_and_decide_as_alone(tmp_path: Path) -> None:
    frame, _ = load_stream("sea_abrupt", n=3000, seed=3)
    spec = load_spec_dict({"name": "sea", "data": {"label": "y", "time": "t"},
                           "policy": {"cooldown": "300s",
                                      "triggers": {"drift": {}, "quality": {}, "detector": "adwin"}},
                           "model": {"window": {"rows": 800}},
                           "replay": {"batch": {"rows": 100}, "label_delay": "50s", "warmup": 500}})
    names = ["never", "periodic:500s", "default"]
    together = compare(spec, frame, tmp_path / "together", names, workers=1)
    alone = {n: replay(resolve_policy(spec, n), frame, tmp_path / "alone" / n.replace(":", "_")) for n in names}
    for n in names:
        a, b = ({k: v for k, v in s.items() if k != "training_seconds"} for s in (together[n], alone[n]))
        assert a == b, n
    assert together["default"]["retrains"] > together["never"]["retrains"]
    # each batch validated and written once, in the shared store; each policy keeps its own registry
    shared = list((tmp_path / "together" / "data").glob("*/batches/features/*.parquet"))
    assert len(shared) == len(list((tmp_path / "alone" / "never" / "store" / "batches" / "features").iterdir()))
    for n in names:
        store = tmp_path / "together" / "runs" / n.replace(":", "_") / "store"
        assert not (store / "batches").exists() and list((store / "artifacts").rglob("*"))


@pytest.mark.slow
def test_compare_in_parallel_groups_the_cheap_policies(tmp_path: Path) -> None:
    from freshloop.replay.compare import _groups

    assert _groups(["never", "periodic:30d", "periodic:365d", "default"], 2) == \
        [["periodic:30d"], ["periodic:365d", "default", "never"]]
    assert _groups(["never", "default"], 4) == [["default"], ["never"]]
    assert _groups(["never", "default"], 1) == [["default", "never"]]
    frame, _ = load_stream("sea_abrupt", n=2000, seed=3)
    spec = load_spec_dict({"name": "sea", "data": {"label": "y", "time": "t"},
                           "replay": {"batch": {"rows": 100}, "label_delay": "50s", "warmup": 500}})
    seen: set[str] = set()
    res = compare(spec, frame, tmp_path, ["never", "periodic:400s", "default"], workers=2,
                  on_progress=lambda name, done, total: seen.add(name) if done == total else None)
    assert seen == set(res) == {"never", "periodic:400s", "default"}
    assert res["periodic:400s"]["retrains"] > res["never"]["retrains"] == 1


def test_resolve_policy_online_needs_a_learner(tmp_path: Path) -> None:
    spec = load_spec_dict(spec_dict(tmp_path))
    from freshloop.errors import SpecError

    with pytest.raises(SpecError, match="needs a River model or an estimator with partial_fit"):
        resolve_policy(spec, "online")
    assert resolve_policy(spec, "online:river.linear_model.LogisticRegression").model.mode == "online"
    assert np.isfinite(1.0)


def test_a_replay_through_recurring_concepts_brings_a_past_version_back(tmp_path: Path) -> None:
    """``freshloop replay`` over concept A, then B (flipped) from row 800, then A again from row 1,400, in
    batches of 100: the first retrain after the change trains on the rows after it alone, and A's version is
    promoted back (no training) within two batches of A's return; the summary's decisions say when."""
    frame = pd.concat([make_frame(800, seed=1), make_frame(600, seed=2, flip=True, t0=800),
                       make_frame(500, seed=3, t0=1400)], ignore_index=True)
    spec = load_spec_dict(spec_dict(tmp_path / "unused", policy={
        "cooldown": "100s", "min_new_labels": 50, "triggers": {"detector": "adwin"}},
        model={"estimator": "sklearn.linear_model.LogisticRegression", "window": {"rows": 600, "react": 60}},
        gate={"recall": 3}, replay={"batch": {"rows": 100}, "label_delay": "10s", "warmup": 300}))
    s = replay(spec, frame, tmp_path / "run")
    retrains = s["decisions"]["retrain"]
    found = next(d for d in retrains if d["triggers"][0] == "detector")
    assert 800 <= found["at"] < 1100, [(d["at"], d["triggers"]) for d in retrains]
    recalls = s["decisions"]["recall"]
    assert recalls and 1400 <= recalls[0]["at"] < 1400 + 2 * 100, [(d["at"], d["triggers"]) for d in retrains]
    assert recalls[0]["reasons"][0].startswith("recall: version 1 beats champion version ")
    meta, _ = open_stores(tmp_path / "run" / "store")
    try:
        runs = {r.run_key: r for r in meta.runs.list()}
        trained = next(d for d in retrains if d["at"] >= found["at"] and runs[d["run_key"]].status == "trained")
        assert "follow-up" in trained["triggers"], trained
        first = runs[trained["run_key"]]
        assert meta.runs.snapshot(first.snapshot_id).body["t_first"] > found["at"]  # the rows after it alone
    finally:
        meta.close()
