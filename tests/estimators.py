"""A user's own estimator, for tests of what the loop does when training breaks."""

from __future__ import annotations

import os
from typing import Any

from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier


class FragileClassifier(LogisticRegression):
    """A logistic regression whose ``fit`` breaks on more than ``max_rows`` rows, with a ``ValueError`` (the
    bad-data error scikit-learn estimators raise) or a ``RuntimeError`` (a bug in the estimator)."""

    def __init__(self, max_rows: int = 500, error: str = "value", C: float = 1.0) -> None:
        super().__init__(C=C)
        self.max_rows = max_rows
        self.error = error

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> FragileClassifier:
        if len(X) > self.max_rows:
            exc = ValueError if self.error == "value" else RuntimeError
            raise exc(f"fragile: {len(X)} rows > max_rows={self.max_rows}")
        return super().fit(X, y, sample_weight)


class BrittleClassifier(KNeighborsClassifier):
    """k-nearest neighbours whose predictions break in a process where ``FRESHLOOP_TEST_BRITTLE`` is set, as a
    model's do when a library it needs changed after it was trained."""

    def _check(self) -> None:
        if os.environ.get("FRESHLOOP_TEST_BRITTLE"):
            raise RuntimeError("brittle: this model cannot predict here")

    def predict(self, X: Any) -> Any:
        self._check()
        return super().predict(X)

    def predict_proba(self, X: Any) -> Any:
        self._check()
        return super().predict_proba(X)


class BrittleOnlineClassifier(GaussianNB):
    """Gaussian naive Bayes (it learns online, with ``partial_fit``) whose predictions break where
    ``FRESHLOOP_TEST_BRITTLE`` is set: an online companion that fails to answer."""

    def predict(self, X: Any) -> Any:
        BrittleClassifier._check(self)  # type: ignore[arg-type]
        return super().predict(X)

    def predict_proba(self, X: Any) -> Any:
        BrittleClassifier._check(self)  # type: ignore[arg-type]
        return super().predict_proba(X)
