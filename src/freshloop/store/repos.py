"""The metadata store's aggregates, one repository each, taking and returning frozen entities.

Each repository owns its tables: :class:`Batches` (batches and their quarantine, written together),
:class:`Runs` (snapshots, training runs, verdicts), :class:`Versions` (model versions and aliases),
:class:`Decisions`, :class:`Events` and :class:`Rollouts`. They share the store's transactions.
"""

from __future__ import annotations

import builtins
import itertools
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Table, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError

from ..errors import ConflictError, NotFoundError
from . import tables as t
from .entities import (
    AliasMove,
    Batch,
    DecisionRecord,
    Entity,
    Event,
    ModelVersion,
    QuarantineItem,
    RolloutRecord,
    RunRecord,
    SnapshotRecord,
    VerdictRecord,
)

__all__ = ["Batches", "Decisions", "Events", "Rollouts", "Runs", "Schemas", "Versions"]

Tx = Callable[[], AbstractContextManager[Connection]]
E = TypeVar("E", bound=Entity)

_RACE_RETRIES = 20  # a writer that loses a race for the next number reads again, this many times at most

# Statements run on every batch, run or promotion, built once: building one per call (its values, its
# cache key) cost more than SQLite took to run it.
_FIND_BATCH = select(t.batches).where(t.batches.c.source == bindparam("source"),
                                      t.batches.c.source_batch_id == bindparam("key"))
_GET_BATCH = select(t.batches).where(t.batches.c.id == bindparam("id"))
_HAS_SNAPSHOT = select(t.snapshots.c.id).where(t.snapshots.c.id == bindparam("id"))
_GET_SNAPSHOT = select(t.snapshots).where(t.snapshots.c.id == bindparam("id"))
_FIND_RUN = select(t.runs).where(t.runs.c.run_key == bindparam("key"))
_GET_VERSION = select(t.versions).where(t.versions.c.version == bindparam("version"))
_LOCK_VERSIONS = text("LOCK TABLE versions IN SHARE ROW EXCLUSIVE MODE")  # conflicts with itself only
_GET_ALIAS = select(t.aliases.c.version, t.aliases.c.revision).where(t.aliases.c.name == bindparam("name"))


def _insert_ignoring_conflict(dialect: str, table: Any) -> Any:
    """INSERT that leaves an existing row with the same key alone (it returns no row) instead of failing."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


class _Repo:
    def __init__(self, tx: Tx) -> None:
        self.tx = tx

    def _one(self, entity: type[E], query: Any, params: dict[str, Any] | None = None) -> E | None:
        with self.tx() as c:
            row = c.execute(query, params or {}).first()
        return entity.from_row(row) if row else None

    def _all(self, entity: type[E], query: Any) -> builtins.list[E]:
        with self.tx() as c:
            return [entity.from_row(r) for r in c.execute(query)]


class Schemas(_Repo):
    """The schema each loop locked on its first batch."""

    def get(self, name: str) -> dict[str, Any] | None:
        with self.tx() as c:
            row = c.execute(select(t.schemas.c.body).where(t.schemas.c.name == name)).first()
        return dict(row[0]) if row else None

    def lock(self, name: str, body: dict[str, Any], at: float) -> dict[str, Any]:
        """Store the schema unless one is already locked; returns the locked one."""
        with self.tx() as c:
            row = c.execute(select(t.schemas.c.body).where(t.schemas.c.name == name)).first()
            if row:
                return dict(row[0])
            c.execute(t.schemas.insert(), dict(name=name, body=body, locked_at=at))
        return body


class Batches(_Repo):
    """Submitted batches and the quarantine items of their rejected rows."""

    def find(self, source: str, source_batch_id: str) -> Batch | None:
        return self._one(Batch, _FIND_BATCH, {"source": source, "key": source_batch_id})

    def get(self, batch_id: str) -> Batch:
        found = self._one(Batch, _GET_BATCH, {"id": batch_id})
        if found is None:
            raise NotFoundError(f"batch {batch_id!r} not found.", field="batch_id", value=batch_id)
        return found

    def add(self, batch: Batch, quarantine: QuarantineItem | None) -> None:
        """A batch and its quarantine item, in one transaction."""
        with self.tx() as c:
            c.execute(t.batches.insert(), batch.to_dict())
            if quarantine:
                c.execute(t.quarantine.insert(), quarantine.to_dict())

    def list(self, kind: str | None = None, accepted_only: bool = False) -> builtins.list[Batch]:
        q = select(t.batches).order_by(t.batches.c.t_max, t.batches.c.created_at)
        if kind:
            q = q.where(t.batches.c.kind == kind)
        if accepted_only:
            q = q.where(t.batches.c.rows_accepted > 0)
        return self._all(Batch, q)

    def quarantined(self, status: str | None = None, *, batch_id: str | None = None) -> builtins.list[QuarantineItem]:
        q = select(t.quarantine).order_by(t.quarantine.c.created_at)
        if status:
            q = q.where(t.quarantine.c.status == status)
        if batch_id:
            q = q.where(t.quarantine.c.batch_id == batch_id)
        return self._all(QuarantineItem, q)

    def quarantine_item(self, qid: str) -> QuarantineItem:
        found = self._one(QuarantineItem, select(t.quarantine).where(t.quarantine.c.id == qid))
        if found is None:
            raise NotFoundError(f"quarantine item {qid!r} not found.", field="quarantine_id", value=qid)
        return found

    def mark_reingested(self, qid: str, batch_id: str) -> None:
        with self.tx() as c:
            c.execute(update(t.quarantine).where(t.quarantine.c.id == qid)
                      .values(status="reingested", reingested_as=batch_id))


class Runs(_Repo):
    """Snapshots, the training runs on them and the gate's verdicts."""

    def add_snapshot(self, snap: SnapshotRecord) -> None:
        """A snapshot, once (taking the same snapshot again records nothing)."""
        with self.tx() as c:
            if not c.execute(_HAS_SNAPSHOT, {"id": snap.id}).first():
                c.execute(t.snapshots.insert(), snap.to_dict())

    def snapshot(self, sid: str) -> SnapshotRecord:
        found = self._one(SnapshotRecord, _GET_SNAPSHOT, {"id": sid})
        if found is None:
            raise NotFoundError(f"snapshot {sid!r} not found.", field="snapshot_id", value=sid)
        return found

    def find(self, run_key: str) -> RunRecord | None:
        return self._one(RunRecord, _FIND_RUN, {"key": run_key})

    def add(self, run: RunRecord) -> None:
        with self.tx() as c:
            c.execute(t.runs.insert(), run.to_dict())

    def list(self) -> builtins.list[RunRecord]:
        return self._all(RunRecord, select(t.runs).order_by(t.runs.c.created_at))

    def add_verdict(self, verdict: VerdictRecord) -> None:
        with self.tx() as c:
            c.execute(t.verdicts.insert(), verdict.to_dict())

    def verdicts(self) -> builtins.list[VerdictRecord]:
        return self._all(VerdictRecord, select(t.verdicts).order_by(t.verdicts.c.created_at))


class Versions(_Repo):
    """Registered model versions and the aliases (``champion``) that point at them."""

    def add(self, *, run_id: str, verdict_id: str | None, artifact_sha256: str, artifact_path: str,
            artifact_hmac: str | None, lineage: dict[str, Any], created_at: float) -> ModelVersion:
        """Insert a version with the next number. Two writers sharing one database could both read the same
        last number: on PostgreSQL they take turns on a table lock; elsewhere the loser's insert breaks the key
        and it reads again."""
        row = dict(run_id=run_id, verdict_id=verdict_id, artifact_sha256=artifact_sha256,
                   artifact_path=artifact_path, artifact_hmac=artifact_hmac, lineage=lineage, created_at=created_at)
        for attempt in itertools.count():
            try:
                with self.tx() as c:
                    if c.dialect.name == "postgresql":  # writers take turns (readers are not held up)
                        c.execute(_LOCK_VERSIONS)
                    nxt = int((c.execute(select(func.max(t.versions.c.version))).scalar() or 0) + 1)
                    c.execute(t.versions.insert(), dict(version=nxt, **row))
                return ModelVersion.from_row({"version": nxt, **row})
            except IntegrityError:
                if attempt >= _RACE_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def get(self, version: int) -> ModelVersion:
        found = self._one(ModelVersion, _GET_VERSION, {"version": version})
        if found is None:
            raise NotFoundError(f"model version {version} not found.", field="version", value=version)
        return found

    def list(self) -> builtins.list[ModelVersion]:
        return self._all(ModelVersion, select(t.versions).order_by(t.versions.c.version))

    def alias(self, name: str) -> tuple[int | None, int]:
        """(version, revision) of an alias; (None, 0) when it was never set."""
        with self.tx() as c:
            row = c.execute(_GET_ALIAS, {"name": name}).first()
        return (row[0], row[1]) if row else (None, 0)

    def aliases(self) -> dict[str, int | None]:
        with self.tx() as c:
            return {r[0]: r[1] for r in c.execute(select(t.aliases.c.name, t.aliases.c.version))}

    def move_alias(self, name: str, new_version: int | None, *, expected_revision: int, actor: str,
                   reason: str, at: float) -> AliasMove:
        """Compare-and-set: move ``name`` only if its revision is still ``expected_revision``."""
        with self.tx() as c:
            row = c.execute(_GET_ALIAS, {"name": name}).first()
            old, rev = (row[0], row[1]) if row else (None, 0)
            if rev != expected_revision:
                raise ConflictError(f"alias {name!r} moved concurrently (revision {rev}, expected "
                                    f"{expected_revision}); re-read it and try again.",
                                    field="alias", rule="compare-and-set", value=name)
            if row:
                res = c.execute(update(t.aliases)
                                .where(t.aliases.c.name == name, t.aliases.c.revision == expected_revision)
                                .values(version=new_version, revision=rev + 1, updated_at=at))
                if res.rowcount != 1:
                    raise ConflictError(f"alias {name!r} moved concurrently.", field="alias",
                                        rule="compare-and-set", value=name)
            else:
                # the other writer may have created it first: its row stays and this insert does nothing. (Not
                # a savepoint: on SQLite through pysqlite, releasing one opened outside BEGIN commits the
                # alias apart from its history row, so another writer's move could be logged before it.)
                res = c.execute(_insert_ignoring_conflict(c.dialect.name, t.aliases).returning(t.aliases.c.name),
                                dict(name=name, version=new_version, revision=1, updated_at=at))
                if res.first() is None:
                    raise ConflictError(f"alias {name!r} moved concurrently (created by another writer).",
                                        field="alias", rule="compare-and-set", value=name)
            move = AliasMove(name, old, new_version, actor, reason, at)
            c.execute(t.alias_history.insert(), move.to_dict())
        return move

    def alias_history(self, name: str | None = None) -> builtins.list[AliasMove]:
        q = select(t.alias_history).order_by(t.alias_history.c.id)
        if name:
            q = q.where(t.alias_history.c.name == name)
        return self._all(AliasMove, q)


class _Log(_Repo, Generic[E]):
    """An append-only log table (decisions, events): rows in the order written, of one kind or all."""

    table: Table
    entity: type[E]

    def list(self, kind: str | None = None, limit: int | None = None) -> builtins.list[E]:
        """The rows in the order written, of one kind or all; with ``limit``, the newest that many (read newest
        first by the database, so a long log is not read whole to show its end)."""
        q = select(self.table)
        if kind:
            q = q.where(self.table.c.kind == kind)
        if not limit:
            return self._all(self.entity, q.order_by(self.table.c.id))
        return self._all(self.entity, q.order_by(self.table.c.id.desc()).limit(limit))[::-1]


class Decisions(_Log[DecisionRecord]):
    """Every tick's decision, with what the policy remembers after it (so a loop opened later goes on)."""

    table, entity = t.decisions, DecisionRecord

    def add(self, at: float, kind: str, run_key: str | None, reasons: builtins.list[str],
            state: dict[str, Any] | None = None, *, triggers: builtins.list[str] | None = None,
            guard: str | None = None) -> None:
        with self.tx() as c:
            c.execute(t.decisions.insert(), dict(at=at, kind=kind, run_key=run_key, reasons=reasons, state=state,
                                                 triggers=triggers or [], guard=guard))

    def last(self) -> DecisionRecord | None:
        return self._one(DecisionRecord, select(t.decisions).order_by(t.decisions.c.id.desc()).limit(1))


class Events(_Log[Event]):
    """The event log: every state change, with actor, reason and time."""

    table, entity = t.events, Event

    def add(self, at: float, kind: str, actor: str, reason: str, payload: dict[str, Any]) -> None:
        json.dumps(payload)  # fail here, not in the driver, on a payload that cannot be stored
        with self.tx() as c:
            c.execute(t.events.insert(), dict(at=at, kind=kind, actor=actor, reason=reason, payload=payload))


class Rollouts(_Repo):
    def save(self, rollout: RolloutRecord) -> None:
        row = rollout.to_dict()
        with self.tx() as c:
            exists = c.execute(select(t.rollouts.c.id).where(t.rollouts.c.id == rollout.id)).first()
            if exists:
                c.execute(update(t.rollouts).where(t.rollouts.c.id == rollout.id).values(**row))
            else:
                c.execute(t.rollouts.insert(), row)

    def list(self) -> builtins.list[RolloutRecord]:
        return self._all(RolloutRecord, select(t.rollouts).order_by(t.rollouts.c.started_at))
