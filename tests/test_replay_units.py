"""Durations and dates as people read them: rows when the row number is the clock, dates when the times
are dates, human durations in tables, and summary.json naming the units of its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from freshloop.datasets import load_rainfall
from freshloop.replay import compare, summary_rows, write_report
from freshloop.replay.driver import default_compare
from freshloop.spec import load_spec_dict

from .conftest import make_frame


def test_without_a_time_column_durations_are_rows(tmp_path: Path) -> None:
    frame = pd.concat([make_frame(900, seed=1), make_frame(900, seed=2, shift=1.5, flip=True)],
                      ignore_index=True).drop(columns="t")
    spec = load_spec_dict({"name": "rows", "data": {"label": "y"}, "store": {"root": str(tmp_path / "s")},
                           "model": {"window": {"rows": 400}},
                           "policy": {"cooldown": "150rows", "triggers": {"drift": {}, "staleness": "500rows"}},
                           "replay": {"batch": {"rows": 50}, "label_delay": "20rows", "warmup": 300}})
    names = default_compare(spec)
    assert names[1:3] == ["periodic:250rows", "periodic:1000rows"]
    results = compare(spec, frame, tmp_path / "out", names[:3] + ["default"], workers=1)
    default = results["default"]
    reasons = [r for d in default["decisions"]["retrain"] for r in d["reasons"]]
    assert any(r.startswith("staleness: model trained") and r.endswith("ago >= max 500 rows") for r in reasons), \
        reasons
    skips = json.loads((tmp_path / "out" / "summary.json").read_text())["policies"]["default"]
    assert skips["time_unit"] == "rows" and skips["units"]["max_staleness"] == "rows"
    periodic = results["periodic:250rows"]
    assert periodic["retrains"] >= (len(frame) - 300) // 250 - 1
    row = next(r for r in summary_rows(results) if r["policy"] == "default")
    assert row["max_staleness"].endswith(" rows")
    assert float(row["max_staleness"].split()[0].replace(",", "")) == default["max_staleness"]


@pytest.mark.slow
def test_a_stream_of_dates_reports_dates_and_human_durations(tmp_path: Path) -> None:
    days = load_rainfall().iloc[:2500]
    days["day"] = (pd.Timestamp("1950-01-01") + pd.to_timedelta(days["day"], unit="D")).dt.strftime("%Y-%m-%d")
    spec = load_spec_dict({"name": "rain", "data": {"label": "rain", "time": "day"},
                           "model": {"params": {"max_iter": 1000}, "window": {"period": "1095d"}},
                           "store": {"root": str(tmp_path / "s")},
                           "replay": {"batch": {"period": "30d"}, "label_delay": "1d", "warmup": 365}})
    results = compare(spec, days, tmp_path / "out", ["never", "periodic:90d"], workers=1)
    s = results["periodic:90d"]
    assert s["time_unit"] == "s" and s["units"]["mean_staleness"] == "s"
    row = next(r for r in summary_rows(results) if r["policy"] == "periodic:90d")
    # months of staleness read as days ("113 d"), not as 9.77e+06 seconds
    value, unit = row["mean_staleness"].split()
    assert unit == "d" and abs(float(value) * 86400 - s["mean_staleness"]) <= 0.005 * s["mean_staleness"], row
    page = write_report(results, tmp_path / "r.html", title="rain").read_text()
    assert "date (UTC)" in page
    assert "<li>1951-" in page or "<li>1952-" in page  # the decisions are dated
