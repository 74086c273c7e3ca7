"""FastAPI app factory: thin routes over :class:`LoopService`, role-checked bearer tokens."""

from __future__ import annotations

import asyncio
import gc
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..data.validate import not_unicode
from ..errors import (
    AuthError,
    ForbiddenError,
    FreshloopError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    TooLargeError,
    UnreadableBodyError,
    UnsupportedMediaError,
    error_classes,
)
from .service import ROLES, LoopService, Settings

__all__ = ["BackgroundServer", "create_app", "free_port"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# the longest key, name or reason a client may send (each is a column of the metadata store)
KEY_CHARS, REASON_CHARS, LIST_MAX = 200, 1000, 10_000


Text = AfterValidator(not_unicode)  # ids and reasons a client sends are stored: valid Unicode only


class BatchCreate(_Body):
    rows: list[dict[str, Any]] = Field(..., min_length=1, description="records with the schema's columns (labels "
                                                                      "optional)")
    batch_id: Annotated[str | None, Text] = Field(None, min_length=1, max_length=KEY_CHARS,
                                                  description="idempotency key; defaults to the content hash")
    source: Annotated[str, Text] = Field("api", min_length=1, max_length=KEY_CHARS)


class PredictionRequest(_Body):
    rows: list[dict[str, Any]] = Field(..., min_length=1)
    keys: list[str] | None = Field(None, description="routing keys (entity ids); default: prediction ids")


class LabelItem(_Body):
    prediction_id: Annotated[str, Text] = Field(..., max_length=KEY_CHARS)
    label: Any


class FeedbackCreate(_Body):
    labels: list[LabelItem] = Field(..., min_length=1)


class OperatorAction(_Body):
    reason: Annotated[str, Text] = Field(..., min_length=1, max_length=REASON_CHARS)


Actor = Annotated[str, Header(max_length=KEY_CHARS, description="who acts (recorded in the event log)")]
Limit = Annotated[int, Query(ge=1, le=LIST_MAX, description="the newest this many")]
Kind = Annotated[str | None, Query(max_length=64)]
Key = Annotated[str | None, Query(min_length=1, max_length=KEY_CHARS)]
Version = Annotated[int, FastAPIPath(ge=1, le=2**63 - 1, description="a registered model version")]


class ErrorBody(BaseModel):
    """Every error freshloop answers: a code, a message naming the field, the rule and the value, the field."""

    code: str
    message: str
    field: str | None = None


def _documented() -> dict[int | str, dict[str, Any]]:
    """Every error answer, from the error classes (their status, code and what they mean): documented on
    every route (OpenAPI), so a client or a fuzzer knows every answer it may get."""
    by_status: dict[int, list[str]] = {}
    for cls in error_classes()[1:]:
        what = " ".join((cls.__doc__ or cls.code).split())
        by_status.setdefault(cls.status, []).append(f"{cls.code}: {what}")
    return {status: {"model": ErrorBody, "description": "; ".join(whats)}
            for status, whats in sorted(by_status.items()) if status < 500}


ERRORS = _documented()


def error_response(e: FreshloopError) -> JSONResponse:
    """The one place an error becomes an HTTP answer: its class's status, its code, message and field."""
    return JSONResponse(status_code=e.status, content={"code": e.code, "message": e.message, "field": e.field})


def _too_large(what: str, limit: int) -> JSONResponse:
    return error_response(TooLargeError(f"{what} exceeds {limit:,} bytes (rule: request body size limit)",
                                        field="body"))


class _BodyTooLarge(HTTPException, TooLargeError):
    """Raised while a body is read, past the limit: an HTTPException too, so FastAPI passes it on as it is
    instead of calling it a body it could not parse."""

    def __init__(self, limit: int) -> None:
        HTTPException.__init__(self, 413)
        TooLargeError.__init__(self, f"the body, read so far, exceeds {limit:,} bytes (rule: request body size "
                               "limit)", field="body")


class _LimitsAndMetrics:
    """Body size limit, request count and latency per route and model version: plain ASGI middleware
    (Starlette's ``BaseHTTPMiddleware`` costs a task group and stream copies on every request)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, svc_holder: dict[str, LoopService],
                 guard: Callable[[Scope], JSONResponse | None]) -> None:
        self.app, self.max_body_bytes, self.svc_holder, self.guard = app, max_body_bytes, svc_holder, guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        denied = self.guard(scope)  # the token, before a byte of the body is read or parsed
        if denied is not None:
            await denied(scope, receive, send)
            return
        limit = self.max_body_bytes
        size = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if size.isdigit() and int(size) > limit:
            await _too_large(f"body of {int(size):,} bytes", limit)(scope, receive, send)
            return
        started = time.perf_counter()
        seen = {"status": 500, "version": ""}
        read = 0

        async def counted() -> Message:
            # bytes are counted as they are read, whatever the transfer encoding (a chunked body has no
            # Content-Length): past the limit, reading stops and the request is answered 413
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for k, v in message.get("headers", ()):
                    if k == b"x-model-version":
                        seen["version"] = v.decode()
            await send(message)

        try:
            await self.app(scope, counted, watch)
        finally:
            if "svc" in self.svc_holder:
                m = self.svc_holder["svc"].metrics
                path = getattr(scope.get("route"), "path", "unmatched")
                m.requests.labels(path, str(seen["status"])).inc()
                m.latency.labels(path, seen["version"]).observe(time.perf_counter() - started)


def create_app(settings: Settings, service: LoopService | None = None,
               on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The app; ``on_shutdown`` runs after the service stopped (uvicorn ends the process by re-raising SIGTERM
    once the lifespan is over, so a caller's own ``finally`` would not run)."""
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
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPI(title="freshloop", version=__version__, lifespan=lifespan, responses=ERRORS,
                  description="One loop, two clocks: the retraining loop behind HTTP.")

    def svc() -> LoopService:
        return svc_holder["svc"]

    def role(needed: str) -> Callable[..., Awaitable[None]]:
        async def check(authorization: str | None = Header(default=None)) -> None:  # noqa: ARG001
            """The route's role, for the OpenAPI schema; ``guard`` checks it before the body is read."""

        check.needed = needed  # type: ignore[attr-defined]
        return check

    needs: list[tuple[APIRoute, str]] = []  # each route and its role, read from its dependencies once they exist

    def guard(scope: Scope) -> JSONResponse | None:
        """401 for a missing or unknown token, 403 for a role below the route's, before the body is read (an
        unauthenticated malformed request is 401, not 422); None lets the request in."""
        if not settings.tokens:
            return None  # --no-auth: a local, single-user setup
        needed = next((r for route, r in needs if route.matches(scope)[0] is Match.FULL), None)
        if needed is None and scope["path"] == "/metrics" and not settings.metrics_open:
            needed = "reader"
        if needed is None:
            return None  # the docs, the OpenAPI schema, open metrics, an unknown path's 404
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if not header.startswith("Bearer "):
            return error_response(AuthError("missing bearer token (rule: Authorization: Bearer <token>)"))
        have = _role_of(settings.tokens, header.removeprefix("Bearer ").strip())
        if have is None:
            return error_response(AuthError("unknown token"))
        if ROLES.index(have) < ROLES.index(needed):
            return error_response(ForbiddenError(f"role {have!r} may not do this (rule: needs {needed!r})"))
        return None

    app.add_middleware(_LimitsAndMetrics, max_body_bytes=settings.max_body_bytes, svc_holder=svc_holder,
                       guard=guard)

    @app.exception_handler(FreshloopError)
    async def domain_error(_: Request, e: FreshloopError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(_BodyTooLarge)
    async def too_large(_: Request, e: _BodyTooLarge) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:  # FastAPI's own: unreadable body, 404, 405
        if e.status_code == 400:
            return error_response(UnreadableBodyError(f"{e.detail} (rule: a JSON body that matches the "
                                                      "operation's schema)"))
        cls = {404: NotFoundError, 405: MethodNotAllowedError}.get(e.status_code)
        if cls is None:
            return JSONResponse(status_code=e.status_code, content={"code": "http_error", "message": str(e.detail),
                                                                    "field": None})
        return error_response(cls(str(e.detail)))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if p != "body")
        return error_response(InvalidRequestError(f"{loc}: {first['msg']}", field=loc))

    @app.post("/v1/ingest", operation_id="ingest_batch", dependencies=[Depends(role("labeler"))])
    def ingest(body: BatchCreate, idempotency_key: Annotated[str | None, Header(max_length=KEY_CHARS)] = None
               ) -> dict[str, Any]:
        return svc().ingest(body.rows, batch_id=body.batch_id or idempotency_key, source=body.source)

    @app.post("/v1/ingest/file", operation_id="ingest_file", dependencies=[Depends(role("labeler"))])
    async def ingest_file(request: Request, batch_id: Key = None,
                          source: Annotated[str, Query(min_length=1, max_length=KEY_CHARS)] = "upload",
                          idempotency_key: Annotated[str | None, Header(max_length=KEY_CHARS)] = None) -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        suffix = {"text/csv": ".csv", "application/vnd.apache.parquet": ".parquet", "application/x-parquet": ".parquet",
                  "application/json": ".json", "application/x-ndjson": ".jsonl"}.get(kind)
        if suffix is None:
            raise UnsupportedMediaError(f"content-type {kind!r} is not text/csv, application/vnd.apache.parquet "
                                        "or application/json", field="content-type")
        body = await request.body()
        key = batch_id or idempotency_key
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
        return svc().status()

    @app.get("/v1/models", operation_id="list_models", dependencies=[Depends(role("reader"))])
    def models() -> dict[str, Any]:
        return _page(svc().models())

    @app.get("/v1/decisions", operation_id="list_decisions", dependencies=[Depends(role("reader"))])
    def decisions(kind: Kind = None, limit: Limit = 100) -> dict[str, Any]:
        return _page(svc().decisions(kind, limit))

    @app.get("/v1/events", operation_id="list_events", dependencies=[Depends(role("reader"))])
    def events(kind: Kind = None, limit: Limit = 200) -> dict[str, Any]:
        return _page(svc().events(kind, limit))

    @app.get("/v1/rollouts", operation_id="list_rollouts", dependencies=[Depends(role("reader"))])
    def rollouts() -> dict[str, Any]:
        return _page(svc().rollouts())

    @app.post("/v1/tick", operation_id="tick", dependencies=[Depends(role("operator"))])
    def tick() -> dict[str, Any]:
        rep = svc().tick()
        return {**rep.to_dict(), "decision": rep.decision.kind if rep.decision else None,
                "reasons": list(rep.decision.reasons) if rep.decision else [],
                "triggers": list(rep.decision.triggers) if rep.decision else [],
                "guard": rep.decision.guard if rep.decision else None,
                "verdict": None if rep.verdict is None else rep.verdict.to_dict()}

    @app.post("/v1/models/{version}/promote", operation_id="promote_model",
              dependencies=[Depends(role("operator"))])
    def promote(version: Version, body: OperatorAction, x_actor: Actor = "operator") -> dict[str, Any]:
        return {"champion": version, "moved": svc().promote(version, actor=x_actor, reason=body.reason)}

    @app.post("/v1/rollback", operation_id="rollback", dependencies=[Depends(role("operator"))])
    def rollback(body: OperatorAction, x_actor: Actor = "operator") -> dict[str, Any]:
        return {"champion": svc().rollback(actor=x_actor, reason=body.reason)}

    @app.post("/v1/rollouts/{rollout_id}/approve", operation_id="approve_rollout",
              dependencies=[Depends(role("operator"))])
    def approve(rollout_id: str, body: OperatorAction, x_actor: Actor = "operator") -> dict[str, Any]:
        svc().approve(rollout_id, actor=x_actor, reason=body.reason)
        return {"rollout_id": rollout_id, "status": "running"}

    @app.post("/v1/rollouts/{rollout_id}/abort", operation_id="abort_rollout",
              dependencies=[Depends(role("operator"))])
    def abort(rollout_id: str, body: OperatorAction, x_actor: Actor = "operator") -> dict[str, Any]:
        svc().abort(rollout_id, actor=x_actor, reason=body.reason)
        return {"rollout_id": rollout_id, "status": "rolled_back"}

    @app.get("/metrics", operation_id="metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(svc().metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for route in app.routes:
        if isinstance(route, APIRoute):
            needs += [(route, str(getattr(d.call, "needed", ""))) for d in route.dependant.dependencies
                      if hasattr(d.call, "needed")]
    return app


def _page(data: list[dict[str, Any]]) -> dict[str, Any]:
    """A listing's answer: the items, and how many."""
    return {"data": data, "count": len(data)}


def _role_of(tokens: dict[str, str], given: str) -> str | None:
    """The role of token ``given``, compared with every configured token in constant time (no early exit, so
    the answer's timing tells nothing of how much of a token matched)."""
    found = None
    for token, role in tokens.items():
        if hmac.compare_digest(token.encode(), given.encode("utf-8", "replace")):
            found = role
    return found


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


