"""Executors run training jobs: inline (the default), a local process pool, or a Dask cluster.

The spec names one by URL (``model.executor``): ``inline``, ``process[:N]``, ``dask://HOST:PORT`` (a running
Dask scheduler, whose workers have freshloop installed) or ``dask:local[:N]`` (a cluster of N worker
processes on this machine, started with the loop). A job is a plain function of picklable inputs
(:func:`~freshloop.train.trainer.train_candidate`), so every executor runs the same code.

Examples
--------
>>> InlineExecutor().submit(pow, 2, 10).result()
1024
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

__all__ = ["DaskExecutor", "Executor", "InlineExecutor", "ProcessExecutor", "make_executor"]

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


class DaskExecutor:
    """Jobs on a Dask cluster: ``n_workers`` worker processes on this machine, or a running scheduler at
    ``address`` (``tcp://HOST:PORT``).

    Dask's futures are handed back as :class:`concurrent.futures.Future`, so the loop waits on them as on a
    pool's; an exception raised in a worker (a :class:`TrainingFailed`) is raised again here."""

    def __init__(self, n_workers: int = 1, address: str | None = None) -> None:
        from distributed import Client, LocalCluster

        self.address = address
        self._cluster = None
        if address is None:
            self._cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                         host="127.0.0.1", dashboard_address="127.0.0.1:0")  # any free port
            self.client = Client(self._cluster, set_as_default=False)
        else:
            self.client = Client(address, timeout=30, set_as_default=False)
        # Dask forgets a task, or data, whose future is no longer referenced: kept until the job is done
        self._running: dict[Any, list[Any]] = {}

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        out: Future[T] = Future()
        # the arguments (a snapshot's rows) go to a worker directly, not inside the task through the
        # scheduler, which warns about a large graph from ~10 MB (a 300k x 10 frame) and slows down
        shipped = [a if isinstance(a, (bool, int, float, str, type(None))) else self.client.scatter(a, hash=False)
                   for a in args]
        job = self.client.submit(fn, *shipped, pure=False)
        self._running[job] = shipped

        def done(finished: Any) -> None:
            self._running.pop(finished, None)
            try:
                out.set_result(finished.result())
            except BaseException as e:  # delivered through the future, like a pool would
                out.set_exception(e)

        job.add_done_callback(done)
        return out

    def workers(self) -> list[str]:
        """The addresses of the cluster's workers."""
        return sorted(self.client.scheduler_info()["workers"])

    def shutdown(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address or 'local'!r})"


_FORMS = "'inline', 'process[:N]', 'dask://HOST:PORT' or 'dask:local[:N]'"


def make_executor(url: str | None, field: str = "model.executor") -> Executor:
    """The executor a URL names (see the module's documentation); ``inline`` when it is empty."""
    from ..errors import SpecError, param_message

    def bad(rule: str = _FORMS) -> SpecError:
        return SpecError(param_message(field.rpartition(".")[2], field.rpartition(".")[0] or "loop", rule, url),
                         field=field, value=url)

    if not url or url == "inline":
        return InlineExecutor()
    kind, _, rest = url.partition(":")
    if kind == "process" and (not rest or rest.isdigit() and int(rest) > 0):
        return ProcessExecutor(int(rest) if rest else None)
    local = rest == "local" or rest.startswith("local:") and rest[6:].isdigit() and int(rest[6:]) > 0
    if kind != "dask" or not (local or rest.startswith("//") and len(rest) > 2):
        raise bad()
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise bad("an installed Dask (pip install 'freshloop[dask]')") from None
    return DaskExecutor(int(rest[6:]) if rest.startswith("local:") else 1) if local else \
        DaskExecutor(address="tcp:" + rest)
