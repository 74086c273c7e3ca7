"""The serving path stays open while the control path (ingest, feedback, ticks, retraining) is busy."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from freshloop.api import BackgroundServer, LoopService, Settings, create_app

from .conftest import make_frame, spec_dict

pytestmark = pytest.mark.slow  # a real server under a held lock


def test_predictions_answer_while_the_control_path_is_held(tmp_path: Path) -> None:
    spec_path = tmp_path / "loop.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(tmp_path / "store")))
    settings = Settings(spec_path=spec_path, tick_every=0, flush_every=0.05)
    service = LoopService(settings)
    first = make_frame(600)
    service.ingest(first.to_dict(orient="records"), batch_id="b0", source="test")
    service.tick()
    assert service.loop.champion_version == 2  # the refit of 1
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
                assert len(answered) == 20 and {d["version"] for d in r.json()["data"]} == {2}
                assert not any(service.loop.data.has_row(p) for p in answered)  # queued, not yet ingested
            # released: the worker ingests the queued rows, and their labels join the logged predictions
            labels = [{"prediction_id": p, "label": int(y)} for p, y in zip(answered, [0, 1] * 10, strict=True)]
            fb = client.post("/v1/feedback", json={"labels": labels}).json()
            assert fb["unknown_prediction_ids"] == [] and fb["scored"] == 20
    finally:
        server.stop()
    assert all(service.loop.data.has_row(p) for p in answered)  # nothing acknowledged was lost


def test_concurrent_predictions_share_model_calls_and_keep_their_own_answers(tmp_path: Path) -> None:
    spec_path = tmp_path / "loop.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(tmp_path / "store")))
    settings = Settings(spec_path=spec_path, tick_every=0)
    service = LoopService(settings)
    service.ingest(make_frame(600).to_dict(orient="records"), batch_id="b0", source="test")
    service.tick()
    features = make_frame(9, seed=4, t0=600).drop(columns=["y"])
    rows = features.to_dict(orient="records")
    alone = service.loop.champion().predict(features)[0].tolist()  # what each row gets scored by itself
    bodies: list[dict[str, object]] = [{"rows": [r]} for r in rows[:8]]
    bodies.insert(3, {"rows": [{**rows[8], "x1": "not a number"}]})  # one bad request among them
    large = {"rows": make_frame(400, seed=5).drop(columns=["y"]).to_dict(orient="records")}
    server = BackgroundServer(create_app(settings, service=service))
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client, ThreadPoolExecutor(len(bodies) + 1) as pool:
            # hold the serving lock: a large request (scored on a worker thread) waits on it, and the small
            # requests sent meanwhile queue up behind it
            with service.loop.ctx.lock:
                first = pool.submit(client.post, "/v1/predict", json=large)
                time.sleep(0.3)
                futures = [pool.submit(client.post, "/v1/predict", json=b) for b in bodies]
                time.sleep(1.0)
            assert first.result().status_code == 200 and first.result().json()["count"] == 400
            answers = [f.result() for f in futures]
            metrics = client.get("/metrics").text
    finally:
        server.stop()
    bad = answers.pop(3)
    assert bad.status_code == 422 and bad.json()["field"] == "rows" and "x1" in bad.json()["message"]
    assert [a.status_code for a in answers] == [200] * 8
    assert [a.json()["data"][0]["prediction"] for a in answers] == alone[:8]
    assert len({a.json()["data"][0]["prediction_id"] for a in answers}) == 8
    calls = float(metrics.split("freshloop_predict_batch_requests_count ")[1].split()[0])
    scored = float(metrics.split("freshloop_predict_batch_requests_sum ")[1].split()[0])
    assert (calls, scored) == (2, 9)  # the large request, then the eight queued behind it in one call
