"""River's ARF on a stream, prequential, learning only from labels that have matured under a delay.

Usage: python bench/arf_baseline.py [--stream rainfall] [--delay-rows 1] [--seed 42]

Each row is predicted the moment it arrives (before its label is known); its label is learned
``delay-rows`` rows later (1 row = 1 day on rainfall, the demo's label delay). This is the fairest
per-row setting for ARF: it sees every label as soon as the delay allows, with no batching.
"""

from __future__ import annotations

import argparse
import json

from quality import arf_delayed

from freshloop.datasets import load_stream

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream", default="rainfall")
    ap.add_argument("--delay-rows", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=365, help="rows learned before scoring starts (the demo's warm-up)")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    frame, info = load_stream(a.stream)
    features = [c for c in frame.columns if c not in (info["label"], info["time"])]
    res = arf_delayed(frame, info["label"], features, a.delay_rows, a.warmup, seed=a.seed)
    print(json.dumps({"stream": a.stream, "delay_rows": a.delay_rows, "warmup": a.warmup,
                      "accuracy": res["metric"], "seconds": res["seconds"]}, indent=2))
