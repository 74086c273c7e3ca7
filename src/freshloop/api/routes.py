"""The HTTP routes, one router per resource: each one reads its request, calls the service and returns its
answer. The service (:class:`~.service.LoopService`) owns every action; the token's role is checked by the
app's middleware before a body is read (:func:`role` only names it, for the OpenAPI schema)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi import Path as FastAPIPath
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..errors import UnsupportedMediaError
from ..store import DecisionRecord, Event, RolloutRecord
from .schemas import (
    KEY_CHARS,
    LIST_MAX,
    BatchCreate,
    FeedbackAnswer,
    FeedbackCreate,
    IngestAnswer,
    ModelItem,
    OperatorAction,
    Page,
    PredictionAnswer,
    PredictionRequest,
    PromoteAnswer,
    RollbackAnswer,
    RolloutAnswer,
    StatusAnswer,
    TickAnswer,
)
from .service import LoopService

__all__ = ["ROUTERS", "role"]

P = TypeVar("P", bound=BaseModel)


Actor = Annotated[str, Header(max_length=KEY_CHARS, description="who acts (recorded in the event log)")]
Limit = Annotated[int, Query(ge=1, le=LIST_MAX, description="the newest this many")]
Kind = Annotated[str | None, Query(max_length=64)]
Key = Annotated[str | None, Query(min_length=1, max_length=KEY_CHARS)]
Version = Annotated[int, FastAPIPath(ge=1, le=2**63 - 1, description="a registered model version")]


def role(needed: str) -> Callable[..., Awaitable[None]]:
    """A route's role, for the OpenAPI schema; the app's guard checks it before the body is read."""

    async def check(authorization: str | None = Header(default=None)) -> None:  # noqa: ARG001
        """Names the bearer token header in the schema."""

    check.needed = needed  # type: ignore[attr-defined]
    return check


def service(request: Request) -> LoopService:
    svc: LoopService = request.app.state.service
    return svc


Service = Annotated[LoopService, Depends(service)]


def _page(page: type[P], data: Sequence[Any]) -> P:
    """A listing's answer: the items, and how many."""
    return page.model_validate({"data": data, "count": len(data)})


_MEDIA = {"text/csv": ".csv", "application/vnd.apache.parquet": ".parquet", "application/x-parquet": ".parquet",
          "application/json": ".json", "application/x-ndjson": ".jsonl"}

data = APIRouter(tags=["data"])


@data.post("/v1/ingest", operation_id="ingest_batch", dependencies=[Depends(role("labeler"))])
def ingest(svc: Service, body: BatchCreate,
           idempotency_key: Annotated[str | None, Header(max_length=KEY_CHARS)] = None) -> IngestAnswer:
    res = svc.ingest(body.rows, batch_id=body.batch_id or idempotency_key, source=body.source)
    return IngestAnswer.model_validate(res.to_dict())


@data.post("/v1/ingest/file", operation_id="ingest_file", dependencies=[Depends(role("labeler"))])
async def ingest_file(svc: Service, request: Request, batch_id: Key = None,
                      source: Annotated[str, Query(min_length=1, max_length=KEY_CHARS)] = "upload",
                      idempotency_key: Annotated[str | None, Header(max_length=KEY_CHARS)] = None) -> IngestAnswer:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    suffix = _MEDIA.get(kind)
    if suffix is None:
        raise UnsupportedMediaError(f"content-type {kind!r} is not text/csv, application/vnd.apache.parquet "
                                    "or application/json", field="content-type")
    body = await request.body()
    res = await run_in_threadpool(svc.ingest_file, body, suffix, batch_id=batch_id or idempotency_key, source=source)
    return IngestAnswer.model_validate(res.to_dict())


@data.post("/v1/feedback", operation_id="send_feedback", dependencies=[Depends(role("labeler"))])
def feedback(svc: Service, body: FeedbackCreate) -> FeedbackAnswer:
    return FeedbackAnswer.model_validate(svc.send_feedback([(item.prediction_id, item.label) for item in body.labels]))


predictions = APIRouter(tags=["predictions"])


# the hot path answers its dict as it is: the model documents it without validating every answer again
@predictions.post("/v1/predict", operation_id="predict", dependencies=[Depends(role("reader"))],
                  response_model=None, responses={200: {"model": PredictionAnswer}})
async def predict(request: Request, body: PredictionRequest, response: Response) -> dict[str, Any]:
    out: dict[str, Any] = await request.app.state.batcher.submit((body.rows, body.keys))
    response.headers["x-model-version"] = ",".join(sorted({str(i["version"]) for i in out["data"]}))
    return out


loop = APIRouter(tags=["loop"])


@loop.get("/v1/status", operation_id="get_status", dependencies=[Depends(role("reader"))])
def status(svc: Service) -> StatusAnswer:
    return StatusAnswer.model_validate(svc.status())


@loop.get("/v1/decisions", operation_id="list_decisions", dependencies=[Depends(role("reader"))])
def decisions(svc: Service, kind: Kind = None, limit: Limit = 100) -> Page[DecisionRecord]:
    return _page(Page[DecisionRecord], svc.decisions(kind, limit))


@loop.get("/v1/events", operation_id="list_events", dependencies=[Depends(role("reader"))])
def events(svc: Service, kind: Kind = None, limit: Limit = 200) -> Page[Event]:
    return _page(Page[Event], svc.events(kind, limit))


@loop.post("/v1/tick", operation_id="tick", dependencies=[Depends(role("operator"))])
def tick(svc: Service) -> TickAnswer:
    rep = svc.tick()
    d = rep.decision
    return TickAnswer.model_validate({
        **rep.to_dict(), "decision": d.kind if d else None, "reasons": list(d.reasons) if d else [],
        "triggers": list(d.triggers) if d else [], "guard": d.guard if d else None,
        "verdict": None if rep.verdict is None else rep.verdict.to_dict()})


@loop.get("/metrics", operation_id="metrics", include_in_schema=False)
def metrics(svc: Service) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


models = APIRouter(tags=["models"])


@models.get("/v1/models", operation_id="list_models", dependencies=[Depends(role("reader"))])
def list_models(svc: Service) -> Page[ModelItem]:
    return _page(Page[ModelItem], svc.models())


@models.post("/v1/models/{version}/promote", operation_id="promote_model", dependencies=[Depends(role("operator"))])
def promote(svc: Service, version: Version, body: OperatorAction, x_actor: Actor = "operator") -> PromoteAnswer:
    return PromoteAnswer(champion=version, moved=svc.promote(version, actor=x_actor, reason=body.reason))


@models.post("/v1/rollback", operation_id="rollback", dependencies=[Depends(role("operator"))])
def rollback(svc: Service, body: OperatorAction, x_actor: Actor = "operator") -> RollbackAnswer:
    return RollbackAnswer(champion=svc.rollback(actor=x_actor, reason=body.reason))


rollouts = APIRouter(tags=["rollouts"])


@rollouts.get("/v1/rollouts", operation_id="list_rollouts", dependencies=[Depends(role("reader"))])
def list_rollouts(svc: Service) -> Page[RolloutRecord]:
    return _page(Page[RolloutRecord], svc.rollouts())


@rollouts.post("/v1/rollouts/{rollout_id}/approve", operation_id="approve_rollout",
               dependencies=[Depends(role("operator"))])
def approve(svc: Service, rollout_id: str, body: OperatorAction, x_actor: Actor = "operator") -> RolloutAnswer:
    svc.approve(rollout_id, actor=x_actor, reason=body.reason)
    return RolloutAnswer(rollout_id=rollout_id, status="running")


@rollouts.post("/v1/rollouts/{rollout_id}/abort", operation_id="abort_rollout",
               dependencies=[Depends(role("operator"))])
def abort(svc: Service, rollout_id: str, body: OperatorAction, x_actor: Actor = "operator") -> RolloutAnswer:
    svc.abort(rollout_id, actor=x_actor, reason=body.reason)
    return RolloutAnswer(rollout_id=rollout_id, status="rolled_back")


ROUTERS = (data, predictions, loop, models, rollouts)
