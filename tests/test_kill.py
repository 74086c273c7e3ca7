"""Crashes and kill -9s: nothing the server acknowledged is lost, and it starts again cleanly.

Named so that ``pytest -k "kill or crash or concurren or race"`` selects them."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from freshloop.api import LoopService, Settings
from freshloop.registry import Registry
from freshloop.store import open_stores

from .conftest import make_frame
from .test_api import OP, ServeProcess, auth, records, write_spec

pytestmark = pytest.mark.slow  # kill -9 under load, servers on two backends


def _answered(tmp_path: Path) -> tuple[Settings, LoopService, list[dict], list[int]]:
    """A service that trained a champion and answered 30 predictions its worker has not drained."""
    settings = Settings(spec_path=write_spec(tmp_path), tick_every=0, flush_every=3600)
    svc = LoopService(settings)  # no worker: nothing is drained until a tick
    svc.ingest(records(make_frame(400), True), batch_id="warm", source="t")
    svc.tick()
    frame = make_frame(30, seed=3)
    data = svc.predict(records(frame, False), None)["data"]
    return settings, svc, data, frame["y"].tolist()


def test_crash_before_the_worker_drains_loses_no_answered_prediction(tmp_path: Path) -> None:
    """The process dies right after answering: its rows and predictions were only in memory and in the journal.
    A server started again stores them, so the labels sent later are joined and scored."""
    settings, _dead, data, labels = _answered(tmp_path)  # never stopped: no drain, no flush
    again = LoopService(settings)
    assert again.recovered == 30
    ids = [d["prediction_id"] for d in data]
    assert all(again.loop.data.has_row(i) for i in ids) and again.loop.data.rows == 430
    fb = again.send_feedback(list(zip(ids, labels, strict=True)))
    assert fb["unknown_prediction_ids"] == [] and fb["scored"] == 30
    assert again.journal.segments() == []
    events = again.loop.meta.events.list("predictions_recovered")
    assert len(events) == 1 and "30 predictions" in events[0].reason
    # a third start finds nothing left to replay, and the rows are stored once
    third = LoopService(settings)
    assert third.recovered == 0
    assert third.loop.data.rows == 430


def test_crash_mid_write_skips_the_unacknowledged_line_and_sweeps_temporaries(tmp_path: Path) -> None:
    """A line the crash cut short was never synced, so never answered: it is skipped, the others stored. A
    blob write the crash cut short leaves a temporary file that the next start removes."""
    settings, dead, data, _ = _answered(tmp_path)
    segment = dead.journal.segments()[-1]
    with segment.open("ab") as f:
        f.write(b'{"at": 1.0, "ids": ["p-torn"], "ro')
    leftover = dead.loop.blobs.root / "batches" / ".tmp-crashed"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"half a parquet file")
    again = LoopService(settings)
    assert again.recovered == 30 and again.swept == 1 and not leftover.exists()
    assert not again.loop.data.has_row("p-torn")
    assert all(again.loop.data.has_row(d["prediction_id"]) for d in data)


# -- kill -9 under load: a real server process, 8 clients, seeded kills ---------------------------------------

KILLS = int(os.environ.get("FRESHLOOP_KILLS", "24"))  # per metadata backend
OPS = ("ingest", "predict", "feedback", "tick", "promote")


class Acked:
    """What the server acknowledged (answered 200) across every server the test started and killed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: dict[str, int] = {}  # batch id -> rows accepted
        self.predictions: dict[str, int] = {}  # prediction id -> its true label
        self.labeled: set[str] = set()
        self.unknown: list[str] = []  # ids the server had acknowledged and later called unknown
        self.promoted = 0


class Traffic:
    """Eight clients on one server until it dies: two ingest, three predict, one sends labels, one ticks and one
    promotes or rolls back. ``inflight`` counts each operation sent and not yet answered."""

    def __init__(self, url: str, acked: Acked, seed: int) -> None:
        self.url, self.acked, self.seed = url, acked, seed
        self.inflight = dict.fromkeys(OPS, 0)
        self._lock = threading.Lock()
        self.stop = threading.Event()
        clients = [self._ingest] * 2 + [self._predict] * 3 + [self._feedback, self._tick, self._promote]
        self.threads = [threading.Thread(target=self._client, args=(fn, i), daemon=True)
                        for i, fn in enumerate(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def _client(self, fn: Any, i: int) -> None:
        rng = np.random.default_rng([self.seed, i])
        with httpx.Client(base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {OP}"}) as c:
            k = 0
            while not self.stop.is_set():
                k += 1
                try:
                    fn(c, rng, f"{self.seed}-{i}-{k}")
                except httpx.TransportError:  # the server died under this request: it was never acknowledged
                    time.sleep(0.01)

    def _send(self, op: str, c: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
        with self._lock:
            self.inflight[op] += 1
        try:
            return c.request(method, path, **kw)
        finally:
            with self._lock:
                self.inflight[op] -= 1

    def in_flight(self) -> set[str]:
        with self._lock:
            return {op for op, n in self.inflight.items() if n}

    def _ingest(self, c: httpx.Client, rng: np.random.Generator, key: str) -> None:
        rows = records(make_frame(int(rng.integers(5, 60)), seed=int(rng.integers(1 << 30))), True)
        r = self._send("ingest", c, "POST", "/v1/ingest", json={"rows": rows, "batch_id": f"b-{key}"})
        if r.status_code == 200:
            with self.acked.lock:
                self.acked.batches[f"b-{key}"] = r.json()["accepted"]

    def _predict(self, c: httpx.Client, rng: np.random.Generator, key: str) -> None:
        frame = make_frame(int(rng.integers(1, 20)), seed=int(rng.integers(1 << 30)))
        r = self._send("predict", c, "POST", "/v1/predict", json={"rows": records(frame, False)})
        if r.status_code == 200:
            with self.acked.lock:
                for d, y in zip(r.json()["data"], frame["y"], strict=True):
                    self.acked.predictions[d["prediction_id"]] = int(y)
        else:
            time.sleep(0.02)  # no champion yet

    def _feedback(self, c: httpx.Client, rng: np.random.Generator, key: str) -> None:
        with self.acked.lock:
            waiting = [p for p in self.acked.predictions if p not in self.acked.labeled]
        if not waiting:
            time.sleep(0.02)
            return
        pick = [waiting[j] for j in rng.choice(len(waiting), min(len(waiting), 30), replace=False)]
        labels = [{"prediction_id": p, "label": self.acked.predictions[p]} for p in pick]
        r = self._send("feedback", c, "POST", "/v1/feedback", json={"labels": labels})
        if r.status_code == 200:
            with self.acked.lock:
                self.acked.labeled.update(pick)
                self.acked.unknown += r.json()["unknown_prediction_ids"]

    def _tick(self, c: httpx.Client, rng: np.random.Generator, key: str) -> None:
        self._send("tick", c, "POST", "/v1/tick")

    def _promote(self, c: httpx.Client, rng: np.random.Generator, key: str) -> None:
        versions = [m["version"] for m in c.get("/v1/models").json()["data"]]
        if len(versions) < 2:
            time.sleep(0.05)
            return
        if rng.random() < 0.25:
            r = self._send("promote", c, "POST", "/v1/rollback", json={"reason": f"kill test {key}"})
        else:
            v = int(rng.choice(versions))
            r = self._send("promote", c, "POST", f"/v1/models/{v}/promote", json={"reason": f"kill test {key}"})
        if r.status_code == 200:
            with self.acked.lock:
                self.acked.promoted += 1


def _kill_spec(tmp_path: Path, db_url: str | None) -> Path:
    # every tick trains (a schedule of 0s, no cooldown): kills land in training runs
    return write_spec(tmp_path, store={"root": str(tmp_path / "store"), "url": db_url},
                      policy={"triggers": {"schedule": "0s"}, "cooldown": "0s", "min_new_labels": 0,
                              "hysteresis": 1},
                      rollout={"strategy": "immediate"})


def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path, db_url: str | None) -> None:
    """24 seeded kill -9s of a server under 8 clients, each landing while an ingest, a predict, a tick (a
    training run) and a promotion are in flight. After every restart: the server answers, and labels for
    predictions it acknowledged before a kill are known; at the end every acknowledged batch and prediction id
    is stored exactly once, the champion's alias and its history agree, every artifact verifies, and no
    temporary file or journal segment is left."""
    spec = _kill_spec(tmp_path, db_url)
    log = tmp_path / "server.log"
    acked = Acked()
    rng = np.random.default_rng(15)
    landed = dict.fromkeys(OPS, 0)
    env = {**os.environ, "FRESHLOOP_TOKENS": f"{OP}:operator"}
    srv = ServeProcess(spec, log, env)
    with httpx.Client(base_url=srv.url, headers=auth(OP), timeout=60) as c:
        assert c.post("/v1/ingest", json={"rows": records(make_frame(400), True), "batch_id": "warm"}).status_code \
            == 200
        assert c.post("/v1/tick").json()["promoted"]
    acked.batches["warm"] = 400
    for k in range(KILLS):
        traffic = Traffic(srv.url, acked, seed=k)
        before = len(acked.batches)
        traffic.start()
        time.sleep(float(rng.uniform(0.1, 1.5)))  # the kill comes at a different point of the work each time
        deadline = time.monotonic() + 60
        # each server acknowledges a batch before it dies (however slow the machine), and dies with more in flight
        while len(acked.batches) == before and time.monotonic() < deadline:
            time.sleep(0.005)
        while not {"ingest", "predict", "tick", "promote"} <= traffic.in_flight() and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(float(rng.uniform(0, 0.02)))
        for op in traffic.in_flight():
            landed[op] += 1
        srv.kill()
        traffic.join()
        srv = ServeProcess(spec, log, env)  # starts again cleanly, or the test fails here
    # every label for a prediction acknowledged before some kill is joined, not called unknown
    with acked.lock:
        rest = [p for p in acked.predictions if p not in acked.labeled]
    with httpx.Client(base_url=srv.url, headers=auth(OP), timeout=60) as c:
        for start in range(0, len(rest), 500):
            chunk = [{"prediction_id": p, "label": acked.predictions[p]} for p in rest[start:start + 500]]
            acked.unknown += c.post("/v1/feedback", json={"labels": chunk}).json()["unknown_prediction_ids"]
        status = c.get("/v1/status").json()
    root = tmp_path / "store"
    assert not list(root.rglob(".tmp-*"))  # swept at start-up
    srv.stop()
    assert acked.unknown == []
    assert min(landed[op] for op in ("ingest", "predict", "tick", "promote")) >= KILLS - 4, landed
    assert len(acked.predictions) > 500 and len(acked.batches) > KILLS and acked.promoted > 0
    print(f"{KILLS} kills ({'PostgreSQL' if db_url else 'SQLite'}), landing during {landed}; acknowledged: "
          f"{len(acked.batches)} batches, {len(acked.predictions)} predictions, {len(acked.labeled)} labels sent "
          f"before the end, {acked.promoted} promotions or rollbacks")  # the counts the fault suite reports (-s)

    meta, blobs = open_stores(root, db_url)
    try:
        # each acknowledged batch once, with the rows it acknowledged; each acknowledged prediction's row once
        batches = meta.batches.list()
        keys = Counter(b.source_batch_id for b in batches)
        for key, accepted in acked.batches.items():
            assert keys[key] == 1, key
            found = meta.batches.find("api", key)
            assert found is not None and found.rows_accepted == accepted
        row_ids: Counter[str] = Counter()
        for b in batches:
            if b.path and b.source == "predict":
                row_ids.update(pq.read_table(blobs.local_path(b.path), columns=["_row_id"]).column(0).to_pylist())
        assert max(row_ids.values()) == 1
        assert set(acked.predictions) <= set(row_ids)
        # the alias and its history agree: each move starts where the last one ended, and serving follows it
        moves = meta.versions.alias_history("champion")
        for before, after in itertools.pairwise(moves):
            assert after.old_version == before.new_version, (before, after)
        assert meta.versions.alias("champion")[0] == moves[-1].new_version == status["champion"]
        registry = Registry(meta, blobs)
        for v in registry.versions():
            registry.load(v.version)  # its bytes match the recorded sha256
    finally:
        meta.close()
    assert not list((root / "predictions" / "journal").glob("wal-*"))
