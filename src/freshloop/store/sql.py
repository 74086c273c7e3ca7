"""The metadata store: one class per database URL family, frozen dataclasses out.

SQLite (WAL) is the embedded default; PostgreSQL works through the same SQLAlchemy Core
statements. The schema is created and upgraded by Alembic on open.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, bindparam, create_engine, event, func, select, text, update
from sqlalchemy.exc import IntegrityError

from ..errors import ConflictError, NotFoundError
from . import tables as t

__all__ = ["AliasMove", "MetadataStore", "migrate"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_RACE_RETRIES = 20  # a writer that loses a race for the next number reads again, this many times at most


@dataclass(frozen=True)
class AliasMove:
    name: str
    old_version: int | None
    new_version: int | None
    actor: str
    reason: str
    at: float


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


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema revision (idempotent)."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class MetadataStore:
    """Batches, quarantine, snapshots, runs, verdicts, versions, aliases, decisions, events, rollouts.

    ``durable=False`` trades crash safety for speed (SQLite ``synchronous=OFF``); replay uses it for
    its throw-away stores, ``serve`` never does.
    """

    def __init__(self, url: str, *, durable: bool = True) -> None:
        self.url = url
        self.durable = durable
        self.engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sync = "FULL" if durable else "OFF"

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={sync}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=10000")
                cur.close()

        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- schema -------------------------------------------------------------------------------
    def get_schema(self, name: str) -> dict[str, Any] | None:
        with self.tx() as c:
            row = c.execute(select(t.schemas.c.body).where(t.schemas.c.name == name)).first()
        return dict(row[0]) if row else None

    def lock_schema(self, name: str, body: dict[str, Any], at: float) -> dict[str, Any]:
        """Store the schema unless one is already locked; returns the locked one."""
        with self.tx() as c:
            row = c.execute(select(t.schemas.c.body).where(t.schemas.c.name == name)).first()
            if row:
                return dict(row[0])
            c.execute(t.schemas.insert(), dict(name=name, body=body, locked_at=at))
        return body

    # -- batches ------------------------------------------------------------------------------
    def find_batch(self, source: str, source_batch_id: str) -> dict[str, Any] | None:
        with self.tx() as c:
            row = c.execute(_FIND_BATCH, {"source": source, "key": source_batch_id}).first()
        return dict(row._mapping) if row else None

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self.tx() as c:
            row = c.execute(_GET_BATCH, {"id": batch_id}).first()
        if not row:
            raise NotFoundError(f"batch {batch_id!r} not found.", field="batch_id", value=batch_id)
        return dict(row._mapping)

    def add_batch(self, row: dict[str, Any], quarantine: dict[str, Any] | None) -> None:
        with self.tx() as c:
            c.execute(t.batches.insert(), row)
            if quarantine:
                c.execute(t.quarantine.insert(), quarantine)

    def list_batches(self, kind: str | None = None, accepted_only: bool = False) -> list[dict[str, Any]]:
        q = select(t.batches).order_by(t.batches.c.t_max, t.batches.c.created_at)
        if kind:
            q = q.where(t.batches.c.kind == kind)
        if accepted_only:
            q = q.where(t.batches.c.rows_accepted > 0)
        with self.tx() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def list_quarantine(self, status: str | None = None) -> list[dict[str, Any]]:
        q = select(t.quarantine).order_by(t.quarantine.c.created_at)
        if status:
            q = q.where(t.quarantine.c.status == status)
        with self.tx() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def get_quarantine(self, qid: str) -> dict[str, Any]:
        with self.tx() as c:
            row = c.execute(select(t.quarantine).where(t.quarantine.c.id == qid)).first()
        if not row:
            raise NotFoundError(f"quarantine item {qid!r} not found.", field="quarantine_id", value=qid)
        return dict(row._mapping)

    def mark_reingested(self, qid: str, batch_id: str) -> None:
        with self.tx() as c:
            c.execute(update(t.quarantine).where(t.quarantine.c.id == qid)
                      .values(status="reingested", reingested_as=batch_id))

    # -- snapshots, runs, verdicts, versions --------------------------------------------------
    def add_snapshot(self, sid: str, body: dict[str, Any], rows: int, cutoff: float, at: float) -> None:
        with self.tx() as c:
            if not c.execute(_HAS_SNAPSHOT, {"id": sid}).first():
                c.execute(t.snapshots.insert(), dict(id=sid, body=body, rows=rows, cutoff=cutoff, created_at=at))

    def get_snapshot(self, sid: str) -> dict[str, Any]:
        with self.tx() as c:
            row = c.execute(_GET_SNAPSHOT, {"id": sid}).first()
        if not row:
            raise NotFoundError(f"snapshot {sid!r} not found.", field="snapshot_id", value=sid)
        return dict(row._mapping)

    def find_run(self, run_key: str) -> dict[str, Any] | None:
        with self.tx() as c:
            row = c.execute(_FIND_RUN, {"key": run_key}).first()
        return dict(row._mapping) if row else None

    def add_run(self, row: dict[str, Any]) -> None:
        with self.tx() as c:
            c.execute(t.runs.insert(), row)

    def list_runs(self) -> list[dict[str, Any]]:
        with self.tx() as c:
            return [dict(r._mapping) for r in c.execute(select(t.runs).order_by(t.runs.c.created_at))]

    def add_verdict(self, vid: str, run_id: str, passed: bool, body: dict[str, Any], at: float) -> None:
        with self.tx() as c:
            c.execute(t.verdicts.insert(), dict(id=vid, run_id=run_id, passed=passed, body=body, created_at=at))

    def list_verdicts(self) -> list[dict[str, Any]]:
        with self.tx() as c:
            return [dict(r._mapping) for r in c.execute(select(t.verdicts).order_by(t.verdicts.c.created_at))]

    def add_version(self, row: dict[str, Any]) -> int:
        """Insert a version with the next number. Two writers sharing one database could both read the same
        last number: on PostgreSQL they take turns on a table lock; elsewhere the loser's insert breaks the key
        and it reads again."""
        for attempt in itertools.count():
            try:
                with self.tx() as c:
                    if c.dialect.name == "postgresql":  # writers take turns (readers are not held up)
                        c.execute(_LOCK_VERSIONS)
                    nxt = (c.execute(select(func.max(t.versions.c.version))).scalar() or 0) + 1
                    c.execute(t.versions.insert(), dict(version=nxt, **row))
                return int(nxt)
            except IntegrityError:
                if attempt >= _RACE_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def get_version(self, version: int) -> dict[str, Any]:
        with self.tx() as c:
            row = c.execute(_GET_VERSION, {"version": version}).first()
        if not row:
            raise NotFoundError(f"model version {version} not found.", field="version", value=version)
        return dict(row._mapping)

    def list_versions(self) -> list[dict[str, Any]]:
        with self.tx() as c:
            return [dict(r._mapping) for r in c.execute(select(t.versions).order_by(t.versions.c.version))]

    # -- aliases ------------------------------------------------------------------------------
    def get_alias(self, name: str) -> tuple[int | None, int]:
        """(version, revision) of an alias; (None, 0) when it was never set."""
        with self.tx() as c:
            row = c.execute(_GET_ALIAS, {"name": name}).first()
        return (row[0], row[1]) if row else (None, 0)

    def all_aliases(self) -> dict[str, int | None]:
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
            c.execute(t.alias_history.insert(), dict(name=name, old_version=old, new_version=new_version,
                                                     actor=actor, reason=reason, at=at))
        return AliasMove(name, old, new_version, actor, reason, at)

    def alias_history(self, name: str | None = None) -> list[AliasMove]:
        q = select(t.alias_history).order_by(t.alias_history.c.id)
        if name:
            q = q.where(t.alias_history.c.name == name)
        with self.tx() as c:
            return [AliasMove(r.name, r.old_version, r.new_version, r.actor, r.reason, r.at) for r in c.execute(q)]

    # -- decisions, events, rollouts ----------------------------------------------------------
    def add_decision(self, at: float, kind: str, run_key: str | None, reasons: list[str],
                     state: dict[str, Any] | None = None, *, triggers: list[str] | None = None,
                     guard: str | None = None) -> None:
        with self.tx() as c:
            c.execute(t.decisions.insert(), dict(at=at, kind=kind, run_key=run_key, reasons=reasons, state=state,
                                                 triggers=triggers or [], guard=guard))

    def last_decision(self) -> dict[str, Any] | None:
        with self.tx() as c:
            r = c.execute(select(t.decisions).order_by(t.decisions.c.id.desc()).limit(1)).first()
        return dict(r._mapping) if r is not None else None

    def list_decisions(self, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self._log(t.decisions, kind, limit)

    def _log(self, table: Any, kind: str | None, limit: int | None) -> list[dict[str, Any]]:
        """The rows of a log table (decisions, events) in the order written, of one kind or all."""
        q = select(table).order_by(table.c.id)
        if kind:
            q = q.where(table.c.kind == kind)
        if limit:
            q = q.limit(limit)
        with self.tx() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def add_event(self, at: float, kind: str, actor: str, reason: str, payload: dict[str, Any]) -> None:
        json.dumps(payload)  # fail here, not in the driver, on a payload that cannot be stored
        with self.tx() as c:
            c.execute(t.events.insert(), dict(at=at, kind=kind, actor=actor, reason=reason, payload=payload))

    def list_events(self, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self._log(t.events, kind, limit)

    def save_rollout(self, row: dict[str, Any]) -> None:
        with self.tx() as c:
            exists = c.execute(select(t.rollouts.c.id).where(t.rollouts.c.id == row["id"])).first()
            if exists:
                c.execute(update(t.rollouts).where(t.rollouts.c.id == row["id"]).values(**row))
            else:
                c.execute(t.rollouts.insert(), row)

    def list_rollouts(self) -> list[dict[str, Any]]:
        with self.tx() as c:
            return [dict(r._mapping) for r in c.execute(select(t.rollouts).order_by(t.rollouts.c.started_at))]
