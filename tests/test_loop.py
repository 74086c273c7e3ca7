from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshloop.clock import SimulatedClock, human_duration
from freshloop.data.schema import infer_schema
from freshloop.datasets import load_stream
from freshloop.errors import NotFoundError, TrainingFailed
from freshloop.loop import Loop, TickReport
from freshloop.policy import Skip
from freshloop.replay import compare
from freshloop.spec import LoopSpec, load_spec_dict
from freshloop.store import DecisionRecord
from freshloop.suggest import suggest_spec
from freshloop.train.trainer import TrainRequest, train_candidate

from .conftest import make_frame, spec_dict


def drive(loop: Loop, clock: SimulatedClock, frame: pd.DataFrame, *, batch: int = 50, delay: float = 10.0,
          ids_from: int = 0, reports: list[TickReport] | None = None) -> list[int | None]:
    """A minimal production-like driver: rows arrive, are predicted, labels come back ``delay`` later."""
    pending: list[tuple[float, str, int]] = []
    champions = []
    for start in range(0, len(frame), batch):
        chunk = frame.iloc[start:start + batch]
        now = float(chunk["t"].iloc[-1])
        clock.advance_to(now)
        ids = [f"r{ids_from + start + i}" for i in range(len(chunk))]
        if loop.champion_version is not None:
            loop.predict(chunk.drop(columns="y"), row_ids=ids)
        loop.ingest(chunk.drop(columns="y"), source="test", batch_id=ids[0], row_ids=ids)
        pending += [(float(t) + delay, rid, int(y)) for t, rid, y in zip(chunk["t"], ids, chunk["y"], strict=True)]
        due = [p for p in pending if p[0] <= now]
        pending = [p for p in pending if p[0] > now]
        if due:
            loop.feedback([d[1] for d in due], [d[2] for d in due], source="test", batch_id=f"l{ids[0]}")
        rep = loop.tick()
        if reports is not None:
            reports.append(rep)
        champions.append(loop.champion_version)
    return champions


def bootstrap(make_loop, **over: object) -> tuple[Loop, SimulatedClock]:
    loop, clock, _ = make_loop(**over)
    warm = make_frame(300)
    clock.advance_to(299.0)
    loop.ingest(warm, source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    rep = loop.tick()
    assert rep.promoted == 1 and loop.champion_version == 1
    return loop, clock


def test_predict_needs_a_champion(make_loop) -> None:
    loop, _, _ = make_loop()
    with pytest.raises(NotFoundError, match="no champion yet"):
        loop.predict(make_frame(3))


def test_canary_promotes_a_better_candidate(make_loop) -> None:
    loop, clock = bootstrap(make_loop, rollout={"strategy": "canary", "steps": [25, 100], "min_labels": 60},
                            policy={"triggers": {"schedule": "400s"}, "cooldown": "0s", "min_new_labels": 0})
    flipped = make_frame(1500, seed=5, flip=True, t0=300)
    drive(loop, clock, flipped)
    kinds = [e.kind for e in loop.events.list()]
    assert "rollout_started" in kinds and "rollout_step" in kinds and "rollout_promoted" in kinds
    moves = [m for m in loop.registry.history("champion") if "rollout" in m.reason]
    assert moves and "passed" in moves[0].reason
    step = next(e for e in loop.events.list("rollout_step"))
    assert "to 100%" in step.reason
    assert loop.champion_version is not None and loop.champion_version > 1


def test_canary_rolls_back_a_bad_candidate(make_loop) -> None:
    loop, clock = bootstrap(make_loop, rollout={"strategy": "canary", "steps": [20, 100], "min_labels": 60,
                                                "max_auto_rollbacks": 2},
                            policy={"triggers": {"schedule": "300s"}, "cooldown": "0s", "min_new_labels": 0},
                            gate={"min_improvement": -1.0, "max_regression": 1.0})
    # the hook: from now on candidates learn from shuffled labels, and the lenient gate lets them through
    loop.spec = loop.spec.model_copy(update={"model": loop.spec.model.model_copy(
        update={"estimator": "freshloop.testing.ShuffledLabelsClassifier", "params": {}})})
    champions = drive(loop, clock, make_frame(1500, seed=6, t0=300))
    assert set(champions) == {1}  # the champion never changed
    rolled = loop.events.list("rollout_rolled_back")
    assert len(rolled) >= 2 and "worse than the champion" in rolled[0].reason
    assert not loop.auto_promotion
    assert loop.events.list("auto_promotion_stopped")
    assert loop.registry.alias("canary") is None
    loop.close()
    again = Loop(loop.spec, clock=clock, durable=False)  # a restart: the stop holds
    assert not again.auto_promotion
    again.promote(1, actor="operator", reason="checked by hand")  # what the stop asks for
    assert again.auto_promotion and again.events.list("auto_promotion_resumed")
    again.close()
    assert Loop(loop.spec, clock=clock, durable=False).auto_promotion


def test_online_policy_learns_from_every_matured_label(make_loop) -> None:
    loop, clock = bootstrap(make_loop, model={"estimator": "river.linear_model.LogisticRegression"},
                            policy={"name": "online", "triggers": {}, "online": True})
    drive(loop, clock, make_frame(500, seed=2, t0=300))
    assert loop.stats.online_rows > 400 and loop.stats.retrains == 1


def test_an_online_champion_goes_on_learning_after_a_restart(tmp_path: Path) -> None:
    """What the champion learned is saved when the loop closes: the loop opened next goes on from there, and
    learns each label once; a state not signed here is not unpickled, and the champion learns again from the
    store from its registered cutoff."""
    spec = load_spec_dict(spec_dict(tmp_path / "store", model={"estimator": "river.linear_model.LogisticRegression"},
                                    policy={"name": "online", "triggers": {}, "online": True}))
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    loop.tick()
    registered = loop.champion().rows_seen_
    drive(loop, clock, make_frame(400, seed=2, t0=300))
    learned, lineage = loop.champion().rows_seen_, loop.champion_lineage
    assert learned - registered == loop.stats.online_rows > 300
    labeled = int(np.isfinite(loop.data.label_times()).sum())
    loop.close()

    again = Loop(spec, clock=clock)
    assert again.champion().rows_seen_ == learned
    assert (again.champion_lineage["cutoff"], again.champion_lineage["t_last"]) == (lineage["cutoff"],
                                                                                     lineage["t_last"])
    drive(again, clock, make_frame(200, seed=3, t0=700), ids_from=400)
    assert again.champion().rows_seen_ == learned + again.stats.online_rows  # the new labels alone
    assert again.stats.online_rows == int(np.isfinite(again.data.label_times()).sum()) - labeled > 100
    again.close()

    state = again.blobs.local_path("online/champion.pkl")
    state.write_bytes(b"0" * 64 + b"\n" + state.read_bytes().partition(b"\n")[2])
    third = Loop(spec, clock=clock)
    assert third.events.list("online_state_discarded") and third.champion().rows_seen_ == registered
    clock.advance_to(clock.now() + 1)
    third.tick()  # it learns again, from the store, every label after its registered cutoff
    assert third.champion().rows_seen_ == registered + third.stats.online_rows
    assert third.champion_lineage["cutoff"] == lineage_cutoff(third)


def lineage_cutoff(loop: Loop) -> float:
    """The newest label time the store holds."""
    times = loop.data.label_times()
    return float(times[np.isfinite(times)].max())


def test_operator_promote_and_rollback_are_recorded(make_loop) -> None:
    loop, clock = bootstrap(make_loop, policy={"triggers": {"schedule": "200s"}, "cooldown": "0s",
                                               "min_new_labels": 0})
    drive(loop, clock, make_frame(600, seed=3, t0=300))
    assert loop.champion_version and loop.champion_version > 1
    current = loop.champion_version
    back = loop.rollback(actor="alice", reason="paging at 3am")
    assert back < current and loop.champion_version == back
    last = loop.registry.history("champion")[-1]
    assert (last.actor, last.reason) == ("alice", "rollback: paging at 3am")
    loop.promote(current, actor="bob", reason="fixed")
    assert loop.champion_version == current


def test_a_promotion_that_changes_nothing_is_not_recorded(make_loop) -> None:
    loop, clock = bootstrap(make_loop, policy={"triggers": {"schedule": "200s"}, "cooldown": "0s",
                                               "min_new_labels": 0})
    drive(loop, clock, make_frame(600, seed=3, t0=300))
    current = loop.champion_version
    assert current is not None and current > 1
    moves, promotions = len(loop.registry.history("champion")), loop.stats.promotions
    assert loop.promote(current, actor="bob", reason="again") is False
    assert len(loop.registry.history("champion")) == moves and loop.stats.promotions == promotions
    assert not [e for e in loop.meta.events.list("alias_moved") if e.actor == "bob"]
    # a rollback goes back to the version the champion replaced
    before = loop.registry.history("champion")[-1].old_version
    assert loop.rollback(actor="bob", reason="back") == before


def test_a_version_that_cannot_serve_leaves_the_champion_where_it_was(make_loop, monkeypatch) -> None:
    """promote makes the version ready to serve (loaded, compiled, its reference rows scored) before it moves
    the alias: a version whose model fails there is refused and nothing is recorded."""
    monkeypatch.setenv("FRESHLOOP_ALLOWED_ESTIMATORS", "tests.")
    loop, clock = bootstrap(make_loop, model={"estimator": "tests.estimators.BrittleClassifier",
                                              "window": {"choose": [1.0]}},
                            policy={"triggers": {"schedule": "200s"}, "cooldown": "0s", "min_new_labels": 0})
    drive(loop, clock, make_frame(600, seed=3, t0=300))
    current = loop.champion_version
    assert current is not None and current > 1
    moves = len(loop.registry.history("champion"))
    monkeypatch.setenv("FRESHLOOP_TEST_BRITTLE", "1")
    with pytest.raises(RuntimeError, match="brittle"):
        loop.promote(1, actor="bob", reason="back to the first")
    assert loop.champion_version == current == loop.registry.alias("champion")
    assert len(loop.registry.history("champion")) == moves


def test_a_server_serves_the_gated_fit_until_its_refit_replaces_it(tmp_path: Path) -> None:
    spec = load_spec_dict(spec_dict(tmp_path / "store", policy={"triggers": {"schedule": "200s"}, "cooldown": "0s",
                                                                "min_new_labels": 0},
                                    model={"window": {"choose": [1.0]}}))  # one window: the fits counted below
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock, durable=False, serve_before_refit=True)
    served: list[int] = []
    loop.on_promote = lambda version, actor: served.append(version)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    rep = loop.tick()
    assert (rep.registered, rep.refit, rep.promoted, served) == (1, 2, 2, [1, 2])
    gated, refit = loop.registry.get(1).lineage, loop.registry.get(2).lineage
    assert refit["refit_of"] == 1 and refit["refit_rows"] == 300 and "refit_rows" not in gated
    # the gated fit left the holdout (the newest 60 rows) out: its data ends before the refit's
    assert (gated["t_last"], refit["t_last"]) == (239.0, 299.0)
    assert loop.stats.train_rows == 240 + 300  # both fits count: the gated one left out the 60-row holdout
    drive(loop, clock, make_frame(400, seed=3, t0=300))
    current = loop.champion_version
    assert current is not None and current >= 4 and loop.registry.get(current).lineage["refit_of"] == current - 1
    # a rollback goes back to the champion before the run, not to the run's own gated fit
    assert loop.rollback(actor="alice", reason="x") == current - 2


def test_a_staged_rollout_waits_for_the_refit(make_loop) -> None:
    loop, clock, spec = make_loop(rollout={"strategy": "canary", "steps": [25, 100], "min_labels": 60},
                                  policy={"triggers": {"schedule": "400s"}, "cooldown": "0s", "min_new_labels": 0})
    loop.serve_before_refit = True
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 2  # no champion yet: the first model serves at once, then its refit
    drive(loop, clock, make_frame(800, seed=5, flip=True, t0=300))
    started = loop.events.list("rollout_started")
    assert started and all("refit_rows" in loop.registry.get(e.payload["version"]).lineage for e in started)


def test_labels_for_predictions_served_before_a_restart_are_still_scored(tmp_path: Path, db_url: str | None) -> None:
    spec = load_spec_dict(spec_dict(tmp_path / "store", model={"estimator": "sklearn.linear_model.LogisticRegression"},
                                    store={"root": str(tmp_path / "store"), "url": db_url}))
    clock = SimulatedClock(0.0)
    with Loop(spec, clock=clock, durable=False) as loop:  # leaving the block closes it: a restart
        clock.advance_to(299.0)
        loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
        loop.tick()
        rows = make_frame(40, seed=4, t0=300)
        ids = [f"r{i}" for i in range(40)]
        clock.advance_to(340.0)
        served = loop.predict(rows.drop(columns="y"), row_ids=ids)
        loop.ingest(rows.drop(columns="y"), source="test", batch_id="b1", row_ids=ids)
        early = loop.feedback(ids[:10], rows["y"].tolist()[:10], source="test", batch_id="l0")
        assert len(early.scores) == 10
    # the log is on disk, its open records were in memory

    again = Loop(spec, clock=clock, durable=False)
    assert again.predictions.pending == 30  # the ten already labeled are not waiting any more
    late = again.feedback(ids[10:], rows["y"].tolist()[10:], source="test", batch_id="l1")
    assert late.unmatched == [] and len(late.scores) == 30
    expected = (served.predictions[10:] == rows["y"].to_numpy()[10:]).astype(float)
    assert late.scores == expected.tolist()
    rec = again.predictions.get(ids[0]) or again.predictions.pop(ids[10])
    assert rec is None  # matured records are released
    assert (again.champion_version, again.data.rows) == (loop.champion_version, 340)  # restored from the store
    again.close()
    assert (tmp_path / "store" / "freshloop.db").exists() == (db_url is None)


def test_predictions_stop_waiting_for_their_labels_after_the_label_horizon(make_loop) -> None:
    loop, clock = bootstrap(make_loop, data={"label": "y", "time": "t", "label_horizon": "60s"})
    rows = make_frame(40, seed=4, t0=300)
    old, young = [f"o{i}" for i in range(20)], [f"y{i}" for i in range(20)]
    clock.advance_to(310.0)
    loop.predict(rows.drop(columns="y").iloc[:20], row_ids=old)
    clock.advance_to(340.0)
    loop.predict(rows.drop(columns="y").iloc[20:], row_ids=young)
    loop.ingest(rows.drop(columns="y"), source="test", batch_id="b1", row_ids=old + young)
    clock.advance_to(380.0)  # 70 s after the first 20 were served, 40 s after the others
    loop.tick()
    assert (loop.predictions.pending, loop.predictions.expired) == (20, 20)
    late = loop.feedback(old + young, rows["y"].tolist(), source="test", batch_id="l0")
    assert late.unmatched == old and len(late.scores) == 20  # the late labels are kept, only the young scored
    assert loop.data.has_label(old).all()


def test_shadow_rollout_promotes_after_enough_matured_labels(make_loop) -> None:
    loop, clock = bootstrap(make_loop, rollout={"strategy": "shadow", "min_labels": 80},
                            policy={"triggers": {"schedule": "400s"}, "cooldown": "0s", "min_new_labels": 0})
    served_by = []
    frame = make_frame(1200, seed=8, flip=True, t0=300)
    for start in range(0, 1200, 300):
        drive(loop, clock, frame.iloc[start:start + 300], ids_from=start)
        if loop.rollout is not None and loop.rollout.active:
            res = loop.predict(frame.iloc[:5].drop(columns="y"), row_ids=[f"probe{start}-{i}" for i in range(5)])
            served_by.append(set(res.versions.tolist()))
    started = loop.events.list("rollout_started")
    assert started and "shadow of version" in started[0].reason
    assert loop.events.list("rollout_promoted")
    assert all(v == {loop.rollout.champion_version} for v in served_by if loop.rollout)  # shadow never answers


def test_process_executor_trains_the_same_model(make_loop, tmp_path: Path) -> None:
    from freshloop.train import ProcessExecutor

    spec = load_spec_dict(spec_dict(tmp_path / "p"))
    clock = SimulatedClock(0.0)
    pool = ProcessExecutor(max_workers=1)
    try:
        loop = Loop(spec, clock=clock, executor=pool, durable=False)
        clock.advance_to(299.0)
        loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
        assert loop.tick().promoted == 1
    finally:
        pool.shutdown()
    inline, clock2, _ = make_loop()
    clock2.advance_to(299.0)
    inline.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    inline.tick()
    probe = make_frame(50, seed=11)
    assert np.array_equal(loop.champion().predict(probe)[1], inline.champion().predict(probe)[1])


def test_regression_loop_with_warm_start(make_loop) -> None:
    rng = np.random.default_rng(0)
    n = 900
    x = rng.normal(size=n)
    frame = pd.DataFrame({"t": np.arange(n), "x1": x, "x2": rng.normal(size=n), "c": rng.choice(["a", "b"], n),
                          "y": 3 * x + rng.normal(0, 0.1, n)})
    frame.loc[600:, "y"] = -3 * frame.loc[600:, "x1"]
    loop, clock, _ = make_loop(model={"estimator": "sklearn.linear_model.SGDRegressor", "mode": "warm_start"},
                               policy={"triggers": {"schedule": "100s"}, "cooldown": "0s", "min_new_labels": 0},
                               gate={"metric": "mae"})
    clock.advance_to(299.0)
    loop.ingest(frame.iloc[:300], source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1
    assert loop.metric.name == "mae" and not loop.metric.bigger_is_better
    drive(loop, clock, frame.iloc[300:], ids_from=300)
    modes = {r.mode for r in loop.meta.runs.list()}
    assert modes == {"warm_start"}
    assert loop.champion_version and loop.champion_version > 1


def test_json_records_are_ingested(make_loop, tmp_path: Path) -> None:
    loop, clock, _ = make_loop()
    path = tmp_path / "rows.jsonl"
    make_frame(40).to_json(path, orient="records", lines=True)
    with path.open("a") as f:
        f.write("{not json}\n")
    res = loop.ingest_file(str(path))
    assert (res.accepted, res.quarantined) == (40, 1)
    assert "not a JSON object" in res.reasons[0]


def test_a_candidate_that_raises_never_fails_a_request(make_loop) -> None:
    loop, clock = bootstrap(make_loop, rollout={"strategy": "canary", "steps": [50, 100], "min_labels": 30},
                            policy={"triggers": {"schedule": "200s"}, "cooldown": "0s", "min_new_labels": 0})
    drive(loop, clock, make_frame(400, seed=9, t0=300))
    assert loop.rollout is not None and loop.rollout.active  # a canary is running
    cand = loop.ctx.candidate.bundle if loop.ctx.candidate else None
    assert cand is not None

    def broken(frame: pd.DataFrame) -> tuple[np.ndarray, None]:
        raise RuntimeError("model server fell over")

    cand.predict = broken  # type: ignore[method-assign]
    res = loop.predict(make_frame(20, seed=12).drop(columns="y"), row_ids=[f"x{i}" for i in range(20)])
    assert set(res.versions.tolist()) == {loop.champion_version} and len(res.predictions) == 20
    rep = loop.tick()
    assert rep.rolled_back is not None
    ev = loop.events.list("rollout_rolled_back")[-1].reason
    assert "failed to predict 20 rows (RuntimeError: model server fell over)" in ev


def shadow_loop(make_loop, **rollout: object) -> tuple[Loop, SimulatedClock]:
    loop, clock = bootstrap(make_loop, rollout={"strategy": "shadow", "min_labels": 40, **rollout},
                            policy={"triggers": {"schedule": "200s"}, "cooldown": "0s", "min_new_labels": 0})
    drive(loop, clock, make_frame(260, seed=13, t0=300))
    assert loop.rollout is not None and loop.rollout.active and loop.rollout.strategy == "shadow"
    return loop, clock


def test_deferred_shadow_scores_off_the_request_path(make_loop) -> None:
    loop, clock = shadow_loop(make_loop, shadow_duration="100000s")
    r = loop.rollout
    assert r is not None
    before = len(r.cand_scores)
    rows = make_frame(30, seed=14, t0=600)
    ids = [f"s{i}" for i in range(30)]
    res = loop.predict(rows.drop(columns="y"), row_ids=ids, defer_shadow=True)
    assert set(res.versions.tolist()) == {loop.champion_version}
    logged = loop.predictions.get("s0")
    assert logged is not None and r.version not in logged.alternatives  # not scored yet: off the request path
    loop.feedback(ids, rows["y"].tolist(), source="test", batch_id="shadow-labels")
    assert len(r.cand_scores) == before + 30  # scored before the join, so no evidence is lost
    clock.advance_to(clock.now() + 10)
    assert loop.tick().rollout_action == "wait"  # enough labels, but the shadow runs for its duration


def test_a_slow_candidate_is_aborted_when_latency_is_checked(make_loop) -> None:
    import time as _time

    loop, clock = bootstrap(make_loop, rollout={"strategy": "canary", "steps": [50, 100], "min_labels": 30,
                                                "max_latency_ratio": 3.0},
                            policy={"triggers": {"schedule": "200s"}, "cooldown": "0s", "min_new_labels": 0})
    drive(loop, clock, make_frame(400, seed=9, t0=300))
    assert loop.rollout is not None and loop.rollout.active and loop.ctx.candidate is not None
    cand = loop.ctx.candidate.bundle
    fast = cand.predict

    def slow(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        _time.sleep(0.05)
        return fast(frame)

    cand.predict = slow  # type: ignore[method-assign]
    loop.predict(make_frame(10, seed=15).drop(columns="y"), row_ids=[f"l{i}" for i in range(10)])
    rep = loop.tick()
    assert rep.rolled_back is not None
    assert "slower than the champion" in loop.events.list("rollout_rolled_back")[-1].reason


@pytest.mark.slow
@pytest.mark.parametrize("react", [60, 0])
def test_a_detected_change_is_answered_on_the_rows_after_it(tmp_path: Path, react: int) -> None:
    """Agrawal switches function at row 6,000. With ``model.window.react: 60``, the retrain the detector
    starts is not trained on a window of rows mostly from before the change: it waits, and says why; the first
    retrain after the change trains on the rows after it alone, as soon as 60 labels have matured since, and
    the next ones as that count doubles, each judged by the gate and refitted. With ``react: 0``, the
    detector's retrain fits the window at once and one follow-up trains on the rows after it later (the
    default)."""
    frame, info = load_stream("agrawal_abrupt", n=12000)
    spec = load_spec_dict({"name": "agr", "data": {"label": "y", "time": "t"},
                           "policy": {"cooldown": "400s", "triggers": {"drift": {}, "quality": {},
                                                                       "detector": "adwin", "staleness": "5000s"}},
                           "model": {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                                     "window": {"rows": 3000, "react": react}},
                           "replay": {"batch": {"rows": 200}, "label_delay": "100s", "warmup": 1200}})
    res = compare(spec, frame, tmp_path, ["default"])["default"]
    change = info["drift_points"][0]
    retrains = res["decisions"]["retrain"]
    found = [d for d in retrains if d["at"] >= change and d["triggers"][0] in ("detector", "quality")]
    follow = [d for d in retrains if d["triggers"][-1] == "follow-up" and d["at"] > found[0]["at"]]
    assert found and follow, [(d["at"], d["reasons"][0]) for d in retrains]
    assert "training on the rows after it" in follow[0]["reasons"][-1]
    store = tmp_path / "runs" / "default" / "store"
    from freshloop.store import open_stores

    meta, _ = open_stores(store, None)
    runs = {r.run_key: r for r in meta.runs.list()}
    trained = [runs[d["run_key"]] for d in retrains if d["at"] >= found[0]["at"]
               and runs[d["run_key"]].status == "trained"]
    first = meta.runs.snapshot(trained[0].snapshot_id).body
    trigger = {d["run_key"]: "follow-up" if "follow-up" in d["triggers"] else d["triggers"][0] for d in retrains}
    run_for = {r.id: trigger[r.run_key] for r in runs.values()}
    refitted = {run_for[v.run_id]: "refit_rows" in v.lineage for v in meta.versions.list()}
    if react:  # the first retrain after the change trains on the rows after it alone
        assert runs[found[0]["run_key"]].status == "deferred"
        assert "follow-up trains on the rows after it once 60 labels" in runs[found[0]["run_key"]].lineage["reason"]
        assert trained[0].run_key == follow[0]["run_key"] and first["t_first"] > found[0]["at"], first
        steps = [d["reasons"][-1].split(":")[0] for d in follow[:3]]
        assert steps == ["follow-up 1 of 5", "follow-up 2 of 5", "follow-up 3 of 5"], steps
        labels = [int(d["reasons"][-1].split(": ")[1].split()[0]) for d in follow[:3]]
        # at the first tick with 60 labels since (they come 200 at a time), and so on as the count doubles
        assert 60 <= labels[0] < 60 + 200 and labels[1] >= max(120, labels[0]) and labels[2] >= 240, labels
        between = [d["triggers"] for d in retrains if found[0]["at"] < d["at"] <= follow[-1]["at"]]
        assert all("follow-up" in t for t in between), between  # nothing else trained in between
    else:  # the detector's retrain trains on the window, reaching back before the change; a follow-up later
        assert trained[0].run_key == found[0]["run_key"] and first["t_first"] < change
        assert len(follow) >= 1 and follow[0]["reasons"][-1].startswith("follow-up: ")
        assert refitted[found[0]["triggers"][0]] is False  # the model the follow-up replaces is not refitted
        later = meta.runs.snapshot(runs[follow[0]["run_key"]].snapshot_id).body
        assert later["t_first"] > found[0]["at"]
    assert refitted["follow-up"] is True, refitted
    meta.close()


@pytest.mark.parametrize(("triggers", "moved"), [(("drift", "detector"), True), (("drift", "quality"), True),
                                                (("schedule", "detector"), True), (("drift",), False)])
def test_input_drift_firing_with_the_detector_does_not_unsay_a_moved_concept(
        tmp_path: Path, triggers: tuple[str, ...], moved: bool) -> None:
    """The policy lists drift of the inputs first. A retrain that drift and the detector (or a quality drop)
    start at the same tick answers a moved concept all the same: its follow-up reacts, rows before it are not
    trained on again, a ``mode: auto`` retrain fits anew, and a restart reads it back so."""
    from freshloop.policy import Retrain

    spec = load_spec_dict(spec_dict(tmp_path / "store", model={
        "estimator": "sklearn.linear_model.LogisticRegression", "mode": "auto",
        "window": {"rows": 400, "react": 60}}))
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1
    decision = Retrain("r@400", tuple(f"{t} fired" for t in triggers), (), triggers)  # type: ignore[arg-type]
    assert loop.training.mode_for(decision) == ("full" if moved else "warm_start")
    assert loop.follow_up.answered(decision, 400.0)
    owed = loop.follow_up.pending
    assert owed is not None and owed.reacting is moved and owed.steps[0] == (60 if moved else 100), owed
    assert loop.follow_up.floor == (400.0 if moved else None)
    loop.meta.decisions.add(400.0, "retrain", decision.run_key, list(decision.reasons), triggers=list(triggers))
    loop.close()
    again = Loop(spec, clock=clock)  # a restart reads the change back from the decision log
    assert again.follow_up.pending == owed and again.follow_up.floor == loop.follow_up.floor
    again.close()


@pytest.mark.slow
def test_a_change_seen_again_before_its_follow_up_does_not_retrain_twice(tmp_path: Path) -> None:
    """SEA changes concept at row 5,000. Without a reaction (``model.window.react: 0``), the retrain the change
    starts trains mostly on the old concept, so the live quality is still low after it: that is the same
    change, answered by the follow-up, not a second one. The loop skips it, says why, and the follow-up trains
    on the rows after the first finding."""
    frame, info = load_stream("sea_recurring")
    found = suggest_spec(frame, label="y", name="sea")  # the spec `freshloop init` writes, without its reaction
    raw, choice = found.spec, found.choice
    assert choice["chosen"] == "sklearn.linear_model.LogisticRegression", choice
    raw["replay"]["label_delay"] = "100s"
    raw["model"]["window"]["react"] = 0
    spec = load_spec_dict(raw)
    res = compare(spec, frame, tmp_path, ["default"])["default"]
    retrains = [(d["at"], d["triggers"][0]) for d in res["decisions"]["retrain"]]
    change = info["drift_points"][0]
    kinds = [k for at, k in retrains if at >= change]
    assert kinds[:2] in (["quality", "follow-up"], ["detector", "follow-up"], ["drift", "follow-up"]), retrains
    assert res["decisions"]["skip_counts"].get("follow-up pending", 0) >= 1, res["decisions"]["skip_counts"]
    assert res["decisions"]["retrain_counts"] == {k: [r for _, r in retrains].count(k) for _, k in retrains}


@pytest.mark.slow
def test_a_pending_follow_up_survives_a_restart(tmp_path: Path) -> None:
    """The follow-ups owed to a detected change are read back from the decision log when the loop reopens:
    with ``model.window.react``, the step they had reached, and the change before which rows are not
    trained on again."""
    frame, info = load_stream("agrawal_abrupt", n=12000)
    spec = load_spec_dict({"name": "agr", "data": {"label": "y", "time": "t"}, "store": {"root": str(tmp_path)},
                           "policy": {"cooldown": "400s", "triggers": {"quality": {},
                                                                       "detector": "adwin", "staleness": "5000s"}},
                           "model": {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                                     "window": {"rows": 3000, "react": 60}}})
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock)
    pending: list[tuple[float, str, int]] = []
    change = info["drift_points"][0]

    def retrains(lp: Loop) -> list[DecisionRecord]:
        return lp.meta.decisions.list("retrain")

    def found(lp: Loop) -> list[DecisionRecord]:
        return [d for d in retrains(lp) if d.at >= change and d.triggers
                and d.triggers[0] in ("detector", "quality")]

    clock.advance_to(float(frame["t"].iloc[1199]))
    loop.ingest(frame.iloc[:1200], source="test", batch_id="warmup", row_ids=[f"r{i}" for i in range(1200)])
    loop.tick()
    restarted = False
    for start in range(1200, len(frame), 200):
        chunk = frame.iloc[start:start + 200]
        clock.advance_to(float(chunk["t"].iloc[-1]))
        ids = [f"r{start + i}" for i in range(len(chunk))]
        if loop.champion_version is not None:
            loop.predict(chunk.drop(columns="y"), row_ids=ids)
        loop.ingest(chunk.drop(columns="y"), source="test", batch_id=ids[0], row_ids=ids)
        pending += [(float(t) + 100, rid, int(y)) for t, rid, y in zip(chunk["t"], ids, chunk["y"], strict=True)]
        due, pending = [p for p in pending if p[0] <= clock.now()], [p for p in pending if p[0] > clock.now()]
        if due:
            loop.feedback([d[1] for d in due], [d[2] for d in due], source="test", batch_id=f"l{ids[0]}")
        loop.tick()
        if not restarted and found(loop):  # the change was found: stop the process before its follow-up
            loop.close()
            loop = Loop(spec, clock=clock)
            owed = loop.follow_up.pending
            assert owed is not None and owed.since == found(loop)[0].at and owed.reacting, owed
            assert owed.steps == (60, 120, 240, 480, 750) and owed.done == 0
            assert loop.follow_up.floor == found(loop)[0].at
            restarted = True
    follow = [d for d in retrains(loop) if d.triggers and d.triggers[-1] == "follow-up"]
    assert restarted and follow, [(d.at, d.reasons) for d in retrains(loop)]
    assert follow[0].at > found(loop)[0].at and follow[0].reasons[-1].startswith("follow-up 1 of 5: ")
    loop.close()


def test_a_promoted_tree_ensemble_serves_compiled_and_says_so(make_loop) -> None:
    loop, clock = bootstrap(make_loop, model={"estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                                              "params": {"max_iter": 20}})
    moved = loop.events.list("alias_moved")[-1]
    assert moved.payload["serving"].startswith("treelite")
    rows = make_frame(3, seed=9).drop(columns="y")
    pred, proba = loop.champion().predict(rows)
    want = loop.champion().model_.predict_proba(loop.champion().encode(rows))
    np.testing.assert_allclose(proba, want, rtol=0, atol=1e-9)


def test_the_gate_never_scores_the_champion_on_rows_it_was_fitted_on(make_loop) -> None:
    # the first model is refitted on all 300 rows; a retrain 40 rows later would hold out the newest 68,
    # 28 of which the champion learned: the holdout is the 40 rows neither model has seen instead
    loop, clock = bootstrap(make_loop, policy={"triggers": {"schedule": "1s"}, "cooldown": "0s",
                                               "min_new_labels": 0})
    assert loop.champion_lineage["t_last"] == 299.0
    loop.ingest(make_frame(40, seed=1, t0=300), source="test", batch_id="b1", row_ids=[f"b{i}" for i in range(40)])
    clock.advance_to(339.0)
    rep = loop.tick()
    assert rep.verdict is not None and rep.verdict.holdout_rows == 40
    rows = rep.verdict.checks[0]
    assert rows.name == "holdout_rows" and rows.evidence["champion_seen_rows"] == 28
    assert "28 newer rows the champion was fitted on left out" in rows.detail
    # 10 more rows: too few unseen ones to judge on, so the retrain is not trained at all, and says why
    loop.ingest(make_frame(10, seed=2, t0=340), source="test", batch_id="b2", row_ids=[f"c{i}" for i in range(10)])
    clock.advance_to(349.0)
    before = loop.stats.retrains
    rep = loop.tick()
    assert rep.verdict is None and rep.run_error is None and rep.deferred is not None
    assert "all but 10 of the 350 labeled rows" in rep.deferred and "30 rows neither model has seen" in rep.deferred
    assert loop.stats.retrains == before and loop.stats.deferred_runs == 1
    assert loop.events.list("run_deferred")[-1].reason == rep.deferred
    assert rep.to_dict()["deferred"] == rep.deferred


def test_labels_go_to_the_event_log_and_a_relabel_keeps_the_history(make_loop) -> None:
    loop, clock = bootstrap(make_loop)
    rows = make_frame(20, seed=4, t0=300)
    ids = [f"n{i}" for i in range(20)]
    clock.advance_to(319.0)
    loop.predict(rows.drop(columns="y"), row_ids=ids)
    loop.ingest(rows.drop(columns="y"), source="test", batch_id="n", row_ids=ids)
    first = loop.feedback(ids, rows["y"].tolist(), batch_id="l1")
    assert first.ingest.relabeled == 0 and len(first.scores) == 20
    ev = loop.events.list("labels_accepted")[-1]
    assert ev.payload["accepted"] == 20 and ev.payload["scored"] == 20
    # five rows labeled again with the other class, and a warm-up row whose label came with its features
    flipped = [1 - int(y) for y in rows["y"].iloc[:5]]
    clock.advance_to(330.0)
    again = loop.feedback(ids[:5] + ["w0"], flipped + [1 - int(make_frame(300)["y"].iloc[0])], batch_id="l2")
    assert again.ingest.relabeled == 6 and again.ingest.relabel_examples[0] == {
        "row_id": "n0", "before": int(rows["y"].iloc[0]), "after": flipped[0]}
    relabeled = loop.events.list("labels_relabeled")[-1]
    assert relabeled.payload["relabeled"] == 6 and "n0: " in relabeled.reason
    history = loop.data.label_history("n0")
    assert [(h["label"], h["at"]) for h in history] == [(int(rows["y"].iloc[0]), 319.0), (flipped[0], 330.0)]
    assert [h["source"] for h in loop.data.label_history("w0")] == ["features", "feedback"]
    assert loop.data.labeled_rows(["n0"])["_label"].tolist() == [flipped[0]]  # training reads the newest


def flipping(n: int, flip_at: int, seed: int = 0) -> pd.DataFrame:
    """One feature; the label is x > 0 until row ``flip_at``, then x < 0."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    t = np.arange(n)
    y = np.where(t < flip_at, x > 0, x < 0).astype(int)
    return pd.DataFrame({"t": t, "x": x, "y": y})


def test_a_retrain_after_a_change_fits_the_window_the_holdout_chooses(tmp_path: Path) -> None:
    """A retrain that answers a drop of the live metric tries window lengths longest first on the rows before
    the holdout; the short ones (the new concept alone) win surely, the verdict and the run's lineage say which
    and why, and the refit learns that window and the holdout, not the old concept's rows before it."""
    spec = load_spec_dict(spec_dict(
        tmp_path / "store", data={"label": "y", "time": "t"}, gate={"metric": "log_loss"},
        model={"window": {"period": 600}}, policy={"triggers": {"quality": {"min_labels": 50}}, "cooldown": "0s",
                                                     "min_new_labels": 450, "hysteresis": 1}))
    loop = Loop(spec, clock=(clock := SimulatedClock(0.0)), durable=False)
    frame = flipping(1000, flip_at=500)
    clock.advance_to(299.0)
    loop.ingest(frame.iloc[:300], source="test", batch_id="b0", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1
    reports: list[TickReport] = []
    drive(loop, clock, frame.iloc[300:], delay=0.0, reports=reports)
    verdicts = loop.meta.runs.verdicts()
    runs = {r.id: r for r in loop.meta.runs.list()}
    first = next(v for v in verdicts if v.created_at > 500 and v.body["window"]["tried"])  # the first after it
    window, run = first.body["window"], runs[first.run_id]
    assert run.lineage["reasons"][0].startswith("quality:")
    tried = [t["rows"] for t in window["tried"]]
    assert tried == sorted(tried, reverse=True) and window["rows"] < tried[0]  # a shorter one than the whole
    assert window["why"].startswith("surely better than")
    # it holds the new concept alone: none of its rows is older than the change
    new_rows = int(run.lineage["t_last"]) - 500 + 1
    assert window["rows"] <= new_rows and run.train_rows == window["rows"]
    trained = next(e for e in loop.meta.events.list("run_trained") if e.payload["run_id"] == run.id)
    assert f"window {window['rows']} rows (surely better than" in trained.reason
    version = next(v for v in loop.registry.versions() if v.run_id == run.id)
    assert version.lineage["window"] == window
    # the tick that trained it says so too (freshloop tick --json, POST /v1/tick); the other ticks chose none
    assert [r.to_dict()["window"] for r in reports if r.run_id == run.id] == [window]
    assert all(r.window is None for r in reports if r.run_id is None)
    assert version.lineage["refit_rows"] == window["rows"] + first.body["holdout_rows"]  # the window and holdout
    # the new concept is what the model serves
    served = loop.predict(pd.DataFrame({"t": [1000.0, 1001.0], "x": [0.8, -0.8]}))
    assert served.predictions.tolist() == [0, 1]


def test_rows_weighted_by_age_are_kept_only_when_the_holdout_says_they_win(tmp_path: Path) -> None:
    """``model.window.decay``: after a change inside the window, the whole window fitted with its rows weighted
    by age (the new concept's rows weigh most) beats the unweighted fit surely; the verdict, the run's lineage
    and the refit say so, and the model serves the new concept."""
    spec = load_spec_dict(spec_dict(
        tmp_path / "store", data={"label": "y", "time": "t"}, gate={"metric": "log_loss"},
        model={"window": {"period": 600, "choose": [1.0], "decay": [0.1]}},
        policy={"triggers": {"quality": {"min_labels": 50}}, "cooldown": "0s", "min_new_labels": 450,
                "hysteresis": 1}))
    loop = Loop(spec, clock=(clock := SimulatedClock(0.0)), durable=False)
    frame = flipping(1000, flip_at=500)
    clock.advance_to(299.0)
    loop.ingest(frame.iloc[:300], source="test", batch_id="b0", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1
    drive(loop, clock, frame.iloc[300:], delay=0.0)
    first = next(v for v in loop.meta.runs.verdicts() if v.created_at > 500 and v.body["window"]["tried"])
    window, run = first.body["window"], {r.id: r for r in loop.meta.runs.list()}[first.run_id]
    half = window["half_life"]
    assert half == round(0.1 * window["rows"]) and "weighted by age, half-life" in window["why"]
    assert [(t["rows"], t["half_life"]) for t in window["tried"]] == [(window["rows"], None), (window["rows"], half)]
    assert run.lineage["half_life"] == half and run.lineage["window"]["half_life"] == half
    version = next(v for v in loop.registry.versions() if v.run_id == run.id)
    assert version.lineage["half_life"] == half and version.lineage["refit_rows"] > window["rows"]  # so refitted
    served = loop.predict(pd.DataFrame({"t": [1000.0, 1001.0], "x": [0.8, -0.8]}))
    assert served.predictions.tolist() == [0, 1]


def test_rows_weighted_by_age_need_an_estimator_that_takes_weights(tmp_path: Path) -> None:
    spec = load_spec_dict(spec_dict(tmp_path / "store", data={"label": "y", "time": "t"},
                                    model={"estimator": "sklearn.neighbors.KNeighborsClassifier",
                                           "window": {"choose": [1.0], "decay": [0.5]}}))
    frame = flipping(200, flip_at=1000).rename(columns={"y": "_label"})
    schema = infer_schema(flipping(200, flip_at=1000), spec.data)
    with pytest.raises(TrainingFailed, match="KNeighborsClassifier.fit takes no sample_weight"):
        train_candidate(TrainRequest("k", "s", schema, spec.model.estimator, {}, "full", 0, None, frame,
                                     None, 50.0))


def test_a_warm_started_ensemble_grows_each_retrain_and_is_refitted_at_its_limit(tmp_path: Path) -> None:
    """``mode: warm_start`` with gradient boosting (init's default family): each retrain adds trees learned on
    the rows after the champion's, gated like any candidate; once the ensemble would pass 4x its full fit's
    trees, the retrain fits it anew on the window and its lineage says why."""
    spec = load_spec_dict(spec_dict(
        tmp_path / "store", model={"estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                                   "params": {"max_iter": 10}, "mode": "warm_start", "window": {"rows": 600}},
        gate={"min_improvement": -1.0, "max_regression": 1.0},  # every candidate serves: the growth is the test
        policy={"triggers": {"schedule": "100s"}, "cooldown": "0s", "min_new_labels": 0}))
    loop = Loop(spec, clock=(clock := SimulatedClock(0.0)), durable=False)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1
    drive(loop, clock, make_frame(1500, seed=3, t0=300))
    versions = loop.registry.versions()
    trees = [v.lineage["trees"] for v in versions]
    assert trees[0] == 10 and max(trees) <= 40
    grown = [v for v in versions[1:] if v.lineage.get("base") is not None]
    assert len(grown) >= 3 and all(v.lineage["train_rows"] < 300 for v in grown)  # the new rows only
    anew = [v for v in versions if "anew" in v.lineage]
    assert anew and anew[0].lineage["trees"] == 10 and anew[0].lineage["base"] is None
    assert anew[0].lineage["anew"] == "the ensemble reached 4x the trees of its full fit (40 trees)"
    assert not [e for e in loop.events.list("run_failed")]


def test_a_warm_started_ensemble_whose_new_rows_lack_a_class_is_fitted_anew(tmp_path: Path) -> None:
    """Trees grown on rows without a class would break the ensemble's probabilities: that retrain fits anew on
    the window (refitted with the holdout, like a full fit), and says why."""
    spec = load_spec_dict(spec_dict(
        tmp_path / "store", model={"estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                                   "params": {"max_iter": 10}, "mode": "warm_start", "window": {"rows": 600}},
        policy={"triggers": {"schedule": "100s"}, "cooldown": "0s", "min_new_labels": 0}))
    rng = np.random.default_rng(0)

    def rows(n: int, t0: int, classes: list[int]) -> pd.DataFrame:
        y = rng.choice(classes, n)
        return pd.DataFrame({"t": np.arange(t0, t0 + n), "x": y + rng.normal(0, 0.3, n), "y": y})

    loop = Loop(spec, clock=(clock := SimulatedClock(0.0)), durable=False)
    clock.advance_to(299.0)
    loop.ingest(rows(300, 0, [0, 1, 2]), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1
    drive(loop, clock, rows(300, 300, [0, 1]))  # class 2 stops coming
    runs = [r for r in loop.meta.runs.list() if r.lineage.get("anew")]
    assert runs and runs[0].lineage["anew"] == "the new rows hold 2 of the 3 classes the model knows"
    assert runs[0].lineage["base"] is None and not loop.events.list("run_failed")


def test_one_window_share_fits_the_whole_window(make_loop) -> None:
    loop, clock = bootstrap(make_loop, model={"window": {"choose": [1.0]}})
    assert "window" not in loop.registry.get(1).lineage
    assert loop.meta.runs.verdicts()[-1].body["window"] == {"rows": loop.meta.runs.list()[-1].train_rows,
                                                             "tried": []}


def test_the_gains_of_past_retrains_survive_a_restart(tmp_path: Path) -> None:
    spec = load_spec_dict(spec_dict(tmp_path / "store", policy={"triggers": {"schedule": "100s"}, "cooldown": "0s",
                                                                "min_new_labels": 0}))
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    loop.tick()
    drive(loop, clock, make_frame(400, seed=3, t0=300, flip=True))
    assert len(loop.training.gains) >= 2
    again = Loop(spec, clock=clock)
    assert again.training.gains == loop.training.gains


def test_a_budget_of_training_seconds_holds_retrains_by_what_past_runs_cost(tmp_path: Path) -> None:
    """``budget.max_seconds`` bounds the seconds spent training within ``per``: every fit of a run counts (the
    refit too), the next run is expected to cost what the last ones did, and a restarted loop counts the same."""
    spec = load_spec_dict(spec_dict(tmp_path / "store", policy={
        "triggers": {"schedule": "100s"}, "cooldown": "0s", "min_new_labels": 0,
        "budget": {"max_seconds": 1e-6, "per": "250s"}}))
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1  # a first model is not the policy's to hold
    first = loop.training.retrain_seconds
    assert len(first) == 1 and first[0] == pytest.approx(loop.ctx.stats.train_seconds)  # its fit and its refit
    assert loop.registry.get(1).lineage["refit_seconds"] > 0
    reports: list[TickReport] = []
    drive(loop, clock, make_frame(400, seed=3, t0=300), reports=reports)
    held = [r.decision for r in reports if r.decision is not None and r.decision.guard == "budget"]
    assert held, [r.decision for r in reports]
    cost = human_duration(first[0])
    assert held[0].reason.startswith(f"budget: {cost} of training in the last 4.17 min + {cost} expected (the last "
                                     "run) > max_seconds 1e-06 (would retrain for schedule")
    trained = [r for r in reports if r.run_id is not None]
    assert trained and all(r.decision is not None and r.decision.guard is None for r in trained)
    # a run happens only once the first run's seconds have left the last 250 s
    assert all(clock_at - 299.0 >= 250 for clock_at in (r.now for r in trained))
    again = Loop(spec, clock=clock)
    assert again.training.retrain_seconds == pytest.approx(loop.training.retrain_seconds)
    assert again.memory.state.retrain_seconds == again.training.retrain_seconds


def rare(n: int, seed: int = 0, share: float = 0.06) -> pd.DataFrame:
    """A stream with a rare class: ``y`` = 1 on about ``share`` of the rows, whose features overlap the common
    class's, so a fit that counts every row alike serves almost only the common class."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < share).astype(int)
    return pd.DataFrame({"t": np.arange(n), "x1": rng.normal(1.3 * y, 1.0), "x2": rng.normal(0.0, 1.0, n), "y": y})


@pytest.mark.parametrize("metric", ["balanced_accuracy", "accuracy"])
def test_balanced_classes_are_kept_only_when_the_gate_metric_says_they_win(tmp_path: Path, metric: str) -> None:
    """``model.balance``: each full retrain also fits its window with the classes weighted to count the same;
    judged by the gate's metric, so kept when that values the rare class (balanced accuracy) and not when plain
    accuracy is what counts (serving the common class more often wins it)."""
    spec = load_spec_dict(spec_dict(tmp_path / metric, model={
        "estimator": "sklearn.linear_model.LogisticRegression", "balance": True}, gate={"metric": metric},
        replay={"batch": {"rows": 50}, "label_delay": "10s", "warmup": 1500}))
    clock = SimulatedClock(0.0)
    loop = Loop(spec, clock=clock, durable=False)
    clock.advance_to(1499.0)
    loop.ingest(rare(1500), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(1500)])
    rep = loop.tick()
    window = loop.meta.runs.verdicts()[-1].body["window"]
    tried = {bool(t["balanced"]): t["score"] for t in window["tried"]}
    assert set(tried) == {False, True} and window["chose"] is False, window  # a first model: the whole window
    kept = metric == "balanced_accuracy"
    assert (tried[True] > tried[False]) == kept  # the rare class is found more often, the common one less
    assert window["balanced"] == (["y"] if kept else [])
    assert ("classes balanced: surely better" if kept else "unweighted: classes balanced not surely better") \
        in window["why"]
    if kept:  # the refit weighs its rows alike; served rows are scored by the classes' shares in its training rows
        assert rep.promoted == 1 and loop.registry.get(1).lineage["balance"] == ["y"]
        shares = loop.registry.get(1).lineage["class_shares"]
        assert set(shares) == {"0", "1"} and 0.03 < shares["1"] < 0.1
        rows = loop.ctx.score(np.array([1, 0]), [(1, None), (0, None)])  # a hit of each class
        assert rows.tolist() == pytest.approx([1 / (2 * shares["1"]), 1 / (2 * shares["0"])])


def test_auto_mode_fits_anew_after_a_moved_concept_and_warm_starts_the_other_retrains(tmp_path: Path) -> None:
    """``model.mode: auto``: a retrain for the detector (and the follow-up after it) fits anew, since the
    champion's rows hold the old concept; a scheduled one grows the champion on the rows after its own."""
    spec = load_spec_dict(spec_dict(
        tmp_path / "store", model={"estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                                   "params": {"max_iter": 10}, "mode": "auto", "window": {"rows": 600}},
        gate={"min_improvement": -1.0, "max_regression": 1.0},
        policy={"triggers": {"schedule": "300s", "detector": "adwin"}, "cooldown": "0s", "min_new_labels": 0}))
    loop = Loop(spec, clock=(clock := SimulatedClock(0.0)), durable=False)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1
    drive(loop, clock, make_frame(400, seed=3, t0=300))
    drive(loop, clock, make_frame(800, seed=4, t0=700, flip=True), ids_from=400)
    triggers = {d.run_key: d.triggers for d in loop.meta.decisions.list("retrain")}
    modes = [(triggers[r.run_key], r.mode, r.lineage.get("base")) for r in loop.meta.runs.list()
             if r.status == "trained"]
    moved = [m for m in modes if {"detector", "follow-up", "bootstrap"} & set(m[0])]
    warm = [m for m in modes if m not in moved]
    assert len(moved) >= 2 and all(mode == "full" and base is None for _, mode, base in moved), modes
    assert warm and all(mode == "warm_start" for _, mode, _ in warm), modes
    assert any(base is not None for _, _, base in warm)  # grown from the champion, not fitted anew


def test_balanced_slices_help_a_rare_slice_and_are_judged_on_the_mean_over_the_slices(tmp_path: Path) -> None:
    """``model.balance: [region]``: rows of a rare region (10 %) whose label follows another feature count as
    much as the rest together; a linear model then serves that region far better and the rest a little worse,
    so the fit is judged on the mean over the regions, and kept."""
    rng = np.random.default_rng(0)
    n = 5000
    region = np.where(rng.random(n) < 0.1, "north", "south")
    x1, x2 = rng.normal(0, 1, n), rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-np.where(region == "north", 8 * x2, 1.5 * x1)))).astype(int)
    frame = pd.DataFrame({"t": np.arange(n), "region": region, "x1": x1, "x2": x2, "y": y})
    spec = load_spec_dict(spec_dict(tmp_path / "store", model={
        "estimator": "sklearn.linear_model.LogisticRegression", "balance": ["region"]},
        gate={"max_holdout_rows": 1000}))
    loop = Loop(spec, clock=(clock := SimulatedClock(0.0)), durable=False)
    clock.advance_to(n - 1.0)
    loop.ingest(frame, source="test", batch_id="all", row_ids=[f"r{i}" for i in range(n)])
    loop.tick()
    window = loop.meta.runs.verdicts()[-1].body["window"]
    assert window["balanced"] == ["region"], window["why"]
    assert "'region' balanced (judged on the mean over the slices): surely better than unweighted" in window["why"]
    assert loop.meta.runs.list()[-1].lineage["balance"] == ["region"]
    with pytest.raises(TrainingFailed, match="model.balance: 'country' is not a column of the data"):
        train_candidate(TrainRequest("k", "s", loop.ctx.schema, "sklearn.linear_model.LogisticRegression", {},
                                     "full", 0, None, frame.rename(columns={"y": "_label"}), balance=("country",)))


def through_a_flip(spec: LoopSpec, after: int,
                   reports: list[TickReport] | None = None) -> tuple[Loop, SimulatedClock]:
    """A loop on ``spec`` whose first model is fitted on 300 rows of concept A, driven through 1,200 more rows
    of A, then ``after`` rows of B (the concept flipped) from row 1,500."""
    loop = Loop(spec, clock=(clock := SimulatedClock(0.0)), durable=False)
    clock.advance_to(299.0)
    loop.ingest(make_frame(300, seed=1), source="test", batch_id="warm", row_ids=[f"w{i}" for i in range(300)])
    assert loop.tick().promoted == 1
    drive(loop, clock, make_frame(1200, seed=1, t0=300), reports=reports)  # A
    drive(loop, clock, make_frame(after, seed=2, t0=1500, flip=True), ids_from=2000, reports=reports)  # B
    return loop, clock


def concepts_a_then_b(tmp_path: Path) -> tuple[Loop, SimulatedClock, LoopSpec]:
    """A loop with ``gate.recall: 3`` driven through concept A (1,500 rows), then B (1,500 rows): its champion
    learned B, and no past version was promoted back while B was new."""
    spec = load_spec_dict(spec_dict(tmp_path / "store", policy={"cooldown": "100s"}, gate={"recall": 3},
                                    model={"estimator": "sklearn.linear_model.LogisticRegression",
                                           "window": {"rows": 600}}))
    loop, clock = through_a_flip(spec, 1500, reports := [])
    assert not [r for r in reports if r.recalled is not None]  # no past version knows B
    assert loop.registry.get(loop.champion_version).lineage["t_last"] > 1500  # B's champion learned B
    return loop, clock, spec


def test_a_past_version_is_promoted_back_when_its_concept_returns(tmp_path: Path) -> None:
    """``gate.recall``: concepts A, B, then A again. Within two batches of A's return, a version fitted on A is
    surely better than the champion fitted on B on the newest labeled rows, and is promoted back without
    training; the decision log, the event log and the tick's report say so. While B is new, no past version
    beats its champion."""
    loop, clock, spec = concepts_a_then_b(tmp_path)
    b_champion = loop.champion_version
    reports: list[TickReport] = []
    drive(loop, clock, make_frame(600, seed=3, t0=3000), ids_from=4000, reports=reports)  # A returns
    first = next(r for r in reports if r.recalled is not None)
    assert first.now < 3000 + 2 * 50, [(r.now, r.decision) for r in reports]  # within two batches of 50 rows
    back = first.recalled
    assert loop.registry.get(back).lineage["t_last"] < 1650  # fitted on A's rows
    assert first.promoted == back and first.registered is None and first.run_id is None  # nothing trained
    assert isinstance(first.decision, Skip) and first.decision.guard == "recalled"
    recall = loop.meta.decisions.list("recall")[0]
    assert recall.at == first.now and recall.reasons[0].startswith(f"recall: version {back} beats champion "
                                                                   f"version {b_champion} surely")
    event = loop.events.list("version_recalled")[0]
    assert event.payload["version"] == back and event.payload["low"] > 0 and str(back) in event.payload["scores"]
    assert event.payload["rows"] == spec.gate.min_holdout_rows
    assert loop.champion_version == back or loop.champion_version > back  # served, until a later retrain wins


@pytest.mark.parametrize("held", ["rollout", "stopped"])
def test_no_version_is_promoted_back_during_a_rollout_or_while_promotion_is_stopped(tmp_path: Path,
                                                                                   held: str) -> None:
    """The recall moves the champion, so it waits while a rollout is under way (the rollout decides what
    serves; here, A's first version in a shadow) and while consecutive rollbacks have stopped automatic
    promotion (the operator decides). A is back, a version fitted on A would win, and nothing is promoted
    back until the operator ends the hold; then it is, within two batches."""
    loop, clock, spec = concepts_a_then_b(tmp_path)
    b_champion = loop.champion_version
    assert b_champion is not None
    if held == "rollout":  # a gated version in a shadow that runs longer than the test
        loop.spec = spec.model_copy(update={"rollout": spec.rollout.model_copy(
            update={"strategy": "shadow", "shadow_duration": "100000s", "min_labels": 40})})
        loop.deployer.deploy(1, clock.now(), TickReport(now=clock.now()), "test")  # A's first version
        assert loop.rollout is not None and loop.rollout.active
    else:  # the state consecutive automatic rollbacks leave (see Deployer.restore_rollbacks)
        loop.deployer.auto_rollbacks = spec.rollout.max_auto_rollbacks
        loop.deployer.auto_promotion = False
    reports: list[TickReport] = []
    drive(loop, clock, make_frame(400, seed=3, t0=3000), ids_from=4000, reports=reports)  # A returns
    assert not [r for r in reports if r.recalled is not None], [(r.now, r.decision) for r in reports]
    assert not loop.events.list("version_recalled") and not loop.meta.decisions.list("recall")
    assert loop.champion_version == b_champion
    if held == "rollout":
        assert loop.rollout is not None and loop.rollout.active  # still running: it held the recall
        loop.abort(loop.rollout.id, actor="alice", reason="enough")
    else:
        loop.promote(b_champion, actor="alice", reason="checked")  # confirming the champion resumes promotion
        assert loop.auto_promotion
    reports.clear()
    drive(loop, clock, make_frame(300, seed=4, t0=3400), ids_from=5000, reports=reports)
    first = next((r for r in reports if r.recalled is not None), None)
    assert first is not None and first.now < 3400 + 2 * 50, [(r.now, r.decision) for r in reports]
    fitted = loop.registry.get(first.recalled).lineage
    # fitted on A's rows: before B, or (while promotion was stopped, retrains ran and were held) since A's return
    assert first.recalled != b_champion and not 1650 <= fitted["t_last"] < 3000, fitted


def reacting_through_a_flip(tmp_path: Path, after: int, policy: dict[str, object]) -> Loop:
    """A loop with a window of 1,000 rows and ``model.window.react: 60`` driven through concept A (1,500 rows),
    then ``after`` rows of B, the concept flipped."""
    spec = load_spec_dict(spec_dict(tmp_path / "store", policy=policy, model={
        "estimator": "sklearn.linear_model.LogisticRegression", "window": {"rows": 1000, "react": 60}}))
    return through_a_flip(spec, after)[0]


def test_after_a_reaction_later_windows_start_at_the_change(tmp_path: Path) -> None:
    """``model.window.react``: concept A, then B from row 1,500. Once the follow-ups have trained on the rows
    after the change, later retrains (here, staleness) do not reach back into A either, though the window of
    1,000 rows would: their window starts at the change until 1,000 rows have arrived since, and is the spec's
    again after that."""
    loop = reacting_through_a_flip(tmp_path, 1500, {"cooldown": "100s", "triggers": {
        "detector": "adwin", "staleness": "450s"}})
    runs = {r.run_key: r for r in loop.meta.runs.list()}
    trained = [(d, loop.meta.runs.snapshot(runs[d.run_key].snapshot_id).body)
               for d in loop.meta.decisions.list("retrain") if runs[d.run_key].status == "trained"]
    found = next(d for d in loop.meta.decisions.list("retrain") if d.triggers[0] == "detector")
    assert 1500 <= found.at < 1700 and runs[found.run_key].status == "deferred"
    follow = [(d, snap) for d, snap in trained if "follow-up" in d.triggers]
    later = [(d, snap) for d, snap in trained if d.at > follow[-1][0].at]
    seen = [(d.at, d.triggers, snap["t_first"], snap["rows"]) for d, snap in trained]
    assert len(follow) == 3 and all(snap["t_first"] > found.at for _, snap in follow), seen
    assert later and all(d.triggers == ["staleness"] for d, _ in later), seen
    cut = [snap for d, snap in later if d.at - found.at < 1000]  # 1,000 rows back would reach into A
    assert cut and all(snap["t_first"] > found.at and snap["rows"] < 1000 for snap in cut), seen
    spec_window = [snap for d, snap in later if d.at - found.at > 1000 + 50]  # past it: the spec's window
    assert spec_window and all(snap["rows"] == 1000 for snap in spec_window), seen


def test_a_schedule_due_when_the_detector_fires_still_answers_the_change(tmp_path: Path) -> None:
    """A schedule comes first among the triggers that fired; the detector firing at the same tick still makes
    the retrain an answer to a moved concept: with ``model.window.react`` it waits for the rows after the
    change, and its follow-ups train on those alone."""
    loop = reacting_through_a_flip(tmp_path, 1000, {"cooldown": "100s", "hysteresis": 1, "triggers": {
        "detector": "adwin", "schedule": "1300s"}})
    runs = {r.run_key: r for r in loop.meta.runs.list()}
    retrains = loop.meta.decisions.list("retrain")
    both = [d for d in retrains if d.triggers == ["schedule", "detector"]]
    assert both and both[0].at > 1500, [(d.at, d.triggers) for d in retrains]  # due at the same tick
    assert runs[both[0].run_key].status == "deferred"
    follow = [d for d in retrains if d.at > both[0].at]
    assert follow and follow[0].reasons[-1].startswith("follow-up 1 of 3: "), [(d.at, d.reasons) for d in follow]
    assert loop.meta.runs.snapshot(runs[follow[0].run_key].snapshot_id).body["t_first"] > both[0].at
