"""River's ARF on a stream, prequential, learning only from labels that have matured under a delay.

Usage: python bench/arf_baseline.py [--stream rainfall] [--delay-rows 1] [--seed 42]

Each row is predicted the moment it arrives (before its label is known); its label is learned
``delay-rows`` rows later (1 row = 1 day on rainfall, the demo's label delay). This is the fairest
per-row setting for ARF: it sees every label as soon as the delay allows, with no batching.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque

from river import forest

from freshloop.datasets import load_stream


def run(stream: str, delay_rows: int, seed: int, warmup: int) -> dict[str, float]:
    frame, info = load_stream(stream)
    label = info["label"]
    feats = [c for c in frame.columns if c not in (label, info["time"])]
    model = forest.ARFClassifier(seed=seed)
    pending: deque[tuple[dict[str, float], int]] = deque()
    correct = scored = 0
    started = time.perf_counter()
    for i, row in enumerate(frame[feats + [label]].itertuples(index=False)):
        x = dict(zip(feats, row[:-1], strict=True))
        y = int(row[-1])
        if i >= warmup:
            scored += 1
            correct += int(model.predict_one(x) == y)
        pending.append((x, y))
        while len(pending) > delay_rows:
            model.learn_one(*pending.popleft())
    return {"stream": stream, "delay_rows": delay_rows, "warmup": warmup, "accuracy": correct / scored,
            "scored": scored, "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream", default="rainfall")
    ap.add_argument("--delay-rows", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=365, help="rows learned before scoring starts (the demo's warm-up)")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    print(json.dumps(run(a.stream, a.delay_rows, a.seed, a.warmup), indent=2))
