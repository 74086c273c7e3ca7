"""Small-batch prediction without scikit-learn's per-call overhead: the fitted pipeline, compiled, checked.

A served request carries one row, and for one row scikit-learn's input checks cost more than the model:
the median imputer ~0.07 ms, the scaler ~0.07 ms, a logistic regression ~0.07 ms, while the arithmetic is
a few microseconds. Trees are worse: scikit-learn predicts a 100-tree HistGradientBoosting model tree
by tree from Python (~0.55 ms a row). A :class:`Compiled` does the same arithmetic directly: a linear
model as one matrix product, a tree ensemble through Treelite's GTIL, which walks every tree in one C++
call (~0.03 ms). For large batches scikit-learn's own parallel loop over trees is faster, so compiled
trees serve only batches up to :data:`SMALL_BATCH` rows. A compiled form serves only once it has
reproduced the pipeline's outputs on rows the model was fitted on (:func:`compile_pipeline` says why
when it does not).

The preprocessing is what :class:`~freshloop.train.model.ModelBundle` builds: a ``SimpleImputer`` and
optionally a ``StandardScaler``, applied here with the same arithmetic. Margins (a boosted model's, a
linear classifier's) are linked as scikit-learn links them: ``expit`` for two classes, ``softmax`` for
more, none for a regressor. Treelite's own link computes in single precision, so it is not used.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SMALL_BATCH", "Compiled", "compile_pipeline"]

SMALL_BATCH = 64  # rows up to which one compiled thread beats scikit-learn with margin (100 trees: ~128)
_TOLERANCE = 1e-9  # largest difference from the pipeline's own output that the check accepts

# estimators Treelite imports; boosted ones are read as margins, trees of sklearn.tree compare in float32
_BOOSTED = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor",
            "GradientBoostingClassifier", "GradientBoostingRegressor")
_AVERAGED = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")
_FLOAT32 = ("GradientBoostingClassifier", "GradientBoostingRegressor") + _AVERAGED


@dataclass
class Compiled:
    """A fitted pipeline's arithmetic without scikit-learn's per-call input checks."""

    fill: np.ndarray | None  # SimpleImputer.statistics_: the value a missing cell becomes
    mean: np.ndarray | None  # StandardScaler.mean_ (None: not centred)
    scale: np.ndarray | None  # StandardScaler.scale_ (None: not scaled)
    classes: int  # 0 for a regressor
    linked: bool  # the core gives margins, linked here as scikit-learn links them
    trees: Any = None  # treelite.Model
    float32: bool = False  # trees of sklearn.tree compare features in single precision
    coef: np.ndarray | None = None  # a linear model's (outputs × features) coefficients
    intercept: np.ndarray | None = None

    @property
    def max_rows(self) -> int | None:
        """The largest batch it serves: trees up to :data:`SMALL_BATCH`, a matrix product any batch."""
        return None if self.coef is not None else SMALL_BATCH

    def output(self, xs: np.ndarray) -> np.ndarray:
        """``predict_proba`` for a classifier, ``predict`` for a regressor, as the pipeline computes them."""
        from scipy.special import expit, softmax

        x = np.array(xs, dtype=np.float64)  # a copy: the steps below work in place, as scikit-learn's do
        if self.fill is not None:
            missing = np.isnan(x)
            if missing.any():
                x[missing] = np.broadcast_to(self.fill, x.shape)[missing]
        if self.mean is not None:
            x -= self.mean
        if self.scale is not None:
            x /= self.scale
        if self.coef is not None:
            out = x @ self.coef.T + self.intercept
        else:
            from treelite import gtil

            if self.float32:
                x = x.astype(np.float32).astype(np.float64)
            out = gtil.predict(self.trees, x, nthread=1, pred_margin=self.linked).reshape(len(x), -1)
        if self.classes == 0:
            return out[:, 0]
        if not self.linked:
            return out
        if self.classes == 2:
            p = expit(out[:, 0])
            return np.column_stack([1.0 - p, p])
        return softmax(out, axis=1)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v


def _core(est: Any, classes: int) -> tuple[dict[str, Any] | None, str]:
    """What :class:`Compiled` needs of the final estimator, or why it cannot stand in for it."""
    name = type(est).__name__
    module = type(est).__module__
    if module.startswith("sklearn.ensemble") and name in _BOOSTED + _AVERAGED:
        try:
            import treelite
        except ImportError:  # an optional speed-up: without it scikit-learn serves every batch
            return None, "scikit-learn (treelite is not installed)"
        try:
            model = treelite.sklearn.import_model(est)
        except Exception as e:  # noqa: BLE001 - any estimator Treelite cannot read is served by scikit-learn
            return None, f"scikit-learn (Treelite cannot import {name}: {e})"
        version = importlib.metadata.version("treelite")
        return ({"trees": model, "float32": name in _FLOAT32, "linked": name in _BOOSTED},
                f"treelite {version} up to {SMALL_BATCH} rows")
    if module.startswith("sklearn.linear_model") and hasattr(est, "coef_") and hasattr(est, "intercept_"):
        coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64))
        if coef.shape[0] != intercept.shape[0]:
            return None, f"scikit-learn ({name} has {coef.shape[0]} outputs and {intercept.shape[0]} intercepts)"
        return {"coef": coef, "intercept": intercept, "linked": bool(classes)}, "coefficients, every batch"
    return None, f"scikit-learn ({name} is neither a tree ensemble Treelite reads nor a linear model)"


def compile_pipeline(pipeline: Any, check_rows: np.ndarray) -> tuple[Compiled | None, str]:
    """The compiled form of a fitted pipeline and how it serves, or ``None`` and why it cannot.

    The compiled form must give the pipeline's own outputs on ``check_rows`` (rows it was fitted on)
    within 1e-9, and the same predicted classes; otherwise scikit-learn keeps serving every batch."""
    steps = [step for _, step in getattr(pipeline, "steps", [])]
    if not steps:
        return None, "scikit-learn (not a pipeline)"
    *pre, est = steps
    fill = mean = scale = None
    for step in pre:
        kind = type(step).__name__
        if kind == "SimpleImputer" and _is_nan(step.missing_values) and not step.add_indicator:
            fill = np.asarray(step.statistics_, dtype=np.float64)
        elif kind == "StandardScaler":
            mean = None if step.mean_ is None else np.asarray(step.mean_, dtype=np.float64)
            scale = None if step.scale_ is None else np.asarray(step.scale_, dtype=np.float64)
        else:
            return None, f"scikit-learn (a {kind} step)"
    proba = hasattr(pipeline, "predict_proba")
    classes = len(est.classes_) if hasattr(est, "classes_") else 0
    if classes and not proba:
        return None, f"scikit-learn ({type(est).__name__} gives no probabilities)"
    core, how = _core(est, classes)
    if core is None:
        return None, how
    if len(check_rows) == 0:
        return None, "scikit-learn (no rows to check the compiled form on)"
    compiled = Compiled(fill, mean, scale, classes, **core)
    want = pipeline.predict_proba(check_rows) if classes else pipeline.predict(check_rows)
    try:
        got = compiled.output(check_rows)
    except ValueError as e:  # shapes that do not line up: an estimator this module misreads
        return None, f"scikit-learn (the compiled form fails on the check rows: {e})"
    if got.shape != want.shape:
        return None, f"scikit-learn (the compiled form gives shape {got.shape}, the pipeline {want.shape})"
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not diff <= _TOLERANCE:
        return None, f"scikit-learn (the compiled form differs by {diff:.1e} on the check rows)"
    if classes and not np.array_equal(got.argmax(axis=1), want.argmax(axis=1)):
        return None, "scikit-learn (the compiled form predicts other classes on the check rows)"
    return compiled, how
