"""Several policies replayed on the same stream, side by side: in step in one process (the stream stored
once for all of them), and in parallel processes when there are cores to spare."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from ..spec import LoopSpec, preset_period
from .driver import failed_summary, replay_together, resolve_policy

__all__ = ["compare"]

OnProgress = Callable[[str, int, int], None]


_queue: Any = None  # a worker's channel for progress messages, set when it starts


def _start_worker(queue: Any) -> None:
    global _queue
    _queue = queue
    _one_thread()


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


@contextmanager
def _one_thread_here() -> Iterator[None]:
    """One thread per library in this process while it replays beside the workers (restored after)."""
    import sklearn.utils._openmp_helpers  # noqa: F401  (loads OpenMP now, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _run(spec_json: str, names: list[str], frame: pd.DataFrame, out: str) -> dict[str, dict[str, Any]]:
    spec = LoopSpec.model_validate_json(spec_json)

    def tell(name: str, done: int, total: int) -> None:
        if _queue is not None:
            _queue.put((name, done, total))

    return replay_together({n: resolve_policy(spec, n) for n in names}, frame, out, progress=tell)


def _cost_rank(name: str) -> tuple[int, float]:
    """Longest first, so that no long replay starts last: the shortest fixed period retrains most often."""
    period = preset_period(name)
    if period is not None:
        return 0, period
    return (1, 0.0) if name != "never" else (2, 0.0)


def _groups(policies: list[str], workers: int) -> list[list[str]]:
    """One process per group: the costliest policies alone, all the others together in step (they share the
    stream's ingest, which is most of a cheap policy's replay)."""
    ranked = sorted(policies, key=_cost_rank)
    alone = max(0, min(workers - 1, len(ranked) - 1))
    return [[p] for p in ranked[:alone]] + [ranked[alone:]]


def _relay(queue: Any, on_progress: OnProgress | None) -> None:
    """Pass the workers' progress messages on to the caller."""
    while not queue.empty():
        name, done, total = queue.get()
        if on_progress:
            on_progress(name, done, total)


def compare(spec: LoopSpec, frame: pd.DataFrame, out_dir: str | Path, policies: list[str], *,
            workers: int = 1, on_progress: OnProgress | None = None) -> dict[str, dict[str, Any]]:
    """Replay each policy from a fresh start and write ``summary.json`` with all of them.

    ``workers`` processes at most: the costliest policies alone (the first in this process), the rest in
    step in one more, sharing one data store (see :func:`~freshloop.replay.driver.replay_together`). Each
    policy's results are what it would give replayed alone."""
    from ..train.model import check_model

    check_model(spec.model)  # fail fast on a model that cannot be built, before any work
    for name in policies:
        resolve_policy(spec, name)  # and on a bad policy name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    spec_json = spec.model_dump_json()
    groups = _groups(policies, workers)
    if len(groups) == 1:
        results = replay_together({n: resolve_policy(spec, n) for n in policies}, frame, out, progress=on_progress)
    else:
        # The costliest group runs here, at once (this process has imported everything already); the others
        # in worker processes, which start by importing.
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()  # handed to the workers as they start (a queue passes by inheritance only)
        with ProcessPoolExecutor(max_workers=len(groups) - 1, mp_context=ctx, initializer=_start_worker,
                                 initargs=(queue,)) as pool:
            futures = [pool.submit(_run, spec_json, names, frame, str(out)) for names in groups[1:]]

            def tell(name: str, done: int, total: int) -> None:
                if on_progress:
                    on_progress(name, done, total)
                _relay(queue, on_progress)

            with _one_thread_here():
                results.update(replay_together({n: resolve_policy(spec, n) for n in groups[0]}, frame, out,
                                               progress=tell))
            pending = set(futures)
            while pending:
                _relay(queue, on_progress)
                finished = [f for f in pending if f.done()]
                for f in finished:
                    pending.discard(f)
                    try:
                        results.update(f.result())
                    except Exception as e:  # noqa: BLE001 - a worker that died loses its policies, not the rest
                        for name in groups[1 + futures.index(f)]:
                            results[name] = failed_summary(resolve_policy(spec, name), name,
                                                           f"{type(e).__name__}: {e}")
                if pending:
                    wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
        _relay(queue, on_progress)
        queue.close()
    ordered = {name: results[name] for name in policies}
    deterministic = {name: {k: v for k, v in s.items() if k != "training_seconds"} for name, s in ordered.items()}
    (out / "summary.json").write_text(json.dumps({"policies": deterministic}, indent=2, sort_keys=True))
    (out / "timings.json").write_text(json.dumps({n: {"training_seconds": s["training_seconds"]}
                                                  for n, s in ordered.items()}, indent=2))
    return ordered
