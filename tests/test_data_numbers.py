"""One rule for "is this column a number", as init, ingest and drift apply it to a user's CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from freshloop.clock import SimulatedClock
from freshloop.loop import Loop
from freshloop.spec import load_spec

from .conftest import make_frame
from .test_cli import run


def messy(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A stream as it comes from a spreadsheet export: blanks in a numeric column, one 'n/a' in another,
    prices written with a currency sign in a third of the rows, an id and an empty column."""
    frame = make_frame(n, seed=seed)
    rng = np.random.default_rng(seed)
    frame["blanks"] = rng.normal(0, 1, n).round(3).astype(object)
    frame.loc[frame.index % 7 == 3, "blanks"] = ""
    frame["amount"] = rng.normal(50, 5, n).round(2).astype(object)
    frame.loc[17, "amount"] = "n/a"
    price = rng.normal(1000, 300, n).round(2)
    frame["price"] = [f"${p:,.2f}" if i % 3 == 0 else f"{p:.2f}" for i, p in enumerate(price)]
    frame["order_id"] = [f"o-{i:05d}" for i in range(n)]
    frame["empty"] = ""
    return frame


@pytest.mark.slow
def test_init_says_what_it_made_of_each_column(tmp_path: Path) -> None:
    messy().to_csv(tmp_path / "data.csv", index=False)
    init = run("init", "--data", "data.csv", "--label", "y", "--time", "t", "--out", "loop.yaml", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    text = (tmp_path / "loop.yaml").read_text()
    kinds = {f["name"]: f["kind"] for f in yaml.safe_load(text)["data"]["features"]}
    # blanks are missing values, not text: still a number column
    assert kinds == {"x1": "numeric", "x2": "numeric", "c": "categorical", "blanks": "numeric",
                     "amount": "numeric"}
    notes = [line.replace("# note: ", "# ", 1) for line in text.splitlines() if line.startswith("# note: column")]
    assert "# column 'amount': 1 of 400 present cells are not numbers (row 17: 'n/a'): numeric; rows with " \
           "such cells are quarantined at ingest" in notes
    price = next(n for n in notes if "'price'" in n)
    # left out for the real reason: its dollar signs, which make every value a distinct text
    assert f"134 of 400 present cells are not numbers (row 0: {messy()['price'][0]!r}, row 3: " in price
    assert "left out, since as text it has 400 distinct values" in price and "clean those cells" in price
    assert any("'order_id': left out, an id (400 distinct values in 400 rows)" in n for n in notes)
    assert "# column 'empty': left out, every cell is empty" in notes
    assert "note" in init.stderr and "'price'" in init.stderr


@pytest.mark.slow
def test_ingest_quarantines_the_cell_that_is_not_a_number_and_keeps_the_blanks(tmp_path: Path) -> None:
    messy().to_csv(tmp_path / "data.csv", index=False)
    assert run("init", "--data", "data.csv", "--label", "y", "--time", "t", "--out", "loop.yaml",
               cwd=tmp_path).returncode == 0
    spec = load_spec(tmp_path / "loop.yaml")
    loop = Loop(spec, clock=SimulatedClock(400.0), durable=False)
    res = loop.ingest_file(str(tmp_path / "data.csv"))
    assert (res.accepted, res.quarantined) == (399, 1)
    assert len(res.reasons) == 1 and \
        "field 'amount': must be a number (got 'n/a')" in res.reasons[0]
    assert loop.data.quarantined()[0].rows == 1
    loop.close()


@pytest.mark.slow
def test_drift_scores_numbers_with_blanks_as_numbers_and_leaves_out_time_and_label(tmp_path: Path) -> None:
    ref, cur = messy(600, seed=1), messy(600, seed=2)
    cur["blanks"] = [v + 2 if isinstance(v, float) else v for v in cur["blanks"]]
    ref["date"] = pd.date_range("2024-01-01", periods=600, freq="h").strftime("%Y-%m-%dT%H:%M:%S")
    cur["date"] = pd.date_range("2024-03-01", periods=600, freq="h").strftime("%Y-%m-%dT%H:%M:%S")
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_csv(tmp_path / "cur.csv", index=False)
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump({"name": "d", "data": {"label": "y", "time": "t"},
                                                        "model": {"estimator": "sklearn.linear_model.Ridge"}}))
    got = run("drift", "ref.csv", "cur.csv", "--spec", "loop.yaml", "--json", "d.json", cwd=tmp_path)
    assert got.returncode == 1, got.stderr  # 'blanks' moved by 2 standard deviations
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["blanks"]["statistic"] == "wasserstein" and report["blanks"]["drifted"]
    assert report["amount"]["statistic"] == "wasserstein"  # one 'n/a' does not make it text
    assert not {"y", "t", "date"} & set(report)
    assert "t (the time column)" in got.stderr and "y (the label column)" in got.stderr
    assert "date (holds times)" in got.stderr
    asked = run("drift", "ref.csv", "cur.csv", "--column", "t", "--column", "blanks", "--json", "a.json",
                cwd=tmp_path)
    assert set(json.loads((tmp_path / "a.json").read_text())) == {"t", "blanks"}, asked.stderr
