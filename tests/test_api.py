"""`freshloop serve` for real: a server process on a loopback port, driven over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from freshloop.api import free_port

from .conftest import make_frame

pytestmark = pytest.mark.slow  # real servers on loopback ports

OP, READ, LAB = "op-" + "o" * 20, "rd-" + "r" * 20, "lb-" + "l" * 20


class Server:
    def __init__(self, spec: Path) -> None:
        self.spec = spec
        self.port = free_port()
        env = {**os.environ, "FRESHLOOP_TOKENS": f"{OP}:operator,{READ}:reader,{LAB}:labeler"}
        self.proc = subprocess.Popen([sys.executable, "-m", "freshloop.cli", "serve", str(spec), "--port",
                                      str(self.port), "--tick-every", "0"], env=env, stderr=subprocess.PIPE,
                                     text=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        for _ in range(200):
            try:
                if self.client.get("/v1/status", headers=auth(READ)).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start")

    def stop(self) -> int:
        """SIGTERM; uvicorn shuts down gracefully, then re-raises the signal (exit -15)."""
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        if self.proc.stderr:
            self.proc.stderr.close()
        assert code in (0, -signal.SIGTERM), err
        return 0


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_spec(root: Path, **over: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "svc", "data": {"label": "y"},
        "store": {"root": str(root / "store")},
        "model": {"window": {"rows": 300}},
        "policy": {"triggers": {"drift": {"window": 150}}, "hysteresis": 1, "cooldown": "0s", "min_new_labels": 0},
        "rollout": {"strategy": "canary", "steps": [50, 100], "min_labels": 40, "step_deadline": "1h"},
    }
    spec.update(over)
    path = root / "loop.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(write_spec(tmp_path))
    yield srv
    if srv.proc.poll() is None:
        srv.stop()


def records(frame: Any, label: bool) -> list[dict[str, Any]]:
    cols = ["x1", "x2", "c"] + (["y"] if label else [])
    return frame[cols].to_dict(orient="records")


def traffic(c: httpx.Client, frame: Any, batch: int = 50) -> tuple[int, set[int]]:
    """Clients predict rows, then send their labels; operators tick. Returns (failed predictions, versions)."""
    failed, versions = 0, set()
    for start in range(0, len(frame), batch):
        chunk = frame.iloc[start:start + batch]
        r = c.post("/v1/predict", json={"rows": records(chunk, False)}, headers=auth(READ))
        if r.status_code != 200:
            failed += 1
            continue
        data = r.json()["data"]
        versions |= {d["version"] for d in data}
        labels = [{"prediction_id": d["prediction_id"], "label": int(y)} for d, y in zip(data, chunk["y"],
                                                                                           strict=True)]
        assert c.post("/v1/feedback", json={"labels": labels}, headers=auth(LAB)).status_code == 200
        assert c.post("/v1/tick", headers=auth(OP)).status_code == 200
    return failed, versions


def bootstrap(c: httpx.Client) -> None:
    r = c.post("/v1/ingest", json={"rows": records(make_frame(400), True), "batch_id": "warm"}, headers=auth(LAB))
    assert r.status_code == 200 and r.json()["accepted"] == 400
    again = c.post("/v1/ingest", json={"rows": records(make_frame(400), True), "batch_id": "warm"},
                   headers=auth(LAB))
    assert again.json()["replayed"] and again.json()["batch_id"] == r.json()["batch_id"]
    t = c.post("/v1/tick", headers=auth(OP)).json()
    # the gated fit (1) served first, then its refit on every row (2) replaced it
    assert (t["registered"], t["refit"], t["promoted"]) == (1, 2, 2), t


def test_drift_retrain_canary_promotion_over_http(tmp_path: Path, db_url: str | None) -> None:
    """The whole loop served over HTTP, on the embedded store and on a PostgreSQL server."""
    server = Server(write_spec(tmp_path, store={"root": str(tmp_path / "store"), "url": db_url}))
    try:
        _drift_retrain_canary_promotion(server)
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert (tmp_path / "store" / "freshloop.db").exists() == (db_url is None)  # the metadata went where asked


def _drift_retrain_canary_promotion(server: Server) -> None:
    c = server.client
    bootstrap(c)
    drifted = make_frame(1500, seed=4, shift=2.0, flip=True)
    failed, versions = traffic(c, drifted)
    assert failed == 0
    decisions = c.get("/v1/decisions", params={"kind": "retrain"}, headers=auth(READ)).json()["data"]
    assert any(r.startswith("drift:") for d in decisions for r in d["reasons"])
    kinds = {e["kind"] for e in c.get("/v1/events", params={"limit": 1000}, headers=auth(READ)).json()["data"]}
    assert {"rollout_started", "rollout_step", "rollout_promoted"} <= kinds
    assert len(versions) >= 2  # the canary answered some requests during the switch
    status = c.get("/v1/status", headers=auth(READ)).json()
    assert status["champion"] > 1
    assert status["serving"] == "coefficients, every batch"  # the default logistic regression, compiled
    metrics = c.get("/metrics").text
    assert "freshloop_retrains_total" in metrics and "freshloop_request_seconds_bucket" in metrics
    # counted per route template and status; latency per serving version
    assert 'freshloop_requests_total{route="/v1/predict",status="200"}' in metrics
    assert 'freshloop_requests_total{route="/v1/status",status="200"}' in metrics
    assert 'freshloop_request_seconds_count{route="/v1/predict",version="2"}' in metrics
    assert server.stop() == 0
    # drained on SIGTERM: every predicted row is in the store, and the prediction log is on disk
    from freshloop.clock import WallClock
    from freshloop.loop import Loop
    from freshloop.spec import load_spec

    loop = Loop(load_spec(server.spec), clock=WallClock())
    assert loop.data.rows == 400 + 1500
    assert list((Path(loop.spec.store.root or "") / "predictions").glob("part-*.parquet"))
    loop.close()


def test_bad_candidate_is_rolled_back_on_canary(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    srv = Server(spec)
    bootstrap(srv.client)
    assert srv.stop() == 0
    # the operator switches the spec to a deliberately worse trainer behind a lenient gate, and restarts
    write_spec(tmp_path, model={"estimator": "freshloop.testing.ShuffledLabelsClassifier"},
               gate={"min_improvement": -1.0, "max_regression": 1.0},
               policy={"triggers": {"schedule": "0s"}, "cooldown": "0s", "min_new_labels": 0})
    srv = Server(spec)
    try:
        c = srv.client
        assert c.get("/v1/status", headers=auth(READ)).json()["champion"] == 2  # restored from the store
        failed, _ = traffic(c, make_frame(1200, seed=5))
        assert failed == 0
        rolled = c.get("/v1/events", params={"kind": "rollout_rolled_back"}, headers=auth(READ)).json()["data"]
        assert rolled and "worse than the champion" in rolled[0]["reason"]
        assert c.get("/v1/status", headers=auth(READ)).json()["champion"] == 2
        rollouts = c.get("/v1/rollouts", headers=auth(READ)).json()["data"]
        assert any(r["status"] == "rolled_back" for r in rollouts)
    finally:
        srv.stop()


def test_auth_validation_and_errors(server: Server) -> None:
    c = server.client
    assert c.get("/v1/status").status_code == 401
    assert c.get("/v1/status", headers=auth("x" * 20)).status_code == 401
    r = c.post("/v1/ingest", json={"rows": records(make_frame(5), True)}, headers=auth(READ))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert c.post("/v1/tick", headers=auth(LAB)).status_code == 403
    assert c.post("/v1/rollback", json={"reason": "x"}, headers=auth(LAB)).status_code == 403
    nochamp = c.post("/v1/predict", json={"rows": records(make_frame(2), False)}, headers=auth(READ))
    assert nochamp.status_code == 404 and nochamp.json()["code"] == "not_found"
    bootstrap(c)
    bad = c.post("/v1/predict", json={"rows": [{"x1": "abc", "x2": 0.1, "c": "a"}]}, headers=auth(READ))
    assert bad.status_code == 422 and bad.json()["message"] == "row 0: field 'x1': must be a number (got 'abc')"
    missing = c.post("/v1/predict", json={"rows": [{"x1": 0.1, "c": "a"}]}, headers=auth(READ))
    assert missing.status_code == 422 and "column 'x2': missing" in missing.json()["message"]
    extra = c.post("/v1/predict", json={"rowz": []}, headers=auth(READ))
    assert extra.status_code == 422 and extra.json()["code"] == "invalid_request"
    ok = c.post("/v1/predict", json={"rows": records(make_frame(3), False)}, headers=auth(READ)).json()["data"]
    fb = c.post("/v1/feedback", json={"labels": [{"prediction_id": ok[0]["prediction_id"], "label": 1},
                                                 {"prediction_id": "p-nope", "label": 0}]}, headers=auth(LAB))
    assert fb.status_code == 200 and fb.json()["unknown_prediction_ids"] == ["p-nope"]
    assert c.post("/v1/models/99/promote", json={"reason": "x"}, headers=auth(OP)).status_code == 404
    assert c.post("/v1/rollouts/ro-9/approve", json={"reason": "x"}, headers=auth(OP)).status_code == 404
    conflict = c.post("/v1/rollback", json={"reason": "x"}, headers=auth(OP))
    assert conflict.status_code == 409  # the gated fit its refit replaced is no earlier champion
    huge = c.post("/v1/ingest/file", content=b"x" * (11 * 1024 * 1024),
                  headers={**auth(LAB), "Content-Type": "text/csv"})
    assert huge.status_code == 413 and huge.json()["code"] == "too_large"
    assert "freshloop_data_to_deploy_seconds_count 2.0" in c.get("/metrics").text
    ids = {op["operationId"] for path in c.get("/openapi.json").json()["paths"].values() for op in path.values()}
    assert {"predict", "ingest_batch", "send_feedback", "get_status", "promote_model", "rollback"} <= ids


def test_non_loopback_without_tokens_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    res = subprocess.run([sys.executable, "-m", "freshloop.cli", "serve", str(spec), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                                          if k != "FRESHLOOP_TOKENS"})
    assert res.returncode == 2 and "refusing to bind '0.0.0.0' without tokens" in res.stderr


ROUTES = [  # (method, path, role needed, body)
    ("POST", "/v1/ingest", "labeler", {"rows": [{"x1": 1.0}]}),
    ("POST", "/v1/ingest/file", "labeler", None),
    ("POST", "/v1/predict", "reader", {"rows": [{"x1": 1.0}]}),
    ("POST", "/v1/feedback", "labeler", {"labels": [{"prediction_id": "p", "label": 1}]}),
    ("GET", "/v1/status", "reader", None),
    ("GET", "/v1/models", "reader", None),
    ("GET", "/v1/decisions", "reader", None),
    ("GET", "/v1/events", "reader", None),
    ("GET", "/v1/rollouts", "reader", None),
    ("POST", "/v1/tick", "operator", None),
    ("POST", "/v1/models/1/promote", "operator", {"reason": "x"}),
    ("POST", "/v1/rollback", "operator", {"reason": "x"}),
    ("POST", "/v1/rollouts/ro-1/approve", "operator", {"reason": "x"}),
    ("POST", "/v1/rollouts/ro-1/abort", "operator", {"reason": "x"}),
]
TOKEN_OF = {"reader": READ, "labeler": LAB, "operator": OP}


def test_the_schema_documents_what_each_route_answers(server: Server) -> None:
    """Every operation's 200 answer names a model of the OpenAPI schema that lists its fields, and a listing's
    items are the store's entities (a decision carries its triggers and guard)."""
    schema = server.client.get("/openapi.json").json()
    models = schema["components"]["schemas"]
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            ref = op["responses"]["200"]["content"]["application/json"]["schema"].get("$ref", "")
            assert ref.startswith("#/components/schemas/"), (method, path, op["responses"]["200"])
            assert models[ref.rsplit("/", 1)[1]]["properties"], (method, path)
    item = models["DecisionRecord"]["properties"]
    assert {"triggers", "guard", "reasons", "kind", "at"} <= set(item)
    assert set(models["PredictionAnswer"]["properties"]) == {"data", "count"}


def test_every_route_checks_its_token_and_role(server: Server) -> None:
    c = server.client
    openapi = c.get("/openapi.json").json()["paths"]
    listed = {(m.upper(), p) for p, ops in openapi.items() for m in ops}
    assert listed == {(m, p.replace("/1/", "/{version}/").replace("ro-1", "{rollout_id}")) for m, p, _, _ in ROUTES}
    for method, path, needed, body in ROUTES:
        assert c.request(method, path, json=body).status_code == 401, path
        assert c.request(method, path, json=body, headers=auth("z" * 24)).status_code == 401, path
        below = [r for r in ("reader", "labeler", "operator") if r != needed][: ("reader", "labeler",
                                                                                  "operator").index(needed)]
        for role in below:
            r = c.request(method, path, json=body, headers=auth(TOKEN_OF[role]))
            assert r.status_code == 403 and needed in r.json()["message"], (path, role)
        if method == "POST":  # the token is checked before the body is read: a malformed one is still 401/403
            broken = {"content": b'{"rows": [', "headers": {"Content-Type": "application/json"}}
            assert c.request(method, path, **broken).status_code == 401, path
            for role in below:
                assert c.request(method, path, content=broken["content"],
                                 headers={**broken["headers"], **auth(TOKEN_OF[role])}).status_code == 403, path


class ServeProcess:
    """`freshloop serve` in its own session, so a signal reaches it alone; its output goes to ``log``. Ready once
    it answers (its start-up, recovery included, is over)."""

    def __init__(self, spec: Path, log: Path, env: dict[str, str], *args: str) -> None:
        self.port, self.logged = free_port(), log
        self.log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "freshloop.cli", "serve", str(spec), "--port",
                                      str(self.port), "--tick-every", "0", *args], env=env, stdout=self.log,
                                     stderr=self.log, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server did not start (exit {self.proc.returncode}): "
                                     f"{log.read_text()[-3000:]}")
            try:
                httpx.get(self.url + "/openapi.json", timeout=5)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.kill()
        raise AssertionError("the server did not answer within 120 s")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)  # this process alone: it was started in its own session
        self.proc.wait(timeout=60)
        self.log.close()

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        assert self.proc.wait(timeout=120) in (0, -signal.SIGTERM)
        self.log.close()


def test_a_server_without_tokens_makes_an_operator_token_that_remote_finds(tmp_path: Path) -> None:
    """As Jupyter does: a server on loopback without tokens would be open to every local user and process, so
    it makes an operator token, prints it once and keeps it in the store (0600); `freshloop remote` finds it."""
    import stat

    env = {**{k: v for k, v in os.environ.items() if k != "FRESHLOOP_TOKENS"},
           "FRESHLOOP_RUNTIME_DIR": str(tmp_path / "runtime")}
    srv = ServeProcess(write_spec(tmp_path), tmp_path / "server.log", env)
    url = srv.url
    token_file = tmp_path / "store" / "operator.token"
    try:
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token) >= 32
        assert httpx.get(url + "/v1/status").status_code == 401
        assert httpx.get(url + "/v1/status", headers=auth(token)).status_code == 200
        assert httpx.post(url + "/v1/tick", headers=auth(token)).status_code == 200  # an operator's token
        assert httpx.get(url + "/metrics").status_code == 200  # open on loopback by default
        remote = subprocess.run([sys.executable, "-m", "freshloop.cli", "remote", "status", "--server", url],
                                capture_output=True, text=True, timeout=120, env=env)
        assert remote.returncode == 0 and '"name": "svc"' in remote.stdout, remote.stderr
        os.environ["FRESHLOOP_RUNTIME_DIR"] = env["FRESHLOOP_RUNTIME_DIR"]
        try:
            from freshloop.cli import _local_token

            assert _local_token(url) == token
            assert _local_token(url.replace("127.0.0.1", "192.0.2.1")) is None  # never sent to another host
        finally:
            del os.environ["FRESHLOOP_RUNTIME_DIR"]
    finally:
        srv.stop()
    err = (tmp_path / "server.log").read_text()
    assert err.count(token) == 1 and "--no-auth" in err
    assert not token_file.exists() and not list((tmp_path / "runtime").iterdir())


def test_no_auth_serves_without_tokens(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FRESHLOOP_TOKENS"}
    srv = ServeProcess(write_spec(tmp_path), tmp_path / "server.log", env, "--no-auth")
    try:
        assert httpx.get(srv.url + "/v1/status").status_code == 200
        assert not (tmp_path / "store" / "operator.token").exists()
    finally:
        srv.stop()


def test_metrics_need_a_token_when_the_setting_says_so(tmp_path: Path) -> None:
    from freshloop.api import BackgroundServer, LoopService, Settings, create_app

    settings = Settings(spec_path=write_spec(tmp_path), tick_every=0, tokens={OP: "operator", READ: "reader"},
                        metrics="token")
    server = BackgroundServer(create_app(settings, service=LoopService(settings)))
    try:
        assert httpx.get(server.url + "/metrics").status_code == 401
        assert httpx.get(server.url + "/metrics", headers=auth(READ)).status_code == 200
    finally:
        server.stop()


def test_remote_cli_and_file_upload(server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "FRESHLOOP_SERVER": f"http://127.0.0.1:{server.port}"}

    def cli(*args: str, token: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "freshloop.cli", "remote", *args], capture_output=True,
                              text=True, timeout=120, env={**env, "FRESHLOOP_TOKEN": token}, cwd=tmp_path)

    make_frame(400).drop(columns="t").to_csv(tmp_path / "warm.csv", index=False)
    up = cli("ingest", "warm.csv", "--batch-id", "w", token=LAB)
    assert up.returncode == 0, up.stderr
    assert '"accepted": 400' in up.stdout
    assert cli("ingest", "warm.csv", "--batch-id", "w", token=LAB).returncode == 0  # idempotent
    (tmp_path / "bad.csv").write_text("x1,x2,c,y\n0.1,zz,a,1\n")
    assert cli("ingest", "bad.csv", token=LAB).returncode == 3
    assert cli("ingest", "warm.csv", token=READ).returncode == 1
    server.client.post("/v1/tick", headers=auth(OP))
    make_frame(5, seed=3).drop(columns=["t", "y"]).to_csv(tmp_path / "rows.csv", index=False)
    pred = cli("predict", "rows.csv", token=READ)
    assert pred.returncode == 0, pred.stderr
    pids = [d["prediction_id"] for d in json.loads(pred.stdout)["data"]]
    pd.DataFrame({"prediction_id": pids + ["p-unknown"], "label": [1, 0, 1, 0, 1, 0]}).to_csv(
        tmp_path / "labels.csv", index=False)
    fb = cli("feedback", "labels.csv", token=LAB)
    assert fb.returncode == 0 and json.loads(fb.stdout)["unknown_prediction_ids"] == ["p-unknown"]
    status = json.loads(cli("status", token=READ).stdout)
    assert status["champion"] == 2
    bad = cli("promote", "9", "--reason", "x", token=OP)
    assert bad.returncode == 1 and "model version 9 not found" in bad.stderr
    r = server.client.post("/v1/ingest/file", content=b"x", headers={**auth(LAB), "Content-Type": "image/png"})
    assert r.status_code == 415


def test_predict_applies_back_pressure(tmp_path: Path) -> None:
    from freshloop.api import BackgroundServer, LoopService, Settings, create_app

    spec = write_spec(tmp_path)
    settings = Settings(spec_path=spec, tick_every=0, flush_every=3600, max_queue_rows=120)
    server = BackgroundServer(create_app(settings, service=LoopService(settings)))
    try:
        with httpx.Client(base_url=server.url) as c:
            bootstrap(c)
            rows = records(make_frame(50, seed=2), False)
            codes = [c.post("/v1/predict", json={"rows": rows}).status_code for _ in range(3)]
            assert codes == [200, 200, 503]
            body = c.post("/v1/predict", json={"rows": rows}).json()
            assert body["code"] == "busy" and "at most 120" in body["message"]
            c.post("/v1/tick")  # the worker (here: a tick) drains the queue
            assert c.post("/v1/predict", json={"rows": rows}).status_code == 200
    finally:
        server.stop()


def test_a_second_server_on_the_same_store_is_refused(tmp_path: Path, db_url: str | None) -> None:
    """Each server keeps its own view of the batches: a second one on the same folder or the same PostgreSQL
    database would train on half the rows. It is refused with a message; the first keeps serving."""
    first = Server(write_spec(tmp_path, store={"root": str(tmp_path / "store"), "url": db_url}))
    try:
        # the second server: the same spec, or (on PostgreSQL) another folder with the same database
        other = tmp_path / "other"
        other.mkdir()
        spec = write_spec(other, store={"root": str((other if db_url else tmp_path) / "store"), "url": db_url,
                                        "outside_spec_folder": True})
        second = subprocess.run([sys.executable, "-m", "freshloop.cli", "serve", str(spec), "--port",
                                 str(free_port())], capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stderr
        message = " ".join(second.stderr.split())
        assert f"`freshloop serve` at http://127.0.0.1:{first.port}" in message, message
        assert "is writing loop 'svc'" in message and "rule: one writer per store" in message
        assert first.client.get("/v1/status", headers=auth(READ)).status_code == 200
    finally:
        first.stop()
    # once the first has stopped, the store is free again
    again = Server(write_spec(tmp_path, store={"root": str(tmp_path / "store"), "url": db_url}))
    again.stop()


def test_concurrent_cli_writes_are_refused_while_a_server_runs(tmp_path: Path, db_url: str | None) -> None:
    """A CLI command that writes behind a running server would go unseen: a promotion it recorded would not be
    served, rows it ingested never trained on. It is refused, naming the server, and changes nothing; commands
    that only read still work. On PostgreSQL a CLI with another folder but the same database is refused too."""
    spec = write_spec(tmp_path, store={"root": str(tmp_path / "store"), "url": db_url})
    srv = Server(spec)
    try:
        bootstrap(srv.client)
        versions = [m["version"] for m in srv.client.get("/v1/models", headers=auth(READ)).json()["data"]]
        champion = srv.client.get("/v1/status", headers=auth(READ)).json()["champion"]
        rows = tmp_path / "rows.csv"
        make_frame(20, seed=4)[["x1", "x2", "c", "y"]].to_csv(rows, index=False)
        specs = [spec]
        if db_url:  # another folder, the same database
            other = tmp_path / "other"
            other.mkdir()
            specs.append(write_spec(other, store={"root": str(other / "store"), "url": db_url}))
        for path in specs:
            for args in (["promote", str(path), str(min(versions)), "--reason", "behind its back"],
                         ["ingest", str(path), str(rows)], ["tick", str(path)],
                         ["rollback", str(path), "--reason", "x"]):
                done = subprocess.run([sys.executable, "-m", "freshloop.cli", *args], capture_output=True, text=True,
                                      timeout=120)
                message = " ".join(done.stderr.split())
                assert done.returncode == 1, (args, done.stdout, done.stderr)
                assert f"`freshloop serve` at http://127.0.0.1:{srv.port}" in message, message
                assert "rule: one writer per store" in message and "freshloop remote" in message, message
        listed = subprocess.run([sys.executable, "-m", "freshloop.cli", "models", str(spec)], capture_output=True,
                                text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        status = srv.client.get("/v1/status", headers=auth(READ)).json()
        assert status["champion"] == champion and status["rows"] == 400
        # promoting the champion itself moves nothing and records nothing
        again = srv.client.post(f"/v1/models/{champion}/promote", json={"reason": "again"}, headers=auth(OP))
        assert again.json() == {"champion": champion, "moved": False}
    finally:
        srv.stop()


def test_concurrent_server_is_refused_while_a_cli_command_writes(tmp_path: Path) -> None:
    from freshloop.store import store_claim

    spec = write_spec(tmp_path)
    with store_claim("svc", tmp_path / "store", holder="`freshloop tick`"):
        done = subprocess.run([sys.executable, "-m", "freshloop.cli", "serve", str(spec), "--port", str(free_port())],
                              capture_output=True, text=True, timeout=120)
    message = " ".join(done.stderr.split())
    assert done.returncode == 1 and "`freshloop tick` (pid " in message and "try again when it has finished" in message


def test_remote_operates_the_server_loop(server: Server, tmp_path: Path) -> None:
    """remote tick, models, events, decisions, approve and abort, each a CLI process against the server."""
    env = {**os.environ, "FRESHLOOP_SERVER": f"http://127.0.0.1:{server.port}"}

    def cli(*args: str, token: str = OP) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "freshloop.cli", "remote", *args], capture_output=True,
                              text=True, timeout=120, env={**env, "FRESHLOOP_TOKEN": token}, cwd=tmp_path)

    make_frame(400).drop(columns="t").to_csv(tmp_path / "warm.csv", index=False)
    assert cli("ingest", "warm.csv", "--batch-id", "w", token=LAB).returncode == 0
    first = cli("tick")
    assert first.returncode == 0, first.stderr
    rep = json.loads(first.stdout)
    assert rep["decision"] == "retrain" and rep["run_failed"] is False and rep["promoted"] is not None
    assert cli("tick", token=READ).returncode == 1  # an operator's action
    models = cli("models", token=READ)
    assert models.returncode == 0 and "champion" in models.stdout, models.stdout
    # every feature moves: the drift trigger retrains and a canary starts
    make_frame(400, seed=7, shift=3.0).drop(columns="t").to_csv(tmp_path / "moved.csv", index=False)
    assert cli("ingest", "moved.csv", "--batch-id", "m", token=LAB).returncode == 0
    second = json.loads(cli("tick").stdout)
    assert second["decision"] == "retrain" and second["reasons"][0].startswith("drift"), second
    rollouts = server.client.get("/v1/rollouts", headers=auth(READ)).json()["data"]
    active = [r for r in rollouts if r["status"] == "running"]
    assert len(active) == 1, rollouts
    no = cli("approve", "ro-999", "--reason", "x")
    assert no.returncode == 1 and "no rollout 'ro-999' awaiting approval" in no.stderr
    abort = cli("abort", active[0]["id"], "--reason", "not today")
    assert abort.returncode == 0 and json.loads(abort.stdout)["status"] == "rolled_back", abort.stderr
    events = cli("events", "--kind", "rollout_rolled_back", token=READ)
    assert events.returncode == 0 and "not today" in events.stdout, events.stdout
    decisions = json.loads(cli("decisions", "--kind", "retrain", "--json", token=READ).stdout)
    assert decisions["count"] == 2 and decisions["data"][-1]["reasons"] == second["reasons"]


def test_the_online_companion_serves_over_http_once_it_is_surely_better(tmp_path: Path) -> None:
    """model.companion behind HTTP: the champion is never retrained, the concept flips, the companion takes over;
    its answers say version 0, the tick that moved serving says why, status says who serves, and the companion
    is saved when the server stops."""
    srv = Server(write_spec(tmp_path, policy={"name": "never", "triggers": {}},
                            model={"window": {"rows": 300}, "companion": {}}, rollout={"strategy": "immediate"}))
    try:
        c = srv.client
        bootstrap(c)
        assert c.get("/v1/status", headers=auth(READ)).json()["companion"]["serves"] is False
        flipped = make_frame(1000, seed=6, flip=True, t0=400)
        served: set[int] = set()
        moved = []
        for start in range(0, len(flipped), 50):
            chunk = flipped.iloc[start:start + 50]
            data = c.post("/v1/predict", json={"rows": records(chunk, False)}, headers=auth(READ)).json()["data"]
            served |= {d["version"] for d in data}
            labels = [{"prediction_id": d["prediction_id"], "label": int(y)} for d, y in zip(data, chunk["y"],
                                                                                               strict=True)]
            assert c.post("/v1/feedback", json={"labels": labels}, headers=auth(LAB)).status_code == 200
            moved.append(c.post("/v1/tick", headers=auth(OP)).json()["serving"])
        assert 0 in served and 2 in served  # the champion (the refit, version 2), then the companion
        assert any(m and m.startswith("the online companion serves: surely better") for m in moved)
        status = c.get("/v1/status", headers=auth(READ)).json()
        assert status["champion"] == 2 and status["companion"]["serves"] is True
        assert status["companion"]["estimator"] == "river.forest.ARFClassifier"
        assert status["companion"]["rows_learned"] >= 1000
    finally:
        srv.stop()
    assert [p.relative_to(tmp_path / "store").parts[-2:] for p in (tmp_path / "store").rglob("state.pkl")] == \
        [("companion", "state.pkl")]  # saved when the server stopped
