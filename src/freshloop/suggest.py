"""A starting spec for a data set nobody has tuned: what ``freshloop init`` writes.

Every choice is made from the file and said in the spec's opening comment, with how to override it:

- **the task**, by scikit-learn's ``type_of_target`` rule (:func:`freshloop.data.schema.infer_task`):
  true/false, text and whole numbers are classes, numbers with a fractional part a regression target;
- **the clock**: a column of ISO dates or datetimes (with or without a zone), a ``datetime64`` column, or
  epoch numbers in a column named like a time, when it is the only one and never goes backwards; else the
  row number, and durations are counted in rows (:func:`find_time_columns`);
- **the sizes** (batch, warm-up, window, cooldown, staleness, the periodic policies to compare) scale with
  the stream; batch, cooldown, staleness and the periods are in the time column's units once there is one
  (days and hours, not seconds), the warm-up and the window are rows (a window by period counts back from
  the loop's clock, and a backfill or a paused stream would leave it empty);
- **the model family**, on the warm-up rows only (the first rows in time order, what a replay trains its
  first model on): gradient boosting and a linear model are fitted on their first three quarters and scored
  on the last quarter; the linear model is kept only when it scores better. Later rows are never looked at
  for it, so a replay of the same file stays an honest forecast;
- **warnings**: a feature that predicts the label by itself (a likely leak, :func:`find_leaks`); a
  classification whose warm-up holds one class is an error that says how many rows it needs.

Examples
--------
>>> import numpy as np, pandas as pd
>>> frame = pd.DataFrame({"x": np.arange(1000) % 7, "y": np.arange(1000) % 2})
>>> found = suggest_spec(frame, label="y", name="demo")
>>> found.spec["model"]["estimator"], found.spec["replay"]["batch"], found.spec["policy"]["cooldown"]
('sklearn.ensemble.HistGradientBoostingClassifier', {'rows': 10}, '20rows')
>>> found.choice["chosen"].rsplit(".", 1)[1], len(found.choice["scores"]), found.choice["rows"]
('HistGradientBoostingClassifier', 2, 200)
>>> found.spec["replay"]["compare"]
['never', 'periodic:50rows', 'periodic:200rows', 'default']
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .clock import human_duration, parse_duration, round_duration
from .data.numbers import check_numbers
from .data.schema import Schema, infer_schema, infer_task
from .data.times import UNIT_SECONDS, to_seconds
from .errors import SpecError
from .evaluate.metrics import default_metric, get_metric
from .spec import DataSpec, load_spec_dict

__all__ = ["Suggestion", "TimeColumn", "choose_model", "find_leaks", "find_time_columns", "refit_size", "suggest_spec"]

_BOOSTING = {"classification": "sklearn.ensemble.HistGradientBoostingClassifier",
             "regression": "sklearn.ensemble.HistGradientBoostingRegressor"}
_LINEAR = {"classification": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
           "regression": ("sklearn.linear_model.Ridge", {})}

# an ISO 8601 date or datetime, with or without a zone: 2024-01-05, 2024-01-05 13:00, 2024-01-05T13:00:00.5+05:30
_ISO = re.compile(r"^\s*\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)?\s*$")
# words that name a time column; epoch numbers are only taken for a time in a column named so
_TIME_WORDS = {"time", "timestamp", "ts", "date", "datetime", "epoch", "created", "updated", "createdat",
               "updatedat", "when", "at", "day", "hour"}
_EPOCH_SECONDS = (946684800.0, 4102444800.0)  # 2000-01-01 .. 2100-01-01
#: How the spec init writes adapts to a concept that moves and comes back: a moved concept is answered on the
#: rows after it once this many labels have matured (``model.window.react``), and the versions of the last
#: ``RECALL`` concepts may be promoted back (``gate.recall``). Both together lift the default policy to at least
#: never retraining on every stream of ``bench/streams.py``; neither helps everywhere alone (docs/decisions.md).
REACT, RECALL = 60, 3
#: A classification's spec also refits its model at every tick on the newest labels (``model.companion.refit``),
#: this many per class and at least ``REFIT_LEAST``, serving in the champion's place while surely better: it
#: follows a concept that flips faster than retrains can (Usenet), and the champion keeps serving where the
#: concept holds still (``python bench/refit.py --size 30/class``, docs/decisions.md).
REFIT_PER_CLASS, REFIT_LEAST = 30, 60
#: a feature whose one-column model scores at least this on later rows (balanced accuracy or R²) is a likely leak
LEAK_SCORE = 0.995
_LEAK_ROWS = 20000


def refit_size(classes: int, per_class: int = REFIT_PER_CLASS) -> int:
    """The labels a classification's refit companion is fitted on: ``per_class`` per class, at least
    :data:`REFIT_LEAST`.

    >>> refit_size(2), refit_size(24), refit_size(24, per_class=45)
    (60, 720, 1080)
    """
    return max(REFIT_LEAST, per_class * classes)


@dataclass(frozen=True)
class TimeColumn:
    """A column that holds times, how they are written, and where they first go backwards."""

    name: str
    form: str  # "ISO dates", "ISO datetimes", "datetime64", "epoch ms", ...
    unit: str  # data.time_unit: what a number counts ("s" for dates and datetimes, which need none)
    backwards: tuple[int, str, str] | None = None  # (row, its value, the previous row's value)

    def describe_backwards(self) -> str:
        assert self.backwards is not None
        row, value, before = self.backwards
        return f"goes backwards at row {row:,} ({value} after {before})"


def _is_time_name(name: str) -> bool:
    return any(w in _TIME_WORDS for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()))


def _time_form(s: pd.Series, name: str) -> tuple[str, str] | None:
    """(form, unit) when ``s`` holds times, else None."""
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
        return "datetime64", "s"
    chk = check_numbers(s)
    if chk.numeric:  # epoch numbers, only in a column named like a time
        vals = chk.values[np.isfinite(chk.values)]
        if not _is_time_name(name) or not len(vals):
            return None
        for unit in ("s", "ms", "us", "ns"):
            secs = vals * UNIT_SECONDS[unit]
            if _EPOCH_SECONDS[0] <= secs.min() and secs.max() <= _EPOCH_SECONDS[1]:
                return f"epoch {'seconds' if unit == 's' else unit}", unit
        return None
    if pd.api.types.infer_dtype(s, skipna=True) != "string":
        return None
    cells = pd.Series(s.dropna().unique()).astype(str)
    cells = cells[cells.str.strip() != ""]
    if not len(cells):
        return None
    iso = cells.str.match(_ISO)
    if iso.mean() < 0.98:
        return None
    dated = cells[iso].str.contains(r"\d[T ]\d", regex=True).any()
    return ("ISO datetimes" if dated else "ISO dates"), "s"


def find_time_columns(frame: pd.DataFrame, *, exclude: tuple[str | None, ...] = ()) -> list[TimeColumn]:
    """The columns of ``frame`` that hold times: ISO dates or datetimes as text (with or without a zone),
    ``datetime64``, or epoch numbers (s, ms, us, ns; years 2000–2100) in a column named like a time.

    >>> frame = pd.DataFrame({"when": ["2024-01-02", "2024-01-01"], "x": [1, 2], "ts": [1.7e12, 1.7e12 + 5]})
    >>> [(t.name, t.form, t.unit, t.backwards) for t in find_time_columns(frame)]
    [('when', 'ISO dates', 's', (1, '2024-01-01', '2024-01-02')), ('ts', 'epoch ms', 'ms', None)]
    """
    found = []
    for name in frame.columns:
        if name in exclude:
            continue
        form = _time_form(frame[name], str(name))
        if form is not None:
            found.append(TimeColumn(str(name), form[0], form[1], _backwards(frame[name], form[1])))
    return found


def _backwards(s: pd.Series, unit: str) -> tuple[int, str, str] | None:
    secs = to_seconds(s, unit)[0].to_numpy(dtype=float)
    rows = np.flatnonzero(~np.isnan(secs))
    steps = np.flatnonzero(np.diff(secs[rows]) < 0)
    if not len(steps):
        return None
    row, before = int(rows[steps[0] + 1]), int(rows[steps[0]])
    return row, str(s.iloc[row]), str(s.iloc[before])


def find_leaks(frame: pd.DataFrame, schema: Schema) -> list[tuple[str, float]]:
    """Features that predict the label by themselves: a decision tree on that one column, fitted on the
    earlier half of the rows (at most 20,000, spread over the file), scores at least ``LEAK_SCORE`` on the
    later half (balanced accuracy for a classification, R² for a regression). Such a column is usually known
    only with the label (an outcome code, the label in other words), and a model would learn nothing else.

    >>> from freshloop.spec import DataSpec
    >>> rng = np.random.default_rng(0)
    >>> frame = pd.DataFrame({"x": rng.normal(size=400), "y": rng.integers(0, 2, 400)})
    >>> frame["copy"] = np.where(frame["y"] == 1, "yes", "no")
    >>> find_leaks(frame, infer_schema(frame, DataSpec(label="y")))
    [('copy', 1.0)]
    """
    from sklearn.metrics import balanced_accuracy_score, r2_score
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    rows = frame[frame[schema.label].notna()]
    if len(rows) > _LEAK_ROWS:
        rows = rows.iloc[np.linspace(0, len(rows) - 1, _LEAK_ROWS).astype(int)]
    half = len(rows) // 2
    if half < 20:
        return []
    regression = schema.task == "regression"
    y = check_numbers(rows[schema.label]).values if regression else rows[schema.label].astype(str).to_numpy()
    if not regression and len(set(y[:half])) < 2:
        return []
    leaks = []
    for feat in schema.features:
        col = rows[feat.name]
        if feat.kind == "numeric":
            x = check_numbers(col).values
            finite = np.isfinite(x)
            x = np.where(finite, x, x[finite].min() - 1 if finite.any() else 0.0)  # missing: a value of its own
        else:
            x = pd.factorize(col.astype(str))[0].astype(float)  # the codes of the earlier half's values first
        tree = (DecisionTreeRegressor if regression else DecisionTreeClassifier)(max_depth=8, random_state=0)
        tree.fit(x[:half, None], y[:half])
        pred = tree.predict(x[half:, None])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class of the later half the tree never predicts
            score = r2_score(y[half:], pred) if regression else balanced_accuracy_score(y[half:], pred)
        if score >= LEAK_SCORE:
            leaks.append((feat.name, round(float(score), 4)))
    return leaks


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
        truth = bundle.target(y.iloc[cut:]).to_numpy()
        found["scores"][est] = round(metric.score(truth, pred, proba, classes), 6)
    scores = found["scores"]
    if linear in scores and (boosting not in scores or metric.better(scores[linear], scores[boosting]) > 0):
        found.update(chosen=linear, params=linear_params, scale=True)
    return found


class Suggestion(NamedTuple):
    """What ``freshloop init`` writes: the spec, the schema it implies, how the model family was chosen
    (:func:`choose_model`), the spec's opening comment (one line each) and the notes to tell the user."""

    spec: dict[str, Any]
    schema: Schema
    choice: dict[str, Any]
    header: list[str]
    notes: list[str]


@dataclass
class _Clock:
    """The stream's clock as init chose it, and what it said about the time columns."""

    time: str | None
    unit: str
    said: list[str] = field(default_factory=list)  # told on the screen and in the header
    left_out: dict[str, str] = field(default_factory=dict)  # time columns that are not features, and why


def _choose_clock(frame: pd.DataFrame, label: str, time: str | None, time_unit: str | None) -> _Clock:
    if time is not None:
        cols = find_time_columns(frame, exclude=(label,))
        named = next((c for c in cols if c.name == time), None)
        unit = time_unit or (named.unit if named else "s")
        clock = _Clock(time, unit)
        col = named or TimeColumn(time, f"numbers in {unit}", unit, _backwards(frame[time], unit))
        if col.backwards:
            clock.said.append(f"time column {time!r} {col.describe_backwards()}: a replay takes the rows in time "
                              "order, not in the file's order")
        for c in cols:
            if c.name != time:
                clock.left_out[c.name] = f"it holds times ({c.form}) and the clock is {time!r}"
        return clock
    cols = find_time_columns(frame, exclude=(label,))
    if len(cols) == 1 and cols[0].backwards is None:
        c = cols[0]
        clock = _Clock(c.name, time_unit or c.unit)
        clock.said.append(f"using {c.name!r} as time ({c.form}); pass --time to choose another")
        return clock
    clock = _Clock(None, "s")
    for c in cols:
        clock.left_out[c.name] = f"it holds times ({c.form})"
    if len(cols) == 1:
        clock.said.append(f"column {cols[0].name!r} holds times ({cols[0].form}) but "
                          f"{cols[0].describe_backwards()}, so it is not taken as the clock: the row number is, "
                          f"and durations are counted in rows; pass --time {cols[0].name} to replay in its order")
    elif cols:
        names = ", ".join(repr(c.name) for c in cols)
        clock.said.append(f"columns {names} hold times: pass --time to choose which one is the clock; until then "
                          "the row number is, and durations are counted in rows")
    else:
        clock.said.append("no column holds dates or times: the row number is the clock, and durations are "
                          "counted in rows; pass --time to name a time column")
    return clock


def _warmup_classes(first: pd.DataFrame, ordered: pd.DataFrame, label: str, warmup: int) -> None:
    """A classification's warm-up must hold two classes: else say how many rows it needs."""
    seen = first[label].dropna()
    if seen.astype(str).nunique() >= 2:
        return
    labels = ordered[label].reset_index(drop=True)
    only = seen.iloc[0] if len(seen) else None
    only = only.item() if isinstance(only, np.generic) else only
    other = labels.notna() & (labels.astype(str) != str(only))
    if not other.any():
        return  # one class in the whole file: the schema says so
    need = int(np.flatnonzero(other.to_numpy())[0]) + 1
    raise SpecError(f"label {label!r}: the warm-up (the first {warmup:,} rows in time order, which train the first "
                    f"model) holds one class ({only!r}); the next class first appears at row {need - 1:,}, so the "
                    f"warm-up needs at least {need:,} rows (rule: a classifier learns from two classes or more). "
                    f"Pass --warmup {need} or more.", field="replay.warmup", rule="two classes", value=warmup)


def _sizes(spec: dict[str, Any], *, time: str | None, secs: np.ndarray | None, n: int, warm: int,
           warmup_given: bool) -> tuple[list[str], list[str]]:
    """Batch, window, cooldown and staleness of ``spec``, scaled to the stream: in time when its clock spans
    some time, else in rows. Returns the header lines that say how, and notes."""
    batch_rows = max(10, min(500, n // 100))
    window_rows = max(1000, min(20000, n // 4))
    # the window stays a number of rows: a period counts back from the loop's clock, and finds no rows
    # when a backfill through CLI calls, or a stream that pauses, leaves the newest rows far behind it
    spec["model"]["window"] = {"rows": window_rows, "react": REACT}
    finite = secs[np.isfinite(secs)] if secs is not None else np.array([])
    span = float(finite.max() - finite.min()) if len(finite) > 1 else 0.0
    triggers: dict[str, Any] = {"drift": {}, "quality": {}, "detector": "adwin", "gain": {}}
    if time is not None and span > 0:
        every = span / max(n - 1, 1)  # seconds per row, on average
        batch = round_duration(batch_rows * every)
        b = parse_duration(batch)
        spec["replay"]["batch"] = {"period": batch}
        spec["policy"] = {"cooldown": round_duration(2 * b),
                          "triggers": triggers | {"staleness": round_duration(max(20 * b, span / 4))}}
        how = "" if warmup_given else ": 1/10 of the rows, 200..5,000"
        return [f"clock {time!r}: {human_duration(span)} of rows, one every {human_duration(every)} on average",
                f"sizes: batch {batch} (about {batch_rows:,} rows: 1/100 of the rows, 10..500), warm-up "
                f"{warm:,} rows (about {human_duration(warm * every)}{how}), window {window_rows:,} rows "
                f"(about {human_duration(window_rows * every)}: 1/4, 1,000..20,000; rows, so that it is never "
                "empty), cooldown 2 batches, "
                "staleness the larger of 20 batches and 1/4 of the span; compared: every 5 and 20 batches"], []
    notes = []
    if time is not None:
        notes.append(f"time column {time!r} holds one time for every row: the batches are counted in rows")
    else:  # the row number is the clock (1 row = 1 s), as the notes say
        spec["data"].pop("time")
    spec["replay"]["batch"] = {"rows": batch_rows}
    spec["policy"] = {"cooldown": f"{2 * batch_rows}rows",
                      "triggers": triggers | {"staleness": f"{max(20 * batch_rows, n // 4)}rows"}}
    return [f"sizes: batch {batch_rows:,} rows (1/100 of the rows, 10..500), warm-up {warm:,} rows"
            f"{'' if warmup_given else ' (1/10, 200..5,000)'}, window {window_rows:,} rows (1/4, 1,000..20,000), "
            "cooldown 2 batches, staleness the larger of 20 batches and 1/4 of the rows; compared: "
            "every 5 and 20 batches"], notes


def suggest_spec(frame: pd.DataFrame, *, label: str, name: str, time: str | None = None,
                 time_unit: str | None = None, task: str | None = None, warmup: int | None = None,
                 raw: pd.DataFrame | None = None, leaks: bool = True) -> Suggestion:
    """The spec ``freshloop init`` writes for ``frame`` (numbers typed; ``raw``, the file's cells as text,
    only words the notes on cells that are not numbers)."""
    if label not in frame.columns:
        infer_schema(frame, DataSpec(label=label))  # raises the schema's own message
    clock = _choose_clock(frame, label, time, time_unit)
    time, unit = clock.time, clock.unit
    guess = infer_task(frame[label])
    dspec = DataSpec.model_validate({"label": label, "time": time, "time_unit": unit, "task": task or guess.task})
    usable = frame.drop(columns=list(clock.left_out))
    schema = infer_schema(usable, dspec)
    n = len(frame)
    warm = warmup or max(200, min(5000, n // 10))
    if time is not None:  # the warm-up is the first rows in time order, as a replay takes them
        secs = to_seconds(frame[time], unit)[0].to_numpy(dtype=float)
        ordered = usable.iloc[np.argsort(secs, kind="stable")]
    else:
        secs, ordered = None, usable
    first = ordered.iloc[:warm]
    if schema.task == "classification":
        _warmup_classes(first, ordered, label, warm)
    choice = choose_model(first, schema)
    spec: dict[str, Any] = {
        "name": name,
        "data": {"label": label, "task": schema.task, "time": time, "time_unit": unit,
                 "features": [{"name": f.name, "kind": f.kind} for f in schema.features]},
        "model": {"estimator": choice["chosen"], "params": choice["params"], "scale": choice["scale"]},
        "gate": {"recall": RECALL},
        "replay": {"label_delay": "0s", "warmup": warm},
    }
    task_line = (f"task {schema.task}: set by --task" if task else f"task {schema.task}: {guess.rule}; pass --task "
                 f"{'regression' if guess.task == 'classification' else 'classification'} to override")
    header = [task_line]
    notes = list(clock.said)
    if guess.close and not task:
        notes.append(guess.close)
    header_sizes, notes_sizes = _sizes(spec, time=time, secs=secs, n=n, warm=warm, warmup_given=bool(warmup))
    header += header_sizes
    adapt = (f"adaptation: a moved concept is answered on the rows after it once {REACT} labels have matured; "
             f"a version of one of the last {RECALL} concepts comes back when it is surely better on the newest")
    if schema.task == "classification":
        refit = refit_size(len(schema.classes or ()))
        spec["model"]["companion"] = {"refit": refit}
        adapt += (f"; the model refitted at every tick on the newest {refit:,} labels ({REFIT_PER_CLASS} per class, "
                  f"at least {REFIT_LEAST}) serves while it is surely better")
    header.append(adapt)
    notes += notes_sizes
    from .replay.driver import default_compare

    spec["replay"]["compare"] = default_compare(load_spec_dict(spec))
    notes.extend(schema.notes if raw is None else infer_schema(raw.drop(columns=list(clock.left_out)), dspec).notes)
    notes.extend(f"column {c!r}: left out, {why}" for c, why in clock.left_out.items())
    if leaks:
        scored = "R²" if schema.task == "regression" else "balanced accuracy"
        notes.extend(f"column {c!r}: a likely leak: alone it predicts the label ({scored} "
                     f"{s:.3f} on the later half of the rows, fitted on the earlier half); if it is known only with "
                     "the label, remove it from data.features" for c, s in find_leaks(ordered, schema))
    if choice["scores"]:
        header.append(f"model chosen on the first {choice['rows']:,} rows (fit on 3/4, scored on the last 1/4): "
                      + ", ".join(f"{k.rsplit('.', 1)[1]} {v:.4f}" for k, v in choice["scores"].items()))
    load_spec_dict(spec)  # what we suggest must itself be valid
    return Suggestion(spec, schema, choice, header, notes)
