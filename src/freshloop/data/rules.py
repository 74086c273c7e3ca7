"""The validation rules, each written once: a column check for a batch and a value check for one record.

A batch is checked column by column (:func:`~freshloop.data.validate.validate_frame`, vectorised); a few
request rows are checked record by record without building a frame
(:func:`~freshloop.data.validate.first_record_error`). Both call the same rule for a column, and the rule
says every problem with the same message: the field, the rule and the value.

Examples
--------
>>> from freshloop.data.schema import Feature
>>> from freshloop.spec import QualitySpec
>>> rule = NumericRule.of(Feature("x", "numeric", 0.0, 10.0), QualitySpec(out_of_range="quarantine"))
>>> rule.value("abc"), rule.value(3), rule.value(1e6)
("field 'x': must be a number (got 'abc')", None, "field 'x': must lie within the learned range [-10, 20] (got 1e+06)")
>>> [p.messages for p in rule.column(pd.Series(["abc", "3", "1e6"])).problems]
[["field 'x': must be a number (got 'abc')"], ["field 'x': must lie within the learned range [-10, 20] (got 1e+06)"]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..spec import QualitySpec
from .numbers import LARGEST, number_cells, past_largest
from .schema import Feature
from .times import to_seconds

__all__ = ["CategoryRule", "Checked", "NumericRule", "Problem", "TimeRule", "as_float", "broken_text", "categories",
           "is_missing", "magnitude_problem", "missing_column", "nested_problem", "not_unicode",
           "record_text_problem", "required", "text_problem", "unknown_class"]


# -- the messages ---------------------------------------------------------------------------------
def missing_column(name: str) -> str:
    return f"column {name!r}: missing (rule: every schema column must be present)"


def unknown_class(name: str, classes: list[Any], cell: object) -> str:
    return f"field {name!r}: must be one of the known classes {classes!r} (got {cell!r})"


def required(name: str) -> str:
    return f"field {name!r}: required (got a missing value)"


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


def is_missing(v: object) -> bool:
    """A record's value that counts as absent: None, NaN or blank text."""
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


def as_float(v: object) -> float | None:
    """The value as a number, or None when it is not one: the same reading as ``number_cells`` (booleans are
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


def broken_text(text: str) -> bool:
    """Text that is not valid Unicode: a lone surrogate, which JSON can carry (``\\ud800``) and UTF-8 (so
    Parquet, pandas' Arrow strings and the database) cannot."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_problem(name: str, value: object) -> str | None:
    """A value that is text but not valid Unicode: the message naming its field, else None."""
    if isinstance(value, str) and broken_text(value):
        return f"field {name!r}: must be valid Unicode text (got {value!r}: a lone surrogate)"
    return None


def record_text_problem(record: dict[str, Any]) -> str | None:
    """What in one JSON record is text that is not valid Unicode (a column name or a value), if anything:
    such a record cannot become a frame, so it is refused or quarantined before one is built.

    >>> record_text_problem({"c": "a" + chr(0xD800), "x": 1})
    "field 'c': must be valid Unicode text (got 'a\\\\ud800': a lone surrogate)"
    """
    for k, v in record.items():
        if isinstance(k, str) and broken_text(k):
            return f"column {k!r}: the name must be valid Unicode text (a lone surrogate)"
        if (problem := text_problem(k, v)) is not None:
            return problem
    return None


def not_unicode(text: str | None) -> str | None:
    """``text`` unless it holds a lone surrogate: for pydantic fields (ids, reasons) a client sends."""
    if text is not None and broken_text(text):
        raise ValueError(f"must be valid Unicode text (got {text!r}: a lone surrogate)")
    return text


# -- what a column check finds --------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Rows of a column that break one rule, the message for each, and the rule's kind (counted per batch)."""

    mask: np.ndarray
    messages: list[str]
    kind: str


@dataclass
class Checked:
    values: Any  # the column typed (numbers, or text with missing values as NA)
    missing: np.ndarray  # rows without a value
    problems: list[Problem] = field(default_factory=list)
    warning: str | None = None  # accepted, but worth knowing

    def add(self, mask: np.ndarray, messages: list[str], kind: str) -> None:
        if mask.any():
            self.problems.append(Problem(mask, messages, kind))


# -- the rules ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NumericRule:
    """A number, within ±:data:`LARGEST`, and (with ``data.quality.out_of_range: quarantine``) within the range
    learned at lock, widened by ``range_margin``."""

    name: str
    bounds: tuple[float, float] | None = None
    quarantine_range: bool = False

    @classmethod
    def of(cls, f: Feature, quality: QualitySpec) -> NumericRule:
        bounds = None
        if f.low is not None and f.high is not None:
            span = (f.high - f.low) or max(abs(f.high), 1.0)
            bounds = (f.low - quality.range_margin * span, f.high + quality.range_margin * span)
        return cls(f.name, bounds, quality.out_of_range == "quarantine")

    def not_a_number(self, cell: object) -> str:
        return f"field {self.name!r}: must be a number (got {cell!r})"

    def out_of_range(self, num: float) -> str:
        assert self.bounds is not None
        lo, hi = self.bounds
        return f"field {self.name!r}: must lie within the learned range [{lo:.6g}, {hi:.6g}] (got {num:.6g})"

    def value(self, v: object) -> str | None:
        if is_missing(v):
            return None
        num = as_float(v)
        if num is None:
            return self.not_a_number(v)
        if not abs(num) <= LARGEST:
            return magnitude_problem(self.name, v, num)
        if self.quarantine_range and self.bounds is not None and not self.bounds[0] <= num <= self.bounds[1]:
            return self.out_of_range(num)
        return None

    def column(self, s: pd.Series) -> Checked:
        fast = pd.api.types.is_float_dtype(s.dtype)  # read as it is (a view, no copy)
        if fast:
            num = s.to_numpy(dtype=float)
            present, bad = ~np.isnan(num), np.zeros(len(num), dtype=bool)
        else:
            num, present, bad = number_cells(s)
        out = Checked(num, ~present)
        out.add(bad, [self.not_a_number(v) for v in s[bad]], "not_a_number")
        inf = present & ~bad & past_largest(num)
        if inf.any():
            cells = num[inf] if fast else s[inf]
            out.add(inf, [magnitude_problem(self.name, c, v) for c, v in zip(cells, num[inf], strict=True)],
                    "not_finite")
            out.values = np.where(inf, np.nan, num)
        if self.bounds is not None:
            lo, hi = self.bounds
            with np.errstate(invalid="ignore"):
                outside = present & ~bad & ~inf & ((num < lo) | (num > hi))
            if outside.any() and self.quarantine_range:
                out.add(outside, [self.out_of_range(v) for v in num[outside]], "out_of_range")
            elif outside.any():
                out.warning = (f"field {self.name!r}: {int(outside.sum())} value(s) outside the learned range "
                               f"[{lo:.6g}, {hi:.6g}], accepted (data.quality.out_of_range: accept)")
        return out


@dataclass(frozen=True)
class CategoryRule:
    """Text or a number (not a JSON object or list), and (with ``data.quality.unseen_categories:
    quarantine``) one of the categories learned at lock."""

    name: str
    categories: tuple[str, ...] = ()
    quarantine_unseen: bool = False

    @classmethod
    def of(cls, f: Feature, quality: QualitySpec) -> CategoryRule:
        return cls(f.name, f.categories, quality.unseen_categories == "quarantine" and bool(f.categories))

    def unseen(self, cell: object) -> str:
        return f"field {self.name!r}: must be a known category (got {cell!r})"

    def value(self, v: object) -> str | None:
        if is_missing(v):
            return None
        if isinstance(v, dict | list):
            return nested_problem(self.name, v)
        if self.quarantine_unseen and str(v) not in self.categories:
            return self.unseen(v)
        return None

    def column(self, s: pd.Series) -> Checked:
        nested = np.zeros(len(s), dtype=bool)
        try:
            values, filled, known = categories(s, self.categories)
        except TypeError:  # unhashable cells: JSON objects or lists where a category belongs
            nested = s.map(lambda v: isinstance(v, dict | list)).to_numpy(dtype=bool)
            values, filled, known = categories(s.where(~nested, None), self.categories)
        out = Checked(values, ~filled)
        out.add(nested, [nested_problem(self.name, v) for v in s[nested]], "not_a_category")
        if self.quarantine_unseen:
            unseen = filled & ~known
            out.add(unseen, [self.unseen(v) for v in s[unseen]], "unseen_category")
        return out


@dataclass(frozen=True)
class TimeRule:
    """A time: a number in ``data.time_unit``, or a date or datetime (ISO text, any zone); never missing."""

    name: str
    unit: str

    def not_a_time(self, cell: object) -> str:
        return f"field {self.name!r}: must be a time (got {cell!r})"

    def value(self, v: object) -> str | None:
        """A record's time, read without pandas: a number is a time; text goes through :meth:`column`."""
        return required(self.name) if is_missing(v) else None

    def column(self, s: pd.Series) -> Checked:
        secs, bad_t = to_seconds(s, self.unit)
        bad = bad_t.to_numpy(dtype=bool)
        out = Checked(secs.to_numpy(dtype=float), bad)
        if bad.any():
            absent = (s.isna() | (s.astype("string").str.strip() == "")).fillna(True).to_numpy(dtype=bool)
            out.add(bad, [required(self.name) if a else self.not_a_time(v)
                          for v, a in zip(s[bad], absent[bad], strict=True)], "bad_time")
        return out


def categories(s: pd.Series, known_values: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A categorical column as text (missing and blank: NA), whether each cell is filled, and whether it is a
    known category. Text columns are judged once per distinct value, not once per row."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    if not all(isinstance(u, str) for u in uniques):  # numbers or mixed types: pandas' text conversion per cell
        text = s.astype("string")
        filled = (text.notna() & (text.str.strip() != "")).fillna(False).to_numpy(dtype=bool)
        known = text.isin(known_values).fillna(False).to_numpy(dtype=bool)
        return text.where(filled).astype(object).to_numpy(), filled, known
    blank_u = np.array([not u.strip() for u in uniques], dtype=bool)
    allowed = set(known_values)
    known_u = np.array([u in allowed for u in uniques], dtype=bool)
    present = codes >= 0
    filled = present & ~blank_u[np.where(present, codes, 0)] if len(uniques) else present
    known = present & known_u[np.where(present, codes, 0)] if len(uniques) else present
    values = np.asarray(uniques, dtype=object)[np.where(present, codes, 0)] if len(uniques) \
        else np.full(len(s), pd.NA, dtype=object)
    values[~filled] = pd.NA
    return values, filled, known
