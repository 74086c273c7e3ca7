"""Quarantine: rows that failed validation, kept in Parquet with the reason for each, never dropped.

An item is held until it is submitted again (after the schema or spec was fixed); the data store re-ingests
its rows as a new batch, and what still fails is quarantined again under that batch.
"""

from __future__ import annotations

import pandas as pd

from ..errors import ConflictError
from ..store import BlobStore, MetadataStore, QuarantineItem
from .parquet import put_parquet, read_parquet

__all__ = ["Quarantine"]


class Quarantine:
    """A loop's quarantined rows: written with their batch, listed, read and released once."""

    def __init__(self, meta: MetadataStore, blobs: BlobStore) -> None:
        self.meta, self.blobs = meta, blobs

    def hold(self, batch_id: str, rejected: pd.DataFrame, reasons: list[str], now: float) -> QuarantineItem:
        """Write a batch's rejected rows (each with ``_reason``); the item's metadata row, stored with the batch."""
        qid = "q-" + batch_id[2:]
        path = f"quarantine/{qid}.parquet"
        put_parquet(self.blobs, path, rejected)
        return QuarantineItem(id=qid, batch_id=batch_id, rows=len(rejected), reasons=reasons, path=path,
                              status="held", reingested_as=None, created_at=now)

    def items(self, status: str | None = "held") -> list[QuarantineItem]:
        return self.meta.batches.quarantined(status)

    def read(self, qid: str) -> pd.DataFrame:
        return read_parquet(self.blobs.get_bytes(self.meta.batches.quarantine_item(qid).path))

    def release(self, qid: str) -> tuple[str, pd.DataFrame]:
        """A held item's rows as they were submitted (rows that never became a row of the batch, kept as text,
        stay), and the kind of batch they came in; an item is released once."""
        item = self.meta.batches.quarantine_item(qid)
        if item.status != "held":
            raise ConflictError(f"quarantine item {qid!r} was already re-ingested as {item.reingested_as!r}.",
                                field="quarantine_id", rule="once", value=qid)
        frame = self.read(qid)
        if "_text" in frame:
            frame = frame[frame["_text"].isna()]
        frame = frame.drop(columns=[c for c in ("_row", "_reason", "_text") if c in frame]).reset_index(drop=True)
        return self.meta.batches.get(item.batch_id).kind, frame

    def released(self, qid: str, batch_id: str) -> None:
        """Record the batch a released item was ingested as."""
        self.meta.batches.mark_reingested(qid, batch_id)
