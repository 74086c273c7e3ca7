"""What the loop makes of a batch its data store took: events and the monitor's windows.

The data store validates and stores (:mod:`freshloop.data.store`); this stage is where the loop first sees
the rows. A replay that stores a batch once for several loops hands the same result to each loop's intake.
"""

from __future__ import annotations

from ..data.store import IngestResult
from .context import Context

__all__ = ["Intake"]


class Intake:
    """Records a stored batch in the event log and feeds its accepted rows to the monitor."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def observe(self, res: IngestResult) -> None:
        if res.replayed:  # a batch sent again: its rows were observed the first time
            return
        events, payload = self.ctx.events, res.to_dict()
        if res.accepted:
            events.record("batch_accepted", f"{res.accepted}/{res.submitted} rows accepted", payload)
        if res.quarantined:
            events.record("batch_quarantined", f"{res.quarantined}/{res.submitted} rows quarantined: "
                          + "; ".join(res.reasons[:3]), payload)
        if res.warnings:
            events.record("batch_warning", "; ".join(res.warnings[:3]), payload)
        acc, schema = res.accepted_frame, self.ctx.schema
        if acc is None or not len(acc) or schema is None:
            return
        with self.ctx.lock:
            mon = self.ctx.monitor()
            mon.observe_rows(acc)
            if schema.label in acc:
                mon.new_labels += int(acc[schema.label].notna().sum())
