"""What a loop pays, each time it opens, to rebuild its champion's live evidence from the outcome log.

A CLI call (or a restarted server) reads the matured scores logged since the champion took over and
rebuilds the quality window, its reference and the ADWIN detector from them
(:meth:`freshloop.labels.OutcomeLog.current`, :meth:`freshloop.monitor.Monitor.restore_outcomes`). The
cost grows with the champion's life, not the log's: parts written before the last promotion are not read.
Here a champion has seen ``n`` matured labels, logged as one part per ``part`` labels (one feedback call
each, as separate CLI processes write them), with a training run half-way (the detector restarts there).

    python bench/outcome_log.py            # 10k, 100k, 1M labels since the promotion
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from freshloop.data.schema import Feature, Schema
from freshloop.evaluate.metrics import get_metric
from freshloop.labels import OutcomeLog
from freshloop.monitor import Monitor
from freshloop.spec import TriggerSpec
from freshloop.store.blobs import LocalBlobStore


def build(n: int, part: int, older: int) -> OutcomeLog:
    log = OutcomeLog(LocalBlobStore(tempfile.mkdtemp()))
    rng = np.random.default_rng(0)
    for k in range(0, older, part):  # an earlier champion's life: written, never read back
        log.append(1, float(k), (rng.random(part) < 0.8).astype(float))
        log.flush()
    log.champion_changed(2, float(older))
    for k in range(0, n, part):
        if k == n // 2 // part * part:
            log.detector_restarted(float(older + k))
        log.append(2, float(older + k), (rng.random(min(part, n - k)) < 0.8).astype(float))
        log.flush()
    return log


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--part", type=int, default=1000, help="labels per feedback call (one Parquet part each)")
    ap.add_argument("--older", type=int, default=200_000, help="labels logged under the previous champion")
    args = ap.parse_args()
    schema = Schema("y", "classification", (Feature("x", "numeric", 0.0, 1.0),), classes=(0, 1))
    triggers = TriggerSpec.model_validate({"quality": {}, "detector": "adwin"})
    print("| labels since the promotion | parts | read (s) | rebuild (s) | total (s) |\n|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.sizes.split(",")):
        log = build(n, args.part, args.older)
        fresh = OutcomeLog(log.blobs)  # a loop opening: nothing buffered, every part on disk
        t0 = time.perf_counter()
        scores, before = fresh.current()
        t1 = time.perf_counter()
        mon = Monitor(schema, triggers, get_metric("accuracy"))
        mon.restore_outcomes(scores, before)
        t2 = time.perf_counter()
        assert len(scores) == n and mon.reference_metric is not None
        print(f"| {n:,} | {n // args.part:,} | {t1 - t0:.3f} | {t2 - t1:.3f} | {t2 - t0:.3f} |", flush=True)


if __name__ == "__main__":
    main()
