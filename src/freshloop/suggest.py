"""A starting spec for a data set nobody has tuned: what ``freshloop init`` writes.

Features and the task are inferred; the window, batch size and warm-up scale with the data; when
there is no time column the row number is the clock (1 row = 1 s) and durations are counted in rows.
The model family is chosen on the warm-up rows only (the first rows in time order, what a replay
trains its first model on): gradient boosting and a linear model are fitted on their first three
quarters and scored on the last quarter; the linear model is kept only when it scores better. Later
rows are never looked at, so a replay of the same file stays an honest forecast.

Examples
--------
>>> import numpy as np, pandas as pd
>>> frame = pd.DataFrame({"x": np.arange(1000) % 7, "y": np.arange(1000) % 2})
>>> spec, schema, choice = suggest_spec(frame, label="y", name="demo")
>>> spec["model"]["estimator"], spec["replay"]["batch"], spec["policy"]["cooldown"]
('sklearn.ensemble.HistGradientBoostingClassifier', {'rows': 10}, '20rows')
>>> choice["chosen"].rsplit(".", 1)[1], len(choice["scores"]), choice["rows"]
('HistGradientBoostingClassifier', 2, 200)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from .data.schema import Schema, infer_schema
from .data.validate import to_seconds
from .evaluate.metrics import default_metric, get_metric
from .spec import DataSpec, load_spec_dict

__all__ = ["choose_model", "suggest_spec"]

_BOOSTING = {"classification": "sklearn.ensemble.HistGradientBoostingClassifier",
             "regression": "sklearn.ensemble.HistGradientBoostingRegressor"}
_LINEAR = {"classification": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
           "regression": ("sklearn.linear_model.Ridge", {})}


def choose_model(rows: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Gradient boosting or a linear model for ``rows`` (in time order): each is fitted on the first three
    quarters and scored on the last one with the task's default metric; boosting unless linear wins.

    Returns the chosen estimator, its params and scaling, the scores, and the rows used."""
    from .train.model import ModelBundle

    boosting = _BOOSTING[schema.task]
    linear, linear_params = _LINEAR[schema.task]
    found: dict[str, Any] = {"chosen": boosting, "params": {}, "scale": False, "scores": {}, "rows": len(rows)}
    y = rows[schema.label]
    usable = y.notna().to_numpy()
    rows, y = rows[usable].reset_index(drop=True), y[usable].reset_index(drop=True)
    cut = int(len(rows) * 0.75)
    if cut < 50 or len(rows) - cut < 50 or (schema.task == "classification" and y.iloc[:cut].nunique() < 2):
        return found  # too few rows to tell the families apart
    metric = get_metric(default_metric(schema.task))
    classes = list(schema.classes or ())
    for est, params, scale in ((boosting, {}, False), (linear, linear_params, True)):
        bundle = ModelBundle(schema, est, params, seed=0, scale=scale)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a linear model that does not converge is simply scored
            try:
                bundle.fit(rows.iloc[:cut], y.iloc[:cut])
                pred, proba = bundle.predict(rows.iloc[cut:])
            except ValueError:  # a family that cannot fit these rows is not a candidate
                continue
        truth = bundle._target(y.iloc[cut:]).to_numpy()
        found["scores"][est] = round(metric.score(truth, pred, proba, classes), 6)
    scores = found["scores"]
    if linear in scores and (boosting not in scores or metric.better(scores[linear], scores[boosting]) > 0):
        found.update(chosen=linear, params=linear_params, scale=True)
    return found


def suggest_spec(frame: pd.DataFrame, *, label: str, name: str, time: str | None = None,
                 time_unit: str = "s") -> tuple[dict[str, Any], Schema, dict[str, Any]]:
    """The spec, the inferred schema, and how the model family was chosen (:func:`choose_model`)."""
    dspec = DataSpec.model_validate({"label": label, "time": time, "time_unit": time_unit})
    schema = infer_schema(frame, dspec)
    n = len(frame)
    batch_rows = max(10, min(500, n // 100))
    warmup = max(200, min(5000, n // 10))
    if time is not None:  # the warm-up is the first rows in time order, as a replay takes them
        secs, _ = to_seconds(frame[time], time_unit)
        first = frame.iloc[np.argsort(secs.to_numpy(dtype=float), kind="stable")[:warmup]]
    else:
        first = frame.iloc[:warmup]
    choice = choose_model(first, schema)
    spec: dict[str, Any] = {
        "name": name,
        "data": {"label": label, "task": schema.task, "time": time, "time_unit": time_unit,
                 "features": [{"name": f.name, "kind": f.kind} for f in schema.features]},
        "model": {"estimator": choice["chosen"], "params": choice["params"], "scale": choice["scale"],
                  "window": {"rows": max(1000, min(20000, n // 4))}},
        "replay": {"batch": {"rows": batch_rows}, "label_delay": "0s", "warmup": warmup},
    }
    if time is None:
        # no time column: the row number is the clock (1 row = 1 s), so durations are counted in rows
        spec["data"].pop("time")
        spec["policy"] = {"cooldown": f"{2 * batch_rows}rows",
                          "triggers": {"drift": {}, "quality": {}, "detector": "adwin",
                                       "staleness": f"{max(20 * batch_rows, n // 4)}rows"}}
    load_spec_dict(spec)  # what we suggest must itself be valid
    return spec, schema, choice
