"""Speed and cost, side by side in one run (A B A B …): medians and ratios, never a lone time."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# imported up front, so that one run measures one version of the code
import freshloop.api  # noqa: F401
import freshloop.loop  # noqa: F401

_RUN_PEAK_MB = [0.0]  # the whole run's peak, kept across resets


def reset_peak_rss() -> None:
    """Start a new peak-RSS window for this process (Linux: writing 5 to clear_refs resets VmHWM)."""
    run_peak_rss_mb()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_rss`, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_peak_rss_mb() -> float:
    """Peak resident memory of this process over the whole run, in MB."""
    _RUN_PEAK_MB[0] = max(_RUN_PEAK_MB[0], peak_rss_mb())
    return _RUN_PEAK_MB[0]


class ChildrenPeak:
    """Peak RSS of each process this one starts while the block runs, in MB by pid.

    A thread reads every child's VmHWM (its own peak so far) every ``every`` seconds and keeps the latest
    reading: between fork and exec a child still maps its parent's memory, and a reading then would count
    the parent's. A child's last reading is at most ``every`` before it exits, so growth in its final
    moment alone could be missed."""

    def __init__(self, every: float = 0.02) -> None:
        self.every = every
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ChildrenPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.every):
                return

    def _sample(self) -> None:
        pids: set[int] = set()
        for task in Path("/proc/self/task").glob("*"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (task / "children").read_text().split())
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peaks[pid] = int(line.split()[1]) / 1024  # the latest: see the class

    @property
    def total_mb(self) -> float:
        """The children's peaks added up: what they held together at most."""
        return sum(self.peaks.values())

    @property
    def largest_mb(self) -> float:
        return max(self.peaks.values(), default=0.0)


def alternate(a: Callable[[], Any], b: Callable[[], Any], repeats: int,
              warmup: int = 0, before: Callable[[], Any] | None = None
              ) -> tuple[list[float], list[float], tuple[float, float]]:
    """Times of ``a`` and ``b`` run in turns, after ``warmup`` untimed turns, and each side's peak RSS (MB, the
    whole process); ``before`` runs untimed ahead of each timed turn."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    peaks = [0.0, 0.0]
    for _ in range(repeats):
        if before is not None:
            before()
        for i, (fn, acc) in enumerate(((a, ta), (b, tb))):
            reset_peak_rss()
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
            peaks[i] = max(peaks[i], peak_rss_mb())
    return ta, tb, (peaks[0], peaks[1])


def _summary(ta: list[float], tb: list[float], rss: tuple[float, float]) -> dict[str, Any]:
    return {"freshloop_median_s": statistics.median(ta), "baseline_median_s": statistics.median(tb),
            "freshloop_spread_s": [min(ta), max(ta)], "baseline_spread_s": [min(tb), max(tb)],
            "ratio": statistics.median(ta) / statistics.median(tb),
            "freshloop_peak_rss_mb": rss[0], "baseline_peak_rss_mb": rss[1]}


def wide_frame(rows: int, cols: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"f{i}": rng.normal(size=rows) for i in range(cols - 2)}
    data["c"] = rng.choice(["a", "b", "c", "d"], rows)
    data["y"] = (data["f0"] + data["f1"] + rng.normal(0, 0.5, rows) > 0).astype(int)  # learnable, so gates pass
    frame = pd.DataFrame(data)
    frame.insert(0, "t", np.arange(rows, dtype=float))
    return frame


WARMUP_BATCHES = 3  # untimed ingests before the timed ones: 3 x 1M x 20 fill the 256 MB view and start eviction


def ingest_ratio(rows: int, cols: int, repeats: int) -> dict[str, Any]:
    """Validated, versioned ingest vs a raw pyarrow Parquet write of the same table (throughput ratio)."""
    from freshloop.data.store import DataStore
    from freshloop.spec import DataSpec
    from freshloop.store import open_stores

    frame = wide_frame(rows, cols)
    tmp = Path(tempfile.mkdtemp())
    counter = iter(range(10_000))

    # steady state: a running loop whose schema was locked by an earlier, small batch
    meta, blobs = open_stores(tmp / "store", durable=True)
    ds = DataStore("b", DataSpec(label="y", time="t"), meta, blobs)
    ds.ingest(wide_frame(1000, cols, seed=9), now=0.0, source="bench", batch_id="lock")

    def freshloop_ingest() -> None:
        res = ds.ingest(frame, now=0.0, source="bench", batch_id=str(next(counter)))
        assert res.accepted == rows

    def raw_write() -> None:  # what a user would write: the table straight into its file
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp / f"raw{next(counter)}.parquet")

    # timed once the store's in-memory view is full and lets its oldest rows go, as in a loop that has run a
    # while: the first batches into an empty store touch memory the process never had, which costs several
    # times as much on this machine as memory it reuses (validation alone: 0.11 s warm, 0.32-0.47 s cold)
    ta, tb, rss = alternate(freshloop_ingest, raw_write, repeats, warmup=WARMUP_BATCHES)
    meta.close()
    out = _summary(ta, tb, rss)
    out["throughput_ratio"] = 1 / out["ratio"]
    out["rows"], out["cols"], out["warmup"] = rows, cols, WARMUP_BATCHES
    return out


def data_to_deploy_ratio(rows: int, repeats: int) -> dict[str, Any]:
    """Trigger → trained → gated → registered → serving vs bare fit + predict on the same snapshot (HGB), as
    `freshloop serve` runs it: with the default refit, the gated fit serves first and its refit replaces it."""
    frame = wide_frame(rows + repeats * FRESH_ROWS, 12, seed=1)
    results: dict[str, Any] = {**_data_to_deploy(frame, True, repeats),
                               "no_refit": _data_to_deploy(frame, False, repeats)["served"], "rows": rows}
    return results


# Rows that arrive before each timed retrain (untimed): the gate judges on rows the champion was not fitted
# on, and after a refit on everything there are none; a full holdout's worth, as new labels would bring.
FRESH_ROWS = 500


def _data_to_deploy(frame: pd.DataFrame, refit: bool, repeats: int) -> dict[str, Any]:
    from freshloop.clock import SimulatedClock
    from freshloop.loop import Loop, TickReport
    from freshloop.policy import Retrain, run_key
    from freshloop.spec import load_spec_dict
    from freshloop.train.model import ModelBundle

    tmp = Path(tempfile.mkdtemp())
    spec = load_spec_dict({"name": "d2d", "data": {"label": "y", "time": "t"}, "store": {"root": str(tmp)},
                           "model": {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "scale": False},
                           # a pass-through gate: every measured run goes all the way to serving (the gate's
                           # statistics still run); judging is not what this measures
                           "gate": {"refit": refit, "min_improvement": -1.0, "max_regression": 1.0}})
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock, durable=True, serve_before_refit=True)  # what the server runs
    first_rows = len(frame) - repeats * FRESH_ROWS
    clock.advance_to(float(first_rows))
    loop.ingest(frame.iloc[:first_rows], source="bench", batch_id="all")
    fresh = iter(range(first_rows, len(frame), FRESH_ROWS))
    snap = loop.data.snapshot(spec.model.window, cutoff=clock.now(), now=clock.now())
    snap_frame = loop.data.read_snapshot(snap)

    def arrive() -> None:
        """New labeled rows, and the snapshot both sides then fit (untimed)."""
        nonlocal snap_frame
        lo = next(fresh)
        clock.advance_to(float(lo + FRESH_ROWS))
        loop.ingest(frame.iloc[lo:lo + FRESH_ROWS], source="bench", batch_id=f"fresh-{lo}")
        snap_frame = loop.data.read_snapshot(loop.data.snapshot(spec.model.window, cutoff=clock.now(),
                                                                now=clock.now()))

    schema = loop.schema
    assert schema is not None
    promoted_at: list[float] = []
    loop.on_promote = lambda version, actor: promoted_at.append(time.perf_counter())
    to_serving: list[float] = []  # from the trigger to the run's first version serving

    def through_loop() -> None:
        clock.advance_to(clock.now() + 1)
        now = clock.now()
        report = TickReport(now)
        first = len(promoted_at)
        started = time.perf_counter()
        loop.training.run(Retrain(run_key("bench", now), ("schedule: bench",), triggers=("schedule",)), now, report)
        assert report.promoted is not None, "the measured path must end with the version serving"
        to_serving.append(promoted_at[first] - started)
        if refit:
            assert loop.finish_refit() is not None, "the refit must replace the gated fit"

    def bare() -> None:
        m = ModelBundle(schema, spec.model.estimator, {}, seed=0, scale=False)
        m.fit(snap_frame, snap_frame["_label"])
        m.predict(snap_frame.iloc[:100])

    ta, tb, rss = alternate(through_loop, bare, repeats, before=arrive)
    loop.close()
    out = {"served": _summary(to_serving, tb, rss)}
    if refit:
        out["refit_served"] = _summary(ta, tb, rss)
    return out


def replay_ratio(repeats: int, workers: int = 2) -> dict[str, Any]:
    """The demo's policy comparison on rainfall (the spec's ``replay.compare``, ``workers`` processes) vs River
    ARF prequential alone on the same stream (one process, seed 42, labels one row late), in turns."""
    import quality

    from freshloop.datasets import load_stream
    from freshloop.replay import compare
    from freshloop.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "rainfall.yaml")
    frame, info = load_stream("rainfall")
    policies = list(spec.replay.compare or [])
    feats = [c for c in frame.columns if c not in (info["label"], info["time"])]

    workers_mb = [0.0]

    def whole_comparison() -> None:
        with tempfile.TemporaryDirectory() as tmp, ChildrenPeak() as kids:
            compare(spec, frame, Path(tmp), policies, workers=workers)
        workers_mb[0] = max(workers_mb[0], kids.total_mb)

    def arf_alone() -> None:
        quality.arf_delayed(frame, info["label"], feats, 1, spec.replay.warmup, seed=42)

    ta, tb, rss = alternate(whole_comparison, arf_alone, repeats)
    return {**_summary(ta, tb, rss), "policies": policies, "workers": workers, "rows": len(frame),
            "repeats": repeats, "freshloop_workers_peak_rss_mb": workers_mb[0]}


def http_ratio(requests: int, repeats: int, flush_every: float | None = None) -> dict[str, Any]:
    """p50/p99 and throughput of one-row predict: `freshloop serve` (routing + prediction log) vs a bare
    FastAPI endpoint serving the same model object, both on 127.0.0.1, sequential bounded load."""
    import httpx
    from fastapi import FastAPI

    from freshloop.api import BackgroundServer, LoopService, Settings, create_app

    tmp = Path(tempfile.mkdtemp())
    spec_path = tmp / "loop.yaml"
    spec_path.write_text("name: http\ndata: {label: y}\nstore: {root: " + str(tmp / "store") + "}\n")
    settings = Settings(spec_path=spec_path, tick_every=0)
    if flush_every is not None:  # the default is what `freshloop serve` runs with
        settings = dataclasses.replace(settings, flush_every=flush_every)
    service = LoopService(settings)
    frame = wide_frame(2000, 12, seed=2).drop(columns="t")
    service.ingest(frame.to_dict(orient="records"), batch_id="warm", source="bench")
    service.tick()
    model = service.loop.champion()
    serving = model.compile()
    bare = FastAPI()

    @bare.post("/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        rows = pd.DataFrame.from_records(body["rows"])
        pred, proba = model.predict(rows)
        return {"data": [{"prediction": int(p)} for p in pred]}

    servers = [BackgroundServer(create_app(settings, service=service)), BackgroundServer(bare)]
    row = {"rows": frame.drop(columns="y").iloc[:1].to_dict(orient="records")}
    lat: dict[str, list[float]] = {"freshloop": [], "bare": []}
    rss = {"freshloop": 0.0, "bare": 0.0}
    wall: dict[str, float] = {"freshloop": 0.0, "bare": 0.0}
    with httpx.Client() as c:
        for _ in range(repeats):
            for name, server, path in (("freshloop", servers[0], "/v1/predict"), ("bare", servers[1], "/predict")):
                url = server.url + path
                reset_peak_rss()
                started = time.perf_counter()
                for _ in range(requests):
                    t = time.perf_counter()
                    r = c.post(url, json=row)
                    lat[name].append(time.perf_counter() - t)
                    assert r.status_code == 200
                wall[name] += time.perf_counter() - started
                rss[name] = max(rss[name], peak_rss_mb())
    for srv in servers:
        srv.stop()
    out: dict[str, Any] = {}
    for name in lat:
        arr = np.array(lat[name]) * 1000
        out[name] = {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
                     "requests_per_s": len(arr) / wall[name], "peak_rss_mb": rss[name]}
    out["p99_ratio"] = out["freshloop"]["p99_ms"] / out["bare"]["p99_ms"]
    out["p50_ratio"] = out["freshloop"]["p50_ms"] / out["bare"]["p50_ms"]
    out["requests"] = requests * repeats
    out["estimator"], out["serving"] = model.estimator.rpartition(".")[2], serving
    return out
