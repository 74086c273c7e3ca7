"""FastAPI app factory: thin routes over :class:`LoopService`, role-checked bearer tokens."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import HTTP_STATUS, FreshloopError, NotFoundError
from .service import ROLES, LoopService, Settings

__all__ = ["BackgroundServer", "create_app", "free_port"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchCreate(_Body):
    rows: list[dict[str, Any]] = Field(..., description="records with the schema's columns (labels optional)")
    batch_id: str | None = Field(None, description="idempotency key; defaults to the content hash")
    source: str = "api"


class PredictionRequest(_Body):
    rows: list[dict[str, Any]]
    keys: list[str] | None = Field(None, description="routing keys (entity ids); default: prediction ids")


class LabelItem(_Body):
    prediction_id: str
    label: Any


class FeedbackCreate(_Body):
    labels: list[LabelItem]


class OperatorAction(_Body):
    reason: str = Field(..., min_length=1)


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"code": code, "message": message, "field": field})


class _LimitsAndMetrics:
    """Body size limit, request count and latency per route and model version: plain ASGI middleware
    (Starlette's ``BaseHTTPMiddleware`` costs a task group and stream copies on every request)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, svc_holder: dict[str, LoopService]) -> None:
        self.app, self.max_body_bytes, self.svc_holder = app, max_body_bytes, svc_holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = dict(scope["headers"]).get(b"content-length", b"").decode()
        if size.isdigit() and int(size) > self.max_body_bytes:
            await _error(413, "too_large", f"body of {size} bytes exceeds {self.max_body_bytes} "
                                           f"(rule: request body size limit)")(scope, receive, send)
            return
        started = time.perf_counter()
        seen = {"status": 500, "version": ""}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for k, v in message.get("headers", ()):
                    if k == b"x-model-version":
                        seen["version"] = v.decode()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if "svc" in self.svc_holder:
                m = self.svc_holder["svc"].metrics
                path = getattr(scope.get("route"), "path", "unmatched")
                m.requests.labels(path, str(seen["status"])).inc()
                m.latency.labels(path, seen["version"]).observe(time.perf_counter() - started)


def create_app(settings: Settings, service: LoopService | None = None) -> FastAPI:
    svc_holder: dict[str, LoopService] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service or LoopService(settings)
        svc_holder["svc"] = svc
        svc.start()
        gc.freeze()  # start-up's objects (libraries, the loaded models) are not walked by every full collection
        try:
            yield
        finally:
            gc.unfreeze()
            svc.stop()

    app = FastAPI(title="freshloop", version=__version__, lifespan=lifespan,
                  description="One loop, two clocks: the retraining loop behind HTTP.")

    def svc() -> LoopService:
        return svc_holder["svc"]

    def role(needed: str) -> Callable[..., Awaitable[None]]:
        rank = ROLES.index(needed)

        async def check(authorization: str | None = Header(default=None)) -> None:  # async: no thread hop
            if not settings.tokens:
                return  # loopback without tokens: a local, single-user setup
            if not authorization or not authorization.startswith("Bearer "):
                raise _DeniedError(401, "missing bearer token (rule: Authorization: Bearer <token>)")
            have = settings.tokens.get(authorization.removeprefix("Bearer ").strip())
            if have is None:
                raise _DeniedError(401, "unknown token")
            if ROLES.index(have) < rank:
                raise _DeniedError(403, f"role {have!r} may not do this (rule: needs {needed!r})")

        return check

    app.add_middleware(_LimitsAndMetrics, max_body_bytes=settings.max_body_bytes, svc_holder=svc_holder)

    @app.exception_handler(FreshloopError)
    async def domain_error(_: Request, e: FreshloopError) -> JSONResponse:
        return _error(HTTP_STATUS.get(e.code, 500), e.code, e.message, e.field)

    @app.exception_handler(_DeniedError)
    async def denied(_: Request, e: _DeniedError) -> JSONResponse:
        return _error(e.status, "unauthorized" if e.status == 401 else "forbidden", e.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if p != "body")
        return _error(422, "invalid_request", f"{loc}: {first['msg']}", loc)

    @app.post("/v1/ingest", operation_id="ingest_batch", dependencies=[Depends(role("labeler"))])
    def ingest(body: BatchCreate, idempotency_key: str | None = Header(default=None)) -> dict[str, Any]:
        return svc().ingest(body.rows, batch_id=body.batch_id or idempotency_key, source=body.source)

    @app.post("/v1/ingest/file", operation_id="ingest_file", dependencies=[Depends(role("labeler"))])
    async def ingest_file(request: Request, batch_id: str | None = None, source: str = "upload") -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        suffix = {"text/csv": ".csv", "application/vnd.apache.parquet": ".parquet", "application/x-parquet": ".parquet",
                  "application/json": ".json", "application/x-ndjson": ".jsonl"}.get(kind)
        if suffix is None:
            return _error(415, "unsupported_media_type", f"content-type {kind!r} is not text/csv, "
                          "application/vnd.apache.parquet or application/json", "content-type")
        body = await request.body()
        key = batch_id or request.headers.get("idempotency-key")
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(svc().ingest_file, body, suffix, batch_id=key, source=source)

    batcher = _Batcher(lambda requests: svc().predict_many(requests), max_rows=settings.max_batch_rows)

    @app.post("/v1/predict", operation_id="predict", dependencies=[Depends(role("reader"))])
    async def predict(body: PredictionRequest, response: Response) -> dict[str, Any]:
        out = await batcher.submit((body.rows, body.keys))
        response.headers["x-model-version"] = ",".join(sorted({str(i["version"]) for i in out["data"]}))
        return out

    @app.post("/v1/feedback", operation_id="send_feedback", dependencies=[Depends(role("labeler"))])
    def feedback(body: FeedbackCreate) -> dict[str, Any]:
        return svc().feedback([(item.prediction_id, item.label) for item in body.labels])

    @app.get("/v1/status", operation_id="get_status", dependencies=[Depends(role("reader"))])
    def status() -> dict[str, Any]:
        s = svc()
        with s.lock:
            loop = s.loop
            r = loop.rollout
            return {"name": loop.spec.name, "champion": loop.champion_version, "schema_locked": loop.schema is not None,
                    # how the champion predicts a request's rows: its compiled form, or why scikit-learn does
                    "serving": loop.champion().serving if loop.champion_version is not None else None,
                    "rows": loop.data.rows, "auto_promotion": loop.auto_promotion,
                    "rollout": None if r is None or not r.active else
                    {"id": r.id, "version": r.version, "strategy": r.strategy, "share": r.share, "status": r.status},
                    "stats": {"retrains": loop.stats.retrains, "promotions": loop.stats.promotions,
                              "rollbacks": loop.stats.rollbacks}}

    @app.get("/v1/models", operation_id="list_models", dependencies=[Depends(role("reader"))])
    def models() -> dict[str, Any]:
        s = svc()
        with s.lock:
            aliases = s.loop.registry.aliases()
            data = [{"version": v.version, "run_id": v.run_id, "verdict_id": v.verdict_id,
                     "sha256": v.artifact_sha256, "created_at": v.created_at,
                     "aliases": sorted(k for k, x in aliases.items() if x == v.version),
                     "snapshot_id": v.lineage.get("snapshot_id"), "train_rows": v.lineage.get("train_rows")}
                    for v in s.loop.registry.versions()]
        return {"data": data, "count": len(data)}

    @app.get("/v1/decisions", operation_id="list_decisions", dependencies=[Depends(role("reader"))])
    def decisions(kind: str | None = None, limit: int = 100) -> dict[str, Any]:
        s = svc()
        with s.lock:
            data = s.loop.meta.list_decisions(kind)[-limit:]
        return {"data": data, "count": len(data)}

    @app.get("/v1/events", operation_id="list_events", dependencies=[Depends(role("reader"))])
    def events(kind: str | None = None, limit: int = 200) -> dict[str, Any]:
        s = svc()
        with s.lock:
            data = s.loop.events.list(kind)[-limit:]
        return {"data": data, "count": len(data)}

    @app.get("/v1/rollouts", operation_id="list_rollouts", dependencies=[Depends(role("reader"))])
    def rollouts() -> dict[str, Any]:
        s = svc()
        with s.lock:
            data = s.loop.meta.list_rollouts()
        return {"data": data, "count": len(data)}

    @app.post("/v1/tick", operation_id="tick", dependencies=[Depends(role("operator"))])
    def tick() -> dict[str, Any]:
        rep = svc().tick()
        return {**rep.to_dict(), "decision": rep.decision.kind if rep.decision else None,
                "reasons": list(rep.decision.reasons) if rep.decision else [],
                "verdict": None if rep.verdict is None else rep.verdict.to_dict()}

    @app.post("/v1/models/{version}/promote", operation_id="promote_model",
              dependencies=[Depends(role("operator"))])
    def promote(version: int, body: OperatorAction, x_actor: str = Header(default="operator")) -> dict[str, Any]:
        s = svc()
        with s.lock:
            s.loop.promote(version, actor=x_actor, reason=body.reason)
            s.metrics.champion.set(version)
        return {"champion": version}

    @app.post("/v1/rollback", operation_id="rollback", dependencies=[Depends(role("operator"))])
    def rollback(body: OperatorAction, x_actor: str = Header(default="operator")) -> dict[str, Any]:
        s = svc()
        with s.lock:
            version = s.loop.rollback(actor=x_actor, reason=body.reason)
            s.metrics.rollbacks.inc()
        return {"champion": version}

    @app.post("/v1/rollouts/{rollout_id}/approve", operation_id="approve_rollout",
              dependencies=[Depends(role("operator"))])
    def approve(rollout_id: str, body: OperatorAction, x_actor: str = Header(default="operator")) -> dict[str, Any]:
        s = svc()
        with s.lock:
            s.loop.approve(rollout_id, actor=x_actor, reason=body.reason)
        return {"rollout_id": rollout_id, "status": "running"}

    @app.post("/v1/rollouts/{rollout_id}/abort", operation_id="abort_rollout",
              dependencies=[Depends(role("operator"))])
    def abort(rollout_id: str, body: OperatorAction, x_actor: str = Header(default="operator")) -> dict[str, Any]:
        s = svc()
        with s.lock:
            r = s.loop.rollout
            if r is None or r.id != rollout_id or not r.active:
                raise NotFoundError(f"no active rollout {rollout_id!r}.", field="rollout_id", value=rollout_id)
            s.loop.rollback(actor=x_actor, reason=f"abort: {body.reason}")
        return {"rollout_id": rollout_id, "status": "rolled_back"}

    @app.get("/metrics", operation_id="metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(svc().metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _Batcher:
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` right now (for servers started by tests and benchmarks)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """An app served by uvicorn on a loopback port in a background thread (tests, notebooks, benchmarks).

    >>> from fastapi import FastAPI
    >>> server = BackgroundServer(FastAPI())
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1") -> None:
        import threading

        import uvicorn

        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


class _DeniedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

