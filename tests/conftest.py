from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshloop.clock import SimulatedClock
from freshloop.loop import Loop
from freshloop.spec import LoopSpec, load_spec_dict


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
