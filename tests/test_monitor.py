from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from freshloop.data.schema import Feature, Schema
from freshloop.evaluate.metrics import get_metric
from freshloop.monitor import Monitor, Reference, drift_report, drift_score
from freshloop.spec import DriftTriggerSpec, QualityTriggerSpec, TriggerSpec


def test_statistics_agree_with_scipy() -> None:
    rng = np.random.default_rng(3)
    ref_v, cur_v = rng.normal(0, 1, 3000), rng.normal(0.3, 1.2, 800)
    ref = Reference.numeric(ref_v)
    ks = drift_score(ref, cur_v, "ks")
    expected = stats.ks_2samp(np.sort(ref_v), cur_v)
    assert ks.value == pytest.approx(expected.statistic, abs=1e-12)
    assert ks.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    w = drift_score(ref, cur_v, "wasserstein")
    assert w.value == pytest.approx(stats.wasserstein_distance(ref_v, cur_v) / np.std(ref_v), rel=1e-9)
    cats = Reference.categorical(np.array(["a"] * 50 + ["b"] * 50))
    js = drift_score(cats, np.array(["a"] * 80 + ["b"] * 20), "jensen_shannon")
    assert js.value == pytest.approx(jensenshannon([0.5, 0.5, 0], [0.8, 0.2, 0]), rel=1e-9)
    assert drift_score(cats, np.array(["a"] * 50 + ["b"] * 50), "chi2").p_value == pytest.approx(1.0)


def test_drift_report_uses_every_row_and_separate_unseen_categories() -> None:
    """Normed Wasserstein on all rows (std with ddof=0), and Jensen-Shannon over the union of categories
    with missing values left out: the definitions the common drift tools use, computed here by hand."""
    rng = np.random.default_rng(7)
    n = 20_000  # more than the monitor's 5,000-row reference sample
    ref = pd.DataFrame({"x": rng.lognormal(0, 1, n), "c": rng.choice(["a", "b", "c", None], n)})
    cur = pd.DataFrame({"x": rng.lognormal(0.2, 1, n // 2),
                        "c": rng.choice(["a", "b", "new1", "new2", None], n // 2, p=[0.3, 0.3, 0.2, 0.1, 0.1])})
    ref.loc[::97, "x"] = np.nan
    rep = drift_report(ref, cur)
    rx = ref["x"].dropna().to_numpy()
    assert rep["x"].value == pytest.approx(stats.wasserstein_distance(rx, cur["x"]) / np.std(rx), rel=1e-12)
    keys = sorted(set(ref["c"].dropna()) | set(cur["c"].dropna()))
    p = np.array([(ref["c"] == k).sum() for k in keys], dtype=float)
    q = np.array([(cur["c"] == k).sum() for k in keys], dtype=float)
    assert rep["c"].value == pytest.approx(jensenshannon(p / p.sum(), q / q.sum()), abs=1e-12)
    assert rep["c"].drifted and rep["x"].drifted
    assert drift_report(ref, ref.copy())["x"].value == 0.0


def test_psi_is_small_on_the_same_distribution_and_large_on_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = Reference.numeric(rng.normal(0, 1, 5000))
    assert drift_score(ref, rng.normal(0, 1, 500)).value < 0.05
    assert drift_score(ref, rng.normal(0.8, 1, 500)).drifted


def schema() -> Schema:
    return Schema("y", "classification", (Feature("x", "numeric", -3, 3), Feature("c", "categorical",
                                                                                 categories=("a", "b"))),
                  classes=(0, 1))


def test_monitor_drift_quality_and_detector() -> None:
    rng = np.random.default_rng(1)
    trig = TriggerSpec(drift=DriftTriggerSpec(window=200), quality=QualityTriggerSpec(min_labels=100, window=200),
                       detector="adwin")
    mon = Monitor(schema(), trig, get_metric("accuracy"))
    ref = pd.DataFrame({"x": rng.normal(0, 1, 1000), "c": rng.choice(["a", "b"], 1000)})
    mon.reset(ref, rng.random(1000))
    mon.observe_rows(pd.DataFrame({"x": rng.normal(0, 1, 300), "c": rng.choice(["a", "b"], 300)}))
    quiet = mon.signals(10.0, last_trained_at=0.0, champion_since=0.0)
    assert quiet.drifted == []
    mon.observe_rows(pd.DataFrame({"x": rng.normal(2, 1, 300), "c": ["a"] * 300}))
    loud = mon.signals(20.0, last_trained_at=0.0, champion_since=0.0)
    assert set(loud.drifted) == {"x", "c"}
    mon.observe_outcomes((rng.random(150) < 0.9).astype(float), 150)
    assert mon.reference_metric is None  # the reference waits for a full window, as precise as the live one
    mon.observe_outcomes((rng.random(100) < 0.9).astype(float), 100)
    assert mon.reference_metric is not None and mon.reference_metric > 0.8  # established baseline
    assert mon.reference_ci is not None and mon.reference_ci[0] < mon.reference_metric < mon.reference_ci[1]
    mon.observe_outcomes((rng.random(400) < 0.5).astype(float), 400)
    s = mon.signals(30.0, last_trained_at=0.0, champion_since=0.0)
    assert s.detector_fired and s.live_high is not None and s.live_high < s.reference_metric
    assert s.new_labels == 650


def test_adwin_detection_delay_is_pinned() -> None:
    """freshloop's monitor with ``detector: adwin``, fed a classifier's per-row accuracy whose error rate goes
    from 0.2 to 0.5 at row 1000, fires within 200 rows of the shift and not before it."""
    rng = np.random.default_rng(7)
    correct = np.r_[rng.random(1000) >= 0.2, rng.random(1000) >= 0.5].astype(float)
    mon = Monitor(schema(), TriggerSpec(detector="adwin"), get_metric("accuracy"))
    fired = None
    for i, score in enumerate(correct):
        mon.observe_outcomes(np.array([score]), 1)
        if mon.detector_fired:
            fired = i
            break
    assert fired is not None and 1000 <= fired <= 1200, fired



