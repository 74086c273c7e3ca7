"""Several policies replayed on the same stream, side by side, in parallel processes."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pandas as pd

from ..spec import LoopSpec, preset_period
from .driver import policy_dir, replay, resolve_policy

__all__ = ["compare"]

OnProgress = Callable[[str, int, int], None]


def _one_thread() -> None:
    """Worker start-up: one thread per library, since the pool already uses every core.

    threadpool_limits only reaches libraries that are loaded; OpenMP (HistGradientBoosting) loads at the
    first fit, so it is limited through the environment it reads then. Oversubscribed OpenMP threads spin:
    one 1,800-row fit took 89 s in a 2-process pool on 2 cores without this.
    """
    import os

    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = "1"
    threadpool_limits(1)


def _run(spec_json: str, name: str, frame: pd.DataFrame, out: str, queue: Any) -> dict[str, Any]:
    spec = resolve_policy(LoopSpec.model_validate_json(spec_json), name)

    def tell(done: int, total: int) -> None:
        if queue is not None:
            queue.put((name, done, total))

    return replay(spec, frame, policy_dir(out, name), progress=tell)


def _cost_rank(name: str) -> tuple[int, float]:
    """Longest first, so that no long replay starts last: the shortest fixed period retrains most often."""
    period = preset_period(name)
    if period is not None:
        return 0, period
    return (1, 0.0) if name != "never" else (2, 0.0)


def _relay(queue: Any, on_progress: OnProgress | None) -> None:
    """Pass the workers' progress messages on to the caller."""
    while not queue.empty():
        name, done, total = queue.get()
        if on_progress:
            on_progress(name, done, total)


def compare(spec: LoopSpec, frame: pd.DataFrame, out_dir: str | Path, policies: list[str], *,
            workers: int = 1, on_progress: OnProgress | None = None) -> dict[str, dict[str, Any]]:
    """Replay each policy (fresh store each) and write ``summary.json`` with all of them."""
    for name in policies:
        resolve_policy(spec, name)  # fail fast on a bad name, before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    spec_json = spec.model_dump_json()
    if workers <= 1 or len(policies) == 1:
        for name in policies:
            def tell(done: int, total: int, name: str = name) -> None:
                if on_progress:
                    on_progress(name, done, total)

            results[name] = replay(resolve_policy(spec, name), frame, policy_dir(out, name), progress=tell)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            queue = manager.Queue()
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread) as pool:
                futures = {pool.submit(_run, spec_json, name, frame, str(out), queue): name
                           for name in sorted(policies, key=_cost_rank)}
                pending = set(futures)
                while pending:
                    _relay(queue, on_progress)
                    finished = [f for f in pending if f.done()]
                    for f in finished:
                        pending.discard(f)
                        results[futures[f]] = f.result()
                    if pending:
                        wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                _relay(queue, on_progress)
    ordered = {name: results[name] for name in policies}
    deterministic = {name: {k: v for k, v in s.items() if k != "training_seconds"} for name, s in ordered.items()}
    (out / "summary.json").write_text(json.dumps({"policies": deterministic}, indent=2, sort_keys=True))
    (out / "timings.json").write_text(json.dumps({n: {"training_seconds": s["training_seconds"]}
                                                  for n, s in ordered.items()}, indent=2))
    return ordered
