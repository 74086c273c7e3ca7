"""The locked schema: feature kinds, learned ranges and domains, label classes.

A loop's schema is inferred from its first accepted batch (or taken from the spec) and then locked;
every later batch is validated against it.

Examples
--------
>>> import pandas as pd
>>> from freshloop.spec import DataSpec
>>> df = pd.DataFrame({"x": [1.5, 2.0, 3.0], "c": ["a", "b", "a"], "y": [0, 1, 0]})
>>> schema = infer_schema(df, DataSpec(label="y"))
>>> [(f.name, f.kind) for f in schema.features], schema.task, schema.classes
([('x', 'numeric'), ('c', 'categorical')], 'classification', (0, 1))
>>> schema.feature("x").low, schema.feature("x").high
(1.5, 3.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..spec import DataSpec
from .numbers import NUMERIC_SHARE, bool_cells, check_numbers

__all__ = ["Feature", "Schema", "TaskGuess", "infer_schema", "infer_task", "looks_like_index"]

_MAX_CATEGORIES = 200
#: a label of whole numbers with more distinct values than this may be a count or an amount, not class ids
MANY_CLASSES = 100


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # numeric | categorical
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    label: str
    task: str
    features: tuple[Feature, ...]
    classes: tuple[Any, ...] | None = None
    time: str | None = None
    time_unit: str = "s"
    entity: str | None = None
    excluded: tuple[str, ...] = field(default=())
    #: what inference decided about a column and why: left out, left categorical, cells that are not numbers
    notes: tuple[str, ...] = field(default=())

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = None if self.classes is None else [_plain(c) for c in self.classes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        feats = tuple(Feature(f["name"], f["kind"], f.get("low"), f.get("high"), tuple(f.get("categories") or ()))
                      for f in d["features"])
        classes = None if d.get("classes") is None else tuple(d["classes"])
        return cls(label=d["label"], task=d["task"], features=feats, classes=classes, time=d.get("time"),
                   time_unit=d.get("time_unit", "s"), entity=d.get("entity"),
                   excluded=tuple(d.get("excluded") or ()), notes=tuple(d.get("notes") or ()))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _as_numeric(s: pd.Series) -> pd.Series | None:
    """The column as floats if it is numeric by the shared rule (:mod:`freshloop.data.numbers`), else None."""
    chk = check_numbers(s)
    return pd.Series(chk.values, index=s.index) if chk.numeric else None


@dataclass(frozen=True)
class TaskGuess:
    """The task a label implies, the rule that decided it, and a warning when the call is close."""

    task: str  # classification | regression
    rule: str
    close: str | None = None


def infer_task(label: pd.Series) -> TaskGuess:
    """Classification or regression, by scikit-learn's ``type_of_target`` rule: true/false, text and whole
    numbers are classes; numbers with a fractional part are a regression target.

    >>> infer_task(pd.Series([3, 17, 40, 3])).task, infer_task(pd.Series([0.5, 2.25])).task
    ('classification', 'regression')
    >>> infer_task(pd.Series(["cat", "dog"])).rule
    'the label holds text (2 distinct values), and text labels are classes'
    """
    if _is_bool(label):
        return TaskGuess("classification", "the label is true/false")
    chk = check_numbers(label)
    if not chk.numeric:
        n = label.dropna().astype(str).nunique()
        return TaskGuess("classification", f"the label holds text ({n:,} distinct values), and text labels "
                                           "are classes")
    vals = chk.values[np.isfinite(chk.values)]
    if len(vals) and bool(np.any(np.mod(vals, 1) != 0)):
        frac = vals[np.mod(vals, 1) != 0][0]
        return TaskGuess("regression", f"the label holds numbers with a fractional part (such as {frac:g}), "
                                       "which are a regression target")
    n = len(np.unique(vals))
    close = (f"the label has {n:,} distinct whole numbers: if they are counts or amounts rather than class ids, "
             "pass --task regression") if n > MANY_CLASSES else None
    return TaskGuess("classification", f"the label holds whole numbers ({n:,} distinct values), which are "
                                       "taken as class ids", close)


def looks_like_index(s: pd.Series) -> bool:
    """A row counter (0, 1, 2, … or 1, 2, 3, …), which would leak position into a model."""
    num = _as_numeric(s)
    if num is None or len(num) < 10 or num.isna().any():
        return False
    diffs = np.diff(num.to_numpy())
    return bool(np.all(diffs == 1) and num.iloc[0] in (0, 1))


def _feature(name: str, s: pd.Series, kind: str | None, *, declared: bool) -> tuple[Feature | None, list[str]]:
    """One column's feature (None: left out) and what to say about it; ``kind`` as data.features declares it."""
    chk = check_numbers(s)
    num = pd.Series(chk.values, index=s.index) if chk.numeric else None
    if kind is None:
        why = _leave_out(name, s)
        if why:
            return None, [f"column {name!r}: left out, {why}"]
        kind = "numeric" if num is not None else "categorical"
    # mostly numbers, but too many cells that are not for the column to be numeric: say which
    mostly = num is None and chk.bad > 0 and chk.present - chk.bad >= 0.5 * chk.present
    fix = "clean those cells, or declare it numeric in data.features (rows with them are then quarantined)"
    if kind == "numeric":
        if num is None:
            raise DataError(f"{chk.describe(name)}: declared numeric, and fewer than "
                            f"{NUMERIC_SHARE:.0%} of its cells are numbers (rule: numeric).",
                            field=f"data.features.{name}", rule="numeric", value=name)
        notes = [f"{chk.describe(name)}: numeric; rows with such cells are quarantined at ingest"] if chk.bad else []
        finite = num[np.isfinite(num)]
        return Feature(name, "numeric", float(finite.min()) if len(finite) else None,
                       float(finite.max()) if len(finite) else None), notes
    counts = s.dropna().astype(str).value_counts()
    if not declared and len(counts) > max(_MAX_CATEGORIES, 0.5 * len(s)):  # an id-like column: every value new
        return None, [f"{chk.describe(name)}: left out, since as text it has {len(counts):,} "
                      f"distinct values in {len(s):,} rows, like an id; {fix}" if mostly else
                      f"column {name!r}: left out, an id ({len(counts):,} distinct values in {len(s):,} "
                      "rows): a model cannot learn from values it will not see again"]
    notes = [f"{chk.describe(name)}: taken as categorical; {fix}"] if mostly else []
    return Feature(name, "categorical", categories=tuple(sorted(counts.index[:_MAX_CATEGORIES]))), notes


def infer_schema(df: pd.DataFrame, spec: DataSpec) -> Schema:
    """Infer feature kinds, ranges, domains and the task from a first batch."""
    if spec.label not in df.columns:
        raise DataError(f"column {spec.label!r}: the label column is missing (rule: data.label must name a "
                        f"column). Columns are {list(df.columns)!r}.", field="data.label", value=spec.label)
    label = df[spec.label]
    task = spec.task or infer_task(label).task
    classes = _classes(label, spec) if task == "classification" else None
    reserved = {spec.label, spec.time, spec.entity}
    excluded: list[str] = []
    notes: list[str] = []
    feats: list[Feature] = []
    declared = {f.name: f.kind for f in spec.features} if spec.features else None
    names = list(declared) if declared is not None else [c for c in df.columns if c not in reserved]
    for name in names:
        if name not in df.columns:
            raise DataError(f"column {name!r}: declared in data.features but missing from the data.",
                            field="data.features", value=name)
        feat, said = _feature(str(name), df[name], declared.get(name) if declared else None,
                              declared=declared is not None)
        notes += said
        if feat is None:
            excluded.append(str(name))
        else:
            feats.append(feat)
    if not feats:
        raise DataError("no usable feature columns (rule: at least one feature besides label, time and entity).",
                        field="data.features")
    return Schema(label=spec.label, task=task, features=tuple(feats), classes=classes, time=spec.time,
                  time_unit=spec.time_unit, entity=spec.entity, excluded=tuple(excluded), notes=tuple(notes))


def _classes(label: pd.Series, spec: DataSpec) -> tuple[Any, ...]:
    """A classification's classes: the spec's, true/false for a bool label, else those of the first batch
    (whole numbers as ints, anything else as text); fewer than two is an error."""
    if spec.classes:
        return tuple(sorted(spec.classes, key=str))
    if _is_bool(label):
        return (False, True)  # a bool label, or true/false text: served as bools
    label_num = _as_numeric(label)
    values = label_num.dropna().astype(int) if label_num is not None and label_num.dropna().mod(1).eq(0).all() \
        else label.dropna().astype(str)
    classes = tuple(sorted({_plain(v) for v in values}))
    if len(classes) < 2:
        raise DataError(f"column {spec.label!r}: classification needs at least 2 classes in the first batch "
                        f"or data.classes in the spec. Got {list(classes)!r}.", field="data.label",
                        value=list(classes))
    return classes


def _is_bool(s: pd.Series) -> bool:
    """Every present cell is true or false (as :func:`bool_cells` reads them), and one is present."""
    if pd.api.types.is_bool_dtype(s):
        return True
    present = s.notna() & s.astype("string").str.strip().fillna("").ne("")
    return bool(present.any()) and bool(bool_cells(s[present]).notna().all())


def _leave_out(name: str, s: pd.Series) -> str | None:
    """Why a column is not a feature, if it is not one."""
    if not name.strip() or name.startswith("Unnamed:"):
        return "it has no name (an index written with the file)"
    if looks_like_index(s):
        return "a row counter (0, 1, 2, …): it would teach the model the row's position"
    if not s.notna().any() or not s.astype("string").str.strip().fillna("").ne("").any():
        return "every cell is empty"
    return None
