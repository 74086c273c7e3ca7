"""The data stage: ingest, validate, quarantine, version.

Accepted rows go to immutable Parquet batches, rejected rows to quarantine Parquet files with their
reasons (:mod:`.quarantine`), and the raw submission bytes are kept too. Ingest is idempotent by (source,
batch id) and content hash. An in-memory view of accepted rows and matured labels (:mod:`.view`) makes
snapshots (:mod:`.snapshot`) cheap; it is rebuilt from the Parquet files when a store is reopened.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConflictError, DataError
from ..spec import DataSpec, WindowSpec
from ..store import Batch, BlobStore, MetadataStore, QuarantineItem
from .files import MalformedRow, read_submission
from .parquet import batch_path, put_parquet, read_parquet
from .quarantine import Quarantine
from .schema import Schema, _plain, infer_schema
from .snapshot import Snapshot, Snapshots
from .validate import coerce_label, validate_frame
from .view import VIEW_BYTES, View

__all__ = ["DataStore", "IngestResult"]

_EXAMPLES = 5  # relabeled rows a result names


@dataclass
class IngestResult:
    batch_id: str
    kind: str
    source: str
    source_batch_id: str
    status: str  # accepted | partial | quarantined
    submitted: int
    accepted: int
    quarantined: int
    reasons: list[str]
    quarantine_id: str | None = None
    replayed: bool = False  # True when this key was seen before and the first answer is returned
    unknown_row_ids: int = 0
    relabeled: int = 0  # accepted labels for rows that had one: the newest counts, the earlier stay stored
    relabel_examples: list[dict[str, Any]] = field(default_factory=list)  # the first few: id, before, after
    warnings: list[str] = field(default_factory=list)
    accepted_frame: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "accepted_frame"}


def _hash_frame(frame: pd.DataFrame, extra: list[Any] | None = None) -> str:
    h = hashlib.sha256()
    h.update(repr(list(frame.columns)).encode())
    try:
        hashed = pd.util.hash_pandas_object(frame, index=False)
    except TypeError:  # unhashable cells (lists, dicts): hash their text
        hashed = pd.util.hash_pandas_object(frame.astype(str), index=False)
    h.update(hashed.to_numpy().tobytes())
    if extra is not None:
        h.update(repr(extra).encode())
    return h.hexdigest()


def _unknown_columns(frame: pd.DataFrame, schema: Schema, *, kept: bool) -> list[str]:
    """A warning naming the batch's columns the schema neither uses nor left out on purpose at lock (those the
    user was told of then), and whether they survive: in the submission's bytes, or not at all."""
    used = {f.name for f in schema.features} | {schema.label, schema.time, schema.entity} | set(schema.excluded)
    extra = [str(c) for c in dict.fromkeys(frame.columns) if c not in used]
    if not extra:
        return []
    names = ", ".join(repr(c) for c in extra[:10]) + (" …" if len(extra) > 10 else "")
    fate = "not stored with the rows, kept in the batch's submission as it came" if kept else "not stored"
    return [f"column{'s' if len(extra) > 1 else ''} {names}: not in the schema, so {fate}"]


class DataStore:
    """Accepted batches, quarantine, matured labels and snapshots of one loop.

    It ingests; the rows it accepted are read through :attr:`view`, snapshots are taken by
    :attr:`snapshots` and rejected rows are kept by :attr:`quarantine`.
    """

    def __init__(self, name: str, spec: DataSpec, meta: MetadataStore, blobs: BlobStore, *,
                 view_bytes: int = VIEW_BYTES) -> None:
        self.name = name
        self.spec = spec
        self.meta = meta
        self.blobs = blobs
        locked = meta.schemas.get(name)
        self.schema: Schema | None = Schema.from_dict(locked) if locked else None
        self.view = View(blobs, view_bytes=view_bytes)
        self.snapshots = Snapshots(self.view, meta)
        self.quarantine = Quarantine(meta, blobs)
        for b in meta.batches.list():  # the view, rebuilt from the stored batches
            if b.path and b.rows_accepted:
                self._apply(b.kind, b.id, read_parquet(blobs.get_bytes(b.path)))

    # -- ingest -------------------------------------------------------------------------------
    def ingest(self, frame: pd.DataFrame, *, now: float, source: str = "api", batch_id: str | None = None,
               row_ids: list[str] | None = None, raw: bytes | None = None,
               malformed: list[MalformedRow] | None = None) -> IngestResult:
        """Validate and store a batch of feature rows (labels may be included inline)."""
        malformed = malformed or []
        if len(frame) == 0 and not malformed:
            raise DataError("batch: empty (rule: a batch holds at least one row).", field="rows", rule="non-empty")
        if row_ids is not None and len(row_ids) != len(frame):
            raise DataError(f"row_ids: {len(row_ids)} ids for {len(frame)} rows (rule: one id per row).",
                            field="row_ids", value=len(row_ids))
        content = hashlib.sha256(raw).hexdigest() if raw is not None else _hash_frame(frame, row_ids)
        key = batch_id or content
        prior = self._idempotent("features", source, key, content)
        if prior is not None:
            return prior
        if self.schema is None:
            if len(frame) == 0:
                raise DataError("batch: no readable rows to learn the schema from.", field="rows")
            self.schema = Schema.from_dict(self.meta.schemas.lock(self.name, infer_schema(frame, self.spec).to_dict(),
                                                                 now))
        bid = self._batch_id("features", source, key)
        res = validate_frame(frame, self.schema, self.spec.quality, now=now)
        rejected = res.rejected
        if malformed:
            extra = pd.DataFrame({"_row": [m.line if m.line is not None else -1 for m in malformed],
                                  "_text": [m.text for m in malformed], "_reason": [m.reason for m in malformed]})
            rejected = pd.concat([rejected, extra], ignore_index=True)
        acc = res.accepted
        if row_ids is not None:
            ids = [row_ids[i] for i in acc["_row"].tolist()]
            if len(ids) != len(set(ids)) or (self.view.positions(ids) >= 0).any():
                raise ConflictError("row_ids: every row id must be new (rule: a row is ingested once).",
                                    field="row_ids", rule="unique")
            acc = acc.drop(columns="_row")
            acc.insert(0, "_row_id", ids)
        # else the rows keep their submitted row number in ``_row``: their ids are "<batch id>:<_row>"
        acc.insert(1, "_arrived", float(now))
        result = self._commit("features", bid, source, key, content, len(frame) + len(malformed), acc, rejected,
                              res.batch_reasons, raw, now)
        result.warnings = res.warnings + _unknown_columns(frame, self.schema, kept=raw is not None)
        return result

    def ingest_file(self, path: str, *, now: float, source: str = "file", batch_id: str | None = None
                    ) -> IngestResult:
        sub = read_submission(path)
        return self.ingest(sub.frame, now=now, source=source, batch_id=batch_id, raw=sub.raw,
                           malformed=sub.malformed)

    def ingest_labels(self, row_ids: list[str], labels: list[Any], *, now: float, source: str = "feedback",
                      batch_id: str | None = None) -> IngestResult:
        """Store labels for earlier rows; they count as matured from ``now`` on."""
        if self.schema is None:
            raise DataError("labels: no schema is locked yet (rule: ingest feature rows before their labels).",
                            field="labels")
        if len(row_ids) != len(labels):
            raise DataError(f"labels: {len(labels)} labels for {len(row_ids)} row ids (rule: one label per id).",
                            field="labels")
        ids = np.array([str(r) for r in row_ids], dtype=object)
        frame = pd.DataFrame({"_row_id": ids, "label": labels})
        content = _hash_frame(frame)
        key = batch_id or content
        prior = self._idempotent("labels", source, key, content)
        if prior is not None:
            return prior
        bid = self._batch_id("labels", source, key)
        typed, bad_s, msgs = coerce_label(frame["label"], self.schema)
        bad = bad_s.to_numpy(dtype=bool)
        missing = typed.isna().to_numpy(dtype=bool) & ~bad
        ok = ~(bad | missing)
        acc = pd.DataFrame({"_row_id": ids[ok], "_label": typed.to_numpy(dtype=object)[ok],
                            "_label_time": np.full(int(ok.sum()), float(now))})
        rej = frame[~ok].reset_index(drop=True) if not ok.all() else frame.iloc[:0].copy()
        if len(rej):
            reasons = np.full(len(frame), "", dtype=object)
            reasons[bad] = msgs
            reasons[missing] = f"field {self.schema.label!r}: required (got a missing value)"
            rej["_row"] = np.flatnonzero(~ok)
            rej["_reason"] = reasons[~ok]
        # labels for rows that already have one: the newest wins, the earlier ones stay in their stored
        # batches (label_history), and the result says which changed
        rids = acc["_row_id"].to_numpy(dtype=object)
        known, had, before = self.view.labels_now(rids)
        result = self._commit("labels", bid, source, key, content, len(frame), acc, rej, [], None, now)
        result.unknown_row_ids = int((~known).sum())
        result.relabeled = int(had.sum())
        result.relabel_examples = [{"row_id": str(r), "before": _plain(b), "after": _plain(a)} for r, b, a in
                                   zip(rids[had][:_EXAMPLES], before, acc["_label"].to_numpy(dtype=object)[had],
                                       strict=False)]
        return result

    def label_history(self, row_id: str) -> list[dict[str, Any]]:
        """Every accepted label of ``row_id``, oldest first: its batch, source, value and when it came
        (a label in the row's own feature batch first). Reads the stored label batches."""
        out: list[dict[str, Any]] = []
        p = self.view.position(row_id)
        label = self.schema.label if self.schema else None
        if p is not None and label is not None:
            row = self.view.rows_at(np.array([p]))
            if label in row and row[label].notna().iloc[0]:
                out.append({"batch_id": self.view.batch_of(p), "source": "features",
                            "label": _plain(row[label].iloc[0]), "at": float(row["_arrived"].iloc[0])})
        for b in sorted(self.meta.batches.list("labels", accepted_only=True), key=lambda b: b.created_at):
            assert b.path is not None  # it has accepted rows
            frame = read_parquet(self.blobs.get_bytes(b.path))
            for lab, t in zip(frame.loc[frame["_row_id"] == row_id, "_label"],
                              frame.loc[frame["_row_id"] == row_id, "_label_time"], strict=True):
                out.append({"batch_id": b.id, "source": b.source, "label": _plain(lab), "at": float(t)})
        return out

    def _batch_id(self, kind: str, source: str, key: str) -> str:
        return "b-" + hashlib.sha256(f"{kind}\0{source}\0{key}".encode()).hexdigest()[:16]

    def row_ids_for(self, source: str, batch_id: str, n: int) -> list[str]:
        """The ids a feature batch ingested without ``row_ids`` gives its first ``n`` submitted rows
        (``<batch id>:<row>``), known before the batch arrives: a caller can log predictions under them
        first. The store keeps no per-row entry for them, unlike ids a client chooses."""
        bid = self._batch_id("features", source, batch_id)
        return [f"{bid}:{j}" for j in range(n)]

    def _idempotent(self, kind: str, source: str, key: str, content: str) -> IngestResult | None:
        row = self.meta.batches.find(source, key)
        if row is None:
            return None
        if row.content_hash != content or row.kind != kind:
            raise ConflictError(f"batch {key!r} from {source!r} was already ingested with different content "
                                f"(rule: a batch id names one content).", field="batch_id", rule="idempotency",
                                value=key)
        q = self.meta.batches.quarantined(batch_id=row.id)
        return IngestResult(row.id, kind, source, key, row.status, row.rows_submitted, row.rows_accepted,
                            row.rows_quarantined, list(row.reasons), q[0].id if q else None, replayed=True)

    def _commit(self, kind: str, bid: str, source: str, key: str, content: str, submitted: int,
                acc: pd.DataFrame, rej: pd.DataFrame, batch_reasons: list[str], raw: bytes | None,
                now: float) -> IngestResult:
        if len(acc) + len(rej) != submitted:  # the invariant that nothing is lost
            raise AssertionError(f"ingest lost rows: {len(acc)} + {len(rej)} != {submitted}")
        path = batch_path(kind, bid) if len(acc) else None
        if path:
            put_parquet(self.blobs, path, acc)
        raw_path = None
        if raw is not None:
            raw_path = f"raw/{hashlib.sha256(raw).hexdigest()}"
            if not self.blobs.exists(raw_path):
                self.blobs.put_bytes(raw_path, raw)
        reasons = list(dict.fromkeys(batch_reasons + [r for r in rej.get("_reason", []) if r]))[:20]
        qrow = self.quarantine.hold(bid, rej, reasons, now) if len(rej) else None
        status = "accepted" if not len(rej) else ("quarantined" if not len(acc) else "partial")
        times = acc["_time"] if "_time" in acc else pd.Series([now])
        self.meta.batches.add(Batch(id=bid, kind=kind, source=source, source_batch_id=key, content_hash=content,
                                    status=status, rows_submitted=submitted, rows_accepted=len(acc),
                                    rows_quarantined=len(rej), path=path, raw_path=raw_path,
                                    t_min=float(times.min()) if len(acc) else None,
                                    t_max=float(times.max()) if len(acc) else None, created_at=now,
                                    reasons=reasons), qrow)
        if len(acc):
            self._apply(kind, bid, acc)
        return IngestResult(bid, kind, source, key, status, submitted, len(acc), len(rej), reasons,
                            qrow.id if qrow else None, accepted_frame=acc)

    def _apply(self, kind: str, bid: str, acc: pd.DataFrame) -> None:
        if kind == "features":
            self.view.add_features(bid, acc, self.schema.label if self.schema else None)
        else:
            self.view.add_labels(bid, acc)

    # -- what it holds (see :class:`~.view.View`) ---------------------------------------------
    @property
    def rows(self) -> int:
        return self.view.rows

    @property
    def segments_read(self) -> int:
        """Segments of the view read back from their batches' files (old rows let go of memory)."""
        return self.view.segments_read

    def has_row(self, row_id: str) -> bool:
        return self.view.position(row_id) is not None

    def has_label(self, row_ids: list[str]) -> np.ndarray:
        """Whether each id's label has arrived (for a row not stored yet: whether its label waits for it)."""
        return self.view.has_label(row_ids)

    def recent_batches(self, rows: int) -> list[pd.DataFrame]:
        """The newest feature batches that together hold at least ``rows`` rows (all of them when there are
        fewer), oldest first: what a monitor's window of recent rows holds after observing every batch."""
        return self.view.recent_batches(rows)

    def label_times(self) -> np.ndarray:
        """When each accepted row's label matured (inf: not yet), in ingest order."""
        return self.view.label_times

    def labeled_rows(self, row_ids: list[str]) -> pd.DataFrame:
        """The accepted rows among ``row_ids`` with their labels (``_label``, ``_label_time``)."""
        pos = self.view.positions(row_ids)
        return self.view.labeled_rows_at(pos[pos >= 0])

    def labeled_between(self, after: float, until: float, *, most: int | None = None) -> pd.DataFrame:
        """The rows whose label matured after ``after`` and by ``until``, in the order their labels matured
        (``_label``, ``_label_time``); with ``most``, the newest ``most`` of them."""
        lt = self.view.label_times
        pos = np.flatnonzero((lt > after) & (lt <= until))
        pos = pos[np.argsort(lt[pos], kind="stable")]
        if most is not None:
            pos = pos[max(len(pos) - most, 0):]
        return self.view.labeled_rows_at(pos)

    # -- snapshots (see :class:`~.snapshot.Snapshots`) ----------------------------------------
    def snapshot(self, window: WindowSpec, *, cutoff: float, now: float) -> Snapshot:
        """Freeze the labeled rows known at ``cutoff`` within ``window`` as a named dataset version."""
        return self.snapshots.take(window, cutoff=cutoff, now=now)

    def read_snapshot(self, snap: Snapshot) -> pd.DataFrame:
        """The snapshot's rows (features, ``_time``, ``_arrived``) with their labels in ``_label``."""
        return self.snapshots.read(snap)

    # -- quarantine (see :class:`~.quarantine.Quarantine`) ------------------------------------
    def quarantined(self, status: str | None = "held") -> list[QuarantineItem]:
        return self.quarantine.items(status)

    def read_quarantine(self, qid: str) -> pd.DataFrame:
        return self.quarantine.read(qid)

    def reingest(self, qid: str, *, now: float) -> IngestResult:
        """Submit a quarantined item's rows again (after the schema or spec was fixed)."""
        kind, frame = self.quarantine.release(qid)
        if kind == "labels":
            res = self.ingest_labels(list(frame["_row_id"]), list(frame["label"]), now=now, source="reingest",
                                     batch_id=f"{qid}@{now}")
        else:
            res = self.ingest(frame, now=now, source="reingest", batch_id=f"{qid}@{now}")
        self.quarantine.released(qid, res.batch_id)
        return res
