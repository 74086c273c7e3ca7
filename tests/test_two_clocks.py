"""One loop, two clocks: the same stream through `serve` (over HTTP) and through `replay` decides the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml

from freshloop.api import BackgroundServer, LoopService, Settings, create_app
from freshloop.clock import SimulatedClock
from freshloop.replay import replay
from freshloop.spec import load_spec

from .conftest import make_frame

SPEC: dict[str, Any] = {
    "name": "parity",
    "data": {"label": "y", "time": "t"},
    "model": {"window": {"rows": 400}},
    "policy": {"cooldown": "200s", "triggers": {"drift": {"window": 200}, "quality": {"min_labels": 100},
                                                "detector": "adwin", "staleness": "3000s"}},
    "rollout": {"strategy": "canary", "steps": [30, 100], "min_labels": 50, "step_deadline": "600s"},
    "replay": {"batch": {"rows": 50}, "label_delay": "40s", "warmup": 300},
}


def stream() -> pd.DataFrame:
    before = make_frame(900, seed=1)
    after = make_frame(900, seed=2, shift=1.5, flip=True, t0=900)
    return pd.concat([before, after], ignore_index=True)


def decisions_of(meta: Any) -> list[tuple[float, str, tuple[str, ...]]]:
    return [(d["at"], d["kind"], tuple(d["reasons"])) for d in meta.list_decisions()]


def verdicts_of(meta: Any) -> list[tuple[float, bool, str]]:
    return [(v["created_at"], v["passed"], v["body"]["reason"]) for v in meta.list_verdicts()]


def test_serve_and_replay_make_the_same_decisions(tmp_path: Path) -> None:
    frame = stream()
    spec_path = tmp_path / "loop.yaml"
    spec_path.write_text(yaml.safe_dump({**SPEC, "store": {"root": str(tmp_path / "serve")}}))
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
    moves = [(m.name, m.old_version, m.new_version, m.at) for m in served.alias_history()]
    assert moves == [(m.name, m.old_version, m.new_version, m.at) for m in replayed.alias_history()]
