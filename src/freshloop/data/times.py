"""Times as freshloop reads them: POSIX seconds from numbers in ``data.time_unit`` or from dates and
datetimes of any form pandas reads (ISO text with or without a zone, ``datetime64`` of any resolution)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .numbers import number_cells

__all__ = ["UNIT_SECONDS", "to_seconds", "unit_seconds"]

#: what one unit of a numeric time column is worth in seconds (``data.time_unit``)
UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def unit_seconds(unit: str) -> float:
    """Seconds in one unit a summary gives durations in: a ``data.time_unit``, or ``rows`` when there is no
    time column and the row number is the clock (one row a second)."""
    return 1.0 if unit == "rows" else UNIT_SECONDS[unit]


def to_seconds(s: pd.Series, unit: str) -> tuple[pd.Series, pd.Series]:
    """Times as POSIX seconds and a mask of unreadable values.

    Numbers are in ``unit`` (``data.time_unit``: ``"s"``, ``"ms"``, ...). Dates and datetimes, as text (ISO
    forms, with or without a time zone) or as a ``datetime64`` column of any resolution, are read whatever
    unit pandas holds them in (pandas 3 parses text to microseconds, pandas 2 to nanoseconds); a time without
    a zone is taken as UTC.

    >>> import pandas as pd
    >>> to_seconds(pd.Series(["2024-01-05", "2024-01-06 12:00:00+01:00", "soon"]), "s")[0].tolist()
    [1704412800.0, 1704538800.0, nan]
    >>> to_seconds(pd.Series([1704412800000]), "ms")[0].tolist()
    [1704412800.0]
    """
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
        return _datetime_seconds(pd.to_datetime(s, utc=True), s.index)
    num, present, bad = number_cells(s)
    if not bad.any():
        return pd.Series(num * UNIT_SECONDS[unit], index=s.index), pd.Series(~present, index=s.index)
    text = s.astype("string").str.strip().where(present)
    return _datetime_seconds(pd.to_datetime(text, errors="coerce", utc=True, format="mixed"), s.index)


def _datetime_seconds(dt: pd.Series, index: pd.Index) -> tuple[pd.Series, pd.Series]:
    # numpy converts between resolutions exactly (``astype("int64")`` on the column is not unit-aware: its
    # integers are in whatever resolution pandas holds), and in microseconds a year like 1041, which pandas 3
    # can parse, does not overflow as it would in nanoseconds
    arr = dt.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    nat = np.isnat(arr)
    secs = arr.astype("datetime64[us]").astype(np.int64) / 1e6
    secs[nat] = np.nan
    out = pd.Series(secs, index=index)
    return out, out.isna()
