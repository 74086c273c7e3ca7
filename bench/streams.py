"""Adaptation on every stream at hand, untuned: one table, the same defaults everywhere.

    python bench/streams.py                  # the real streams, rainfall and River's synthetic streams
    python bench/streams.py --only usenet1   # some of them (repeat --only), printed, the page left alone
    python bench/streams.py --decay 0.25     # every spec with model.window.decay: [0.25], printed, page left alone
    python bench/streams.py --mode warm_start  # every spec with model.mode: warm_start, printed, page left alone
    python bench/streams.py --mode auto      # or auto (a linear model, which cannot learn new rows, stays full)
    python bench/streams.py --recall 3       # every spec with gate.recall: 3, printed, page left alone
    python bench/streams.py --react 60       # every spec with a row window with model.window.react: 60, likewise
    python bench/streams.py --refit 60       # every spec with model.companion.refit: 60 (0: no companion), likewise

Each stream is replayed as a user would first run it: the spec ``freshloop init`` writes for it (rainfall:
``examples/rainfall.yaml``), untouched, with every contender under the same label delay (see
``quality.run_stream``). The real streams are the CSV files of ``FRESHLOOP_STREAMS`` (default
``../shared/data/streams``). Results go to ``bench/results-streams.json`` and to the "Every stream" section
of BENCHMARKS.md, between its markers; ``bench/run.py`` keeps that section when it rewrites the page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-streams.json"
BEGIN, END = "<!-- streams:begin -->", "<!-- streams:end -->"
# each real stream's label column, as its source publishes it (see the streams' README)
LABELS = {"LUdata.csv": "target", "outdoorStream.csv": "target", "usenet1.csv": "interesting",
          "usenet2.csv": "interesting", "powersupply.csv": "class"}
SYNTHETIC = (("sea_abrupt", 20000), ("agrawal_abrupt", 20000), ("sea_gradual", 20000), ("sea_recurring", 20000),
             ("hyperplane_gradual", 20000))


def stream_folder() -> Path:
    return Path(os.environ.get("FRESHLOOP_STREAMS") or ROOT.parent / "shared" / "data" / "streams")


def summary_row(s: dict[str, Any]) -> dict[str, Any]:
    """One stream's line: each contender's metric, the default's cost beside the best fixed period's, and the
    goal (default ≥ ARF − 0.5 points and ≥ the best fixed period − 0.5 points, at ≤ 25 % of its rows)."""
    by = {r["contender"]: r for r in s["table"]}
    arf, default = s["table"][-1], by["default"]
    online = next(r for r in s["table"] if str(r["contender"]).startswith("online"))
    c = s["checks"]
    period = c["oracle"].split(":", 1)[1]
    if not yaml.safe_load(s["spec"])["data"].get("time"):  # no time column: the clock counts rows
        period = f"{float(period.rstrip('s')):,.0f} rows"
    missed = [why for miss, why in (
        (c["default_vs_arf_points"] < -0.5, "below ARF"), (c["default_vs_oracle_points"] < -0.5, "below the best"),
        (c["default_rows_share_of_oracle"] > 0.25, "rows over 25 %")) if miss]
    hybrid = by.get("hybrid")
    return {"stream": s["stream"], "rows": s["rows"], "never": by["never"]["metric"],
            "best fixed period": f"{by[c['oracle']]['metric']:.4f} ({period})",
            "default": default["metric"], "default retrains": default["retrains"],
            "default rows": default["training_rows"],
            "default rows / best's": f"{100 * c['default_rows_share_of_oracle']:.0f} %",
            "default s": default["training_s"], "ARF, same delay": arf["metric"], "loop + ARF (online)":
            online["metric"], "default − ARF": f"{c['default_vs_arf_points']:+.2f}",
            "default − best": f"{c['default_vs_oracle_points']:+.2f}",
            "refit every batch": c.get("refit", "—"),
            "default − refit": f"{c['default_vs_refit_points']:+.2f}" if "default_vs_refit_points" in c else "—",
            "goal": "met" if not missed else "not met: " + ", ".join(missed),
            "hybrid": hybrid["metric"] if hybrid else None,
            "hybrid − ARF": f"{c['hybrid_vs_arf_points']:+.2f}" if hybrid else None,
            "hybrid − best": f"{c['hybrid_vs_oracle_points']:+.2f}" if hybrid else None,
            "companion serves": f"{100 * s['hybrid_companion']['rows_served'] / max(s['rows'], 1):.0f} %"
            if s.get("hybrid_companion") else None}


def section(results: dict[str, Any]) -> str:
    """The "Every stream" section of BENCHMARKS.md, from the results of one run."""
    from run import table

    rows = [summary_row(s) for s in results["streams"]]
    lines = [BEGIN, "## Every stream, untuned", "",
             f"Produced by `{results['command']}` on {results['date']} ({results['seconds']:.0f} s). Each "
             "stream replayed with the spec `freshloop init` writes for it, untouched (rainfall: "
             "`examples/rainfall.yaml`), every contender under the same label delay: never retrain; the best "
             "of three fixed periods (5, 20 and 80 batches) in hindsight; the default policy; River's ARF "
             "alone, learning each label when its delay ends (mean of three seeds); and freshloop's online "
             "mode running that ARF inside the loop; and the hybrid: the default policy with that ARF as an "
             "online companion beside its champion, serving in its place while surely better on the matured "
             "rows since the last change in which of the two is better, at most 200 (`model.companion`; the "
             "share of rows it served is shown). A spec with a refit companion (`--refit N`: "
             "`model.companion.refit`, the spec's model refitted at every tick on the newest N labels, serving "
             "in the champion's place while surely better) runs it in the fixed periods and the default, its "
             "fits counted in their training rows; never and the online contenders go without it. "
             "Metric: prequential "
             "accuracy. The refit-every-batch baseline fits the spec's own model anew at the start of every batch on "
             "the last 60 or 100 rows whose labels have matured (the better of the two is shown; none for rainfall, "
             "batched by day). Goal: default ≥ ARF − 0.5 points and ≥ the best fixed period − 0.5 points, at ≤ 25 % "
             "of its training rows (the hybrid's retrains are the default's, plus the companion learning each "
             "label once).", "",
             table(rows), ""]
    missed = [r for r in rows if r["goal"] != "met"]
    lines.append(f"The goal is met on {len(rows) - len(missed)} of {len(rows)} streams." if rows else "")
    near = [r for r in rows if r["hybrid − ARF"] is not None and float(r["hybrid − ARF"]) >= -0.5
            and float(r["hybrid − best"]) >= -0.5]
    if any(r["hybrid"] is not None for r in rows):
        lines.append(f"The hybrid is within 0.5 points of ARF and of the best fixed period (or above them) on "
                     f"{len(near)} of {len(rows)} streams.")
    won = [s["default_windows"] for s in results["streams"] if s.get("default_windows")]
    if won:
        total = {k: sum(w[k] for w in won) for k in won[0]}
        weighed = (f"; rows weighted by age (`model.window.decay`) tried in {total['weighed']}, kept in "
                   f"{total['weighted']}") if total["weighed"] else ""
        lines.append(f"The default policy's retrains that chose their window (after a detected change or a quality "
                     f"drop): {total['chose']} over all streams; {total['shorter']} kept a shorter one than the "
                     f"whole{weighed}.")
    lines += ["", END]
    return "\n".join(lines)


def write_section(page: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Put the section in the page: in place of the one between the markers, else at the end."""
    body = page.read_text() if page.exists() else "# freshloop benchmarks\n"
    if begin in body and end in body:
        body = body[:body.index(begin)] + text + body[body.index(end) + len(end):]
    else:
        body = body.rstrip() + "\n\n" + text + "\n"
    page.write_text(body)


def streams(only: list[str]) -> list[tuple[str, int | None, tuple[Any, ...] | None]]:
    """(name, rows, loaded) for each stream to run: the real files, rainfall, River's generators."""
    import quality

    out: list[tuple[str, int | None, tuple[Any, ...] | None]] = []
    folder = stream_folder()
    for file, label in LABELS.items():
        if (folder / file).exists():
            out.append((Path(file).stem, None, quality.load_file(str(folder / file), label, None)))
    out.append(("rainfall", None, None))
    out += [(name, n, None) for name, n in SYNTHETIC]
    return [s for s in out if not only or s[0] in only]


def main() -> int:
    import quality

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", default=[], help="run this stream only (repeat for more)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--decay", type=float, action="append", default=[],
                    help="set model.window.decay to these half-lives (repeat for more) in every stream's spec")
    ap.add_argument("--recall", type=int, help="set gate.recall (past concepts' versions scored at every tick)")
    ap.add_argument("--react", type=int, help="set model.window.react (labels after a moved concept before a "
                                              "retrain on them alone) in every spec with a window in rows")
    ap.add_argument("--refit", type=int, help="set model.companion.refit (the spec's model refitted at every tick "
                                              "on the newest this many labels, serving while surely better; 0: none)")
    ap.add_argument("--mode", choices=["full", "warm_start", "auto"],
                    help="set model.mode in every stream's spec whose model can follow it")
    a = ap.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "command": " ".join(["python", "bench/streams.py", *sys.argv[1:]]), "streams": []}
    for name, n, loaded in streams(a.only):
        print(f"stream: {name}", file=sys.stderr, flush=True)
        results["streams"].append(quality.run_stream(name, n, a.workers, loaded,  # type: ignore[arg-type]
                                                     decay=a.decay, mode=a.mode, recall=a.recall,
                                                     react=a.react, refit=a.refit))
    results["seconds"] = time.perf_counter() - started
    # the page shows whole runs of the specs as written
    if not a.only and not a.decay and not a.mode and a.recall is None and a.react is None \
            and a.refit is None:
        RESULTS.write_text(json.dumps(results, indent=2, default=str))
        write_section(Path(a.out), section(results))
    print(section(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
