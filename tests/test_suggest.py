"""`freshloop init` writes a spec that is right for the user's data: the task, the clock, sizes in the clock's
units, and warnings about leaks and warm-ups that cannot train, on the public drifting streams and on frames
made here for each form people bring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.utils.multiclass import type_of_target

from freshloop.clock import parse_duration
from freshloop.data.schema import infer_task
from freshloop.errors import SpecError
from freshloop.suggest import find_time_columns, suggest_spec


def _streams() -> Path | None:
    """The folder of public drifting streams this machine holds (see its README), if any."""
    for p in (os.environ.get("FRESHLOOP_STREAMS"), Path(__file__).resolve().parents[2] / "shared/data/streams",
              "/work/shared/data/streams"):
        if p and (Path(p) / "usenet1.csv").exists():
            return Path(p)
    return None


STREAMS = _streams()
needs_streams = pytest.mark.skipif(STREAMS is None, reason="the public drifting streams are not on this machine")
N = 2400


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "freshloop.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    """Hourly rows from 2024-01-01 with two numeric features and a category; y follows x1 + x2."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), unit="h")
    return pd.DataFrame({"when": when, "x1": x1, "x2": x2, "c": rng.choice(["a", "b", "c"], n),
                         "y": (x1 + x2 + rng.normal(0, 0.5, n) > 0).astype(int)})


def is_row_clock(spec: dict) -> bool:
    """Every size of the spec is counted in rows."""
    policies = [p for p in spec["replay"]["compare"] if p.startswith("periodic:")]
    return ("time" not in spec["data"] and "rows" in spec["replay"]["batch"] and "rows" in spec["model"]["window"]
            and spec["policy"]["cooldown"].endswith("rows") and all(p.endswith("rows") for p in policies))


def assert_time_clock(spec: dict, time: str, batch_hours: float) -> None:
    """The clock is ``time`` and every size but the warm-up and the window is a duration in its units, the
    batch about ``batch_hours``."""
    assert spec["data"]["time"] == time
    batch = parse_duration(spec["replay"]["batch"]["period"])
    assert batch_hours / 2 <= batch / 3600 <= batch_hours * 2, spec["replay"]["batch"]
    durations = [spec["replay"]["batch"]["period"], spec["policy"]["cooldown"],
                 spec["policy"]["triggers"]["staleness"],
                 *(p.split(":", 1)[1] for p in spec["replay"]["compare"] if p.startswith("periodic:"))]
    assert all(d[-1] in "hdwy" and not d.endswith("rows") for d in durations), durations
    periods = [parse_duration(p.split(":", 1)[1]) for p in spec["replay"]["compare"] if p.startswith("periodic:")]
    assert len(periods) == 2 and periods[0] < periods[1], spec["replay"]["compare"]
    assert "rows" not in spec["replay"]["batch"]
    assert "rows" in spec["model"]["window"]  # never empty, whatever the clock says (see suggest.py)


# ---------------------------------------------------------------------------------------------------------------
# the public streams


REAL = [("LUdata.csv", "target", "at3"), ("outdoorStream.csv", "target", None),
        ("powersupply.csv", "class", None), ("usenet1.csv", "interesting", None),
        ("usenet2.csv", "interesting", None)]


@pytest.mark.slow
@needs_streams
@pytest.mark.parametrize(("name", "label", "leak"), REAL, ids=[r[0] for r in REAL])
def test_init_on_each_public_stream(name: str, label: str, leak: str | None) -> None:
    assert STREAMS is not None
    data = pd.read_csv(STREAMS / name)
    found = suggest_spec(data, label=label, name="s")
    spec = found.spec
    # every label here is a class id: Outdoor's 40 objects and Powersupply's 24 hours included
    assert spec["data"]["task"] == "classification", found.header
    est = spec["model"]["estimator"].rsplit(".", 1)[1]
    assert est.endswith("Classifier") or est == "LogisticRegression", est
    assert found.header[0].startswith("task classification: the label holds whole numbers"), found.header
    assert "pass --task regression" in found.header[0]
    # no time column: the row number is the clock and every size is in rows, as the notes say
    assert is_row_clock(spec), spec
    assert any(n.startswith("no column holds dates or times: the row number is the clock") for n in found.notes)
    # a moved concept answered on the rows after it, and a concept that returns brought back (BENCHMARKS.md)
    assert spec["model"]["window"]["react"] == 60 and spec["gate"]["recall"] == 3, spec
    # and the model refitted at every tick on the newest 30 labels per class (at least 60) serves while better
    classes = data[label].nunique()
    assert spec["model"]["companion"] == {"refit": max(60, 30 * classes)}, spec
    adapt = next(h for h in found.header if h.startswith("adaptation: a moved concept is answered on the rows "
                                                          "after it once 60 labels"))
    assert f"refitted at every tick on the newest {max(60, 30 * classes):,} labels" in adapt, adapt
    leaks = [n for n in found.notes if "likely leak" in n]
    if leak is None:
        assert leaks == [], leaks
    else:
        assert len(leaks) == 1 and leaks[0].startswith(f"column {leak!r}: a likely leak: alone it predicts the label")


@pytest.mark.slow
@needs_streams
@pytest.mark.parametrize(("name", "label"), [("outdoorStream.csv", "target"), ("powersupply.csv", "class")])
def test_init_then_replay_scores_class_ids_by_accuracy(tmp_path: Path, name: str, label: str) -> None:
    assert STREAMS is not None
    init = run("init", "--data", str(STREAMS / name), "--label", label, "--out", "loop.yaml", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "task classification" in init.stdout
    rep = run("replay", "loop.yaml", "--data", str(STREAMS / name), "--out", "out", "--workers", "1",
              "--compare", "never", cwd=tmp_path)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    never = json.loads((tmp_path / "out" / "summary.json").read_text())["policies"]["never"]
    assert never["metric_name"] == "accuracy" and 0 < never["metric"] < 1, never


# ---------------------------------------------------------------------------------------------------------------
# the task


@pytest.mark.parametrize("values", [[0, 1, 1], [3, 17, 40, 3], [1.0, 2.0], [0.5, 2.25, 3.0], [1e6, 2.5],
                                    ["a", "b"], [-1, 2, 7]])
def test_the_task_follows_scikit_learns_type_of_target(values: list) -> None:
    sk = type_of_target(np.asarray(values, dtype=object if isinstance(values[0], str) else float))
    assert infer_task(pd.Series(values)).task == ("regression" if sk == "continuous" else "classification")


@pytest.mark.slow
def test_a_label_of_40_class_ids_is_a_classification_and_a_fractional_one_a_regression() -> None:
    data = frame()
    data["y"] = np.random.default_rng(1).integers(0, 40, N)
    found = suggest_spec(data, label="y", name="s")
    assert found.spec["data"]["task"] == "classification"
    assert found.header[0] == ("task classification: the label holds whole numbers (40 distinct values), which are "
                               "taken as class ids; pass --task regression to override")
    assert found.spec["model"]["companion"] == {"refit": 1200}  # 30 labels per class refitted at every tick
    data["y"] = data["x1"] * 3 + 0.25
    found = suggest_spec(data, label="y", name="s")
    assert found.spec["data"]["task"] == "regression"
    assert "companion" not in found.spec["model"]  # no regression stream measured with a refit (decisions.md)
    assert found.spec["model"]["estimator"].endswith(("Regressor", "Ridge"))
    assert found.header[0].startswith("task regression: the label holds numbers with a fractional part (such as ")
    assert found.header[0].endswith("pass --task classification to override")


def test_a_text_label_is_a_classification() -> None:
    data = frame()
    data["y"] = np.where(data["y"] == 1, "churned", "stayed")
    found = suggest_spec(data, label="y", name="s")
    assert found.spec["data"]["task"] == "classification" and found.schema.classes == ("churned", "stayed")
    assert found.header[0].startswith("task classification: the label holds text (2 distinct values)")


@pytest.mark.slow
def test_hundreds_of_whole_numbers_are_a_close_call_the_flag_decides(tmp_path: Path) -> None:
    data = frame()
    data["y"] = (np.abs(data["x1"]) * 150).astype(int)  # an amount, perhaps: hundreds of whole numbers
    data.to_csv(tmp_path / "amounts.csv", index=False)
    res = run("init", "--data", "amounts.csv", "--label", "y", "--out", "a.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load((tmp_path / "a.yaml").read_text())["data"]["task"] == "classification"
    assert "if they are counts or amounts rather than class ids, pass --task regression" in res.stderr
    res = run("init", "--data", "amounts.csv", "--label", "y", "--task", "regression", "--out", "b.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "b.yaml").read_text()
    assert yaml.safe_load(text)["data"]["task"] == "regression" and "# task regression: set by --task" in text
    assert "pass --task regression" not in res.stderr
    bad = run("init", "--data", "amounts.csv", "--label", "y", "--task", "ranking", cwd=tmp_path)
    assert bad.returncode == 2 and "--task: must be classification or regression" in bad.stderr


# ---------------------------------------------------------------------------------------------------------------
# the clock


@pytest.mark.slow
@pytest.mark.parametrize("form", ["iso_datetime", "iso_date", "iso_datetime_tz", "datetime64", "epoch_s",
                                  "epoch_ms"])
def test_a_time_column_is_found_and_sizes_are_in_its_units(tmp_path: Path, form: str) -> None:
    data = frame()
    when = data.pop("when")
    if form == "iso_datetime":
        data.insert(0, "datetime", when.dt.strftime("%Y-%m-%d %H:%M:%S"))
    elif form == "iso_date":  # daily rows, so a date is the time: one row per day
        data.insert(0, "datetime", (pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(N), unit="D"))
                    .strftime("%Y-%m-%d"))
    elif form == "iso_datetime_tz":
        data.insert(0, "datetime", when.dt.tz_localize("UTC").dt.tz_convert("Asia/Kolkata")
                    .dt.strftime("%Y-%m-%dT%H:%M:%S%z"))
    elif form == "datetime64":
        data.insert(0, "datetime", when.astype("datetime64[ms]"))
    elif form == "epoch_s":
        data.insert(0, "datetime", (when - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s"))
    else:
        data.insert(0, "datetime", (when - pd.Timestamp("1970-01-01")) // pd.Timedelta("1ms"))
    data.to_parquet(tmp_path / "data.parquet")
    res = run("init", "--data", "data.parquet", "--label", "y", "--out", "loop.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "using 'datetime' as time" in res.stderr and "pass --time to choose another" in res.stderr
    spec = yaml.safe_load((tmp_path / "loop.yaml").read_text())
    assert_time_clock(spec, "datetime", 24 * 24 if form == "iso_date" else 24)
    assert spec["data"]["time_unit"] == ("ms" if form == "epoch_ms" else "s")
    assert [f["name"] for f in spec["data"]["features"]] == ["x1", "x2", "c"]
    # and the replay runs on that clock
    spec["store"] = {"root": str(tmp_path / "store")}
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(spec))
    rep = run("replay", "loop.yaml", "--data", "data.parquet", "--out", "out", "--workers", "1",
              "--compare", spec["replay"]["compare"][1], cwd=tmp_path)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["policies"]
    periodic = summary[spec["replay"]["compare"][1]]
    assert periodic["retrains"] >= 5 and periodic["failed_runs"] == 0, periodic


def test_a_named_time_column_of_epoch_milliseconds_gets_its_unit() -> None:
    data = frame()
    data["ts"] = (data.pop("when") - pd.Timestamp("1970-01-01")) // pd.Timedelta("1ms")
    found = suggest_spec(data, label="y", name="s", time="ts")
    assert found.spec["data"]["time_unit"] == "ms"
    assert_time_clock(found.spec, "ts", 24)


def test_numbers_in_a_column_not_named_like_a_time_are_not_a_clock() -> None:
    data = frame()
    data["reading"] = (data.pop("when") - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
    assert find_time_columns(data) == []


def test_a_time_column_that_goes_backwards_is_reported_with_its_first_offending_row() -> None:
    data = frame()
    text = data.pop("when").dt.strftime("%Y-%m-%d %H:%M")
    text.iloc[[700, 701]] = text.iloc[[701, 700]].to_numpy()
    data.insert(0, "datetime", text)
    found = suggest_spec(data, label="y", name="s")
    assert is_row_clock(found.spec)
    said = [n for n in found.notes if "goes backwards" in n]
    assert said == ["column 'datetime' holds times (ISO datetimes) but goes backwards at row 701 "
                    "(2024-01-30 04:00 after 2024-01-30 05:00), so it is not taken as the clock: the row number is, "
                    "and durations are counted in rows; pass --time datetime to replay in its order"], found.notes
    assert "column 'datetime': left out, it holds times (ISO datetimes)" in found.notes
    # named by --time, it is the clock, and the note still says where it goes backwards
    found = suggest_spec(data, label="y", name="s", time="datetime")
    assert_time_clock(found.spec, "datetime", 24)
    assert ("time column 'datetime' goes backwards at row 701 (2024-01-30 04:00 after 2024-01-30 05:00): a replay "
            "takes the rows in time order, not in the file's order") in found.notes


def test_two_time_columns_are_named_and_neither_is_a_feature() -> None:
    data = frame()
    when = data.pop("when")
    data.insert(0, "created", when.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    data.insert(1, "day", when.dt.strftime("%Y-%m-%d"))
    found = suggest_spec(data, label="y", name="s")
    assert is_row_clock(found.spec)
    assert ("columns 'created', 'day' hold times: pass --time to choose which one is the clock; until then the row "
            "number is, and durations are counted in rows") in found.notes
    assert [f["name"] for f in found.spec["data"]["features"]] == ["x1", "x2", "c"]
    found = suggest_spec(data, label="y", name="s", time="created")
    assert_time_clock(found.spec, "created", 24)
    assert "column 'day': left out, it holds times (ISO dates) and the clock is 'created'" in found.notes


# ---------------------------------------------------------------------------------------------------------------
# degenerate streams


@pytest.mark.slow
def test_a_feature_that_determines_the_label_is_named_as_a_likely_leak(tmp_path: Path) -> None:
    data = frame()
    data["outcome_code"] = np.where(data["y"] == 1, "closed-won", "closed-lost")
    data["score"] = data["y"] * 10 + np.random.default_rng(3).random(N)  # a number that gives the label away
    data.to_csv(tmp_path / "data.csv", index=False)
    res = run("init", "--data", "data.csv", "--label", "y", "--out", "loop.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    leaks = [ln for ln in res.stderr.replace("\n", " ").split("note ") if "likely leak" in ln]
    assert sorted(ln.split("'")[1] for ln in leaks) == ["outcome_code", "score"], res.stderr
    assert "# note: column 'score': a likely leak: alone it predicts the label (balanced accuracy 1.000" in \
        (tmp_path / "loop.yaml").read_text()


def test_a_regression_target_copied_into_a_feature_is_a_likely_leak() -> None:
    data = frame()
    data["y"] = data["x1"] * 2 + data["x2"] + 0.1
    data["y_in_cents"] = data["y"] * 100
    found = suggest_spec(data, label="y", name="s")
    assert [n.split("'")[1] for n in found.notes if "likely leak" in n] == ["y_in_cents"], found.notes
    assert any("(R² 1.000 on the later half" in n for n in found.notes)


@pytest.mark.slow
def test_a_warm_up_with_one_class_is_an_error_that_says_how_many_rows_it_needs(tmp_path: Path) -> None:
    data = frame()
    data.loc[:899, "y"] = 0  # the first 900 rows hold one class; the warm-up is 240 rows
    data.loc[900, "y"] = 1
    with pytest.raises(SpecError, match=r"the warm-up \(the first 240 rows in time order, which train the first "
                                        r"model\) holds one class \(0\); the next class first appears at row 900, so "
                                        r"the warm-up needs at least 901 rows") as e:
        suggest_spec(data, label="y", name="s")
    assert e.value.field == "replay.warmup"
    data.to_csv(tmp_path / "data.csv", index=False)
    res = run("init", "--data", "data.csv", "--label", "y", "--out", "loop.yaml", cwd=tmp_path)
    assert res.returncode == 2 and "Pass --warmup 901 or more" in res.stderr, res.stderr
    assert not (tmp_path / "loop.yaml").exists()
    res = run("init", "--data", "data.csv", "--label", "y", "--warmup", "1000", "--out", "loop.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load((tmp_path / "loop.yaml").read_text())["replay"]["warmup"] == 1000


@pytest.mark.slow
def test_the_readme_example_is_what_init_writes(tmp_path: Path) -> None:
    """The README shows `init` on a user's hourly file: the same file gives the same words."""
    rng = np.random.default_rng(0)
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(N), unit="h")
    temperature = rng.normal(size=N)
    pd.DataFrame({"datetime": when.strftime("%Y-%m-%d %H:%M:%S"), "temperature": temperature,
                  "demand": (50 + 3 * temperature + rng.normal(size=N)).round(3)}).to_csv(tmp_path / "sales.csv",
                                                                                          index=False)
    res = run("init", "--data", "sales.csv", "--label", "demand", "--out", "loop.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Use it on your data", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    header = [ln for ln in (tmp_path / "loop.yaml").read_text().splitlines() if ln.startswith("# ")]
    assert block.splitlines() == [ln for ln in header if not ln.startswith("# note")]
    said = " ".join(res.stderr.split())
    assert "note using 'datetime' as time (ISO datetimes); pass --time to choose another" in said
    assert "note using 'datetime' as time (ISO datetimes); pass --time to choose another" in readme


def test_missing_and_infinite_values_do_not_stop_the_leak_check() -> None:
    data = frame()
    data.loc[::7, "x1"] = np.nan
    data.loc[3, "x2"] = np.inf
    data["copy"] = data["y"].astype(float)
    data.loc[data["y"] == 1, "copy"] = np.nan  # missing exactly when the label is 1: missing is a value too
    found = suggest_spec(data, label="y", name="s")
    assert [n.split("'")[1] for n in found.notes if "likely leak" in n] == ["copy"], found.notes
