"""A starting spec for a data set nobody has tuned: what ``freshloop init`` writes.

Features and the task are inferred; the window, batch size and warm-up scale with the data; when
there is no time column the row number is the clock (1 row = 1 s) and durations are counted in rows.

Examples
--------
>>> import numpy as np, pandas as pd
>>> frame = pd.DataFrame({"x": np.arange(1000) % 7, "y": np.arange(1000) % 2})
>>> spec, schema = suggest_spec(frame, label="y", name="demo")
>>> spec["model"]["estimator"], spec["replay"]["batch"], spec["policy"]["cooldown"]
('sklearn.ensemble.HistGradientBoostingClassifier', {'rows': 10}, '20s')
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .data.schema import Schema, infer_schema
from .spec import DataSpec, load_spec_dict

__all__ = ["suggest_spec"]


def suggest_spec(frame: pd.DataFrame, *, label: str, name: str, time: str | None = None,
                 time_unit: str = "s") -> tuple[dict[str, Any], Schema]:
    dspec = DataSpec.model_validate({"label": label, "time": time, "time_unit": time_unit})
    schema = infer_schema(frame, dspec)
    n = len(frame)
    batch_rows = max(10, min(500, n // 100))
    spec: dict[str, Any] = {
        "name": name,
        "data": {"label": label, "task": schema.task, "time": time, "time_unit": time_unit,
                 "features": [{"name": f.name, "kind": f.kind} for f in schema.features]},
        "model": {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier" if schema.task == "classification"
                  else "sklearn.ensemble.HistGradientBoostingRegressor", "params": {}, "scale": False,
                  "window": {"rows": max(1000, min(20000, n // 4))}},
        "replay": {"batch": {"rows": batch_rows}, "label_delay": "0s", "warmup": max(200, min(5000, n // 10))},
    }
    if time is None:
        # no time column: the row number is the clock (1 row = 1 s), so durations are counted in rows
        spec["data"].pop("time")
        spec["policy"] = {"cooldown": f"{2 * batch_rows}s",
                          "triggers": {"drift": {}, "quality": {}, "detector": "adwin",
                                       "staleness": f"{max(20 * batch_rows, n // 4)}s"}}
    load_spec_dict(spec)  # what we suggest must itself be valid
    return spec, schema
