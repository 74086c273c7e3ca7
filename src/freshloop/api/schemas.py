"""What the HTTP API takes and answers, as pydantic models: the OpenAPI schema documents both.

Requests forbid unknown fields; answers list every field they carry. The answers of the listings are
pages (``data`` and ``count``) of the metadata store's own entities (:mod:`freshloop.store.entities`,
dataclasses pydantic reads as they are), so a field added to an entity is documented where it is served.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..data.rules import not_unicode

__all__ = ["BatchCreate", "FeedbackAnswer", "FeedbackCreate", "IngestAnswer", "LabelItem", "ModelItem",
           "OperatorAction", "Page", "PredictionAnswer", "PredictionRequest", "PromoteAnswer", "RollbackAnswer",
           "RolloutAnswer", "StatusAnswer", "TickAnswer"]

# the longest key, name or reason a client may send (each is a column of the metadata store)
KEY_CHARS, REASON_CHARS, LIST_MAX = 200, 1000, 10_000

Text = AfterValidator(not_unicode)  # ids and reasons a client sends are stored: valid Unicode only
T = TypeVar("T")


# -- requests ---------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


# -- answers ----------------------------------------------------------------------------------
class Page(BaseModel, Generic[T]):
    """A listing: its items, oldest first, and how many."""

    data: list[T]
    count: int


class IngestAnswer(BaseModel):
    """What became of a batch: rows accepted, rows quarantined (with the first reasons) and the ids to find
    them by. ``replayed``: the batch id was seen before, and this is the first answer again."""

    batch_id: str
    kind: Literal["features", "labels"]
    source: str
    source_batch_id: str
    status: Literal["accepted", "partial", "quarantined"]
    submitted: int
    accepted: int
    quarantined: int
    reasons: list[str]
    quarantine_id: str | None
    replayed: bool
    unknown_row_ids: int
    relabeled: int
    relabel_examples: list[dict[str, Any]]
    warnings: list[str]


class FeedbackAnswer(BaseModel):
    batch_id: str
    accepted: int
    quarantined: int
    reasons: list[str]
    unknown_prediction_ids: list[str] = Field(description="ids no prediction was logged under (their labels "
                                                          "are stored, not scored)")
    scored: int = Field(description="labels joined to a logged prediction and scored")


class Prediction(BaseModel):
    prediction_id: str = Field(description="send the label later under this id")
    prediction: Any
    version: int = Field(description="the model version that answered (0: the online companion, `model.companion`)")
    proba: dict[str, float] | None = Field(None, description="class probabilities (classification)")


class PredictionAnswer(BaseModel):
    data: list[Prediction]
    count: int


class RolloutStatus(BaseModel):
    id: str
    version: int
    strategy: str
    share: float
    status: str


class LoopStats(BaseModel):
    retrains: int
    promotions: int
    rollbacks: int


class CompanionStatus(BaseModel):
    estimator: str
    refit: int | None = Field(None, description="the refit companion's labels (model.companion.refit): the spec's "
                              "model fitted anew at every tick on this many of the newest; none for an online one")
    serves: bool = Field(description="whether it answers in the champion's place (surely better lately)")
    rows_learned: int
    errors: int = Field(0, description="requests it failed to answer since the loop opened (the champion answered)")
    last_error: str | None = Field(None, description="why it failed, while it still fails")


class StatusAnswer(BaseModel):
    name: str
    champion: int | None
    schema_locked: bool
    serving: str | None = Field(description="how the champion predicts: its compiled form, or why not")
    rows: int
    auto_promotion: bool
    rollout: RolloutStatus | None
    companion: CompanionStatus | None = Field(None, description="the online model beside the champion "
                                              "(model.companion), if the spec runs one")
    stats: LoopStats


class ModelItem(BaseModel):
    version: int
    run_id: str
    verdict_id: str | None
    sha256: str
    created_at: float
    aliases: list[str]
    snapshot_id: str | None
    train_rows: int | None
    gate_score: float | None = Field(description="its score on the gate's holdout")








class TickAnswer(BaseModel):
    """What one tick did: its decision, the training run and verdict if it trained, and what moved."""

    now: float
    decision: Literal["retrain", "skip"] | None
    reasons: list[str]
    triggers: list[str]
    guard: str | None
    run_id: str | None
    run_failed: bool
    run_error: str | None
    deferred: str | None
    verdict: dict[str, Any] | None
    registered: int | None
    promoted: int | None
    refit: int | None
    rolled_back: int | None
    rollout_action: str | None
    data_age: float | None
    window: dict[str, Any] | None = Field(None, description="the window the candidate was fitted on (rows, why, "
                                          "each length tried and its holdout score), when the retrain chose one")
    serving: str | None = Field(None, description="why serving moved between the champion and the online "
                                "companion at this tick (model.companion), if it did")
    recalled: int | None = Field(None, description="a past version promoted back without training at this tick "
                                 "(gate.recall), if one was")


class PromoteAnswer(BaseModel):
    champion: int
    moved: bool = Field(description="false when the version already was the champion (nothing recorded)")


class RollbackAnswer(BaseModel):
    champion: int


class RolloutAnswer(BaseModel):
    rollout_id: str
    status: Literal["running", "rolled_back"]
