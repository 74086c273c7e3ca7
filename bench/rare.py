"""Rare classes: does weighting the classes to count the same (``model.balance``) help the rare ones?

    python bench/rare.py                 # the "Rare classes" section of BENCHMARKS.md
    python bench/rare.py --only usenet2  # some streams (repeat --only), printed, the page left alone

Each stream is replayed with the spec ``freshloop init`` writes for it, with one change: its gate judges by
balanced accuracy (``gate.metric: balanced_accuracy``), the metric that values a rare class as much as a
common one. Two contenders per stream, the default policy and ``never``, each without and with
``model.balance: true`` (every full fit also fitted with the classes weighted to count the same, kept only when
surely better on the gate's holdout). Reported over every served row: balanced accuracy, the recall of the
rarest class, accuracy, training rows and seconds, and how many of the gate's verdicts kept the balanced fit.

Streams: River's SEA and Agrawal with an abrupt change halfway, their less frequent class thinned to 5 % of
the rows (so the rare class changes with the concept), and the real streams of ``FRESHLOOP_STREAMS`` whose
classes are unequal (Usenet2: one third; Usenet1 for a near-even contrast).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-rare.json"
BEGIN, END = "<!-- rare:begin -->", "<!-- rare:end -->"
RARE_SHARE = 0.05
SYNTHETIC = (("sea_abrupt", 24000), ("agrawal_abrupt", 24000))
REAL = {"usenet2.csv": "interesting", "usenet1.csv": "interesting"}


def thinned(name: str, n: int, share: float = RARE_SHARE, seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """River's stream ``name`` with its less frequent class kept on about ``share`` of the rows (rows of it
    dropped at random), the row number as its clock again; the change point moves with the rows dropped."""
    from freshloop.datasets import load_stream

    frame, info = load_stream(name, n=n)
    y = frame[info["label"]]
    minority = y.value_counts().idxmin()
    others = int((y != minority).sum())
    keep_p = min(1.0, share / (1 - share) * others / max(int((y == minority).sum()), 1))
    keep = (y != minority) | (np.random.default_rng(seed).random(len(frame)) < keep_p)
    position = np.cumsum(keep.to_numpy()) - 1
    out = frame[keep].reset_index(drop=True)
    out[info["time"]] = np.arange(len(out))
    drift = [int(position[min(p, len(frame) - 1)]) for p in info.get("drift_points") or []]
    return out, {**info, "drift_points": drift}


def streams(only: list[str]) -> list[tuple[str, str, pd.DataFrame, dict[str, Any]]]:
    """(title, name, frame, info) of each stream to run; ``name`` tells ``quality.stream_spec`` its clock."""
    import quality
    from streams import stream_folder

    out = [(f"{name}, rare class {RARE_SHARE:.0%}", name, *thinned(name, n)) for name, n in SYNTHETIC]
    folder = stream_folder()
    for file, label in REAL.items():
        if (folder / file).exists():
            out.append((Path(file).stem, Path(file).stem, *quality.load_file(str(folder / file), label, None)))
    return [s for s in out if not only or any(s[1].startswith(o) for o in only)]


def run_stream(title: str, name: str, frame: pd.DataFrame, info: dict[str, Any], workers: int) -> dict[str, Any]:
    import quality

    from freshloop.replay import compare

    spec, _, _, _ = quality.stream_spec(name, frame, dict(info))
    spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"metric": "balanced_accuracy"})})
    rows = []
    counts = frame[info["label"]].astype(str).value_counts()
    rarest = str(counts.idxmin())
    for balance in (False, True):
        model = spec.model.model_copy(update={"balance": balance})
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            res = compare(spec.model_copy(update={"model": model}), frame, Path(tmp), ["never", "default"],
                          workers=workers)
            seconds = time.perf_counter() - started
        for pol, s in res.items():
            c = s["classes"] or {}
            served = sum(c.get("rows", {}).values())
            hits = sum(c["recall"][k] * c["rows"][k] for k in c.get("rows", {}))
            rows.append({"contender": pol + (", balance" if balance else ""),
                         "balanced accuracy": c.get("balanced_accuracy"),
                         f"recall of the rarest ({rarest})": c.get("recall", {}).get(rarest),
                         "accuracy": round(hits / served, 4) if served else None,
                         "retrains": s["retrains"], "kept balanced": sum(v.get("balanced", False)
                                                                         for v in s["verdicts"]),
                         "verdicts": len(s["verdicts"]), "training rows": s["training_rows"],
                         "training s": f"{s['training_seconds']:.2f}", "replay s": f"{seconds:.1f}"})
    return {"stream": title, "rows": len(frame), "classes": {k: int(v) for k, v in counts.items()},
            "rarest": rarest, "rarest_share": round(float(counts.min() / counts.sum()), 4),
            "model": spec.model.estimator, "table": rows}


def section(results: dict[str, Any]) -> str:
    from run import table

    lines = [BEGIN, "## Rare classes", "",
             f"Produced by `{results['command']}` on {results['date']} ({results['seconds']:.0f} s). Each stream "
             "replayed with the spec `freshloop init` writes for it, its gate judging by balanced accuracy "
             "(`gate.metric: balanced_accuracy`), without and with `model.balance: true`: every full fit also "
             "fitted with the classes weighted to count the same, kept only when surely better on the gate's "
             "holdout. Figures over every served row; \"kept balanced\" counts the gate's verdicts whose "
             "candidate was the balanced fit.", ""]
    gains = []
    for s in results["streams"]:
        lines += [f"**{s['stream']}** ({s['rows']:,} rows; the rarest class {s['rarest']!r} is "
                  f"{100 * s['rarest_share']:.1f} % of them; model `{s['model'].rsplit('.', 1)[1]}`)", "",
                  table(s["table"]), ""]
        by = {r["contender"]: r for r in s["table"]}
        gains.append((s["stream"], by["default, balance"]["balanced accuracy"] - by["default"]["balanced accuracy"],
                      by["default, balance"]["kept balanced"], by["default, balance"]["verdicts"]))
    def said(moved: list[tuple[str, float, int, int]]) -> str:
        return "; ".join(f"{name} ({100 * g:+.2f} points, kept in {k} of {n} verdicts)" for name, g, k, n in moved)

    rose, fell = [g for g in gains if g[1] > 0.00005], [g for g in gains if g[1] < -0.00005]
    lines += [f"With `model.balance`, the default policy's balanced accuracy rose on {len(rose)} of {len(gains)} "
              "streams" + (f": {said(rose)}" if rose else "") + (f"; it fell on {said(fell)}" if fell else "") +
              ". Elsewhere it did not move. Its cost is a second fit at every retrain (the training rows).", "",
              END]
    return "\n".join(lines)


def main() -> int:
    from streams import write_section

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", default=[], help="run the streams starting with this (repeat)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    a = ap.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "command": " ".join(["python", "bench/rare.py", *sys.argv[1:]]), "streams": []}
    for title, name, frame, info in streams(a.only):
        print(f"stream: {title}", file=sys.stderr, flush=True)
        results["streams"].append(run_stream(title, name, frame, info, a.workers))
    results["seconds"] = time.perf_counter() - started
    if not a.only:
        RESULTS.write_text(json.dumps(results, indent=2, default=str))
        write_section(Path(a.out), section(results), BEGIN, END)
    print(section(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
