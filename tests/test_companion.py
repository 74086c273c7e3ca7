"""The online companion (``model.companion``): it learns every matured label beside the champion, and serves in
its place only while it is surely better on the latest matured rows both answered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshloop.clock import SimulatedClock
from freshloop.errors import SpecError
from freshloop.loop import Loop, TickReport
from freshloop.loop.companion import COMPANION
from freshloop.operations import Operations
from freshloop.replay import compare, resolve_policy, write_report
from freshloop.spec import CompanionSpec, load_spec_dict

from .conftest import make_frame, spec_dict
from .test_loop import drive

LOGREG = "sklearn.linear_model.LogisticRegression"
NEVER = {"name": "never", "triggers": {}}  # the champion is never retrained: only the companion can adapt


def companion_spec(root: Path, **companion: object):
    return load_spec_dict(spec_dict(root, model={"estimator": LOGREG, "companion": companion}, policy=NEVER))


def open_loop(spec, clock: SimulatedClock) -> Loop:
    loop = Loop(spec, clock=clock)
    if loop.champion_version is None:
        clock.advance_to(299.0)
        loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
        assert loop.tick().promoted == 1
    return loop


def test_the_companion_serves_once_it_is_surely_better_and_the_champion_is_still_watched(tmp_path: Path) -> None:
    clock = SimulatedClock(0.0)
    loop = open_loop(companion_spec(tmp_path / "store"), clock)
    reports: list[TickReport] = []
    drive(loop, clock, make_frame(1200, seed=4, flip=True, t0=300), reports=reports)

    switch = next(e for e in loop.events.list("serving_switched"))
    assert switch.payload["serves"] == "companion" and switch.payload["estimator"] == "river.forest.ARFClassifier"
    assert switch.payload["low"] > 0 and switch.payload["rows"] >= loop.spec.gate.min_holdout_rows
    assert "the online companion serves: surely better" in switch.reason
    assert any(r.serving == switch.reason and r.to_dict()["serving"] == switch.reason for r in reports)
    assert loop.companion.leads and loop.stats.companion_switches == 1
    assert loop.champion_version == 1  # never retrained: the companion serves in its place

    fresh = make_frame(200, seed=9, flip=True, t0=1500)
    clock.advance_to(1699.0)
    out = loop.predict(fresh.drop(columns="y"), row_ids=[f"n{i}" for i in range(200)])
    assert (out.versions == COMPANION).all()
    served = float(np.mean(out.predictions == fresh["y"].to_numpy()))
    champion = float(np.mean(loop.champion().predict(fresh.drop(columns="y"))[0] == fresh["y"].to_numpy()))
    assert served > champion + 0.3
    # the monitor is fed the champion's own answers, not what the companion served in its place
    live = reports[-1].signals
    assert live is not None and live.live_metric is not None and live.live_metric < 0.5
    assert loop.stats.companion_rows == int(np.isfinite(loop.data.label_times()).sum())


def test_a_worse_companion_never_serves_and_hands_serving_back(tmp_path: Path) -> None:
    clock = SimulatedClock(0.0)
    loop = open_loop(companion_spec(tmp_path / "store", estimator="river.dummy.PriorClassifier"), clock)
    drive(loop, clock, make_frame(600, seed=4, t0=300))
    assert loop.companion.ready and not loop.events.list("serving_switched") and not loop.companion.leads
    loop.companion.leads = True  # put in charge: the champion, surely better, takes serving back
    drive(loop, clock, make_frame(600, seed=5, t0=900), ids_from=600)
    back = next(e for e in loop.events.list("serving_switched"))
    assert back.payload["serves"] == "champion" and back.payload["champion"] == 1 and back.payload["delta"] > 0
    assert not loop.companion.leads


def test_the_evidence_starts_over_when_which_side_is_better_changes(tmp_path: Path) -> None:
    clock = SimulatedClock(0.0)
    loop = open_loop(companion_spec(tmp_path / "store", rows=200), clock)
    comp = loop.companion
    assert comp.ready and not comp.leads
    rng = np.random.default_rng(0)
    comp.observe(rng.integers(0, 2, 200).astype(float), np.ones(200))  # the champion clearly better
    comp.choose(clock.now(), TickReport(clock.now()))
    assert not comp.leads and len(comp._pairs) == 200
    comp.observe(np.ones(80), np.zeros(80))  # then the companion, on every row
    # a window of the latest 200 pairs would still hold 120 where the champion was better: not surely better
    assert len(comp._pairs) < 200
    report = TickReport(clock.now())
    comp.choose(clock.now(), report)
    assert comp.leads and report.serving is not None
    switch = loop.events.list("serving_switched")[0]
    assert switch.payload["rows"] == len(comp._pairs) and "since the last change" in switch.reason


def test_a_companion_that_fails_to_answer_never_fails_a_request_and_says_why(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHLOOP_ALLOWED_ESTIMATORS", "tests.")
    brittle = "tests.estimators.BrittleOnlineClassifier"
    clock = SimulatedClock(0.0)
    loop = open_loop(companion_spec(tmp_path / "store", estimator=brittle), clock)
    assert loop.companion.ready
    rows = make_frame(20, seed=3, t0=300).drop(columns="y")
    monkeypatch.setenv("FRESHLOOP_TEST_BRITTLE", "1")  # its predictions break from now on
    for k in range(3):
        out = loop.predict(rows, row_ids=[f"b{k}-{i}" for i in range(20)])
        assert (out.versions == 1).all() and len(out.predictions) == 20  # the champion answered
    failed = loop.events.list("companion_failed")
    assert len(failed) == 1 and failed[0].payload == {"estimator": brittle, "rows": 20, "error":
                                                      "RuntimeError: brittle: this model cannot predict here"}
    assert "failed to answer 20 rows, the champion answered them: RuntimeError: brittle" in failed[0].reason
    status = Operations(loop).status()["companion"]
    assert status["errors"] == 3 and status["last_error"] == failed[0].payload["error"]
    monkeypatch.delenv("FRESHLOOP_TEST_BRITTLE")  # it answers again: no error is current
    loop.predict(rows, row_ids=[f"ok-{i}" for i in range(20)])
    assert Operations(loop).status()["companion"]["last_error"] is None


def test_the_companion_survives_a_restart_and_learns_each_label_once(tmp_path: Path) -> None:
    spec, clock = companion_spec(tmp_path / "store"), SimulatedClock(0.0)
    loop = open_loop(spec, clock)
    drive(loop, clock, make_frame(600, seed=4, flip=True, t0=300))
    learned, seen, leads = loop.companion.learned_to, loop.companion.bundle.rows_seen_, loop.companion.leads
    loop.close()

    again = Loop(spec, clock=clock)
    assert again.companion.bundle is not None and again.companion.bundle.rows_seen_ == seen
    assert (again.companion.learned_to, again.companion.leads) == (learned, leads)
    before = int(np.isfinite(again.data.label_times()).sum())
    drive(again, clock, make_frame(300, seed=5, flip=True, t0=900), ids_from=600)
    new = int(np.isfinite(again.data.label_times()).sum()) - before
    assert new > 0 and again.stats.companion_rows == new  # the labels since the restart, not the earlier ones
    again.close()

    state = again.blobs.local_path("companion/state.pkl")
    signature, _, body = state.read_bytes().partition(b"\n")
    state.write_bytes(b"0" * len(signature) + b"\n" + body)  # not signed by this machine: not unpickled
    third = Loop(spec, clock=clock)
    assert third.companion.bundle is None
    discarded = third.events.list("companion_discarded")
    assert discarded and "the saved online companion is not signed" in discarded[0].reason
    clock.advance_to(clock.now() + 1)
    third.tick()  # it learns again from the stored labels
    assert third.companion.bundle is not None
    assert third.companion.bundle.rows_seen_ == int(np.isfinite(third.data.label_times()).sum())


def test_a_companion_that_cannot_learn_online_is_refused_when_the_loop_opens(tmp_path: Path) -> None:
    spec = companion_spec(tmp_path / "store", estimator="sklearn.ensemble.RandomForestClassifier")
    with pytest.raises(SpecError, match="model.companion must be a River model or an estimator with partial_fit") \
            as e:
        Loop(spec, clock=SimulatedClock(0.0))
    assert e.value.field == "model.companion.estimator"


def test_a_refit_companion_follows_a_flip_on_the_newest_labels_and_survives_a_restart(tmp_path: Path) -> None:
    spec, clock = companion_spec(tmp_path / "store", refit=60), SimulatedClock(0.0)
    loop = open_loop(spec, clock)
    fits_before = loop.stats.companion_rows
    drive(loop, clock, make_frame(900, seed=4, flip=True, t0=300))
    comp = loop.companion
    assert comp.bundle is not None and comp.bundle.estimator == LOGREG and comp.bundle.rows_seen_ == 60
    # refitted at each tick with new labels, on 60 labels each time (never all of them at once)
    assert loop.stats.companion_rows > fits_before and loop.stats.companion_rows % 60 == 0
    switch = loop.events.list("serving_switched")[0]
    assert switch.payload["serves"] == "companion" and switch.payload["estimator"] == LOGREG
    assert "the refit companion (on the newest 60 labels) serves: surely better" in switch.reason
    assert loop.champion_version == 1  # never retrained: the refit companion serves in its place

    fresh = make_frame(200, seed=9, flip=True, t0=1200)
    clock.advance_to(1399.0)
    out = loop.predict(fresh.drop(columns="y"), row_ids=[f"n{i}" for i in range(200)])
    assert (out.versions == COMPANION).all()
    truth = fresh["y"].to_numpy()
    champion = float(np.mean(loop.champion().predict(fresh.drop(columns="y"))[0] == truth))
    assert float(np.mean(out.predictions == truth)) > champion + 0.3
    learned = comp.learned_to
    loop.close()

    again = Loop(spec, clock=clock)  # its fit, evidence and place come back; no refit until new labels
    assert again.companion.leads and again.companion.learned_to == learned
    assert again.companion.bundle is not None and again.companion.bundle.rows_seen_ == 60
    again.tick()
    assert again.stats.companion_rows == 0
    again.close()
    online = load_spec_dict(spec_dict(tmp_path / "store", model={"estimator": LOGREG, "companion": {
        "estimator": "sklearn.linear_model.SGDClassifier"}}, policy=NEVER))
    assert Loop(online, clock=clock).companion.bundle is None  # another kind of companion: it starts afresh


def test_a_refit_companion_waits_for_every_labels_between_fits(tmp_path: Path) -> None:
    """``model.companion.every``: the refit waits for that many labels matured since its last fit, so a
    large model on short batches is not fitted at every tick; it still follows the flip."""
    fits: dict[int | None, int] = {}
    for every in (None, 120):
        spec, clock = companion_spec(tmp_path / f"store{every}", refit=120, every=every), SimulatedClock(0.0)
        loop = open_loop(spec, clock)
        labels = int(np.isfinite(loop.data.label_times()).sum())
        drive(loop, clock, make_frame(900, seed=4, flip=True, t0=300))
        labels = int(np.isfinite(loop.data.label_times()).sum()) - labels
        fits[every] = loop.stats.companion_rows // 120
        assert loop.stats.companion_rows % 120 == 0 and loop.companion.leads, every
        assert Operations(loop).status()["companion"]["every"] == every
        loop.close()
    # batches of 50: one fit per tick with labels by default; with every 120, one per three such ticks
    assert fits[None] >= 17 and fits[120] <= 1 + labels // 120 < fits[None], (fits, labels)
    # a replay's summary and report say so
    frame = pd.concat([make_frame(300), make_frame(600, seed=4, flip=True, t0=300)], ignore_index=True)
    res = compare(spec, frame, tmp_path / "out", ["periodic:500s"], workers=1)
    assert res["periodic:500s"]["companion"]["every"] == 120
    page = write_report(res, tmp_path / "report.html", title="t").read_text()
    assert "refitted on the newest 120 labels each time 120 labels matured" in page


def test_a_refit_companion_every_is_checked(tmp_path: Path) -> None:
    for bad, why in (({"refit": 60, "every": 61}, "at most it, 60). Got 61 instead"),
                     ({"every": 10}, "with model.companion.refit, and at most it, None). Got 10 instead")):
        with pytest.raises(SpecError, match="model.companion.every") as e:
            companion_spec(tmp_path / "store", **bad)
        assert why in str(e.value)


def test_a_refit_companion_takes_no_estimator_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="model.companion.refit refits model.estimator") as e:
        companion_spec(tmp_path / "store", refit=60, estimator="river.forest.ARFClassifier")
    assert "model.companion" in str(e.value)


def test_the_hybrid_contender_replays_the_policy_with_a_companion(tmp_path: Path) -> None:
    spec = load_spec_dict(spec_dict(tmp_path / "store", model={"estimator": LOGREG}, policy=NEVER))
    frame = pd.concat([make_frame(300), make_frame(1200, seed=4, flip=True, t0=300)], ignore_index=True)
    res = compare(spec, frame, tmp_path / "out", ["never", "hybrid"], workers=1)
    assert res["never"]["companion"] is None
    hybrid = res["hybrid"]["companion"]
    assert hybrid["estimator"] == "river.forest.ARFClassifier" and hybrid["switches"] >= 1
    assert 0 < hybrid["rows_served"] < res["hybrid"]["predictions_scored"]
    assert res["hybrid"]["metric"] > res["never"]["metric"] + 0.1
    assert res["hybrid"]["retrains"] == res["never"]["retrains"]  # the same policy: only the companion differs
    switched = hybrid["switched"]
    assert len(switched) == hybrid["switches"] and switched[0]["serves"] == "companion"
    page = write_report(res, tmp_path / "report.html", title="t").read_text()
    assert "<h2>Companion</h2>" in page and switched[0]["why"] in page
    # a spec whose companion refits its own model: the hybrid is still the policy with the online companion
    refit = companion_spec(tmp_path / "store2", refit=60)
    assert resolve_policy(refit, "hybrid").model.companion == CompanionSpec()
    # never retraining fits the model once: no refit beside it; a retraining policy keeps the spec's
    assert resolve_policy(refit, "never").model.companion is None
    assert resolve_policy(refit, "online:river.linear_model.LogisticRegression").model.companion is None
    assert resolve_policy(refit, "periodic:500s").model.companion == CompanionSpec(refit=60)
    assert f"serving moved {hybrid['switches']} times" in page
