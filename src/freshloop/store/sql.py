"""The metadata store: one database URL, one repository per aggregate, frozen entities out.

SQLite (WAL) is the embedded default; PostgreSQL works through the same SQLAlchemy Core
statements. The schema is created and upgraded by Alembic on open.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event

from .repos import Batches, Decisions, Events, Rollouts, Runs, Schemas, Versions

__all__ = ["MetadataStore", "migrate"]

_MIGRATIONS = Path(__file__).parent / "migrations"


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
    """One database, one repository per aggregate (:mod:`.repos`), each taking and returning frozen entities
    (:mod:`.entities`): ``schemas``, ``batches`` (and their quarantine), ``runs`` (snapshots, runs,
    verdicts), ``versions`` (and aliases), ``decisions``, ``events`` and ``rollouts``.

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
        self.schemas = Schemas(self.tx)
        self.batches = Batches(self.tx)
        self.runs = Runs(self.tx)
        self.versions = Versions(self.tx)
        self.decisions = Decisions(self.tx)
        self.events = Events(self.tx)
        self.rollouts = Rollouts(self.tx)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn
