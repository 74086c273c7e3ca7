"""The serving path stays open while the control path (ingest, feedback, ticks, retraining) is busy."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from freshloop.api import BackgroundServer, LoopService, Settings, create_app

from .conftest import make_frame, spec_dict


def test_predictions_answer_while_the_control_path_is_held(tmp_path: Path) -> None:
    spec_path = tmp_path / "loop.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(tmp_path / "store")))
    settings = Settings(spec_path=spec_path, tick_every=0, flush_every=0.05)
    service = LoopService(settings)
    first = make_frame(600)
    service.ingest(first.to_dict(orient="records"), batch_id="b0", source="test")
    service.tick()
    assert service.loop.champion_version == 1
    server = BackgroundServer(create_app(settings, service=service))
    rows = make_frame(20, seed=3, t0=600).drop(columns=["y"]).to_dict(orient="records")
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            # What a long retrain or a large ingest does: hold the control lock. Before the serving path
            # had its own lock, this request waited for it (here: forever, so the client timed out).
            with service.lock:
                r = client.post("/v1/predict", json={"rows": rows})
                assert r.status_code == 200, r.text
                answered = [d["prediction_id"] for d in r.json()["data"]]
                assert len(answered) == 20 and {d["version"] for d in r.json()["data"]} == {1}
                assert not any(service.loop.data.has_row(p) for p in answered)  # queued, not yet ingested
            # released: the worker ingests the queued rows, and their labels join the logged predictions
            labels = [{"prediction_id": p, "label": int(y)} for p, y in zip(answered, [0, 1] * 10, strict=True)]
            fb = client.post("/v1/feedback", json={"labels": labels}).json()
            assert fb["unknown_prediction_ids"] == [] and fb["scored"] == 20
    finally:
        server.stop()
    assert all(service.loop.data.has_row(p) for p in answered)  # nothing acknowledged was lost
