"""`freshloop demo` as a user runs it, and the quality bar the issue sets on rainfall."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the demo, end to end


def test_demo_meets_the_quality_bar(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "freshloop.cli", "demo", "--out", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "default" in res.stdout and "wrote" in res.stdout
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())["policies"]
    assert set(summary) == {"never", "periodic:30d", "periodic:365d", "default"}
    default, never = summary["default"], summary["never"]
    periodic = {k: v for k, v in summary.items() if k.startswith("periodic:")}
    best = max(periodic.values(), key=lambda s: s["metric"])
    assert default["metric"] >= never["metric"] + 0.03  # clearly better than never retraining
    assert default["metric"] >= best["metric"] - 0.005  # within half a point of the best fixed period
    assert default["training_rows"] <= 0.25 * best["training_rows"]  # at most a quarter of its training rows
    report = (tmp_path / "demo" / "report.html").read_text()
    assert report.count("<svg") == 2
    for name in summary:
        assert (tmp_path / "demo" / "runs" / name.replace(":", "_") / "summary.json").exists()
