from __future__ import annotations

import hashlib
import importlib.metadata
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from freshloop.data.schema import infer_schema
from freshloop.errors import ConflictError, IntegrityError, SpecError
from freshloop.evaluate import get_metric, judge
from freshloop.registry import Registry
from freshloop.spec import DataSpec, GateSpec
from freshloop.store import open_stores
from freshloop.store.tables import metadata
from freshloop.train import ModelBundle, TrainingFailed, TrainRequest, train_candidate
from freshloop.train.compiled import SMALL_BATCH

from .conftest import make_frame


def request(frame: pd.DataFrame, estimator: str = "sklearn.ensemble.RandomForestClassifier", mode: str = "full",
            base: ModelBundle | None = None, seed: int = 0, params: dict | None = None) -> TrainRequest:
    schema = infer_schema(frame, DataSpec(label="y", time="t"))
    return TrainRequest("k", "s-1", schema, estimator, {"n_estimators": 20} if params is None else params, mode,
                        seed, True,
                        frame.assign(_label=frame["y"]), base)


def test_training_is_deterministic_and_records_lineage() -> None:
    f = make_frame(400)
    a, b = train_candidate(request(f)), train_candidate(request(f))
    pa_, pb = a.bundle.predict(f)[1], b.bundle.predict(f)[1]
    assert np.array_equal(pa_, pb)
    c = train_candidate(request(f, seed=1))
    assert not np.array_equal(pa_, c.bundle.predict(f)[1])
    lin = a.lineage
    assert lin["snapshot_id"] == "s-1" and lin["seed"] == 0 and lin["train_rows"] == 400
    assert {"scikit-learn", "river", "numpy"} <= set(lin["packages"])
    assert lin["code_version"].startswith("0.1.0+")


def test_warm_start_and_online_modes() -> None:
    f = make_frame(600)
    base = train_candidate(request(f.iloc[:300], "sklearn.linear_model.SGDClassifier", params={"loss": "log_loss"}))
    warm = train_candidate(request(f.iloc[300:], "sklearn.linear_model.SGDClassifier", mode="warm_start",
                                   base=base.bundle, params={"loss": "log_loss"}))
    assert warm.bundle.rows_seen_ == 600 and base.bundle.rows_seen_ == 300  # the base is not mutated
    river = train_candidate(request(f, "river.linear_model.LogisticRegression", params={}))
    acc = (river.bundle.predict(f)[0] == f["y"].to_numpy()).mean()
    assert acc > 0.7
    more = train_candidate(request(f.iloc[:100], "river.linear_model.LogisticRegression", mode="online",
                                   base=river.bundle, params={}))
    assert more.bundle.rows_seen_ == 700


def test_estimators_outside_the_allow_list_are_refused() -> None:
    f = make_frame(50)
    with pytest.raises(SpecError, match="allowed import path|under sklearn"):
        train_candidate(request(f, "os.system"))
    with pytest.raises(SpecError, match="importable"):
        train_candidate(request(f, "sklearn.linear_model.NoSuchModel"))


def test_features_are_standardised_for_estimators_that_need_it_not_for_trees() -> None:
    frame = make_frame(400)
    schema = infer_schema(frame, DataSpec(label="y", time="t"))

    def steps(estimator: str, scale: bool | None = None) -> list[str]:
        return [name for name, _ in ModelBundle(schema, estimator, {}, scale=scale).model_.steps]

    assert steps("sklearn.linear_model.LogisticRegression") == ["simpleimputer", "standardscaler", "logisticregression"]
    assert steps("sklearn.ensemble.HistGradientBoostingClassifier") == ["simpleimputer",
                                                                        "histgradientboostingclassifier"]
    assert steps("sklearn.tree.DecisionTreeClassifier") == ["simpleimputer", "decisiontreeclassifier"]
    assert "standardscaler" in steps("sklearn.ensemble.HistGradientBoostingClassifier", scale=True)  # as asked
    assert "standardscaler" not in steps("sklearn.linear_model.LogisticRegression", scale=False)
    # a tree splits on the order of values, which scaling keeps: the same model either way
    trees = [ModelBundle(schema, "sklearn.ensemble.HistGradientBoostingClassifier", {}, scale=s)
             .fit(frame, frame["y"]) for s in (True, False)]
    np.testing.assert_allclose(trees[0].predict(frame)[1], trees[1].predict(frame)[1], atol=1e-9)


def _ragged_rows(n: int, seed: int) -> pd.DataFrame:
    """Rows as requests bring them: some cells missing, some categories never seen in training."""
    frame = make_frame(n, seed=seed)
    frame.loc[frame.index % 7 == 0, "x1"] = np.nan
    frame.loc[frame.index % 11 == 0, "c"] = "unseen"
    return frame


@pytest.mark.parametrize(("estimator", "params", "target"), [
    ("sklearn.ensemble.HistGradientBoostingClassifier", {}, "binary"),
    ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 30}, "three classes"),
    ("sklearn.ensemble.HistGradientBoostingRegressor", {}, "number"),
    ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 20}, "binary"),
    ("sklearn.ensemble.ExtraTreesRegressor", {"n_estimators": 20}, "number"),
    ("sklearn.ensemble.GradientBoostingClassifier", {"n_estimators": 30}, "three classes"),
    ("sklearn.linear_model.LogisticRegression", {}, "binary"),
    ("sklearn.linear_model.LogisticRegression", {}, "three classes"),
    ("sklearn.linear_model.Ridge", {}, "number"),
])
def test_small_batches_are_predicted_by_the_compiled_model_as_by_the_pipeline(
        estimator: str, params: dict[str, Any], target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _ragged_rows(1500, seed=3)
    if target == "three classes":
        frame["y"] = frame["y"] + (frame["x2"] > 0.8)
    elif target == "number":
        frame["y"] = frame["x1"].fillna(0.0) * 2 + frame["x2"] ** 2 + (frame["c"] == "a")
    schema = infer_schema(frame, DataSpec(label="y", time="t"))
    fitted = ModelBundle(schema, estimator, params, seed=0).fit(frame, frame["y"])
    bundle = pickle.loads(pickle.dumps(fitted))  # as the registry keeps it: compiled again where it is loaded
    trees = estimator.startswith("sklearn.ensemble.")
    assert bundle.compile() == (f"treelite {importlib.metadata.version('treelite')} up to {SMALL_BATCH} rows"
                                if trees else "coefficients, every batch")
    rows = _ragged_rows(3 * SMALL_BATCH, seed=4).drop(columns="y")
    pipeline = bundle.model_.predict_proba if schema.task == "classification" else bundle.model_.predict
    want = pipeline(bundle.encode(rows))

    def refuse(xs: np.ndarray) -> None:
        raise AssertionError(f"scikit-learn was called for a batch of {len(xs)} rows")

    monkeypatch.setattr(bundle.model_, "predict_proba" if schema.task == "classification" else "predict", refuse)
    for start in range(0, len(rows), SMALL_BATCH // 4):  # batches of one to SMALL_BATCH rows
        for chunk in (rows.iloc[start:start + 1], rows.iloc[start:start + SMALL_BATCH]):
            pred, proba = bundle.predict(chunk.to_dict(orient="records"))
            at = slice(start, start + len(chunk))
            if proba is None:
                np.testing.assert_allclose(pred, want[at], rtol=0, atol=1e-9)
            else:
                np.testing.assert_allclose(proba, want[at], rtol=0, atol=1e-9)
                assert pred.tolist() == bundle.model_.classes_[want[at].argmax(axis=1)].tolist()
    if trees:  # a larger batch goes to scikit-learn's parallel loop over the trees
        with pytest.raises(AssertionError, match=f"batch of {SMALL_BATCH + 1} rows"):
            bundle.predict(rows.iloc[:SMALL_BATCH + 1])
    else:  # a matrix product is cheaper at every size
        np.testing.assert_allclose(bundle.predict(rows)[1 if proba is not None else 0], want, rtol=0, atol=1e-9)


def test_a_model_its_compiled_form_cannot_reproduce_is_served_by_scikit_learn() -> None:
    frame = _ragged_rows(800, seed=5)
    frame["y"] = np.exp(frame["x2"])  # a Poisson model links its trees by exp, which the compiled form leaves out
    schema = infer_schema(frame, DataSpec(label="y", time="t"))
    bundle = ModelBundle(schema, "sklearn.ensemble.HistGradientBoostingRegressor", {"loss": "poisson"}).fit(
        frame, frame["y"])
    assert bundle.compile().startswith("scikit-learn (the compiled form differs by")
    rows = frame.drop(columns="y").iloc[:5]
    assert bundle.predict(rows)[0].tolist() == bundle.model_.predict(bundle.encode(rows)).tolist()
    classes = infer_schema(make_frame(100), DataSpec(label="y", time="t"))
    huber = ModelBundle(classes, "sklearn.linear_model.SGDClassifier", {"loss": "modified_huber"}).fit(
        make_frame(100), make_frame(100)["y"])  # probabilities clipped from the margin, not linked by expit
    assert huber.compile().startswith("scikit-learn (the compiled form differs by")
    knn = ModelBundle(classes, "sklearn.neighbors.KNeighborsClassifier", {}).fit(make_frame(100), make_frame(100)["y"])
    assert knn.compile() == "scikit-learn (KNeighborsClassifier is neither a tree ensemble Treelite reads nor a " \
                            "linear model)"
    # a refit forgets the compiled form: the next small batch compiles the new trees
    trees = ModelBundle(schema, "sklearn.ensemble.HistGradientBoostingRegressor", {}).fit(frame, frame["y"])
    assert trees.compile().startswith("treelite")
    before = trees.predict(rows)[0]
    trees.fit(frame.iloc[::-1], -frame["y"].iloc[::-1])
    assert trees.serving is None
    np.testing.assert_allclose(trees.predict(rows)[0], trees.model_.predict(trees.encode(rows)), rtol=0, atol=1e-9)
    assert not np.allclose(trees.predict(rows)[0], before)


def test_a_model_registered_before_compiled_serving_still_serves_through_scikit_learn() -> None:
    frame = make_frame(300)
    schema = infer_schema(frame, DataSpec(label="y", time="t"))
    bundle = ModelBundle(schema, "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20}).fit(
        frame, frame["y"])
    state = bundle.__getstate__()
    for newer in ("_check_rows", "_compiled", "serving", "_generation"):  # what an older bundle's pickle lacks
        state.pop(newer, None)
    old = ModelBundle.__new__(ModelBundle)
    old.__setstate__(state)
    assert old.compile() == "scikit-learn (no fitted rows to check a compiled form against)"
    rows = frame.drop(columns="y").iloc[:5]
    np.testing.assert_array_equal(old.predict(rows)[1], bundle.model_.predict_proba(bundle.encode(rows)))


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


def test_registry_verifies_hashes_and_moves_aliases_by_compare_and_set(tmp_path: Path, db_url: str | None) -> None:
    meta, blobs = open_stores(tmp_path, db_url, durable=False)
    reg = Registry(meta, blobs)
    f = make_frame(100)
    bundle = train_candidate(request(f)).bundle
    v1 = reg.register(bundle, run_id="r1", verdict_id="v1", lineage={"snapshot_id": "s"}, now=1.0)
    v2 = reg.register(bundle, run_id="r2", verdict_id="v2", lineage={"snapshot_id": "s2"}, now=2.0)
    assert (v1.version, v2.version) == (1, 2) and v1.artifact_sha256 == v2.artifact_sha256
    data = blobs.get_bytes(v1.artifact_path)
    assert hashlib.sha256(data).hexdigest() == v1.artifact_sha256
    fresh = Registry(meta, blobs)
    assert isinstance(fresh.load(1), ModelBundle)
    # tamper with the artifact: a fresh registry refuses to unpickle it
    blobs.put_bytes(v1.artifact_path, pickle.dumps({"evil": True}))
    with pytest.raises(IntegrityError, match="does not match"):
        Registry(meta, blobs).load(1)
    rev = reg.revision("champion")
    reg.set_alias("champion", 1, actor="a", reason="first", now=3.0, expected_revision=rev)
    with pytest.raises(ConflictError, match="moved concurrently"):
        reg.set_alias("champion", 2, actor="b", reason="lost race", now=4.0, expected_revision=rev)
    reg.set_alias("champion", 2, actor="c", reason="second", now=5.0)
    hist = reg.history("champion")
    assert [(m.old_version, m.new_version, m.actor) for m in hist] == [(None, 1, "a"), (1, 2, "c")]
    meta.close()


def test_migrations_match_the_tables(tmp_path: Path, db_url: str | None) -> None:
    meta, _ = open_stores(tmp_path, db_url, durable=False)
    with meta.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    meta.close()
    assert diff == []


def test_decisions_stored_before_their_fields_existed_get_them_from_their_reasons(tmp_path: Path) -> None:
    """A store written before revision 0004 opens with each decision's triggers and guard filled in, so a
    loop opened on it finds a pending follow-up (it reads the triggers, not the words)."""
    import sqlalchemy as sa
    from alembic import command

    from freshloop.store.sql import _alembic_config

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        old = [("retrain", ["drift: 1 feature(s) drifted", "follow-up: 250 labels since the change"]),
               ("retrain", ["bootstrap: no champion yet; 80 labeled rows"]),
               ("skip", ["guard: 10 new labeled rows < min_new_labels 100 (would retrain for volume: 300)"]),
               ("skip", ["rollout of version 4 in progress (would retrain for drift: 2 feature(s) drifted)"]),
               ("skip", ["no trigger configured (never retrains)"]), ("skip", ["cooldown: trained 1 h ago < 7 d"])]
        for i, (kind, reasons) in enumerate(old):
            conn.execute(sa.text("INSERT INTO decisions (at, kind, reasons) VALUES (:at, :kind, :reasons)"),
                         {"at": float(i), "kind": kind, "reasons": json.dumps(reasons)})
    engine.dispose()
    meta, _ = open_stores(tmp_path, f"sqlite:///{tmp_path / 'old.db'}", durable=False)
    got = [(d.triggers, d.guard) for d in meta.decisions.list()]
    meta.close()
    assert got == [(["drift", "follow-up"], None), (["bootstrap"], None), ([], "min_new_labels"),
                   ([], "rollout in progress"), ([], "never"), ([], "cooldown")]


def test_the_registry_keeps_only_recent_models_in_memory(tmp_path: Path) -> None:
    meta, blobs = open_stores(tmp_path)
    reg = Registry(meta, blobs)
    versions = [reg.register({"model": i}, run_id=f"r{i}", verdict_id=None, lineage={"i": i}, now=float(i)).version
                for i in range(12)]
    assert versions == list(range(1, 13)) and reg.get(12).lineage == {"i": 11}
    assert len(reg._loaded) == 8 and 1 not in reg._loaded
    assert reg.load(1) == {"model": 0}  # read back from the store, its checksum verified
    assert 1 in reg._loaded and len(reg._loaded) == 8


def test_versions_and_alias_moves_from_two_processes_sharing_a_store_never_collide(tmp_path: Path,
                                                                                   db_url: str | None) -> None:
    """Two writers (two stores on one database, as two servers would open it) register versions and move
    one alias at once: every version gets its own number, and each revision of the alias has one winner."""
    from concurrent.futures import ThreadPoolExecutor

    stores = [open_stores(tmp_path, db_url, durable=False)[0] for _ in range(2)]
    row = dict(run_id="r", verdict_id="v", artifact_sha256="0" * 64, artifact_path="p", artifact_hmac=None,
               lineage={}, created_at=1.0)

    def register(meta: Any) -> list[int]:
        return [meta.versions.add(**row).version for _ in range(25)]

    with ThreadPoolExecutor(2) as pool:
        numbers = [v for got in pool.map(register, stores) for v in got]
    assert sorted(numbers) == list(range(1, 51))

    def move(meta: Any, version: int) -> int:
        won = 0
        for _ in range(25):
            rev = meta.versions.alias("champion")[1]
            try:
                meta.versions.move_alias("champion", version, expected_revision=rev, actor="a", reason="race", at=2.0)
                won += 1
            except ConflictError:
                pass
        return won

    with ThreadPoolExecutor(2) as pool:
        wins = sum(pool.map(move, stores, [1, 2]))
    history = stores[0].versions.alias_history("champion")
    assert len(history) == wins and stores[0].versions.alias("champion")[1] == wins
    assert [m.old_version for m in history[1:]] == [m.new_version for m in history[:-1]]  # one unbroken chain
    for meta in stores:
        meta.close()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scikit-learn's own, on the way to failing
def test_a_training_run_failing_on_data_names_the_rows_and_columns() -> None:
    """A value past ±1e38 stored before validation refused it (1e308 made every later fit fail with "Input X
    contains NaN") is named with its column and rows, so the operator knows what to quarantine."""
    f = make_frame(400)
    f["x1"] = f["x1"].astype(float)
    f.loc[[10, 20], "x1"] = 1e308
    f["_time"] = f["t"].astype(float)  # as a snapshot's rows carry their time
    with pytest.raises(TrainingFailed) as e:
        train_candidate(request(f, estimator="sklearn.linear_model.LogisticRegression", params={}))
    message = str(e.value)
    assert "Input X contains NaN" in message
    assert "Caused by column 'x1': 2 values past ±1e+38 (row 10 (time 10) = 1e+308, row 20 (time 20) = 1e+308)" \
        in message, message
