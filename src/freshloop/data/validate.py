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
from .numbers import bool_cells, number_cells, past_largest
from .rules import (
    CategoryRule,
    Checked,
    NumericRule,
    TimeRule,
    as_float,
    is_missing,
    magnitude_problem,
    missing_column,
    required,
    unknown_class,
)
from .schema import Schema

__all__ = ["ValidationResult", "coerce_label", "column_rules", "first_error", "first_record_error", "validate_frame"]


@dataclass
class ValidationResult:
    accepted: pd.DataFrame  # typed: _time, features, label (may be missing), entity
    rejected: pd.DataFrame  # original values plus _row (position in the submission) and _reason
    batch_reasons: list[str] = field(default_factory=list)
    row_reasons: dict[str, int] = field(default_factory=dict)  # reason kind -> rows
    warnings: list[str] = field(default_factory=list)  # accepted, but worth knowing (drifted values)


def _text(s: pd.Series) -> pd.Series:
    return s.astype("string").str.strip()


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
        msgs = [unknown_class(schema.label, classes, v) for v in s[bad_b]]
        return flags.where(ok_b, None).astype(object), pd.Series(bad_b, index=s.index), msgs
    if classes and all(isinstance(c, int) for c in classes) and pd.api.types.is_numeric_dtype(s) \
            and not pd.api.types.is_bool_dtype(s):
        vals = s.to_numpy(dtype=float, na_value=np.nan)
        present_n = ~np.isnan(vals)
        ok_n = np.isin(vals, classes)
        bad_n = present_n & ~ok_n
        typed_n = pd.Series(np.where(ok_n, vals, np.nan), index=s.index).astype("Int64")
        msgs = [unknown_class(schema.label, classes, v) for v in s[bad_n]]
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
    msgs = [unknown_class(schema.label, classes, v) for v in s[bad_s]]
    return typed, bad_s, msgs


def validate_frame(raw: pd.DataFrame, schema: Schema, quality: QualitySpec, *, now: float,
                   require_label: bool = False) -> ValidationResult:
    n = len(raw)
    if not isinstance(raw.index, pd.RangeIndex) or raw.index.start != 0:
        raw = raw.reset_index(drop=True)
    found = _Found(n)
    raw = _named_once(raw, found.batch_reasons)
    missing_cols = [c for c in [f.name for f in schema.features] + ([schema.label] if require_label else [])
                    + ([schema.time] if schema.time else []) if c not in raw.columns]
    found.batch_reasons += [missing_column(c) for c in missing_cols]
    out: dict[str, Any] = {"_row": np.arange(n)}  # first, not inserted later: a wide frame would be copied
    if schema.time and schema.time in raw.columns:
        out["_time"] = found.take(TimeRule(schema.time, schema.time_unit).column(raw[schema.time]))
    else:
        out["_time"] = np.full(n, float(now))
    for rule in column_rules(schema, quality):
        if rule.name not in raw.columns:
            continue
        checked = rule.column(raw[rule.name])
        out[rule.name] = found.take(checked)
        missing_rate = float(checked.missing.mean()) if n else 0.0
        if missing_rate > quality.max_missing_rate:
            found.batch_reasons.append(f"column {rule.name!r}: missing rate {missing_rate:.2f} exceeds "
                                       f"data.quality.max_missing_rate {quality.max_missing_rate}")
    if schema.label in raw.columns:
        typed, bad_l, msgs = coerce_label(raw[schema.label], schema)
        found.flag(bad_l, msgs, "bad_label")
        if require_label:
            absent = typed.isna() & ~bad_l
            found.flag(absent, [required(schema.label)] * int(absent.sum()), "missing_label")
        out[schema.label] = typed.array
    if schema.entity and schema.entity in raw.columns:
        out[schema.entity] = raw[schema.entity].astype("string").astype(object).to_numpy()
    if quality.duplicates == "quarantine" and n > 1 and not missing_cols:
        dup = _duplicate_rows(out, schema)
        found.flag(dup, ["row: duplicate of an earlier row in the batch (rule: data.quality.duplicates)"]
                   * int(dup.sum()), "duplicate")
    return found.result(raw, pd.DataFrame(out))


def column_rules(schema: Schema, quality: QualitySpec) -> list[NumericRule | CategoryRule]:
    """The rule of each feature column, as the schema locked it and the quality spec tightens it."""
    return [NumericRule.of(f, quality) if f.kind == "numeric" else CategoryRule.of(f, quality)
            for f in schema.features]


class _Found:
    """What validation found in a batch: reasons per row (only rows with a problem get an entry), counts per
    rule, batch reasons and warnings."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reasons: dict[int, list[str]] = {}
        self.kinds: dict[str, int] = {}
        self.batch_reasons: list[str] = []
        self.warnings: list[str] = []

    def flag(self, mask: pd.Series | np.ndarray, msgs: list[str], kind: str) -> None:
        idx = np.flatnonzero(np.asarray(mask))
        for i, m in zip(idx, msgs, strict=True):
            self.reasons.setdefault(int(i), []).append(m)
        if len(idx):
            self.kinds[kind] = self.kinds.get(kind, 0) + len(idx)

    def take(self, checked: Checked) -> Any:
        """A column check's problems and warning, recorded; its typed values, returned."""
        for p in checked.problems:
            self.flag(p.mask, p.messages, p.kind)
        if checked.warning:
            self.warnings.append(checked.warning)
        return checked.values

    def result(self, raw: pd.DataFrame, typed: pd.DataFrame) -> ValidationResult:
        n = self.n
        bad_rows = np.zeros(n, dtype=bool)
        bad_rows[list(self.reasons)] = True
        if self.batch_reasons:
            bad_rows[:] = True
        if not bad_rows.any():  # the common case: a clean batch, no masking copies
            return ValidationResult(accepted=typed, rejected=raw.iloc[:0].copy().assign(_row=[], _reason=[]),
                                    batch_reasons=self.batch_reasons, row_reasons=self.kinds, warnings=self.warnings)
        rejected = raw[bad_rows].copy()
        rejected["_row"] = np.flatnonzero(bad_rows)
        rejected["_reason"] = ["; ".join(self.batch_reasons + self.reasons.get(int(i), []))
                               for i in np.flatnonzero(bad_rows)]
        accepted = typed[~bad_rows]  # its _row: the accepted rows' places in the batch
        return ValidationResult(accepted=accepted.reset_index(drop=True), rejected=rejected.reset_index(drop=True),
                                batch_reasons=self.batch_reasons, row_reasons=self.kinds, warnings=self.warnings)


def _named_once(raw: pd.DataFrame, batch_reasons: list[str]) -> pd.DataFrame:
    """A header naming a column twice: which cell is which is unknown, so the batch is refused, and its rows
    are kept with the columns told apart (x1, x1 (2))."""
    if not raw.columns.has_duplicates:
        return raw
    counts = raw.columns.value_counts()
    for c, k in counts[counts > 1].items():
        batch_reasons.append(f"column {c!r}: appears {k} times (rule: each column is named once)")
    seen: dict[str, int] = {}
    names = []
    for c in raw.columns:
        seen[c] = seen.get(c, 0) + 1
        names.append(c if seen[c] == 1 else f"{c} ({seen[c]})")
    return raw.set_axis(names, axis=1)


def _duplicate_rows(out: dict[str, Any], schema: Schema) -> np.ndarray:
    """Rows equal to an earlier row of the batch on every column but the label (with a time or an entity)."""
    t = out["_time"]
    if not (schema.time or schema.entity) or (schema.time and (t[1:] > t[:-1]).all()):
        # (times that strictly increase, as most batches' do, cannot repeat: then no row equals another)
        return np.zeros(len(t), dtype=bool)
    # the key columns as they are: a selection of a frame's columns would copy them all first
    return _duplicated(pd.DataFrame({c: v for c, v in out.items() if c not in (schema.label, "_row")}, copy=False),
                       "_time" if schema.time else schema.entity)


def first_error(res: ValidationResult) -> str | None:
    """The first problem of a validated frame, as a request error: ``row N: field …`` or a batch reason."""
    if res.batch_reasons:
        return res.batch_reasons[0]
    if len(res.rejected):
        return f"row {int(res.rejected['_row'].iloc[0])}: {res.rejected['_reason'].iloc[0].split('; ')[0]}"
    return None


def first_record_error(records: list[dict[str, Any]], schema: Schema, quality: QualitySpec) -> str | None:
    """:func:`validate_frame`'s first complaint about a few request rows, without building frames.

    Prediction requests are small and frequent, and pandas costs more than the model there. Each column's
    rule is :func:`validate_frame`'s (:mod:`.rules`: one message for both). Rows it cannot judge the same way
    cheaply (text timestamps, labels included) go through :func:`validate_frame` itself. Duplicates and
    missing rates are batch rules, not request rules.

    >>> from freshloop.data.schema import Feature
    >>> s = Schema("y", "classification", (Feature("x", "numeric", 0.0, 1.0),), classes=(0, 1))
    >>> first_record_error([{"x": 0.5}, {"x": "abc"}], s, QualitySpec())
    "row 1: field 'x': must be a number (got 'abc')"
    """
    columns: set[str] = set().union(*(r.keys() for r in records)) if records else set()
    slow = schema.label in columns or (schema.time is not None and any(
        not is_missing(r.get(schema.time)) and as_float(r.get(schema.time)) is None for r in records))
    if slow:
        frame = pd.DataFrame.from_records(records)
        return first_error(validate_frame(frame, schema, quality.model_copy(
            update={"duplicates": "accept", "max_missing_rate": 1.0}), now=0.0))
    for name in [f.name for f in schema.features] + ([schema.time] if schema.time else []):
        if name not in columns:
            return missing_column(name)
    rules: list[TimeRule | NumericRule | CategoryRule] = \
        ([TimeRule(schema.time, schema.time_unit)] if schema.time else []) + column_rules(schema, quality)
    for i, r in enumerate(records):
        for rule in rules:
            problem = rule.value(r.get(rule.name))
            if problem is not None:
                return f"row {i}: {problem}"
    return None
