"""The gate: a candidate judged against the champion on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from freshloop.evaluate import get_metric, judge
from freshloop.spec import GateSpec


def test_gate_rejects_a_worse_candidate_and_passes_a_better_one() -> None:
    metric = get_metric("accuracy")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = (rng.random(400) < 0.85).astype(float)
    bad = (rng.random(400) < 0.60).astype(float)
    base = np.full(400, 0.5)
    hold = pd.DataFrame({"c": rng.choice(["a", "b"], 400)})
    spec = GateSpec(slices=["c"])
    no = judge(spec, metric, hold, y, bad, good, base, seed=0)
    assert not no.passed and no.checks[1].name == "vs_champion" and not no.checks[1].passed
    assert "CI" in no.reason and no.checks[1].evidence["delta"] < 0
    yes = judge(spec, metric, hold, y, good, bad, base, seed=0)
    assert yes.passed and [c.name for c in yes.checks] == ["holdout_rows", "vs_champion", "slice:c"]
    first = judge(spec, metric, hold, y, good, None, base, seed=0)
    assert first.passed and first.checks[1].name == "beats_baseline"
    tiny = judge(GateSpec(min_holdout_rows=500), metric, hold, y, good, bad, base, seed=0)
    assert not tiny.passed and tiny.checks[0].detail == "400 holdout rows (need >= 500)"
