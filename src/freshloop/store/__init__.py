"""Storage behind interfaces: SQL metadata (SQLAlchemy + Alembic) and blob files.

:func:`open_stores` picks the backends from the spec's URLs; the rest of freshloop never touches
tables directly.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .blobs import BlobStore, LocalBlobStore
from .sql import AliasMove, MetadataStore, migrate

__all__ = ["AliasMove", "BlobStore", "LocalBlobStore", "MetadataStore", "migrate", "open_stores", "serving_claim"]


def open_stores(root: str | Path, url: str | None = None, *, durable: bool = True
                ) -> tuple[MetadataStore, LocalBlobStore]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = MetadataStore(url or f"sqlite:///{root / 'freshloop.db'}", durable=durable)
    return meta, LocalBlobStore(root, durable=durable)


@contextmanager
def serving_claim(name: str, root: str | Path, url: str | None = None) -> Iterator[None]:
    """Hold the right to serve loop ``name`` from this store while the block runs.

    A server keeps its batches' in-memory view to itself: a second server on the same store would not see
    the first one's rows, and each would train and promote on half the data. So a second ``freshloop serve``
    is refused, whether it shares the folder (a lock on ``<root>/serve.lock``) or only the PostgreSQL
    database (an advisory lock on the loop's name, held by this process's session). Both locks end with
    the process, however it ends."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from ..errors import ConflictError

    def refused(where: str) -> ConflictError:
        return ConflictError(f"another `freshloop serve` is serving loop {name!r} from {where} (rule: one server "
                             f"per store; stop it first).", field="store", rule="one server", value=where)

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "serve.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refused(str(root)) from None
        if url and url.startswith("postgresql"):
            engine = create_engine(url, poolclass=NullPool)  # the lock lives with this one session
            key = int.from_bytes(hashlib.sha256(f"freshloop serve {name}".encode()).digest()[:8], "big", signed=True)
            try:
                with engine.connect() as conn:
                    if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
                        raise refused(engine.url.render_as_string(hide_password=True))
                    try:
                        yield
                    finally:
                        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            finally:
                engine.dispose()
        else:
            yield
    finally:
        os.close(fd)  # closing the file releases its lock
