"""One rule for "is this column a number", shared by ``freshloop init`` (schema inference), ingest
(validation) and ``freshloop drift``.

A cell is missing when it is empty, blank or a null; any other cell is a number when it parses as one
once trimmed. A column is numeric when at least 98% of its present cells are numbers (booleans are not
numbers). The cells that are not are counted and shown with their rows, since ``$1,234.50`` or
``n/a`` in a column of numbers is usually a formatting problem upstream: a numeric feature quarantines
the rows that hold one, and a column with more of them is left categorical, saying why.

Examples
--------
>>> import pandas as pd
>>> chk = check_numbers(pd.Series(["1.5", "", " 2 ", "n/a"] + ["3"] * 96))
>>> chk.numeric, chk.present, chk.bad, chk.examples
(True, 99, 1, ((3, 'n/a'),))
>>> check_numbers(pd.Series(["$1,234.50", "12", "", "7"])).describe("price")
"column 'price': 1 of 3 present cells are not numbers (row 0: '$1,234.50')"
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["LARGEST", "NUMERIC_SHARE", "NumberCheck", "bool_cells", "check_numbers", "number_cells", "past_largest",
           "type_numbers"]

NUMERIC_SHARE = 0.98  # of the present cells, how many must be numbers for the column to be numeric
#: the largest magnitude a value may have: beyond it float32 models (LightGBM, XGBoost) overflow and a
#: scaler's variance soon does, so one such value would fail every training run whose window holds it
LARGEST = 1e38


def past_largest(values: np.ndarray) -> np.ndarray:
    """Which values lie beyond ±:data:`LARGEST`, infinities included (NaN, a missing value, does not)."""
    with np.errstate(invalid="ignore"):
        return np.abs(values) > LARGEST


def number_cells(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cell as a float (NaN when missing or not a number), whether it is present, and whether it is
    present but not a number."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        num = s.to_numpy(dtype=float, na_value=np.nan)
        present = ~np.isnan(num)
        return num, present, np.zeros(len(s), dtype=bool)
    if pd.api.types.is_bool_dtype(s):
        present = s.notna().to_numpy(dtype=bool)
        return np.full(len(s), np.nan), present, present.copy()
    if pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty"):
        # mixed cells (a bool among numbers is not a number, though False == 0): each one as its text
        text = s.astype("string").str.strip()
        present = (text.notna() & (text != "")).fillna(False).to_numpy(dtype=bool)
        num = pd.to_numeric(text.where(present), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return num, present, present & np.isnan(num)
    # text: each distinct cell is parsed once (a text column repeats its values), then mapped back to the rows
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    text = pd.Series(uniques, dtype=object).astype("string").str.strip()
    u_present = np.r_[(text.notna() & (text != "")).fillna(False).to_numpy(dtype=bool), False]
    u_num = np.r_[pd.to_numeric(text.where(u_present[:-1]), errors="coerce").to_numpy(dtype=float, na_value=np.nan),
                  np.nan]
    num, present = u_num[codes], u_present[codes]  # code -1 (a null) takes the last entry: missing
    return num, present, present & np.isnan(num)


@dataclass(frozen=True)
class NumberCheck:
    numeric: bool
    values: np.ndarray  # floats, NaN where a cell is missing or not a number
    present: int
    bad: int  # present cells that are not numbers
    examples: tuple[tuple[int, str], ...]  # (row, cell) of the first of them

    def describe(self, name: str) -> str:
        shown = ", ".join(f"row {r}: {v!r}" for r, v in self.examples)
        return f"column {name!r}: {self.bad:,} of {self.present:,} present cells are not numbers ({shown})"


def check_numbers(s: pd.Series, *, examples: int = 3) -> NumberCheck:
    num, present, bad = number_cells(s)
    n_present, n_bad = int(present.sum()), int(bad.sum())
    numeric = n_present > 0 and not pd.api.types.is_bool_dtype(s) and \
        n_present - n_bad >= NUMERIC_SHARE * n_present
    rows = np.flatnonzero(bad)[:examples]
    shown = tuple((int(r), str(s.iloc[r])) for r in rows)
    return NumberCheck(numeric, num, n_present, n_bad, shown)


def type_numbers(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, NumberCheck]]:
    """``frame`` with its numeric text columns (by the rule above) as floats, and the check of each column
    that holds text (CSV cells all arrive as text)."""
    checks: dict[str, NumberCheck] = {}
    out = frame
    for c in frame.columns:
        if frame[c].dtype != object and not pd.api.types.is_string_dtype(frame[c].dtype):
            continue
        chk = checks[str(c)] = check_numbers(frame[c])
        if chk.numeric:
            if out is frame:
                out = frame.copy()
            out[c] = chk.values
    return out, checks


_BOOL_TEXT = {"true": True, "false": False}


def bool_cells(s: pd.Series) -> pd.Series:
    """Each cell as True or False (bools, or the text true/false in any case), else None: how a bool label
    is read, whether it came as bools or as a CSV's text."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype(object).where(s.notna(), None)
    return s.map(lambda v: v if isinstance(v, bool | np.bool_) else _BOOL_TEXT.get(v.strip().lower())
                 if isinstance(v, str) else None).astype(object)
