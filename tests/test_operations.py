"""The layer the CLI and the HTTP service share: every action on a loop, whoever asks."""

from __future__ import annotations

from freshloop.operations import Operations
from freshloop.spec import QualitySpec

from .conftest import make_frame


def test_rows_released_from_quarantine_reach_the_loop_as_any_batch_does(make_loop) -> None:
    """Re-ingested rows are logged as a batch and counted by the monitor like rows that came in clean; a label
    that fails again is logged as quarantined again."""
    loop, _, _ = make_loop(data={"label": "y", "time": "t", "quality": {"unseen_categories": "quarantine"}})
    ops = Operations(loop)
    loop.ingest(make_frame(40), source="s", batch_id="1")
    held = loop.ingest(make_frame(3, t0=40).assign(c="d"), source="s", batch_id="2")
    assert held.quarantined == 3 and held.quarantine_id is not None
    loop.data.spec = loop.data.spec.model_copy(update={"quality": QualitySpec(unseen_categories="accept")})
    accepted, labels = len(loop.events.list("batch_accepted")), loop.ctx.monitor().new_labels
    again = ops.reingest(held.quarantine_id)
    assert again.accepted == 3 and [q.id for q in ops.quarantined("held")] == []
    assert len(loop.events.list("batch_accepted")) == accepted + 1
    assert loop.ctx.monitor().new_labels == labels + 3
    bad = loop.feedback(["1-row"], ["maybe"], batch_id="l1")  # not a class: quarantined
    assert bad.ingest.quarantined == 1 and bad.ingest.quarantine_id is not None
    before = len(loop.events.list("labels_quarantined"))
    assert ops.reingest(bad.ingest.quarantine_id).quarantined == 1
    assert len(loop.events.list("labels_quarantined")) == before + 1
    ops.close()
