"""Storage behind interfaces: SQL metadata (SQLAlchemy + Alembic) and blob files.

:func:`open_stores` picks the backends from the spec's URLs; the rest of freshloop never touches
tables directly.
"""

from __future__ import annotations

from pathlib import Path

from .blobs import BlobStore, LocalBlobStore
from .sql import AliasMove, MetadataStore, migrate

__all__ = ["AliasMove", "BlobStore", "LocalBlobStore", "MetadataStore", "migrate", "open_stores"]


def open_stores(root: str | Path, url: str | None = None, *, durable: bool = True
                ) -> tuple[MetadataStore, LocalBlobStore]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = MetadataStore(url or f"sqlite:///{root / 'freshloop.db'}", durable=durable)
    return meta, LocalBlobStore(root, durable=durable)
