"""Hooks for testing a loop on purpose-made failures.

:class:`ShuffledLabelsClassifier` trains on shuffled labels: a candidate that looks like a model and
predicts like noise, to prove that a canary catches what a lenient gate let through.

Examples
--------
>>> import numpy as np
>>> X = np.arange(40, dtype=float).reshape(-1, 1)
>>> y = (X[:, 0] > 20).astype(int)
>>> ShuffledLabelsClassifier(random_state=0).fit(X, y).score(X, y) < 0.8
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

__all__ = ["ShuffledLabelsClassifier"]


class ShuffledLabelsClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> ShuffledLabelsClassifier:
        y = np.asarray(y).copy()
        np.random.default_rng(self.random_state).shuffle(y)
        self.model_ = LogisticRegression().fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.model_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model_.predict_proba(X)
