"""Time columns as users have them: every form reads as the same POSIX seconds, on pandas 2 and 3 alike,
and a replay on ISO dates decides what it decides on integer days."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from freshloop.data.times import to_seconds
from freshloop.data.validate import validate_frame
from freshloop.datasets import load_rainfall
from freshloop.replay import replay
from freshloop.spec import QualitySpec, WindowSpec, load_spec_dict

from .conftest import make_frame

# 2024-01-05 00:00, 2024-01-05 13:00, 2024-01-07 00:00 (UTC)
EXPECTED = [1704412800.0, 1704459600.0, 1704585600.0]
TEXT = ["2024-01-05 00:00:00", "2024-01-05 13:00:00", "2024-01-07 00:00:00"]


def _forms() -> dict[str, tuple[pd.Series, str]]:
    forms: dict[str, tuple[pd.Series, str]] = {
        "iso datetime": (pd.Series(TEXT), "s"),
        "iso with T and Z": (pd.Series([t.replace(" ", "T") + "Z" for t in TEXT]), "s"),
        "iso with offset": (pd.Series(["2024-01-05T01:00:00+01:00", "2024-01-05T08:00:00-05:00",
                                       "2024-01-07T05:30:00+05:30"]), "s"),
        "epoch seconds": (pd.Series([int(x) for x in EXPECTED]), "s"),
        "epoch seconds as text": (pd.Series([str(int(x)) for x in EXPECTED]), "s"),
        "epoch milliseconds": (pd.Series([int(x) * 1000 for x in EXPECTED]), "ms"),
        "tz-aware datetime64": (pd.Series(pd.to_datetime(TEXT)).dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"),
                                "s"),
    }
    for unit in ("s", "ms", "us", "ns"):
        forms[f"datetime64[{unit}]"] = (pd.Series(pd.to_datetime(TEXT)).astype(f"datetime64[{unit}]"), "s")
    return forms


@pytest.mark.parametrize("form", list(_forms()))
def test_every_time_form_reads_as_the_same_seconds(form: str) -> None:
    values, unit = _forms()[form]
    secs, bad = to_seconds(values, unit)
    assert not bad.any()
    np.testing.assert_allclose(secs.to_numpy(), EXPECTED, rtol=0, atol=1e-6)


def test_iso_dates_are_days_apart_not_milliseconds() -> None:
    secs, bad = to_seconds(pd.Series(["2024-01-05", "2024-01-06", "2024-02-04"]), "s")
    assert not bad.any()
    assert np.diff(secs.to_numpy()).tolist() == [86400.0, 29 * 86400.0]


def test_unreadable_times_are_named_and_kept() -> None:
    from freshloop.data.schema import Feature, Schema

    schema = Schema("y", "classification", (Feature("x", "numeric", 0.0, 10.0),), classes=(0, 1), time="when")
    raw = pd.DataFrame({"when": ["2024-01-05", "next tuesday", "2024-01-06T10:00:00+02:00"], "x": [1, 2, 3],
                        "y": [0, 1, 0]})
    res = validate_frame(raw, schema, QualitySpec(), now=0.0)
    assert len(res.accepted) + len(res.rejected) == 3
    assert list(res.rejected["_reason"]) == ["field 'when': must be a time (got 'next tuesday')"]
    assert res.accepted["_time"].tolist() == [1704412800.0, 1704528000.0]


def test_a_datetime64_column_passed_through_the_python_api_is_ingested_in_seconds(make_loop) -> None:
    loop, clock, _ = make_loop()
    frame = make_frame(400)
    frame["t"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(frame["t"], unit="h")
    frame["t"] = frame["t"].astype("datetime64[us]")  # what pandas 3 makes of parsed text
    clock.advance_to(pd.Timestamp("2024-03-01", tz="UTC").timestamp())
    res = loop.ingest(frame, batch_id="b0")
    assert res.accepted == 400
    now = clock.now()
    times = np.sort(loop.data.read_snapshot(loop.data.snapshot(WindowSpec(), cutoff=now, now=now))["_time"])
    assert times[0] == pd.Timestamp("2024-01-01", tz="UTC").timestamp()
    assert np.diff(times).tolist() == [3600.0] * 399


def _rainfall_spec(root: Path, time_unit: str) -> dict[str, object]:
    return {"name": "rain", "data": {"label": "rain", "time": "day", "time_unit": time_unit},
            "model": {"params": {"max_iter": 1000}, "window": {"period": "1095d"}},
            "store": {"root": str(root)},
            "replay": {"batch": {"period": "30d"}, "label_delay": "1d", "warmup": 365}}


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["periodic:30d", "default"])
def test_rainfall_on_iso_dates_decides_as_on_integer_days(tmp_path: Path, policy: str) -> None:
    days = load_rainfall().iloc[:4000]
    dates = days.copy()
    dates["day"] = (pd.Timestamp("1950-01-01") + pd.to_timedelta(days["day"], unit="D")).dt.strftime("%Y-%m-%d")
    from freshloop.replay.driver import resolve_policy

    results = {}
    for name, frame, unit in (("days", days, "d"), ("dates", dates, "s")):
        spec = resolve_policy(load_spec_dict(_rainfall_spec(tmp_path / name, unit)), policy)
        results[name] = replay(spec, frame, tmp_path / name)
    by_days, by_dates = results["days"], results["dates"]
    assert by_dates["retrains"] == by_days["retrains"]
    assert by_dates["metric"] == pytest.approx(by_days["metric"], abs=1e-9)
    if policy == "periodic:30d":  # 3,635 days after the warm-up: a retrain every 30 days, not once in 50 years
        assert by_days["retrains"] >= 3635 // 30


def test_a_follow_up_over_months_of_daily_rows_trains(tmp_path: Path) -> None:
    """A follow-up retrain spans the time since a detected change: months on a daily stream (> 1e6 s, which
    once rendered as '8.64e+06s' and was refused)."""
    before = make_frame(900, seed=1)
    after = make_frame(900, seed=2, shift=1.5, flip=True, t0=900)
    frame = pd.concat([before, after], ignore_index=True)
    frame["t"] = frame["t"] * 86400
    spec = load_spec_dict({
        "name": "daily", "data": {"label": "y", "time": "t"}, "model": {"window": {"rows": 400}},
        "store": {"root": str(tmp_path / "store")},
        "policy": {"cooldown": "200d", "triggers": {"drift": {"window": 200}, "detector": "adwin"}},
        "replay": {"batch": {"rows": 50}, "label_delay": "40d", "warmup": 300}})
    summary = replay(spec, frame, tmp_path / "out")
    assert summary["error"] is None and summary["failed_runs"] == 0
    follow = [d for d in summary["decisions"]["retrain"] if "follow-up" in d["triggers"]]
    assert follow
    since = [float(r.split("found at ")[1].split(" ")[0]) for r in follow[0]["reasons"] if "found at" in r][0]
    assert follow[0]["at"] - since > 1e6


def test_a_replay_on_epoch_milliseconds_decides_as_on_seconds(tmp_path: Path) -> None:
    from freshloop.replay.driver import resolve_policy

    seconds = make_frame(1200, seed=4)
    millis = seconds.assign(t=seconds["t"] * 1000)
    results = {}
    for name, frame, unit in (("s", seconds, "s"), ("ms", millis, "ms")):
        spec = resolve_policy(load_spec_dict({
            "name": "epoch", "data": {"label": "y", "time": "t", "time_unit": unit},
            "store": {"root": str(tmp_path / name)},
            "replay": {"batch": {"rows": 100}, "label_delay": "10s", "warmup": 300}}), "periodic:200s")
        results[name] = replay(spec, frame, tmp_path / name)
    assert results["ms"]["error"] is None
    assert results["ms"]["retrains"] == results["s"]["retrains"] >= 4
    # summary.json states staleness in the time column's unit
    assert results["ms"]["time_unit"] == "ms"
    assert results["ms"]["mean_staleness"] == pytest.approx(results["s"]["mean_staleness"] * 1000)


def test_a_time_outside_the_nanosecond_range_is_read_not_a_crash() -> None:
    # pandas 3 parses years like 1041 (microseconds reach that far; nanoseconds end in 1677), pandas 2 cannot
    from datetime import datetime

    secs, bad = to_seconds(pd.Series(["1041-01-01", "2024-01-05", "$12"]), "s")
    assert secs.iloc[1] == 1704412800.0
    if int(pd.__version__.split(".")[0]) >= 3:
        assert bad.tolist() == [False, False, True]
        assert secs.iloc[0] == (datetime(1041, 1, 1, tzinfo=UTC)
                                - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    else:
        assert bad.tolist() == [True, False, True]
