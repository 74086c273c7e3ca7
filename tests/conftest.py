from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshloop.clock import SimulatedClock
from freshloop.data.schema import infer_schema
from freshloop.loop import Loop
from freshloop.spec import DataSpec, LoopSpec, load_spec_dict
from freshloop.train import ModelBundle, TrainRequest


def make_frame(n: int, seed: int = 0, shift: float = 0.0, flip: bool = False, t0: int = 0) -> pd.DataFrame:
    """A small classification stream: y depends on x1 + x2 (reversed when ``flip``)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1, n)
    x2 = rng.normal(0, 1, n)
    c = rng.choice(["a", "b", "c"], n)
    logit = 2 * (x1 + x2 - shift) * (-1 if flip else 1) + (c == "a") * 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"t": np.arange(t0, t0 + n), "x1": x1, "x2": x2, "c": c, "y": y})


def spec_dict(root: Path, **over: object) -> dict[str, object]:
    d: dict[str, object] = {
        "name": "t",
        "data": {"label": "y", "time": "t"},
        "model": {"estimator": "sklearn.linear_model.LogisticRegression"},
        "store": {"root": str(root)},
        "replay": {"batch": {"rows": 50}, "label_delay": "10s", "warmup": 300},
    }
    for k, v in over.items():
        d[k] = v
    return d


@pytest.fixture
def make_loop(tmp_path: Path):
    def _make(**over: object) -> tuple[Loop, SimulatedClock, LoopSpec]:
        spec = load_spec_dict(spec_dict(tmp_path / "store", **over))
        clock = SimulatedClock(0.0)
        return Loop(spec, clock=clock, durable=False), clock, spec

    return _make


def _pg_bindir() -> Path | None:
    """Where PostgreSQL's server programs are: on PATH, or Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    dirs = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "pg_ctl").exists()]
    return max(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if dirs else None


class Postgres:
    """A throwaway PostgreSQL server on a loopback port for the test session; a fresh database per test.

    PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user Debian's package
    creates."""

    def __init__(self) -> None:
        from freshloop.api import free_port

        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server programs (pg_ctl, initdb) were not found; the README's test "
                               "command installs them (Debian: apt-get install postgresql)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="freshloop-pg-"))
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres")
        self._ctl = [*self._as, str(bindir / "pg_ctl"), "-D", str(self.dir / "data")]
        self._run([*self._as, str(bindir / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres",
                   "-E", "UTF8", "--no-sync"])
        # a test server: durability off (fsync), sockets in its own directory, TCP on loopback only
        self._run([*self._ctl, "-w", "-l", str(self.dir / "log"), "-o",
                   f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off", "start"])
        self._names = itertools.count()

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr or done.stdout}{log}")

    def database(self) -> str:
        """A new, empty database's SQLAlchemy URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run([*self._ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """The metadata store's URL: None for the embedded SQLite default, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    server: Postgres = request.getfixturevalue("postgres")
    return server.database()


def train_request(frame: pd.DataFrame, estimator: str = "sklearn.ensemble.RandomForestClassifier",
                  mode: str = "full", base: ModelBundle | None = None, seed: int = 0,
                  params: dict | None = None) -> TrainRequest:
    """What a training run hands the trainer, for a frame of ``make_frame`` rows."""
    schema = infer_schema(frame, DataSpec(label="y", time="t"))
    return TrainRequest("k", "s-1", schema, estimator, {"n_estimators": 20} if params is None else params, mode,
                        seed, True,
                        frame.assign(_label=frame["y"]), base)
