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
from .entities import (
    AliasMove,
    Batch,
    DecisionRecord,
    Event,
    ModelVersion,
    QuarantineItem,
    RolloutRecord,
    RunRecord,
    SnapshotRecord,
    VerdictRecord,
)
from .sql import MetadataStore, migrate

__all__ = ["AliasMove", "Batch", "BlobStore", "DecisionRecord", "Event", "LocalBlobStore", "MetadataStore",
           "ModelVersion", "QuarantineItem", "RolloutRecord", "RunRecord", "SnapshotRecord", "VerdictRecord",
           "migrate", "open_stores", "store_claim"]


def writable(root: str | Path) -> Path:
    """The store's folder, made if missing; a clear error, not a traceback, when this user cannot write it."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(root)
    except OSError as e:
        from ..errors import SpecError

        raise SpecError(f"store.root: {str(root)!r} cannot be written by this user ({type(e).__name__}; rule: the "
                        "store's folder must be writable).", field="store.root", rule="writable",
                        value=str(root)) from None
    return root


def open_stores(root: str | Path, url: str | None = None, *, durable: bool = True
                ) -> tuple[MetadataStore, LocalBlobStore]:
    root = writable(root)
    meta = MetadataStore(url or f"sqlite:///{root / 'freshloop.db'}", durable=durable)
    return meta, LocalBlobStore(root, durable=durable)


# who holds an advisory lock taken with one bigint key (split in two 32-bit halves in pg_locks)
_LOCK_HOLDER = ("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1")


@contextmanager
def store_claim(name: str, root: str | Path, url: str | None = None, *, holder: str) -> Iterator[None]:
    """Hold the right to write loop ``name``'s store while the block runs: one writer at a time.

    A server keeps its batches' in-memory view and its champion to itself: a CLI command writing behind it
    would go unseen (a promotion it recorded not served, rows it ingested never trained on), and a second
    server would train and promote on half the data. So ``freshloop serve`` and every CLI command that writes
    take this claim, and a second writer is refused with a message naming the one that holds it (``holder``,
    written into the lock file), whether it shares the folder (a lock on ``<root>/serve.lock``) or only the
    PostgreSQL database (an advisory lock on the loop's name, held by this process's session). Both locks end
    with the process, however it ends."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from ..errors import ConflictError

    def refused(who: str, where: str) -> ConflictError:
        advice = ("while it runs, act through it (`freshloop remote ...`) or stop it first"
                  if who.startswith("`freshloop serve`") else "try again when it has finished")
        return ConflictError(f"{who} is writing loop {name!r}'s store {where} (rule: one writer per store); "
                             f"{advice}.", field="store", rule="one writer", value=where)

    root = writable(root)
    lock = root / "serve.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = lock.read_text(errors="replace").strip() or "another freshloop process"
            raise refused(who, str(root)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()})".encode(), 0)
        if url and url.startswith("postgresql"):
            # the lock lives with this one session, which carries the holder's name for whoever is refused
            engine = create_engine(url, poolclass=NullPool, connect_args={"application_name": holder[:63]})
            key = int.from_bytes(hashlib.sha256(f"freshloop serve {name}".encode()).digest()[:8], "big") >> 1
            try:
                with engine.connect() as conn:
                    if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
                        found = conn.execute(text(_LOCK_HOLDER), {"hi": key >> 32, "lo": key & 0xFFFFFFFF}).scalar()
                        raise refused(str(found or "another freshloop process"),
                                      engine.url.render_as_string(hide_password=True))
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
