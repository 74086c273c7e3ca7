"""The server's write-ahead journal: every answered prediction is on disk before its answer is sent.

A predict request is answered at once, but its rows reach the data store and its predictions the
prediction log's Parquet parts only when the worker drains, up to a second later. The journal closes
that gap: each model call appends one line (the rows, their ids and what was served) and syncs it to
disk before any of its callers is answered. Concurrent requests are scored together (the app's
batcher), so they share one sync: a group commit. The worker *seals* the segment being written when it
takes the queue, and removes it once that queue's rows are ingested and its predictions written; a
server that starts again finds the segments a crash left and replays them (see
:meth:`freshloop.api.service.LoopService.recover`). A line a crash cut short was never acknowledged
(its sync had not returned) and is skipped.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Entry", "Journal"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One model call's rows and answers, as journaled."""

    at: float
    ids: list[str]
    rows: list[dict[str, Any]]
    versions: list[int]
    predictions: list[Any]
    proba: list[list[float]] | None


class Journal:
    def __init__(self, folder: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        found = self.segments()
        self._next = int(found[-1].stem.removeprefix("wal-")) + 1 if found else 0

    def segments(self) -> list[Path]:
        """The segments on disk, oldest first (those a crash left, at start-up)."""
        return sorted(self.folder.glob("wal-*.jsonl"))

    def append(self, entry: Entry) -> None:
        """Write one entry and sync it: when this returns, the entry survives a crash."""
        line = json.dumps({"at": entry.at, "ids": entry.ids, "rows": entry.rows, "versions": entry.versions,
                           "predictions": entry.predictions, "proba": entry.proba},
                          separators=(",", ":"), allow_nan=True).encode() + b"\n"
        with self._lock:
            if self._fd is None:
                self._path = self.folder / f"wal-{self._next:012d}.jsonl"
                self._next += 1
                self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            if self.durable:
                os.fdatasync(self._fd)

    def seal(self) -> Path | None:
        """Close the segment being written and return it (None if nothing was written since the last seal);
        the next entry starts a new one."""
        with self._lock:
            fd, path, self._fd, self._path = self._fd, self._path, None, None
        if fd is not None:
            os.close(fd)
        return path

    @staticmethod
    def read(path: Path) -> list[Entry]:
        """A segment's entries; a last line a crash cut short (never acknowledged) is skipped."""
        entries = []
        for line in path.read_bytes().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            entries.append(Entry(float(e["at"]), e["ids"], e["rows"], e["versions"], e["predictions"], e["proba"]))
        return entries

    def close(self) -> None:
        self.seal()
