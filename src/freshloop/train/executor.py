"""Executors run training jobs: inline (the default), a local process pool; Dask comes next.

Examples
--------
>>> InlineExecutor().submit(pow, 2, 10).result()
1024
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

__all__ = ["Executor", "InlineExecutor", "ProcessExecutor", "make_executor"]

T = TypeVar("T")


class Executor(Protocol):
    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]: ...
    def shutdown(self) -> None: ...


class InlineExecutor:
    """Runs the job in the calling thread; what replay and tests use by default."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        fut: Future[T] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # delivered through the future, like a pool would
            fut.set_exception(e)
        return fut

    def shutdown(self) -> None:
        return None

    def __repr__(self) -> str:
        return "InlineExecutor()"


class ProcessExecutor:
    """A local process pool; jobs and results must pickle."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers
        self._pool = ProcessPoolExecutor(max_workers=max_workers)

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown()

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers})"


def make_executor(url: str | None) -> Executor:
    """``inline`` (default) or ``process[:N]``."""
    if not url or url == "inline":
        return InlineExecutor()
    if url.startswith("process"):
        n = url.split(":", 1)[1] if ":" in url else None
        return ProcessExecutor(int(n) if n else None)
    from ..errors import SpecError, param_message

    raise SpecError(param_message("executor", "loop", "'inline' or 'process[:N]'", url), field="executor", value=url)
