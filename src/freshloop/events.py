"""The event log: every state change, with actor, reason and time.

Examples
--------
>>> import tempfile
>>> from freshloop.clock import SimulatedClock
>>> from freshloop.store import open_stores
>>> meta, _ = open_stores(tempfile.mkdtemp(), durable=False)
>>> log = EventLog(meta, SimulatedClock(5.0))
>>> log.record("alias_moved", "gate passed", {"alias": "champion", "version": 1}, actor="loop")
>>> [(e.kind, e.reason, e.at) for e in log.list()]
[('alias_moved', 'gate passed', 5.0)]
"""

from __future__ import annotations

from typing import Any

from .clock import Clock
from .store import Event, MetadataStore

__all__ = ["EventLog"]


class EventLog:
    def __init__(self, meta: MetadataStore, clock: Clock) -> None:
        self.meta = meta
        self.clock = clock

    def record(self, kind: str, reason: str, payload: dict[str, Any] | None = None, *, actor: str = "loop") -> None:
        self.meta.events.add(self.clock.now(), kind, actor, reason, payload or {})

    def list(self, kind: str | None = None, limit: int | None = None) -> list[Event]:
        return self.meta.events.list(kind, limit)
