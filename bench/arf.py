"""River ARF alone, prequential under a label delay: the baseline every replay is compared with.

Kept apart from the suite so that a process running it (a parallel seed) imports River and pandas only,
and its memory is ARF's, not the benchmark's.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import pandas as pd


def arf_delayed(frame: pd.DataFrame, label: str, features: list[str], delay_rows: int, warmup: int,
                seed: int = 42) -> dict[str, Any]:
    """River ARF, per row: predict on arrival, learn each label `delay_rows` rows later."""
    from river import forest

    model = forest.ARFClassifier(seed=seed)
    pending: deque[tuple[dict[str, Any], Any]] = deque()
    correct = scored = 0
    started = time.perf_counter()
    for i, row in enumerate(frame[features + [label]].itertuples(index=False)):
        x = dict(zip(features, row[:-1], strict=True))
        y = row[-1]
        if i >= warmup:
            scored += 1
            correct += int(model.predict_one(x) == y)
        pending.append((x, y))
        while len(pending) > delay_rows:
            model.learn_one(*pending.popleft())
    return {"metric": correct / max(scored, 1), "seconds": time.perf_counter() - started, "rows": len(frame)}
