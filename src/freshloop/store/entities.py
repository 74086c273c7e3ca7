"""What the metadata store holds, as frozen entities: one class per kind of row, read by attribute.

The repositories in :mod:`.repos` take and return these (as MLflow's tracking store returns its entities);
no caller reads a row by a string key. JSON columns come back as the lists and dicts they were stored as.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, TypeVar

__all__ = ["AliasMove", "Batch", "DecisionRecord", "Entity", "Event", "ModelVersion", "QuarantineItem",
           "RolloutRecord", "RunRecord", "SnapshotRecord", "VerdictRecord"]

E = TypeVar("E", bound="Entity")


class Entity:
    """A row as a frozen dataclass: built from a row's mapping, written back as a dict of its columns."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def from_row(cls: type[E], row: Any) -> E:
        m = row._mapping if hasattr(row, "_mapping") else row
        return cls(**{f.name: m[f.name] for f in fields(cls)})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Batch(Entity):
    """A submitted batch: how many of its rows were accepted and quarantined, and where they are kept."""

    id: str
    kind: str  # features | labels
    source: str
    source_batch_id: str
    content_hash: str
    status: str  # accepted | partial | quarantined
    rows_submitted: int
    rows_accepted: int
    rows_quarantined: int
    path: str | None
    raw_path: str | None
    t_min: float | None
    t_max: float | None
    created_at: float
    reasons: list[str]


@dataclass(frozen=True)
class QuarantineItem(Entity):
    """A batch's rejected rows, held until they are submitted again."""

    id: str
    batch_id: str
    rows: int
    reasons: list[str]
    path: str
    status: str  # held | reingested
    reingested_as: str | None
    created_at: float


@dataclass(frozen=True)
class SnapshotRecord(Entity):
    id: str
    body: dict[str, Any]
    rows: int
    cutoff: float
    created_at: float


@dataclass(frozen=True)
class RunRecord(Entity):
    """A training run: its idempotency key, snapshot, outcome and lineage."""

    id: str
    run_key: str
    snapshot_id: str
    mode: str
    status: str
    lineage: dict[str, Any]
    train_rows: int
    train_seconds: float
    created_at: float


@dataclass(frozen=True)
class VerdictRecord(Entity):
    id: str
    run_id: str
    passed: bool
    body: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class ModelVersion(Entity):
    """A registered model: its run, verdict, artifact (content-addressed, signed) and lineage."""

    version: int
    run_id: str
    verdict_id: str | None
    artifact_sha256: str
    artifact_path: str
    lineage: dict[str, Any]
    created_at: float
    artifact_hmac: str | None = None


@dataclass(frozen=True)
class AliasMove(Entity):
    name: str
    old_version: int | None
    new_version: int | None
    actor: str
    reason: str
    at: float


@dataclass(frozen=True)
class DecisionRecord(Entity):
    """A tick's decision as logged: what fired (``triggers``) or held it (``guard``), and the policy's memory."""

    id: int
    at: float
    kind: str  # retrain | skip
    run_key: str | None
    reasons: list[str]
    state: dict[str, Any] | None
    triggers: list[str] | None
    guard: str | None


@dataclass(frozen=True)
class Event(Entity):
    id: int
    at: float
    kind: str
    actor: str
    reason: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class RolloutRecord(Entity):
    id: str
    version: int
    champion_version: int | None
    strategy: str
    status: str
    step: int
    started_at: float
    step_started_at: float
    updated_at: float
    evidence: list[dict[str, Any]]
