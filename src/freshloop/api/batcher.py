"""Concurrent predict requests, scored together in one model call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["Batcher"]


class Batcher:
    """Requests that arrive while a batch is being scored are scored together in the next one.

    No timer: a lone request is scored at once, and under load each model call takes everything that
    queued up meanwhile (up to ``max_rows``), so the per-call cost is shared and throughput grows with
    concurrency. Each request still gets its own answer or its own error.

    One call runs at a time. A small one (up to ``inline_rows``) runs on the event loop: handing it to a
    thread costs a GIL hand-off each way, which for a few rows is more than the call itself (one-row
    latency under bench/load.py fell by about a third inline). Larger calls go to a thread so the loop
    keeps reading the next requests meanwhile."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_rows: int, inline_rows: int = 256) -> None:
        self.fn, self.max_rows, self.inline_rows = fn, max_rows, inline_rows
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: tuple[list[dict[str, Any]], Any]) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        from starlette.concurrency import run_in_threadpool

        try:
            while self._pending:
                for _ in range(4):  # no timer: a few loop turns let requests already read join this call
                    waiting = len(self._pending)
                    await asyncio.sleep(0)
                    if len(self._pending) == waiting:
                        break
                take, rows = 1, len(self._pending[0][0][0])
                while take < len(self._pending) and rows + len(self._pending[take][0][0]) <= self.max_rows:
                    rows += len(self._pending[take][0][0])
                    take += 1
                batch, self._pending = self._pending[:take], self._pending[take:]
                try:
                    if rows <= self.inline_rows:
                        results = self.fn([r for r, _ in batch])
                    else:
                        results = await run_in_threadpool(self.fn, [r for r, _ in batch])
                except Exception as e:  # the whole call failed: every caller in it gets the error
                    results = [e] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # the caller went away
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                await asyncio.sleep(0)  # let the loop answer these and read new requests before the next call
        finally:
            self._task = None
