"""Row and batch checks against the locked schema.

Every rejected row keeps its original values and gets reasons naming the field, the rule and the
value; a batch-level failure (a missing column, too many missing values) rejects the whole batch.
Nothing is dropped: ``len(accepted) + len(rejected) == len(submitted)`` always.

Examples
--------
>>> import pandas as pd
>>> from freshloop.data.schema import Feature, Schema
>>> from freshloop.spec import QualitySpec
>>> schema = Schema("y", "classification", (Feature("x", "numeric", 0.0, 10.0),), classes=(0, 1))
>>> raw = pd.DataFrame({"x": ["1", "abc", "inf", "5"], "y": ["0", "1", "0", "7"]})
>>> res = validate_frame(raw, schema, QualitySpec(), now=0.0)
>>> len(res.accepted), len(res.rejected)
(1, 3)
>>> list(res.rejected["_reason"])
["field 'x': must be a number (got 'abc')", "field 'x': must be finite (got inf)", \
"field 'y': must be one of the known classes [0, 1] (got '7')"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..spec import QualitySpec
from .numbers import LARGEST, bool_cells, number_cells, past_largest
from .schema import Schema

__all__ = ["UNIT_SECONDS", "ValidationResult", "coerce_label", "first_error", "first_record_error", "to_seconds",
           "unit_seconds", "validate_frame"]

#: what one unit of a numeric time column is worth in seconds (``data.time_unit``)
UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def unit_seconds(unit: str) -> float:
    """Seconds in one unit a summary gives durations in: a ``data.time_unit``, or ``rows`` when there is no
    time column and the row number is the clock (one row a second)."""
    return 1.0 if unit == "rows" else UNIT_SECONDS[unit]


@dataclass
class ValidationResult:
    accepted: pd.DataFrame  # typed: _time, features, label (may be missing), entity
    rejected: pd.DataFrame  # original values plus _row (position in the submission) and _reason
    batch_reasons: list[str] = field(default_factory=list)
    row_reasons: dict[str, int] = field(default_factory=dict)  # reason kind -> rows
    warnings: list[str] = field(default_factory=list)  # accepted, but worth knowing (drifted values)


def _text(s: pd.Series) -> pd.Series:
    return s.astype("string").str.strip()


def _categories(s: pd.Series, categories: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A categorical column as text (missing and blank: NA), whether each cell is filled, and whether it is a
    known category. Text columns are judged once per distinct value, not once per row."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    if not all(isinstance(u, str) for u in uniques):  # numbers or mixed types: pandas' text conversion per cell
        text = s.astype("string")
        filled = (text.notna() & (text.str.strip() != "")).fillna(False).to_numpy(dtype=bool)
        known = text.isin(categories).fillna(False).to_numpy(dtype=bool)
        return text.where(filled).astype(object).to_numpy(), filled, known
    blank_u = np.array([not u.strip() for u in uniques], dtype=bool)
    allowed = set(categories)
    known_u = np.array([u in allowed for u in uniques], dtype=bool)
    present = codes >= 0
    filled = present & ~blank_u[np.where(present, codes, 0)] if len(uniques) else present
    known = present & known_u[np.where(present, codes, 0)] if len(uniques) else present
    values = np.asarray(uniques, dtype=object)[np.where(present, codes, 0)] if len(uniques) \
        else np.full(len(s), pd.NA, dtype=object)
    values[~filled] = pd.NA
    return values, filled, known


def _duplicated(frame: pd.DataFrame, narrow: str | None = None) -> np.ndarray:
    """Rows equal to an earlier row on every column. With ``narrow`` (a column equal rows must share, such
    as the time), rows whose value there is unique are not compared further: in a batch of distinct times
    only one column is looked at instead of every column."""
    if narrow in frame.columns and len(frame.columns) > 1:
        shared = frame[narrow].duplicated(keep=False).to_numpy()
        if not shared.any():
            return shared
        if shared.mean() < 0.5:
            idx = np.flatnonzero(shared)
            dup = np.zeros(len(frame), dtype=bool)
            dup[idx] = _duplicated(frame.iloc[idx])
            return dup
    if all(pd.api.types.is_float_dtype(t) for t in frame.dtypes):
        values = frame.to_numpy(dtype=float)
        _, first = np.unique(np.nan_to_num(values, nan=np.inf), axis=0, return_index=True)
        dup = np.ones(len(frame), dtype=bool)
        dup[first] = False
        return dup
    try:
        hashed = pd.util.hash_pandas_object(frame, index=False)
    except TypeError:
        hashed = pd.util.hash_pandas_object(frame.astype(str), index=False)
    return hashed.duplicated(keep="first").to_numpy()


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
    return _datetime_seconds(pd.to_datetime(_text(s).where(present), errors="coerce", utc=True, format="mixed"),
                             s.index)


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


def coerce_label(s: pd.Series, schema: Schema) -> tuple[pd.Series, pd.Series, list[str]]:
    """(typed labels, invalid mask, message per invalid row); missing labels are not invalid."""
    if schema.task == "regression":
        num, present, bad = number_cells(s)
        inf = present & ~bad & past_largest(num)
        msgs = [f"field {schema.label!r}: must be a finite number (got {v!r})" if b else
                magnitude_problem(schema.label, v, n) for v, n, b in zip(s[bad | inf], num[bad | inf], bad[bad | inf],
                                                                        strict=True)]
        return (pd.Series(np.where(bad | inf, np.nan, num), index=s.index), pd.Series(bad | inf, index=s.index),
                msgs)  # type: ignore[return-value]
    classes = list(schema.classes or ())
    if classes and all(isinstance(c, bool) for c in classes):  # true/false, as bools or as text of any case
        flags = bool_cells(s)
        present_b = flags.notna().to_numpy(dtype=bool) | _text(s).fillna("").ne("").to_numpy(dtype=bool)
        ok_b = flags.isin(classes).to_numpy(dtype=bool)
        bad_b = present_b & ~ok_b
        msgs = [f"field {schema.label!r}: must be one of the known classes {classes!r} (got {v!r})" for v in s[bad_b]]
        return flags.where(ok_b, None).astype(object), pd.Series(bad_b, index=s.index), msgs
    if classes and all(isinstance(c, int) for c in classes) and pd.api.types.is_numeric_dtype(s) \
            and not pd.api.types.is_bool_dtype(s):
        vals = s.to_numpy(dtype=float, na_value=np.nan)
        present_n = ~np.isnan(vals)
        ok_n = np.isin(vals, classes)
        bad_n = present_n & ~ok_n
        typed_n = pd.Series(np.where(ok_n, vals, np.nan), index=s.index).astype("Int64")
        msgs = [f"field {schema.label!r}: must be one of the known classes {classes!r} (got {v!r})" for v in s[bad_n]]
        return typed_n, pd.Series(bad_n, index=s.index), msgs
    text = _text(s)
    present_s = (text.notna() & (text != "")).fillna(False).astype(bool)
    if classes and all(isinstance(c, int) for c in classes):
        as_num = pd.Series(pd.to_numeric(text.where(present_s), errors="coerce"), index=s.index)
        ok = as_num.isin(classes)
        typed = as_num.where(ok).astype("Int64")
    else:
        ok = text.isin([str(c) for c in classes])
        typed = text.where(ok).astype(object)
    bad_s = present_s & ~ok.fillna(False).astype(bool)
    msgs = [f"field {schema.label!r}: must be one of the known classes {classes!r} (got {v!r})" for v in s[bad_s]]
    return typed, bad_s, msgs


def validate_frame(raw: pd.DataFrame, schema: Schema, quality: QualitySpec, *, now: float,
                   require_label: bool = False) -> ValidationResult:
    n = len(raw)
    if not isinstance(raw.index, pd.RangeIndex) or raw.index.start != 0:
        raw = raw.reset_index(drop=True)
    reasons: dict[int, list[str]] = {}  # only rows with a problem get an entry
    kinds: dict[str, int] = {}
    batch_reasons: list[str] = []
    warnings: list[str] = []

    def flag(mask: pd.Series | np.ndarray, msgs: list[str], kind: str) -> None:
        idx = np.flatnonzero(np.asarray(mask))
        for i, m in zip(idx, msgs, strict=True):
            reasons.setdefault(int(i), []).append(m)
        if len(idx):
            kinds[kind] = kinds.get(kind, 0) + len(idx)

    if raw.columns.has_duplicates:  # a header naming a column twice: which cell is which is unknown
        counts = raw.columns.value_counts()
        for c, k in counts[counts > 1].items():
            batch_reasons.append(f"column {c!r}: appears {k} times (rule: each column is named once)")
        seen: dict[str, int] = {}
        names = []
        for c in raw.columns:  # the rows are kept with the columns told apart: x1, x1 (2)
            seen[c] = seen.get(c, 0) + 1
            names.append(c if seen[c] == 1 else f"{c} ({seen[c]})")
        raw = raw.set_axis(names, axis=1)
    missing_cols = [f.name for f in schema.features if f.name not in raw.columns]
    if require_label and schema.label not in raw.columns:
        missing_cols.append(schema.label)
    if schema.time and schema.time not in raw.columns:
        missing_cols.append(schema.time)
    for c in missing_cols:
        batch_reasons.append(f"column {c!r}: missing (rule: every schema column must be present)")

    out: dict[str, Any] = {}
    if schema.time and schema.time in raw.columns:
        tcol = raw[schema.time]
        secs, bad_t = to_seconds(tcol, schema.time_unit)
        if bad_t.any():
            no_time = (tcol.isna() | (tcol.astype("string").str.strip() == "")).fillna(True).to_numpy(dtype=bool)
            bad_time = bad_t.to_numpy(dtype=bool)
            flag(bad_time, [f"field {schema.time!r}: required (got a missing value)" if a else
                            f"field {schema.time!r}: must be a time (got {v!r})"
                            for v, a in zip(tcol[bad_time], no_time[bad_time], strict=True)], "bad_time")
        out["_time"] = secs.to_numpy(dtype=float)
    else:
        out["_time"] = np.full(n, float(now))
    # float columns are read as they are (views, no copy); one at a time, since a multi-column selection
    # copies a frame
    fast = {f.name: raw[f.name].to_numpy(dtype=float) for f in schema.features if f.kind == "numeric"
            and f.name in raw.columns and pd.api.types.is_float_dtype(raw[f.name].dtype)}
    columns = set(raw.columns)
    for f in schema.features:
        if f.name not in columns:
            continue
        if f.kind == "numeric":
            if f.name in fast:
                num = fast[f.name]
                present = ~np.isnan(num)
                bad = np.zeros(n, dtype=bool)
            else:
                s = raw[f.name]
                num, present, bad = number_cells(s)
            if bad.any():
                flag(bad, [f"field {f.name!r}: must be a number (got {v!r})" for v in s[bad]], "not_a_number")
            inf = present & ~bad & past_largest(num)
            if inf.any():
                cells = num[inf] if f.name in fast else s[inf]
                flag(inf, [magnitude_problem(f.name, c, v) for c, v in zip(cells, num[inf], strict=True)],
                     "not_finite")
            if f.low is not None and f.high is not None:
                span = (f.high - f.low) or max(abs(f.high), 1.0)
                lo, hi = f.low - quality.range_margin * span, f.high + quality.range_margin * span
                with np.errstate(invalid="ignore"):
                    out_r = present & ~bad & ~inf & ((num < lo) | (num > hi))
                if out_r.any() and quality.out_of_range == "quarantine":
                    flag(out_r, [f"field {f.name!r}: must lie within the learned range [{lo:.6g}, {hi:.6g}] "
                                 f"(got {v:.6g})" for v in num[out_r]], "out_of_range")
                elif out_r.any():
                    warnings.append(f"field {f.name!r}: {int(out_r.sum())} value(s) outside the learned range "
                                    f"[{lo:.6g}, {hi:.6g}], accepted (data.quality.out_of_range: accept)")
            missing_rate = float((~present).mean()) if n else 0.0
            out[f.name] = np.where(inf, np.nan, num) if inf.any() else num
        else:
            s = raw[f.name]
            try:
                values, filled_arr, known = _categories(s, f.categories)
            except TypeError:  # unhashable cells: JSON objects or lists where a category belongs
                nested = s.map(lambda v: isinstance(v, dict | list)).to_numpy(dtype=bool)
                flag(nested, [nested_problem(f.name, v) for v in s[nested]], "not_a_category")
                values, filled_arr, known = _categories(s.where(~nested, None), f.categories)
            missing_rate = float((~filled_arr).mean()) if n else 0.0
            if quality.unseen_categories == "quarantine" and f.categories:
                unseen = filled_arr & ~known
                flag(unseen, [f"field {f.name!r}: must be a known category (got {v!r})" for v in s[unseen]],
                     "unseen_category")
            out[f.name] = values
        if missing_rate > quality.max_missing_rate:
            batch_reasons.append(f"column {f.name!r}: missing rate {missing_rate:.2f} exceeds "
                                 f"data.quality.max_missing_rate {quality.max_missing_rate}")
    if schema.label in raw.columns:
        typed, bad_l, msgs = coerce_label(raw[schema.label], schema)
        flag(bad_l, msgs, "bad_label")
        if require_label:
            absent = typed.isna() & ~bad_l
            flag(absent, [f"field {schema.label!r}: required (got a missing value)"] * int(absent.sum()),
                 "missing_label")
        out[schema.label] = typed.array
    if schema.entity and schema.entity in raw.columns:
        out[schema.entity] = raw[schema.entity].astype("string").astype(object).to_numpy()
    typed_frame = pd.DataFrame(out)
    if quality.duplicates == "quarantine" and n > 1 and not missing_cols:
        dup = np.zeros(n, dtype=bool)
        t = out["_time"]
        if (schema.time or schema.entity) and not (schema.time and (t[1:] > t[:-1]).all()):
            # (times that strictly increase, as most batches' do, cannot repeat: then no row equals another)
            # the key columns as they are: a selection of a frame's columns would copy them all first
            dup = _duplicated(pd.DataFrame({c: v for c, v in out.items() if c != schema.label}, copy=False),
                              "_time" if schema.time else schema.entity)
        flag(dup, ["row: duplicate of an earlier row in the batch (rule: data.quality.duplicates)"]
             * int(dup.sum()), "duplicate")

    bad_rows = np.zeros(n, dtype=bool)
    bad_rows[list(reasons)] = True
    if batch_reasons:
        bad_rows[:] = True
    if not bad_rows.any():  # the common case: a clean batch, no masking copies
        accepted = typed_frame
        accepted.insert(0, "_row", np.arange(n))
        return ValidationResult(accepted=accepted, rejected=raw.iloc[:0].assign(_row=[], _reason=[]),
                                batch_reasons=batch_reasons, row_reasons=kinds, warnings=warnings)
    rejected = raw[bad_rows].copy()
    rejected["_row"] = np.flatnonzero(bad_rows)
    rejected["_reason"] = ["; ".join(batch_reasons + reasons.get(int(i), [])) for i in np.flatnonzero(bad_rows)]
    accepted = typed_frame[~bad_rows]
    accepted.insert(0, "_row", np.flatnonzero(~bad_rows))
    return ValidationResult(accepted=accepted.reset_index(drop=True), rejected=rejected.reset_index(drop=True),
                            batch_reasons=batch_reasons, row_reasons=kinds, warnings=warnings)


def first_error(res: ValidationResult) -> str | None:
    """The first problem of a validated frame, as a request error: ``row N: field …`` or a batch reason."""
    if res.batch_reasons:
        return res.batch_reasons[0]
    if len(res.rejected):
        return f"row {int(res.rejected['_row'].iloc[0])}: {res.rejected['_reason'].iloc[0].split('; ')[0]}"
    return None


def _broken(text: str) -> bool:
    """Text that is not valid Unicode: a lone surrogate, which JSON can carry (``\\ud800``) and UTF-8 (so
    Parquet, pandas' Arrow strings and the database) cannot."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def record_text_problem(record: dict[str, Any]) -> str | None:
    """What in one JSON record is text that is not valid Unicode (a column name or a value), if anything:
    such a record cannot become a frame, so it is refused or quarantined before one is built.

    >>> record_text_problem({"c": "a" + chr(0xD800), "x": 1})
    "field 'c': must be valid Unicode text (got 'a\\\\ud800': a lone surrogate)"
    """
    for k, v in record.items():
        if isinstance(k, str) and _broken(k):
            return f"column {k!r}: the name must be valid Unicode text (a lone surrogate)"
        if isinstance(v, str) and _broken(v):
            return f"field {k!r}: must be valid Unicode text (got {v!r}: a lone surrogate)"
    return None


def not_unicode(text: str | None) -> str | None:
    """``text`` unless it holds a lone surrogate: for pydantic fields (ids, reasons) a client sends."""
    if text is not None and _broken(text):
        raise ValueError(f"must be valid Unicode text (got {text!r}: a lone surrogate)")
    return text


def nested_problem(name: str, cell: object) -> str:
    return f"field {name!r}: must be text or a number, not a JSON {type(cell).__name__} (got {cell!r:.60})"


def magnitude_problem(name: str, cell: object, num: float) -> str:
    """Why a number past :data:`LARGEST` is refused: infinity is not a measurement, and larger values overflow
    a model's arithmetic (float32 models, a scaler's variance), failing every training run that holds them."""
    cell = cell.item() if isinstance(cell, np.generic) else cell
    if np.isinf(num) and not isinstance(cell, int):
        return f"field {name!r}: must be finite (got {num})"
    shown = repr(cell)
    if len(shown) > 40:
        shown = f"{shown[:20]}… ({len(shown):,} characters)"
    return (f"field {name!r}: must lie within ±{LARGEST:g}, as larger values overflow a model's arithmetic "
            f"(got {shown})")


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


def _as_float(v: object) -> float | None:
    """The value as a number, or None when it is not one: the same reading as ``_numbers`` (booleans are
    text there, and the text "nan" is not a number)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        try:
            return float(v)
        except OverflowError:  # an integer past a float's range
            return float("inf") if v > 0 else float("-inf")
    try:
        num = float(str(v).strip())
    except ValueError:
        return None
    return None if num != num else num


def first_record_error(records: list[dict[str, Any]], schema: Schema, quality: QualitySpec) -> str | None:
    """:func:`validate_frame`'s first complaint about a few request rows, without building frames.

    Prediction requests are small and frequent, and pandas costs more than the model there. The rules and
    messages are :func:`validate_frame`'s (a property test holds the two together). Rows it cannot judge
    the same way cheaply (text timestamps, labels included) go through :func:`validate_frame` itself.
    Duplicates and missing rates are batch rules, not request rules.

    >>> from freshloop.data.schema import Feature
    >>> s = Schema("y", "classification", (Feature("x", "numeric", 0.0, 1.0),), classes=(0, 1))
    >>> first_record_error([{"x": 0.5}, {"x": "abc"}], s, QualitySpec())
    "row 1: field 'x': must be a number (got 'abc')"
    """
    columns: set[str] = set().union(*(r.keys() for r in records)) if records else set()
    slow = schema.label in columns or (schema.time is not None and any(
        not _is_missing(r.get(schema.time)) and _as_float(r.get(schema.time)) is None for r in records))
    if slow:
        frame = pd.DataFrame.from_records(records)
        return first_error(validate_frame(frame, schema, quality.model_copy(
            update={"duplicates": "accept", "max_missing_rate": 1.0}), now=0.0))
    for name in [f.name for f in schema.features] + ([schema.time] if schema.time else []):
        if name not in columns:
            return f"column {name!r}: missing (rule: every schema column must be present)"
    for i, r in enumerate(records):
        if schema.time and _is_missing(r.get(schema.time)):
            return f"row {i}: field {schema.time!r}: required (got a missing value)"
        for f in schema.features:
            v = r.get(f.name)
            if _is_missing(v):
                continue
            if f.kind == "numeric":
                num = _as_float(v)
                if num is None:
                    return f"row {i}: field {f.name!r}: must be a number (got {v!r})"
                if not abs(num) <= LARGEST:
                    return f"row {i}: {magnitude_problem(f.name, v, num)}"
                if quality.out_of_range == "quarantine" and f.low is not None and f.high is not None:
                    span = (f.high - f.low) or max(abs(f.high), 1.0)
                    lo, hi = f.low - quality.range_margin * span, f.high + quality.range_margin * span
                    if num < lo or num > hi:
                        return (f"row {i}: field {f.name!r}: must lie within the learned range [{lo:.6g}, "
                                f"{hi:.6g}] (got {num:.6g})")
            elif isinstance(v, dict | list):
                return f"row {i}: {nested_problem(f.name, v)}"
            elif quality.unseen_categories == "quarantine" and f.categories and str(v) not in f.categories:
                return f"row {i}: field {f.name!r}: must be a known category (got {v!r})"
    return None
