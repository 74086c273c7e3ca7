from __future__ import annotations

import importlib.metadata
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest

from freshloop.data.schema import infer_schema
from freshloop.errors import SpecError
from freshloop.spec import DataSpec, ModelSpec
from freshloop.train import ModelBundle, TrainingFailed, train_candidate
from freshloop.train.compiled import SMALL_BATCH
from freshloop.train.model import check_model

from .conftest import make_frame, train_request


def test_training_is_deterministic_and_records_lineage() -> None:
    f = make_frame(400)
    a, b = train_candidate(train_request(f)), train_candidate(train_request(f))
    pa_, pb = a.bundle.predict(f)[1], b.bundle.predict(f)[1]
    assert np.array_equal(pa_, pb)
    c = train_candidate(train_request(f, seed=1))
    assert not np.array_equal(pa_, c.bundle.predict(f)[1])
    lin = a.lineage
    assert lin["snapshot_id"] == "s-1" and lin["seed"] == 0 and lin["train_rows"] == 400
    assert {"scikit-learn", "river", "numpy"} <= set(lin["packages"])
    assert lin["code_version"].startswith("0.1.0+")


def test_warm_start_and_online_modes() -> None:
    f = make_frame(600)
    sgd, params = "sklearn.linear_model.SGDClassifier", {"loss": "log_loss"}
    base = train_candidate(train_request(f.iloc[:300], sgd, params=params))
    warm = train_candidate(train_request(f.iloc[300:], sgd, mode="warm_start", base=base.bundle, params=params))
    assert warm.bundle.rows_seen_ == 600 and base.bundle.rows_seen_ == 300  # the base is not mutated
    river = train_candidate(train_request(f, "river.linear_model.LogisticRegression", params={}))
    acc = (river.bundle.predict(f)[0] == f["y"].to_numpy()).mean()
    assert acc > 0.7
    more = train_candidate(train_request(f.iloc[:100], "river.linear_model.LogisticRegression", mode="online",
                                         base=river.bundle, params={}))
    assert more.bundle.rows_seen_ == 700


@pytest.mark.parametrize(("estimator", "params"), [
    ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20}),
    ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 20})])
def test_an_ensemble_warm_started_grows_trees_on_the_new_rows(estimator: str, params: dict[str, Any]) -> None:
    """``mode: warm_start`` for an ensemble without partial_fit: new trees learn the new rows, as many more as
    the rows are a share of those learned; the older trees stay, and the base is not changed."""
    f = pd.concat([make_frame(300), make_frame(300, seed=1, flip=True, t0=300)], ignore_index=True)  # it flips
    base = train_candidate(train_request(f.iloc[:300], estimator, params=params))
    assert base.bundle.trees() == 20 and base.bundle.first_trees_ == 20
    warm = train_candidate(train_request(f.iloc[300:450], estimator, mode="warm_start", base=base.bundle,
                                         params=params))
    assert warm.bundle.trees() == 30 and base.bundle.trees() == 20  # 150 rows more than 300: half as many trees
    assert warm.bundle.rows_seen_ == 450 and warm.lineage["train_rows"] == 150
    assert warm.bundle.why_not_grow(f["y"].iloc[450:]) is None
    late = f.iloc[450:].drop(columns="y")
    truth = f["y"].iloc[450:].to_numpy()
    assert (warm.bundle.predict(late)[0] == truth).mean() > (base.bundle.predict(late)[0] == truth).mean()


def test_an_ensemble_grows_only_on_rows_of_every_class_it_knows() -> None:
    rng = np.random.default_rng(0)
    f = pd.DataFrame({"t": np.arange(300.0), "x": rng.normal(size=300), "y": rng.choice(["a", "b", "c"], 300)})
    hgb = "sklearn.ensemble.HistGradientBoostingClassifier"
    base = train_candidate(train_request(f.iloc[:200], hgb, params={"max_iter": 10}))
    two = f.iloc[200:][f["y"].iloc[200:] != "c"]
    assert base.bundle.why_not_grow(two["y"]) == "the new rows hold 2 of the 3 classes the model knows"
    with pytest.raises(TrainingFailed, match=r"learning \d+ new rows into the champion: the new rows hold 2 of the 3 "
                                             "classes the model knows"):
        train_candidate(train_request(two, hgb, mode="warm_start", base=base.bundle, params={"max_iter": 10}))


def test_a_mode_the_estimator_cannot_follow_is_refused_naming_the_field() -> None:
    def model(estimator: str, mode: str) -> ModelSpec:
        return ModelSpec(estimator=estimator, mode=mode)  # type: ignore[arg-type]

    with pytest.raises(SpecError) as e:
        check_model(model("sklearn.linear_model.LogisticRegression", "warm_start"))
    assert e.value.field == "model.mode" and e.value.value == "warm_start"
    assert "needs a River model or an estimator with partial_fit, or an ensemble that grows" in str(e.value)
    with pytest.raises(SpecError, match="model.mode: 'online' needs a River model or an estimator with partial_fit;"):
        check_model(model("sklearn.ensemble.HistGradientBoostingClassifier", "online"))
    for ok in ("sklearn.ensemble.HistGradientBoostingClassifier", "sklearn.ensemble.RandomForestRegressor",
               "sklearn.linear_model.SGDClassifier", "river.forest.ARFClassifier"):
        check_model(model(ok, "warm_start"))
        check_model(model(ok, "auto"))
    with pytest.raises(SpecError, match="model.mode: 'auto' needs a River model or an estimator with partial_fit, "
                       "or an ensemble that grows"):
        check_model(model("sklearn.linear_model.LogisticRegression", "auto"))


def test_estimators_outside_the_allow_list_are_refused() -> None:
    f = make_frame(50)
    with pytest.raises(SpecError, match="allowed import path|under sklearn"):
        train_candidate(train_request(f, "os.system"))
    with pytest.raises(SpecError, match="importable"):
        train_candidate(train_request(f, "sklearn.linear_model.NoSuchModel"))


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


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scikit-learn's own, on the way to failing
def test_a_training_run_failing_on_data_names_the_rows_and_columns() -> None:
    """A value past ±1e38 stored before validation refused it (1e308 made every later fit fail with "Input X
    contains NaN") is named with its column and rows, so the operator knows what to quarantine."""
    f = make_frame(400)
    f["x1"] = f["x1"].astype(float)
    f.loc[[10, 20], "x1"] = 1e308
    f["_time"] = f["t"].astype(float)  # as a snapshot's rows carry their time
    with pytest.raises(TrainingFailed) as e:
        train_candidate(train_request(f, estimator="sklearn.linear_model.LogisticRegression", params={}))
    message = str(e.value)
    assert "Input X contains NaN" in message
    assert "Caused by column 'x1': 2 values past ±1e+38 (row 10 (time 10) = 1e+308, row 20 (time 20) = 1e+308)" \
        in message, message
