"""A loop driven by separate processes, as cron, Airflow or Dagster drive it: every ``freshloop ingest`` and
``freshloop tick`` opens the loop from the store and must decide as one long-lived loop does."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from freshloop.clock import SimulatedClock
from freshloop.loop import Loop
from freshloop.operations import Operations
from freshloop.spec import load_spec
from freshloop.store import open_stores

from .conftest import make_frame

pytestmark = pytest.mark.slow  # a loop driven by separate CLI processes


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "freshloop.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def write_spec(path: Path, root: Path, **over: Any) -> Path:
    d: dict[str, Any] = {"name": "cron", "data": {"label": "y", "time": "t"}, "store": {"root": str(root)},
                         "model": {"window": {"rows": 600}}, "policy": {"cooldown": "0s", "min_new_labels": 50}}
    d.update(over)
    path.write_text(yaml.safe_dump(d))
    return path


def batches() -> list[pd.DataFrame]:
    """A warm-up of 300 rows, then batches of 100; from the sixth batch on every feature is shifted by 3
    standard deviations and the concept flips."""
    before = make_frame(800, seed=1)
    after = make_frame(500, seed=2, shift=3.0, flip=True, t0=800)
    frame = pd.concat([before, after], ignore_index=True)
    return [frame.iloc[:300]] + [frame.iloc[i:i + 100] for i in range(300, len(frame), 100)]


def drive_cli(tmp_path: Path, spec: Path) -> list[dict[str, Any]]:
    reports = []
    for k, b in enumerate(batches()):
        now = str(float(b["t"].iloc[-1]))
        b.to_csv(tmp_path / f"b{k}.csv", index=False)
        ing = run("ingest", str(spec), f"b{k}.csv", "--batch-id", f"b{k}", "--now", now, cwd=tmp_path)
        assert ing.returncode == 0, ing.stderr
        tick = run("tick", str(spec), "--json", "--now", now, cwd=tmp_path)
        assert tick.returncode == 0, tick.stderr
        reports.append(json.loads(tick.stdout))
    return reports


def drive_one_process(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock, actor="cli")
    for k, b in enumerate(batches()):
        clock.advance_to(float(b["t"].iloc[-1]))
        loop.ingest(b.reset_index(drop=True), source="cli", batch_id=f"b{k}")
        loop.tick()
    loop.close()


def history(root: Path) -> tuple[list[Any], list[Any], list[Any]]:
    meta, _ = open_stores(root)
    decisions = [(d.at, d.kind, tuple(d.reasons), tuple(d.triggers or ()), d.guard) for d in meta.decisions.list()]
    verdicts = [(v.created_at, v.passed, v.body["reason"]) for v in meta.runs.verdicts()]
    moves = [(m.name, m.old_version, m.new_version, m.at) for m in meta.versions.alias_history()]
    meta.close()
    return decisions, verdicts, moves


def test_cli_processes_retrain_on_volume_after_the_first_model(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "loop.yaml", tmp_path / "store",
                      policy={"cooldown": "0s", "min_new_labels": 50, "triggers": {"volume": 200}})
    reports = drive_cli(tmp_path, spec)
    kinds = [r["decision"]["kind"] for r in reports]
    assert kinds[0] == "retrain"  # the first model
    # 100 labeled rows a batch: the volume trigger fires every second batch, in separate processes
    assert kinds[1:5] == ["skip", "retrain", "skip", "retrain"]
    assert reports[2]["decision"]["reasons"] == ["volume: 200 new labeled rows >= 200"]


def test_cli_processes_see_drift_in_the_rows_of_earlier_calls(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "loop.yaml", tmp_path / "store",
                      policy={"cooldown": "0s", "min_new_labels": 50, "hysteresis": 2,
                              "triggers": {"drift": {"window": 200}}})
    reports = drive_cli(tmp_path, spec)
    reasons = [r["decision"]["reasons"][0] for r in reports]
    assert all(r.startswith("no trigger fired") for r in reasons[1:6])
    # the shifted batches drift on every feature; with hysteresis 2 the second tick in a row retrains
    assert reasons[6].startswith("no trigger fired") and reasons[7].startswith("drift")


def test_cli_processes_decide_as_one_long_lived_loop(tmp_path: Path) -> None:
    over = {"policy": {"cooldown": "150s", "min_new_labels": 50, "hysteresis": 2,
                       "triggers": {"drift": {"window": 200}, "volume": 300, "staleness": "700s"}},
            "rollout": {"strategy": "immediate"}}
    cli = write_spec(tmp_path / "cli.yaml", tmp_path / "cli-store", **over)
    one = write_spec(tmp_path / "one.yaml", tmp_path / "one-store", **over)
    drive_cli(tmp_path, cli)
    drive_one_process(one)
    d_cli, v_cli, m_cli = history(tmp_path / "cli-store")
    d_one, v_one, m_one = history(tmp_path / "one-store")
    assert len({d[3][0] for d in d_one if d[1] == "retrain"}) >= 3  # several triggers took part
    assert d_cli == d_one
    assert v_cli == v_one
    assert m_cli == m_one
    assert np.isfinite([d[0] for d in d_cli]).all()


def first_model(tmp_path: Path, spec: Path, frame: pd.DataFrame) -> None:
    """The first 300 rows ingested with their labels, and the first model trained: two processes."""
    frame.iloc[:300].to_csv(tmp_path / "warm.csv", index=False)
    assert run("ingest", str(spec), "warm.csv", "--now", "299", cwd=tmp_path).returncode == 0
    assert run("tick", str(spec), "--now", "299", cwd=tmp_path).returncode == 0


def scoring_job(tmp_path: Path, spec: Path, frame: pd.DataFrame, starts: range,
                *tick: str) -> Iterator[tuple[pd.DataFrame, Any, str]]:
    """A batch-scoring job over the batches of 100 rows at ``starts``: for each, `freshloop predict` answers its
    rows, `freshloop feedback` sends their labels, then `freshloop tick` (with ``tick``'s arguments) decides,
    each its own process. Yields what was served, what the feedback call answered and what the tick printed."""
    for k, lo in enumerate(starts):
        b = frame.iloc[lo:lo + 100]
        now = str(float(b["t"].iloc[-1]))
        b.drop(columns="y").to_csv(tmp_path / f"rows{k}.csv", index=False)
        pred = run("predict", str(spec), f"rows{k}.csv", "--out", f"pred{k}.csv", "--now", now, cwd=tmp_path)
        assert pred.returncode == 0, pred.stderr
        served = pd.read_csv(tmp_path / f"pred{k}.csv")
        served.assign(label=b["y"].to_numpy())[["prediction_id", "label"]].to_csv(tmp_path / f"lab{k}.csv",
                                                                                   index=False)
        fb = run("feedback", str(spec), f"lab{k}.csv", "--now", now, cwd=tmp_path)
        assert fb.returncode == 0, fb.stderr
        ticked = run("tick", str(spec), *tick, "--now", now, cwd=tmp_path)
        assert ticked.returncode == 0, ticked.stderr
        yield served, json.loads(fb.stdout), ticked.stdout


def test_cli_predict_and_feedback_processes_alarm_on_quality(tmp_path: Path) -> None:
    """A batch-scoring job: `freshloop predict` logs each batch's predictions, `freshloop feedback` sends their
    labels later, `freshloop tick` decides, each its own process. The champion's matured scores (its live
    window and the reference it set) come back from the store in every call, so the flipped concept raises a
    quality alarm, not only the drift of its inputs."""
    spec = write_spec(tmp_path / "loop.yaml", tmp_path / "store",
                      policy={"cooldown": "0s", "min_new_labels": 50,
                              "triggers": {"quality": {"window": 100, "min_labels": 100, "max_drop": 0.05}}})
    before = make_frame(500, seed=1)
    after = make_frame(200, seed=2, flip=True, t0=500)
    frame = pd.concat([before, after], ignore_index=True)
    first_model(tmp_path, spec, frame)
    reasons, fired = [], []
    for served, fed, said in scoring_job(tmp_path, spec, frame, range(300, 700, 100), "--json"):
        assert len(served) == 100 and set(served["version"]) == {1}
        assert fed["scored"] == 100  # joined to predictions an earlier process logged
        decision = json.loads(said)["decision"]
        reasons.append(decision["reasons"][0])
        fired.append(decision["guard"] or decision["triggers"][0])
    assert fired == ["no trigger fired"] * 3 + ["quality"], reasons
    # the first flipped batch: its live window against the reference an earlier process set; hysteresis 2
    # (the default) waits for the second, whose process remembers the streak
    assert "live 0.2200 vs 0.8600 on 100 labels" in reasons[2]
    assert reasons[3].startswith("quality: live metric"), reasons
    meta, _ = open_stores(tmp_path / "store")
    kinds = [e.kind for e in meta.events.list()]
    meta.close()
    assert kinds.count("labels_accepted") == 4


def test_cli_processes_teach_the_online_companion_each_label_once(tmp_path: Path) -> None:
    """The companion (``model.companion``) learns at each tick the labels matured since the last one it learned,
    read from the store, and is saved when the process ends: separate processes teach it what one loop would."""
    def taught(loop: Loop) -> tuple[int, float]:
        companion = loop.companion
        assert companion.bundle is not None
        assert companion.bundle.rows_seen_ == int(np.isfinite(loop.data.label_times()).sum()) == 1300
        return companion.bundle.rows_seen_, companion.learned_to

    cli, one = cli_and_one_process(tmp_path, {"model": {"window": {"rows": 600}, "companion": {}}}, taught)
    assert cli == one


def test_cli_processes_teach_an_online_champion_as_one_loop_does(tmp_path: Path) -> None:
    """``policy.online``: each tick process teaches the champion the labels matured since its cutoff, read from
    the store, and saves what it learned; the next process goes on from there."""
    over = {"model": {"estimator": "river.linear_model.LogisticRegression", "window": {"rows": 600}},
            "policy": {"name": "online", "online": True, "triggers": {}, "cooldown": "0s", "min_new_labels": 0}}
    cli, one = cli_and_one_process(tmp_path, over, lambda loop: (
        loop.champion().rows_seen_, loop.champion_lineage["cutoff"], loop.champion_lineage["t_last"]))
    assert cli == one
    assert cli[0] > 1000  # the 10 batches after the first model, learned across processes


def cli_and_one_process(tmp_path: Path, over: dict[str, Any], read: Any) -> tuple[Any, Any]:
    """The same batches driven by separate CLI processes and by one loop; ``read`` of each store, opened again."""
    cli = write_spec(tmp_path / "cli.yaml", tmp_path / "cli-store", **over)
    one = write_spec(tmp_path / "one.yaml", tmp_path / "one-store", **over)
    drive_cli(tmp_path, cli)
    drive_one_process(one)
    found = []
    for spec in (cli, one):
        loop = Loop(load_spec(spec), clock=SimulatedClock(2000.0))
        found.append(read(loop))
        loop.close()
    return found[0], found[1]


def test_cli_scoring_processes_hand_serving_to_the_online_companion(tmp_path: Path) -> None:
    """A batch-scoring job with ``model.companion``: `freshloop predict`, `freshloop feedback` and `freshloop tick`
    each their own process, a champion that is never retrained, and a concept that flips. The companion learns
    from the store at each tick, the pairs of answers come back with the log, and once it is surely better a
    tick says so and the next scoring job is answered by it (version 0)."""
    spec = write_spec(tmp_path / "loop.yaml", tmp_path / "store", model={"companion": {}},
                      policy={"name": "never", "triggers": {}})
    frame = pd.concat([make_frame(300, seed=1), make_frame(800, seed=2, flip=True, t0=300)], ignore_index=True)
    first_model(tmp_path, spec, frame)
    said, versions = [], []
    for served, _, printed in scoring_job(tmp_path, spec, frame, range(300, 1100, 100)):
        versions.append(set(served["version"]))
        said.append([ln for ln in printed.splitlines() if ln.startswith("serving: ")])
    moved = next(i for i, lines in enumerate(said) if lines)
    assert said[moved][0].startswith("serving: the online companion serves: surely better on the last")
    assert versions[0] == {1} and moved + 1 < len(versions) and versions[moved + 1] == {0}


def test_cli_scoring_processes_react_to_a_change_and_recall_a_returning_concept(tmp_path: Path) -> None:
    """``model.window.react`` and ``gate.recall`` in a batch-scoring job, every call its own process: concept A,
    then B (flipped), then A again. Each process reads back from the store the change being answered and the
    step its follow-ups reached, so the reaction goes 1 of 2, 2 of 2 on the rows after the change; A's first
    version is promoted back within two batches of A's return; and all of it is what one loop decides."""
    over = {"policy": {"cooldown": "100s", "min_new_labels": 50, "triggers": {"detector": "adwin"}},
            "model": {"window": {"rows": 600, "react": 60}}, "gate": {"recall": 3}}
    frame = pd.concat([make_frame(800, seed=1), make_frame(600, seed=2, flip=True, t0=800),
                       make_frame(500, seed=3, t0=1400)], ignore_index=True)
    cli = write_spec(tmp_path / "cli.yaml", tmp_path / "cli-store", **over)
    first_model(tmp_path, cli, frame)
    said = [json.loads(printed) for _, _, printed in scoring_job(tmp_path, cli, frame, range(300, 1900, 100),
                                                                  "--json")]
    one = write_spec(tmp_path / "one.yaml", tmp_path / "one-store", **over)
    loop = Loop(load_spec(one), clock=(clock := SimulatedClock(299.0)), actor="cli")
    ops = Operations(loop)
    loop.ingest(frame.iloc[:300], source="cli", batch_id="warm")
    loop.tick()
    for lo in range(300, 1900, 100):
        b = frame.iloc[lo:lo + 100]
        clock.advance_to(float(b["t"].iloc[-1]))
        answered = ops.predict_table(b.drop(columns="y").reset_index(drop=True))
        loop.feedback(answered.row_ids, b["y"].tolist(), source="cli")
        loop.tick()
    loop.close()
    d_cli, v_cli, m_cli = history(tmp_path / "cli-store")
    assert (d_cli, v_cli, m_cli) == history(tmp_path / "one-store")[:3]
    retrains = [(at, triggers, reasons[-1]) for at, kind, reasons, triggers, _ in d_cli if kind == "retrain"]
    found = next(r for r in retrains if r[1][0] == "detector")
    assert 800 < found[0] < 1100, retrains
    steps = [why.split(":")[0] for at, triggers, why in retrains if "follow-up" in triggers]
    assert steps == ["follow-up 1 of 2", "follow-up 2 of 2"], retrains
    meta, _ = open_stores(tmp_path / "cli-store")
    runs = {r.run_key: r for r in meta.runs.list()}
    detector_run = runs[next(d.run_key for d in meta.decisions.list("retrain") if d.triggers[0] == "detector")]
    assert detector_run.status == "deferred"
    first_after = meta.runs.snapshot(runs[next(d.run_key for d in meta.decisions.list("retrain")
                                                if "follow-up" in d.triggers)].snapshot_id).body
    assert first_after["t_first"] > found[0]  # trained on the rows after the change alone
    recalled = meta.events.list("version_recalled")
    meta.close()
    back = [r for r in said if r["recalled"] is not None]
    assert back and 1400 <= back[0]["now"] < 1400 + 2 * 100 and back[0]["recalled"] == 1, \
        [(r["now"], r["decision"]["reasons"][0]) for r in said]
    assert [e.payload["version"] for e in recalled] == [1]
