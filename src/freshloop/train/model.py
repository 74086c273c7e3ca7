"""The served model: a feature encoder locked to the schema plus any sklearn-API or River estimator.

Categoricals are one-hot encoded against the domains learned at schema lock and numerics are kept as
floats, so every version of a loop reads rows the same way. Estimators are named by import path and
must come from an allowed package (``sklearn``, ``river``, ``freshloop``) or be listed in
``FRESHLOOP_ALLOWED_ESTIMATORS``; the spec never makes freshloop import arbitrary code.

Examples
--------
>>> import pandas as pd
>>> from freshloop.data.schema import Feature, Schema
>>> schema = Schema("y", "classification", (Feature("x", "numeric", 0, 1), Feature("c", "categorical",
...                 categories=("a", "b"))), classes=(0, 1))
>>> m = ModelBundle(schema, "sklearn.linear_model.LogisticRegression", {}, seed=0)
>>> frame = pd.DataFrame({"x": [0.1, 0.9, 0.2, 0.8], "c": ["a", "b", "a", "b"]})
>>> m.fit(frame, pd.Series([0, 1, 0, 1])).predict(frame)[0].tolist()
[0, 1, 0, 1]
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from typing import Any

import numpy as np
import pandas as pd

from ..data.numbers import bool_cells
from ..data.schema import Schema
from ..errors import InvalidValueError, SpecError, param_message
from ..spec import ModelSpec
from .compiled import Compiled, compile_pipeline

__all__ = ["MAX_GROWTH", "ModelBundle", "check_companion", "check_mode", "check_model", "grows", "import_estimator",
           "is_river", "learns_online"]

_ALLOWED_PREFIXES = ("sklearn.", "river.", "freshloop.")
_TREES = ("sklearn.ensemble.", "sklearn.tree.")
_CHECK_ROWS = 256  # fitted rows kept to check a compiled form of the model against the model itself

Rows = pd.DataFrame | list[dict[str, Any]]  # a frame, or the records a request carries


def _number(v: Any) -> float:
    """One cell as ``pd.to_numeric(errors="coerce")`` reads it: text is parsed, anything else is NaN."""
    if v is None:
        return np.nan
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def import_estimator(path: str, owner: str = "model") -> type:
    """The estimator class at ``path``, refusing packages outside the allow-list (errors name ``owner``'s
    estimator: ``model``, or ``model.companion``)."""
    extra = tuple(p for p in os.environ.get("FRESHLOOP_ALLOWED_ESTIMATORS", "").split(",") if p)
    if not path.startswith(_ALLOWED_PREFIXES + extra) or "." not in path:
        raise SpecError(param_message("estimator", owner, "an import path under sklearn., river. or "
                                      "freshloop. (or listed in FRESHLOOP_ALLOWED_ESTIMATORS)", path),
                        field=f"{owner}.estimator", rule="allowed import path", value=path)
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise SpecError(param_message("estimator", owner, "an importable class", path),
                        field=f"{owner}.estimator", rule="importable", value=path) from None
    if not inspect.isclass(cls) or not _is_estimator(cls):
        # the spec's params are passed to the class: only an estimator, whose constructor just keeps them, is
        # built (a file class under an allowed package would open the file the params name)
        raise SpecError(param_message("estimator", owner, "an estimator class (scikit-learn's BaseEstimator "
                                      "with fit and predict, or a River estimator)", path),
                        field=f"{owner}.estimator", rule="estimator class", value=path)
    return cls


def _is_estimator(cls: type) -> bool:
    from sklearn.base import BaseEstimator

    if issubclass(cls, BaseEstimator):
        return callable(getattr(cls, "fit", None)) and callable(getattr(cls, "predict", None))
    try:
        from river.base import Estimator
    except ImportError:
        return False
    return issubclass(cls, Estimator) and callable(getattr(cls, "learn_one", None)) and \
        callable(getattr(cls, "predict_one", None))


def check_model(model: ModelSpec) -> None:
    """Refuse, before any work, a model the loop could not build: an estimator outside the allow-list or not
    importable, or a parameter its constructor does not take (named with the ones it does); a companion that
    cannot learn online; a mode the estimator cannot follow."""
    check_companion(model)
    check_mode(model)
    cls = import_estimator(model.estimator)
    sig = inspect.signature(cls)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    unknown = sorted(set(model.params) - set(sig.parameters))
    if unknown:
        raise SpecError(f"model.params.{unknown[0]}: {model.estimator} takes no parameter {unknown[0]!r} (rule: "
                        f"parameters of the estimator: {', '.join(sorted(sig.parameters))}).",
                        field=f"model.params.{unknown[0]}", rule="estimator parameter", value=unknown[0])


def learns_online(path: str, owner: str = "model") -> bool:
    """Whether the estimator at ``path`` learns one batch at a time: a River model, or one with ``partial_fit``
    (what :meth:`ModelBundle.learn` calls)."""
    return is_river(path) or hasattr(import_estimator(path, owner), "partial_fit")


MAX_GROWTH = 4  # a grown ensemble holds at most this many times the trees of its full fit; then it is refitted


def _tree_count(cls: type) -> str | None:
    """The parameter that counts an ensemble's trees, for scikit-learn's ensembles that grow with ``warm_start``
    (``max_iter``: histogram gradient boosting; ``n_estimators``: forests, gradient boosting, bagging)."""
    from sklearn.ensemble import BaseEnsemble

    accepted = _parameters(cls)
    if "warm_start" not in accepted:
        return None
    if any(b.__name__ == "BaseHistGradientBoosting" for b in cls.__mro__):
        return "max_iter"
    return "n_estimators" if issubclass(cls, BaseEnsemble) and "n_estimators" in accepted else None


def grows(path: str, owner: str = "model") -> bool:
    """Whether the estimator at ``path`` is an ensemble that grows on new rows (its new trees learn them)."""
    return _tree_count(import_estimator(path, owner)) is not None


def check_mode(model: ModelSpec) -> None:
    """Refuse a mode the estimator cannot follow: ``online`` learns each batch of labels (a River model or
    ``partial_fit``); ``warm_start`` (and ``auto``, which warm-starts some retrains) learns the new rows into the
    champion, which an ensemble that grows can too."""
    if model.mode == "full":
        return
    warm = model.mode in ("warm_start", "auto")
    if learns_online(model.estimator) or (warm and grows(model.estimator)):
        return
    can = "a River model or an estimator with partial_fit" + (
        ", or an ensemble that grows (warm_start with max_iter or n_estimators)" if warm else "")
    raise SpecError(f"model.mode: {model.mode!r} needs {can}; {model.estimator} is neither (rule: the mode learns "
                    f"new rows into the serving model). Use mode: full.", field="model.mode",
                    rule=f"{model.mode} needs a model that learns new rows", value=model.mode)


def check_companion(model: ModelSpec) -> None:
    """Refuse an online companion (``model.companion``) that cannot learn one batch at a time."""
    path = model.companion.estimator if model.companion is not None and model.companion.refit is None else None
    if path is not None and not learns_online(path, "model.companion"):
        raise SpecError(param_message("estimator", "model.companion", "a River model or an estimator with "
                                      "partial_fit (it learns each matured label)", path),
                        field="model.companion.estimator", rule="learns online", value=path)


@functools.lru_cache(maxsize=256)
def _parameters(cls: type) -> frozenset[str]:
    """The constructor's parameter names (inspecting a signature costs more than a small fit's set-up)."""
    return frozenset(inspect.signature(cls).parameters)


def is_river(path: str) -> bool:
    return path.startswith("river.")


class ModelBundle:
    """Encoder + estimator; what the registry stores and the router serves."""

    def __init__(self, schema: Schema, estimator: str, params: dict[str, Any], *, seed: int = 0,
                 scale: bool | None = None) -> None:
        self.schema = schema
        self.estimator = estimator
        self.params = dict(params)
        self.seed = seed
        # trees split on the order of values, which scaling keeps: for them it is work that changes nothing
        self.scale = scale if scale is not None else not estimator.startswith(_TREES)
        self._columns = self._encoded_columns()
        self.model_ = self._build()
        self.rows_seen_ = 0
        self._check_rows: np.ndarray | None = None
        self._compiled: Compiled | None = None
        self._generation = 0  # counts the model's changes: a compile that raced one is not kept
        self.serving: str | None = None  # how small batches are predicted, once :meth:`compile` has run
        # A classifier with the scikit-learn API learns the classes as their positions in schema.classes
        # (0..k-1) and its answers are decoded back: every such estimator takes those (XGBoost takes nothing
        # else), whatever the label's type (bool, text, numbers). River models learn the labels themselves.
        self.label_codes = schema.task == "classification" and not is_river(estimator)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"], state["serving"] = None, None  # compiled again where it is loaded
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_check_rows": None, "_compiled": None, "_generation": 0, "serving": None,
                              "label_codes": False, **state})  # a bundle pickled before label codes: raw labels

    # -- construction -------------------------------------------------------------------------
    def _encoded_columns(self) -> list[str]:
        cols: list[str] = []
        for f in self.schema.features:
            cols.extend([f.name] if f.kind == "numeric" else [f"{f.name}={c}" for c in f.categories])
        return cols

    def _build(self) -> Any:
        cls = import_estimator(self.estimator)
        params = dict(self.params)
        accepted = _parameters(cls)
        for seed_param in ("random_state", "seed"):
            if seed_param in accepted and seed_param not in params:
                params[seed_param] = self.seed
        try:
            est = cls(**params)
        except TypeError as e:
            raise SpecError(f"model.params: {e} (rule: parameters of {self.estimator}).",
                            field="model.params", value=self.params) from None
        if is_river(self.estimator):
            if self.scale and self.estimator.startswith("river.linear_model."):
                from river import preprocessing

                return preprocessing.StandardScaler() | est
            return est
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        steps: list[Any] = [SimpleImputer(strategy="median", keep_empty_features=True)]
        if self.scale:
            steps.append(StandardScaler())
        return make_pipeline(*steps, est)

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, frame: Rows) -> np.ndarray:
        """The model's input matrix: numbers as floats (missing: NaN), categories one-hot.

        A list of records (what a request carries) is encoded without building a DataFrame, to the same
        matrix (held to it by a hypothesis test)."""
        if isinstance(frame, list):
            return self._encode_records(frame)
        parts: list[np.ndarray] = []
        n = len(frame)
        for f in self.schema.features:
            if f.name not in frame:
                parts.append(np.full((n, 1 if f.kind == "numeric" else len(f.categories)), np.nan))
                continue
            col = frame[f.name]
            if f.kind == "numeric":
                if not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
                    col = pd.to_numeric(col, errors="coerce")  # text and objects; numbers are read as they are
                parts.append(col.to_numpy(dtype=float, na_value=np.nan)[:, None])
            elif f.categories:
                # -1 for missing and unseen values (pandas deprecates unseen values in a typed Categorical)
                codes = pd.Index(list(f.categories)).get_indexer(pd.Index(col.astype("string").astype(object)))
                onehot = np.zeros((n, len(f.categories)))
                known = codes >= 0
                onehot[np.flatnonzero(known), codes[known]] = 1.0
                parts.append(onehot)
        return np.hstack(parts) if parts else np.empty((n, 0))

    def _encode_records(self, rows: list[dict[str, Any]]) -> np.ndarray:
        n = len(rows)
        parts: list[np.ndarray] = []
        for f in self.schema.features:
            if f.kind == "numeric":
                if not any(f.name in r for r in rows):
                    parts.append(np.full((n, 1), np.nan))
                    continue
                parts.append(np.array([[_number(r.get(f.name))] for r in rows], dtype=float))
            elif f.categories:
                if not any(f.name in r for r in rows):
                    parts.append(np.full((n, len(f.categories)), np.nan))
                    continue
                index = {c: i for i, c in enumerate(f.categories)}
                onehot = np.zeros((n, len(f.categories)))
                for i, r in enumerate(rows):
                    v = r.get(f.name)
                    j = None if v is None or (isinstance(v, float) and v != v) else index.get(str(v))
                    if j is not None:
                        onehot[i, j] = 1.0
                parts.append(onehot)
        return np.hstack(parts) if parts else np.empty((n, 0))

    def _records(self, frame: Rows) -> list[dict[str, Any]]:
        x = self.encode(frame)
        return [{c: v for c, v in zip(self._columns, row, strict=True) if v == v} for row in x]

    # -- learning -----------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame, y: pd.Series, weights: np.ndarray | None = None) -> ModelBundle:
        """A full fit from scratch (River models learn the rows one by one); ``weights``, one per row, for an
        estimator whose fit takes ``sample_weight``."""
        y = self.target(y)
        self.model_ = self._build()
        self.rows_seen_ = 0
        if is_river(self.estimator):
            if weights is not None:
                raise ValueError(f"{self.estimator} learns one row at a time: it takes no row weights")
            return self.learn(frame, y)
        self.first_trees_: int | None = None
        xs = self.encode(frame)
        if weights is not None:
            name, est = self.model_.steps[-1]
            if "sample_weight" not in inspect.signature(est.fit).parameters:
                raise ValueError(f"{self.estimator}.fit takes no sample_weight: rows cannot be weighted by age")
            self.model_.fit(xs, self._codes(y), **{f"{name}__sample_weight": weights})
        else:
            self.model_.fit(xs, self._codes(y))
        self.rows_seen_ = len(y)
        self.first_trees_ = self.trees()
        self._fitted(xs)
        return self

    def _fitted(self, xs: np.ndarray) -> None:
        """The model changed: forget its compiled form, keep rows to check the next one against."""
        self._generation += 1
        self._compiled, self.serving = None, None
        if len(xs):
            at = np.unique(np.linspace(0, len(xs) - 1, min(_CHECK_ROWS, len(xs))).astype(np.int64))
            self._check_rows = np.array(xs[at], dtype=np.float64)

    def compile(self) -> str:
        """Compile the model for small batches if it can be (see :mod:`freshloop.train.compiled`).

        Returns how small batches will be predicted; :meth:`predict` calls it on its first small batch,
        and the loop calls it before a version starts to serve so no request waits for it."""
        serving = self.serving
        if serving is None:
            if is_river(self.estimator):
                serving = self.serving = "river"
            elif self._check_rows is None:
                serving = self.serving = "scikit-learn (no fitted rows to check a compiled form against)"
            else:
                # an online model may learn while a request compiles it: keep only a form of the model as it is
                generation = self._generation
                compiled, serving = compile_pipeline(self.model_, self._check_rows)
                if generation == self._generation:
                    self._compiled, self.serving = compiled, serving
        return serving

    def learn(self, frame: pd.DataFrame, y: pd.Series) -> ModelBundle:
        """Incremental update: River ``learn_one`` per row, or sklearn ``partial_fit``."""
        y = self.target(y)
        if is_river(self.estimator):
            for x, target in zip(self._records(frame), y.tolist(), strict=True):
                self.model_.learn_one(x, target)
        elif not hasattr(self.model_.steps[-1][1], "partial_fit"):
            self._grow(frame, y)
        else:
            xs = raw = self.encode(frame)
            *pre, (name, est) = self.model_.steps
            if self.rows_seen_ == 0:
                for _, step in pre:
                    step.fit(xs)
            for _, step in pre:
                xs = step.transform(xs)
            kwargs = {"classes": np.arange(len(self.schema.classes or ())) if self.label_codes
                      else np.array(self.schema.classes)} if self.schema.task == "classification" else {}
            est.partial_fit(xs, self._codes(y), **kwargs)
            self._fitted(raw)
        self.rows_seen_ += len(y)
        return self

    def trees(self) -> int | None:
        """How many trees a fitted ensemble that grows holds (None for other models)."""
        if is_river(self.estimator) or not hasattr(self.model_, "steps"):
            return None
        est = self.model_.steps[-1][1]
        count = _tree_count(type(est))
        if count == "max_iter" and hasattr(est, "n_iter_"):
            return int(est.n_iter_)
        return len(est.estimators_) if count == "n_estimators" and hasattr(est, "estimators_") else None

    def why_not_grow(self, y: pd.Series) -> str | None:
        """Why this ensemble cannot grow on new rows labeled ``y``, or None when it can: it must have been
        fitted in full, hold fewer than :data:`MAX_GROWTH` times its full fit's trees, and the rows must hold
        every class it knows (new trees that never saw a class break the ensemble's probabilities)."""
        first, now = getattr(self, "first_trees_", None), self.trees()
        if first is None or now is None:
            return f"{self.estimator} is not an ensemble fitted in full"
        if now >= MAX_GROWTH * first:
            return f"the ensemble reached {MAX_GROWTH}x the trees of its full fit ({now} trees)"
        known = getattr(self.model_.steps[-1][1], "classes_", None)
        codes = np.unique(self._codes(self.target(y))) if len(y) else np.array([])
        if known is not None and set(codes.tolist()) != set(np.asarray(known).tolist()):
            return f"the new rows hold {len(codes)} of the {len(known)} classes the model knows"
        return None

    def _grow(self, frame: pd.DataFrame, y: pd.Series) -> None:
        """New trees on the new rows (scikit-learn's ``warm_start``), as many more as the rows are a share of
        those it has learned (at least one, up to :data:`MAX_GROWTH` times its full fit's): the ensemble's older
        trees keep what the older rows taught."""
        why = self.why_not_grow(y)
        if why is not None:
            raise ValueError(f"{why} (rule: an ensemble grows on rows of every class it knows, to "
                             f"{MAX_GROWTH}x its full fit); a full fit learns them")
        *pre, (_, est) = self.model_.steps
        now, first = int(self.trees() or 0), int(self.first_trees_ or 0)
        xs = raw = self.encode(frame)
        for _, step in pre:
            xs = step.transform(xs)
        more = min(max(1, int(np.ceil(now * len(y) / max(self.rows_seen_, 1)))), MAX_GROWTH * first - now)
        est.set_params(warm_start=True, **{str(_tree_count(type(est))): now + more})
        est.fit(xs, self._codes(y))
        self._fitted(raw)

    def target(self, y: pd.Series) -> pd.Series:
        """Labels typed as the model learns and predicts them (float, bool, int or text), index reset."""
        if self.schema.task == "regression":
            return y.astype(float).reset_index(drop=True)
        classes = self.schema.classes or ()
        if classes and all(isinstance(c, bool) for c in classes):
            return bool_cells(y).reset_index(drop=True)
        if classes and all(isinstance(c, int) for c in classes):
            return y.astype(int).reset_index(drop=True)
        return y.astype(str).reset_index(drop=True)

    def _codes(self, y: pd.Series) -> np.ndarray:
        """What the estimator learns: each label's position in schema.classes, or the label itself."""
        if not self.label_codes:
            return y.to_numpy()
        codes = pd.Index(list(self.schema.classes or ())).get_indexer(y)
        if (codes < 0).any():
            bad = y[codes < 0].iloc[0]
            raise InvalidValueError(f"label {bad!r} is not one of the schema's classes "
                                    f"{list(self.schema.classes or ())!r}", field="label", value=bad)
        return codes

    def _decoded(self, codes: np.ndarray) -> np.ndarray:
        classes = list(self.schema.classes or ())
        return np.array(classes, dtype=object)[np.asarray(codes, dtype=np.int64)].astype(type(classes[0]))

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, frame: Rows) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and, for classifiers, probabilities aligned to ``schema.classes``."""
        if len(frame) == 0:
            return np.empty(0), None
        classes = list(self.schema.classes or ())
        if is_river(self.estimator):
            recs = self._records(frame)
            if self.schema.task == "regression":
                return np.array([self.model_.predict_one(x) or 0.0 for x in recs], dtype=float), None
            proba = np.zeros((len(recs), len(classes)))
            for i, x in enumerate(recs):
                for c, p in self.model_.predict_proba_one(x).items():
                    if c in classes:
                        proba[i, classes.index(c)] = p
            empty = proba.sum(axis=1) == 0
            proba[empty] = 1.0 / len(classes)
            proba /= proba.sum(axis=1, keepdims=True)
            return np.array(classes, dtype=object)[proba.argmax(axis=1)].astype(type(classes[0])), proba
        xs = self.encode(frame)
        self.compile()
        compiled = self._compiled
        if compiled is not None and compiled.max_rows is not None and len(xs) > compiled.max_rows:
            compiled = None  # a large batch: scikit-learn's parallel loop over the trees is faster
        if self.schema.task == "regression" or not hasattr(self.model_, "predict_proba"):
            out = compiled.output(xs) if compiled else np.asarray(self.model_.predict(xs))
            return (self._decoded(out) if self.label_codes else out), None
        raw = compiled.output(xs) if compiled else self.model_.predict_proba(xs)
        proba = np.zeros((len(xs), len(classes)))
        learned = np.asarray(self.model_.classes_)
        for j, c in enumerate(learned):
            if self.label_codes:
                proba[:, int(c)] = raw[:, j]
            elif c in classes:
                proba[:, classes.index(c)] = raw[:, j]
        pred = learned[raw.argmax(axis=1)]
        return (self._decoded(pred) if self.label_codes else pred), proba

    def __repr__(self) -> str:
        return f"ModelBundle({self.estimator}, params={self.params}, seed={self.seed})"
