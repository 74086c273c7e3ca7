"""Training off the loop's process: a local pool and a real Dask cluster on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshloop.api import free_port
from freshloop.clock import SimulatedClock
from freshloop.data.schema import infer_schema
from freshloop.errors import SpecError
from freshloop.loop import Loop
from freshloop.spec import DataSpec, load_spec_dict
from freshloop.train import DaskExecutor, TrainingFailed, TrainRequest, make_executor, train_candidate

from .conftest import make_frame, spec_dict
from .test_loop import drive

pytestmark = pytest.mark.slow  # process pools and a Dask cluster


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[str]:
    """A Dask scheduler and one worker, each its own process, as `dask scheduler` / `dask worker` start them."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    dask = Path(sys.executable).parent / "dask"
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([str(dask), "worker", f"tcp://{address}", "--nworkers", "1", "--nthreads", "1",
                               "--no-dashboard", "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        probe = DaskExecutor(address=f"tcp://{address}")
        for _ in range(300):
            if probe.workers():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the Dask worker did not join its scheduler")
        probe.shutdown()
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


def _loop(tmp_path: Path, name: str, executor: str) -> tuple[Loop, SimulatedClock]:
    spec = load_spec_dict(spec_dict(tmp_path / name, model={"estimator": "sklearn.ensemble.RandomForestClassifier",
                                                           "params": {"n_estimators": 20}, "executor": executor},
                                    policy={"triggers": {"schedule": "200s"}, "cooldown": "0s", "min_new_labels": 0}))
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock, durable=False)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    loop.tick()
    return loop, clock


def test_a_loop_trains_on_a_dask_cluster_what_it_trains_inline(tmp_path: Path, dask_scheduler: str) -> None:
    remote, rclock = _loop(tmp_path, "dask", f"dask://{dask_scheduler}")
    here, hclock = _loop(tmp_path, "inline", "inline")
    assert isinstance(remote.executor, DaskExecutor)
    for loop, clock in ((remote, rclock), (here, hclock)):
        drive(loop, clock, make_frame(600, seed=3, t0=300))
    assert remote.champion_version == here.champion_version and remote.stats.retrains == here.stats.retrains > 1
    worker_pids = {str(pid) for pid in remote.executor.client.run(os.getpid).values()}
    for run in remote.meta.runs.list():  # every run trained in the worker process, none in this one
        assert run.lineage["trained_in"].rpartition("/")[2] in worker_pids
    rows = make_frame(50, seed=8).drop(columns="y")
    np.testing.assert_array_equal(remote.champion().predict(rows)[1], here.champion().predict(rows)[1])
    for loop in (remote, here):
        loop.close()


def test_a_training_failure_in_a_dask_worker_reaches_the_loop_as_itself(dask_scheduler: str) -> None:
    executor = make_executor(f"dask://{dask_scheduler}")
    one_class = make_frame(50).assign(y=1)
    schema = infer_schema(make_frame(50), DataSpec(label="y", time="t"))
    req = TrainRequest("k", "s-1", schema, "sklearn.linear_model.LogisticRegression", {}, "full", 0, None,
                       one_class.assign(_label=one_class["y"]))
    with pytest.raises(TrainingFailed, match="only one class"):
        executor.submit(train_candidate, req).result()
    executor.shutdown()


def test_executor_urls_are_checked_and_a_local_dask_cluster_runs_jobs() -> None:
    for bad in ("dask:locl", "dask:local:0", "process:two", "ray://x", "dask://"):
        with pytest.raises(SpecError, match="'executor' parameter of model must be 'inline', 'process"):
            make_executor(bad)
    local = make_executor("dask:local:1")
    assert isinstance(local, DaskExecutor) and len(local.workers()) == 1
    assert local.submit(pow, 2, 10).result() == 1024
    # a snapshot's worth of rows reaches the worker without Dask's large-graph warning (an error here)
    rows = pd.DataFrame(np.random.default_rng(0).normal(size=(300_000, 10)))
    assert local.submit(len, rows).result() == 300_000
    local.shutdown()
