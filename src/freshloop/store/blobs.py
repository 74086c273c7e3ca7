"""Blob storage for Parquet batches, raw submissions and model artifacts.

Writes are temp file + fsync + rename, so a crash never leaves a half-visible file. Keys are
relative paths and must stay inside the root; object storage (fsspec URLs) is the next backend
behind the same :class:`BlobStore` protocol.

Examples
--------
>>> import tempfile
>>> blobs = LocalBlobStore(tempfile.mkdtemp())
>>> blobs.put_bytes("a/b.txt", b"hi")
>>> blobs.get_bytes("a/b.txt")
b'hi'
>>> blobs.get_bytes("../etc/passwd")
Traceback (most recent call last):
...
freshloop.errors.IntegrityError: blob key '../etc/passwd' escapes the store root.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import IntegrityError, NotFoundError

__all__ = ["BlobStore", "LocalBlobStore"]


class BlobStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]: ...  # the blob appears on exit
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def local_path(self, key: str) -> Path: ...


class LocalBlobStore:
    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.durable = durable

    def local_path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if not p.is_relative_to(self.root):
            raise IntegrityError(f"blob key {key!r} escapes the store root.", field="key", value=key)
        return p

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.open_write(key) as f:
            f.write(data)

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """A file to write blob ``key`` into, streamed: it appears whole when the block ends, or not at all
        if the block raises. Writers such as Parquet's stream into it without building the bytes in memory
        first (1M x 20 floats: half the time of a buffer, then a write)."""
        dest = self.local_path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                if self.durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        p = self.local_path(key)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {key!r} not found.", field="key", value=key) from None

    def exists(self, key: str) -> bool:
        return self.local_path(key).exists()

    def sweep(self) -> int:
        """Remove the temporary files writes that a crash cut short left behind (their blobs never appeared);
        returns how many. Only for the store's one writer, at start-up: another process's write in progress
        would lose its file."""
        swept = 0
        for tmp in self.root.rglob(".tmp-*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                swept += 1
        return swept

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"
