"""One loop, two clocks: the same stream through `serve` (over HTTP), through a loop opened afresh for every
call (as each `freshloop` CLI process opens it) and through `replay` decides the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from freshloop.api import BackgroundServer, LoopService, Settings, create_app
from freshloop.clock import SimulatedClock
from freshloop.loop import Loop
from freshloop.replay import replay
from freshloop.spec import load_spec, load_spec_dict

from .conftest import make_frame

pytestmark = pytest.mark.slow  # one stream through serve and through replay

SPEC: dict[str, Any] = {
    "name": "parity",
    "data": {"label": "y", "time": "t"},
    "model": {"window": {"rows": 400}},
    "policy": {"cooldown": "200s", "triggers": {"drift": {"window": 200}, "quality": {"min_labels": 100},
                                                "detector": "adwin", "staleness": "3000s"}},
    "rollout": {"strategy": "canary", "steps": [30, 100], "min_labels": 50, "step_deadline": "600s"},
    "replay": {"batch": {"rows": 50}, "label_delay": "40s", "warmup": 300},
}

# the same with an immediate promotion that serves each gated fit before its refit (two versions per run)
SERVE_FIRST: dict[str, Any] = {**SPEC, "rollout": {"strategy": "immediate"}, "gate": {"serve_before_refit": True}}
SPECS = pytest.mark.parametrize("spec_dict", [SPEC, SERVE_FIRST], ids=["canary", "serve_before_refit"])


def assert_branch(spec_dict: dict[str, Any], meta: Any) -> None:
    """The serve_before_refit case took its branch: gated fits served, then replaced by their refits."""
    refits = [m for m in meta.versions.alias_history() if m.reason.startswith("refit of version")]
    assert bool(refits) == (spec_dict is SERVE_FIRST)


def stream() -> pd.DataFrame:
    before = make_frame(900, seed=1)
    after = make_frame(900, seed=2, shift=1.5, flip=True, t0=900)
    return pd.concat([before, after], ignore_index=True)


def decisions_of(meta: Any) -> list[tuple[Any, ...]]:
    return [(d.at, d.kind, tuple(d.reasons), tuple(d.triggers), d.guard) for d in meta.decisions.list()]


def verdicts_of(meta: Any) -> list[tuple[float, bool, str]]:
    return [(v.created_at, v.passed, v.body["reason"]) for v in meta.runs.verdicts()]


@SPECS
def test_serve_and_replay_make_the_same_decisions(tmp_path: Path, spec_dict: dict[str, Any]) -> None:
    frame = stream()
    spec_path = tmp_path / "loop.yaml"
    spec_path.write_text(yaml.safe_dump({**spec_dict, "store": {"root": str(tmp_path / "serve")}}))
    spec = load_spec(spec_path)
    replay(spec, frame, tmp_path / "replay")

    clock = SimulatedClock(0.0)
    settings = Settings(spec_path=spec_path, tick_every=0, flush_every=3600)
    service = LoopService(settings, clock=clock)
    warm, delay, batch = 300, 40.0, 50
    times = frame["t"].to_numpy(dtype=float)
    rows = frame.drop(columns="y").to_dict(orient="records")
    labels = frame["y"].tolist()
    server = BackgroundServer(create_app(settings, service=service))
    with httpx.Client(base_url=server.url, timeout=60) as c:
        clock.advance_to(times[warm - 1])
        assert c.post("/v1/ingest", json={"rows": frame.iloc[:warm].to_dict(orient="records"),
                                          "batch_id": "warmup"}).status_code == 200
        c.post("/v1/tick")
        pids: dict[int, str] = {}
        next_label = warm
        for start in range(warm, len(frame), batch):
            idx = list(range(start, min(start + batch, len(frame))))
            clock.advance_to(times[idx[-1]])
            r = c.post("/v1/predict", json={"rows": [rows[i] for i in idx], "keys": [f"r{i}" for i in idx]})
            assert r.status_code == 200
            pids.update({i: d["prediction_id"] for i, d in zip(idx, r.json()["data"], strict=True)})
            hi = min(int(np.searchsorted(times + delay, clock.now(), side="right")), idx[-1] + 1)
            if hi > next_label:
                fb = [{"prediction_id": pids[i], "label": labels[i]} for i in range(next_label, hi)]
                assert c.post("/v1/feedback", json={"labels": fb}).status_code == 200
                next_label = hi
            assert c.post("/v1/tick").status_code == 200
    server.stop()

    from freshloop.store import open_stores

    served, _ = open_stores(tmp_path / "serve")
    replayed, _ = open_stores(tmp_path / "replay" / "store")
    d_serve, d_replay = decisions_of(served), decisions_of(replayed)
    assert [d for d in d_serve if d[1] == "retrain"]  # the drift made the loop retrain
    assert d_serve == d_replay
    assert verdicts_of(served) == verdicts_of(replayed)
    moves = [(m.name, m.old_version, m.new_version, m.at) for m in served.versions.alias_history()]
    assert moves == [(m.name, m.old_version, m.new_version, m.at) for m in replayed.versions.alias_history()]
    assert_branch(spec_dict, replayed)


@SPECS
def test_a_loop_opened_for_every_call_decides_as_one_long_replay(tmp_path: Path, spec_dict: dict[str, Any]) -> None:
    """The third driver: predict, ingest, feedback and tick each open the loop from its store and close it,
    as separate CLI processes do, so all the policy knows comes back from the store (the monitor's rows, its
    live quality, reference and detector, the labels since the last run, streaks, the rollout's evidence)."""
    frame = stream()
    spec = load_spec_dict({**spec_dict, "store": {"root": str(tmp_path / "calls")}})
    replay(spec, frame, tmp_path / "replay")
    times = frame["t"].to_numpy(dtype=float)
    features, labels = frame.drop(columns="y"), frame["y"].tolist()
    warm, delay, batch = 300, 40.0, 50

    def call(now: float, step: Any) -> Any:
        loop = Loop(spec, clock=SimulatedClock(now), durable=False, actor="replay")
        try:
            return step(loop)
        finally:
            loop.close()

    call(times[warm - 1], lambda lp: lp.ingest(frame.iloc[:warm], source="replay", batch_id="warmup"))
    call(times[warm - 1], lambda lp: lp.tick())
    next_label = warm
    ids: list[str] = []
    for start in range(warm, len(frame), batch):
        hi = min(start + batch, len(frame))
        now, key = float(times[hi - 1]), f"batch-{start}"

        def predict(lp: Loop, lo: int = start, hi: int = hi, key: str = key) -> None:
            if lp.champion_version is not None:
                lp.predict(features.iloc[lo:hi], row_ids=lp.data.row_ids_for("replay", key, hi - lo),
                           keys=[f"r{i}" for i in range(lo, hi)])

        call(now, predict)
        def ingest(lp: Loop, lo: int = start, hi: int = hi, key: str = key) -> None:
            ids.extend(lp.data.row_ids_for("replay", key, hi - lo))
            lp.ingest(features.iloc[lo:hi], source="replay", batch_id=key)

        call(now, ingest)
        due = min(int(np.searchsorted(times[warm:] + delay, now, side="right")) + warm, hi)
        if due > next_label:
            call(now, lambda lp, lo=next_label, hi=due: lp.feedback(ids[lo - warm:hi - warm], labels[lo:hi],
                                                                    source="replay", batch_id=f"labels-{lo}"))
            next_label = due

        def tick(lp: Loop) -> None:
            lp.tick()
            if lp.rollout is not None and lp.rollout.status == "awaiting_approval":
                lp.approve(lp.rollout.id, actor="replay", reason="replay approves manual steps automatically")

        call(now, tick)

    from freshloop.store import open_stores

    called, _ = open_stores(tmp_path / "calls")
    replayed, _ = open_stores(tmp_path / "replay" / "store")
    d_called, d_replay = decisions_of(called), decisions_of(replayed)
    kinds = {t for d in d_called if d[1] == "retrain" for t in d[3]}
    assert len([d for d in d_called if d[1] == "retrain"]) >= 2 and kinds  # the drift made the loop retrain
    assert d_called == d_replay
    assert verdicts_of(called) == verdicts_of(replayed)
    moves = [(m.name, m.old_version, m.new_version, m.at) for m in called.versions.alias_history()]
    assert moves == [(m.name, m.old_version, m.new_version, m.at) for m in replayed.versions.alias_history()]
    assert_branch(spec_dict, replayed)
