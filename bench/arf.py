"""River ARF alone, prequential under a label delay: the baseline every replay is compared with.

Kept apart from the suite so that a process running it (a parallel seed) imports River and pandas only,
and its memory is ARF's, not the benchmark's.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import pandas as pd


def arf_delayed(frame: pd.DataFrame, label: str, features: list[str], delay_rows: int, warmup: int,
                seed: int = 42) -> dict[str, Any]:
    """River ARF, per row: predict on arrival, learn each label `delay_rows` rows later."""
    from river import forest

    model = forest.ARFClassifier(seed=seed)
    pending: deque[tuple[dict[str, Any], Any]] = deque()
    correct = scored = 0
    started = time.perf_counter()
    for i, row in enumerate(frame[features + [label]].itertuples(index=False)):
        x = dict(zip(features, row[:-1], strict=True))
        y = row[-1]
        if i >= warmup:
            scored += 1
            correct += int(model.predict_one(x) == y)
        pending.append((x, y))
        while len(pending) > delay_rows:
            model.learn_one(*pending.popleft())
    return {"metric": correct / max(scored, 1), "seconds": time.perf_counter() - started, "rows": len(frame)}


def refit_batches(frame: pd.DataFrame, label: str, features: list[str], batch: int, delay_rows: int, warmup: int,
                  estimator: str, params: dict[str, Any], scale: bool, rows: int) -> dict[str, Any]:
    """The spec's own model fitted anew at the start of every batch on the last ``rows`` rows whose labels have
    matured (``delay_rows`` rows later), and scored on that batch: the simplest adaptation there is. A window
    of one class predicts that class."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from freshloop.train.model import import_estimator

    x, y = frame[features], frame[label].to_numpy()
    cats = [c for c in features if not pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c])]
    nums = [c for c in features if c not in cats]
    cls = import_estimator(estimator)
    correct = scored = fitted = 0
    started = time.perf_counter()
    for start in range(warmup, len(frame), batch):
        known = max(start - delay_rows, 0)  # rows before this one have their labels
        lo = max(known - rows, 0)
        part = y[lo:known]
        end = min(start + batch, len(frame))
        if len(set(part.tolist())) > 1:
            steps = ColumnTransformer([("num", StandardScaler() if scale else "passthrough", nums),
                                       ("cat", OneHotEncoder(handle_unknown="ignore"), cats)])
            model = make_pipeline(steps, cls(**params)).fit(x.iloc[lo:known], part)
            pred = model.predict(x.iloc[start:end])
            fitted += known - lo
        elif len(part):
            pred = [part[0]] * (end - start)
        else:
            continue
        correct += int((pred == y[start:end]).sum())
        scored += end - start
    return {"metric": correct / max(scored, 1), "seconds": time.perf_counter() - started, "rows": fitted}
