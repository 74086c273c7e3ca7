"""FastAPI app factory: thin routes over :class:`LoopService`, role-checked bearer tokens."""

from __future__ import annotations

import gc
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import (
    AuthError,
    ForbiddenError,
    FreshloopError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    TooLargeError,
    UnreadableBodyError,
    error_classes,
)
from .batcher import Batcher
from .routes import ROUTERS
from .service import ROLES, LoopService, Settings

__all__ = ["BackgroundServer", "create_app", "free_port"]


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

    def __init__(self, app: ASGIApp, max_body_bytes: int, state: State,
                 guard: Callable[[Scope], JSONResponse | None]) -> None:
        self.app, self.max_body_bytes, self.state, self.guard = app, max_body_bytes, state, guard

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
            svc = getattr(self.state, "service", None)
            if svc is not None:
                m = svc.metrics
                path = getattr(scope.get("route"), "path", "unmatched")
                m.requests.labels(path, str(seen["status"])).inc()
                m.latency.labels(path, seen["version"]).observe(time.perf_counter() - started)


def create_app(settings: Settings, service: LoopService | None = None,
               on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The app; ``on_shutdown`` runs after the service stopped (uvicorn ends the process by re-raising SIGTERM
    once the lifespan is over, so a caller's own ``finally`` would not run)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = app.state.service = service or LoopService(settings)
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
    for router in ROUTERS:
        app.include_router(router)
    app.state.batcher = Batcher(lambda requests: app.state.service.predict_many(requests),
                                max_rows=settings.max_batch_rows)
    app.add_middleware(_LimitsAndMetrics, max_body_bytes=settings.max_body_bytes, state=app.state,
                       guard=_TokenGuard(settings, [route for router in ROUTERS for route in router.routes]))
    for cls, handler in _HANDLERS.items():
        app.add_exception_handler(cls, handler)
    return app


class _TokenGuard:
    """401 for a missing or unknown token, 403 for a role below the route's, before the body is read (an
    unauthenticated malformed request is 401, not 422); None lets the request in."""

    def __init__(self, settings: Settings, routes: list[BaseRoute]) -> None:
        self.settings = settings
        # each route and the role its dependencies name
        self.needs = [(route, str(needed)) for route in routes if isinstance(route, APIRoute)
                      for d in route.dependant.dependencies if (needed := getattr(d.call, "needed", None))]

    def __call__(self, scope: Scope) -> JSONResponse | None:
        settings = self.settings
        if not settings.tokens:
            return None  # --no-auth: a local, single-user setup
        needed = next((r for route, r in self.needs if route.matches(scope)[0] is Match.FULL), None)
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


async def _domain_error(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, FreshloopError)
    return error_response(e)


async def _http_error(_: Request, e: Exception) -> JSONResponse:
    """FastAPI's own answers (an unreadable body, an unknown path, a method the path does not take), as ours."""
    assert isinstance(e, HTTPException)
    if e.status_code == 400:
        return error_response(UnreadableBodyError(f"{e.detail} (rule: a JSON body that matches the operation's "
                                                  "schema)"))
    cls = {404: NotFoundError, 405: MethodNotAllowedError}.get(e.status_code)
    if cls is None:
        return JSONResponse(status_code=e.status_code, content={"code": "http_error", "message": str(e.detail),
                                                                "field": None})
    return error_response(cls(str(e.detail)))


async def _invalid(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, RequestValidationError)
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if p != "body")
    return error_response(InvalidRequestError(f"{loc}: {first['msg']}", field=loc))


_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
    FreshloopError: _domain_error, _BodyTooLarge: _domain_error, HTTPException: _http_error,
    RequestValidationError: _invalid}


def _role_of(tokens: dict[str, str], given: str) -> str | None:
    """The role of token ``given``, compared with every configured token in constant time (no early exit, so
    the answer's timing tells nothing of how much of a token matched)."""
    found = None
    for token, role in tokens.items():
        if hmac.compare_digest(token.encode(), given.encode("utf-8", "replace")):
            found = role
    return found


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
                raise FreshloopError(f"server on {self.url} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


