"""Scaling: the same loop replayed over 1M, 3M and 10M rows, and the drift report over as many.

Each replay runs in a fresh process, so its peak RSS is its own. The stream is SEA (Street & Kim, 2001):
three uniform features on [0, 10], label ``x1 + x2 <= theta`` with 10 % of labels flipped; ``theta``
changes every 250,000 rows, so every size sees the same drift per row and the same retraining work per
row. Generated with numpy (River's SEA yields one dict per row, too slow at 10M rows); the rule is the same.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SEGMENT = 250_000
THETAS = (8.0, 9.0, 7.0, 9.5)  # SEA's four concepts, in turn


def sea_numpy(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=(rows, 3))
    theta = np.asarray(THETAS)[(np.arange(rows) // SEGMENT) % len(THETAS)]
    y = (x[:, 0] + x[:, 1] <= theta).astype(np.int64)
    flip = rng.random(rows) < 0.1
    y[flip] = 1 - y[flip]
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": y})


def scale_spec(root: Path) -> Any:
    """What `freshloop init` writes for this stream, with the batch, window and staleness held fixed, so
    that the work per row is the same at every size."""
    from freshloop.spec import load_spec_dict

    return load_spec_dict({
        "name": "scale",
        "data": {"label": "y", "features": [{"name": f"x{i}", "kind": "numeric"} for i in (1, 2, 3)]},
        "model": {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "scale": False,
                  "window": {"rows": 20_000}},
        "policy": {"cooldown": "10000s", "triggers": {"drift": {}, "quality": {}, "detector": "adwin",
                                                      "staleness": "500000s"}},
        "replay": {"batch": {"rows": 5_000}, "label_delay": "2500s", "warmup": 5_000},
        "store": {"root": str(root)},
    })


def _footprint(loop: Any) -> dict[str, float]:
    """Bytes the monitor holds (its windows and the champion's reference), and rows the store's view holds."""
    m = loop.ctx.monitor_if_made
    held = 0.0
    if m is not None:
        held += sum(a.nbytes for q in m._rows.values() for a in q)
        held += 8 * (len(m._preds) + len(m._scores))
        held += sum(sum(v.nbytes for v in vars(r).values() if isinstance(v, np.ndarray)) for r in m._refs.values())
    return {"monitor_mb": held / 2**20, "store_view_rows": float(loop.data.rows)}


def replay_size(rows: int) -> dict[str, Any]:
    """One replay of ``rows`` rows under the default policy, in this (fresh) process."""
    from speed import peak_rss_mb

    import freshloop.replay.driver as driver

    holder: dict[str, Any] = {}

    class Watched(driver.Loop):  # the replay's loop, kept so its monitor can be weighed as the replay runs
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            holder["loop"] = self

    driver.Loop = Watched  # type: ignore[misc]  # this process only runs this replay
    frame = sea_numpy(rows)
    marks: list[tuple[int, float, float, float]] = []  # batches done, seconds, monitor MB, RSS MB
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        loop = holder.get("loop")
        if loop is not None and (not marks or done - marks[-1][0] >= total // 10 or done == total):
            marks.append((done, time.perf_counter() - started, _footprint(loop)["monitor_mb"], peak_rss_mb()))

    with tempfile.TemporaryDirectory() as tmp:
        spec = scale_spec(Path(tmp) / "store")
        summary = driver.replay(spec, frame, Path(tmp) / "out", progress=progress)
        seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mb": peak_rss_mb(),
            "monitor_mb_max": max((m[2] for m in marks), default=0.0), "marks": marks,
            "retrains": summary["retrains"], "metric": summary["metric"],
            "frame_mb": frame.memory_usage(deep=True).sum() / 2**20}


def drift_size(rows: int, cols: int = 10) -> dict[str, Any]:
    """``freshloop.monitor.drift_report`` over a reference and a current frame of ``rows`` rows each."""
    from speed import peak_rss_mb
    from tools import drift_frames

    from freshloop.monitor import drift_report

    ref, cur = drift_frames(rows, cols)
    inputs = (ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum()) / 2**20
    times = []
    for _ in range(2):
        started = time.perf_counter()
        drift_report(ref, cur)
        times.append(time.perf_counter() - started)
    return {"rows": rows, "cols": cols, "seconds": min(times), "peak_rss_mb": peak_rss_mb(), "inputs_mb": inputs}


def run(sizes: list[int]) -> dict[str, Any]:
    """Each size in its own process, one at a time (two at once would share the two cores)."""
    out: dict[str, Any] = {"replay": [], "drift": []}
    ctx = mp.get_context("spawn")
    for n in sizes:
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            out["replay"].append(pool.submit(replay_size, n).result())
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            out["drift"].append(pool.submit(drift_size, n).result())
    return out
