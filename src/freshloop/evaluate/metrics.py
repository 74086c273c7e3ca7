"""Metrics that know their direction and decompose into per-row scores.

Per-row scores let the gate and the live monitor use the same numbers: a paired bootstrap
resamples rows, and a live metric is a mean over the matured rows with a confidence interval.

Examples
--------
>>> import numpy as np
>>> m = get_metric("accuracy")
>>> m.bigger_is_better, m.score(np.array([1, 0, 1]), np.array([1, 1, 1]), None)
(True, 0.6666666666666666)
>>> get_metric("rmse").score(np.array([0.0, 0.0]), np.array([3.0, 4.0]), None)
3.5355339059327378
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SpecError, param_message

__all__ = ["METRICS", "TASK_METRICS", "Metric", "balance_weights", "class_shares", "default_metric", "get_metric",
           "mean_ci"]


@dataclass(frozen=True)
class Metric:
    name: str
    bigger_is_better: bool
    needs_proba: bool
    _per_row: Callable[[np.ndarray, np.ndarray, np.ndarray | None, list[object]], np.ndarray]
    sqrt: bool = False  # aggregate is sqrt(mean) (rmse)
    by_class: bool = False  # each row weighs by its class's share (see :func:`balance_weights`)

    def per_row(self, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None,
                classes: list[object] | None = None, shares: dict[str, float] | None = None) -> np.ndarray:
        """Each row's score. ``shares`` (a class's share of the rows, keyed by its text) fixes the weights of a
        metric scored by class; without it, the shares of ``y`` itself are used."""
        y = np.asarray(y)
        rows = self._per_row(y, np.asarray(pred), proba, list(classes or []))
        return rows * balance_weights(y, shares) if self.by_class else rows

    def aggregate(self, rows: np.ndarray, axis: int | None = None) -> np.ndarray | float:
        m = np.mean(rows, axis=axis)
        return np.sqrt(m) if self.sqrt else m

    def score(self, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None,
              classes: list[object] | None = None) -> float:
        return float(self.aggregate(self.per_row(y, pred, proba, classes)))

    def better(self, a: float, b: float) -> float:
        """How much better ``a`` is than ``b``, positive when ``a`` wins."""
        return a - b if self.bigger_is_better else b - a


def _true_index(y: np.ndarray, classes: list[object]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(v, -1) for v in y.tolist()])


def _log_loss(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: list[object]) -> np.ndarray:
    assert proba is not None
    idx = _true_index(y, classes)
    p = np.where(idx >= 0, proba[np.arange(len(y)), np.clip(idx, 0, None)], 0.0)
    return -np.log(np.clip(p, 1e-15, 1.0))


def _brier(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: list[object]) -> np.ndarray:
    assert proba is not None
    onehot = np.zeros_like(proba)
    idx = _true_index(y, classes)
    onehot[np.arange(len(y))[idx >= 0], idx[idx >= 0]] = 1.0
    return ((proba - onehot) ** 2).sum(axis=1)


def class_shares(values: Any) -> dict[str, float]:
    """Each value's share of ``values``, keyed by its text (a missing value is a value of its own).

    >>> class_shares([1, 0, 0, 0])
    {'0': 0.75, '1': 0.25}
    """
    keys, counts = np.unique(np.array([str(v) for v in np.asarray(values, dtype=object).tolist()], dtype=object),
                             return_counts=True)
    return {str(k): c / max(int(counts.sum()), 1) for k, c in zip(keys.tolist(), counts.tolist(), strict=True)}


def balance_weights(values: Any, shares: dict[str, float] | None = None) -> np.ndarray:
    """Weights under which each value of ``values`` counts the same: a row of value ``c`` weighs
    ``1 / (k * share(c))`` over ``k`` values (scikit-learn's ``class_weight='balanced'`` for a label), with the
    shares of ``values`` itself unless ``shares`` are given; a value without a share weighs 1.

    Balanced accuracy is the mean of hits weighted so: the mean of the classes' recalls (sklearn's
    ``balanced_accuracy_score``) on the rows the shares come from. The gate scores its holdout in one call and
    uses the holdout's own shares (exact); the rows scored as labels arrive use the shares of the champion's
    training rows, so each row weighs the same whatever the batch it matured in. Training weighs rows by the
    same rule (``model.balance``), and so does the judging of balanced slices.

    >>> y = np.array(["a", "a", "a", "b"])
    >>> w = balance_weights(y)
    >>> w.tolist(), float(np.mean((y == np.array(["a", "a", "b", "a"])) * w))  # recalls 2/3 and 0
    ([0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 2.0], 0.3333333333333333)
    >>> balance_weights(np.array(["b", "c"]), {"a": 0.75, "b": 0.25}).tolist()
    [2.0, 1.0]
    """
    keys = [str(v) for v in np.asarray(values, dtype=object).tolist()]
    if not keys:
        return np.ones(0)
    shares = class_shares(keys) if shares is None else shares
    k = sum(1 for v in shares.values() if v > 0)
    share = np.array([shares.get(key, 0.0) for key in keys], dtype=float)
    return np.where(share > 0, 1.0 / np.maximum(k * share, 1e-12), 1.0)


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", True, False, lambda y, p, _pr, _c: (y == p).astype(float)),
    "balanced_accuracy": Metric("balanced_accuracy", True, False, lambda y, p, _pr, _c: (y == p).astype(float),
                                by_class=True),
    "log_loss": Metric("log_loss", False, True, _log_loss),
    "brier": Metric("brier", False, True, _brier),
    "mae": Metric("mae", False, False, lambda y, p, _pr, _c: np.abs(y.astype(float) - p.astype(float))),
    "rmse": Metric("rmse", False, False, lambda y, p, _pr, _c: (y.astype(float) - p.astype(float)) ** 2,
                   sqrt=True),
}


#: which metrics score which task
TASK_METRICS = {"classification": ("accuracy", "balanced_accuracy", "log_loss", "brier"),
                "regression": ("mae", "rmse")}


def get_metric(name: str, task: str | None = None) -> Metric:
    """The metric called ``name``; with ``task``, refused unless it scores that task.

    >>> try:
    ...     get_metric("accuracy", task="regression")
    ... except SpecError as e:
    ...     print(e.field, e.rule)
    gate.metric metric for the task
    """
    if name not in METRICS:
        raise SpecError(param_message("metric", "gate", f"one of {sorted(METRICS)}", name),
                        field="gate.metric", value=name)
    if task is not None and name not in TASK_METRICS[task]:
        raise SpecError(param_message("metric", "gate", f"one of {list(TASK_METRICS[task])} for a {task}", name),
                        field="gate.metric", rule="metric for the task", value=name)
    return METRICS[name]


def default_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "rmse"


def mean_ci(rows: np.ndarray, metric: Metric, confidence: float = 0.9) -> tuple[float, float, float]:
    """Metric with a normal-approximation CI over per-row scores (the live-quality interval).

    >>> tuple(round(v, 4) for v in mean_ci(np.array([1.0] * 80 + [0.0] * 20), get_metric("accuracy"), 0.9))
    (0.8, 0.7339, 0.8661)
    """
    from scipy.stats import norm

    n = len(rows)
    m = float(np.mean(rows))
    if n < 2:
        return (float(metric.aggregate(rows)), -np.inf, np.inf)
    half = float(norm.ppf(0.5 + confidence / 2) * np.std(rows, ddof=1) / np.sqrt(n))
    lo, hi = m - half, m + half
    if metric.sqrt:
        return (float(np.sqrt(m)), float(np.sqrt(max(lo, 0.0))), float(np.sqrt(hi)))
    return (m, lo, hi)
