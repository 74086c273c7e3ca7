"""The data stage: ingest, validate, quarantine, version.

Accepted rows go to immutable Parquet batches, rejected rows to quarantine Parquet files with their
reasons, and the raw submission bytes are kept too. Ingest is idempotent by (source, batch id) and
content hash. An in-memory view of accepted rows and matured labels makes snapshots cheap; it is
rebuilt from the Parquet files when a store is reopened.
"""

from __future__ import annotations

import hashlib
import io
import json
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConflictError, DataError, NotFoundError
from ..spec import DataSpec, WindowSpec
from ..store import BlobStore, MetadataStore
from .files import MalformedRow, read_submission
from .schema import Schema, _plain, infer_schema
from .snapshot import Snapshot, snapshot_id, window_start
from .validate import coerce_label, validate_frame

__all__ = ["DataStore", "IngestResult"]

SEGMENT_ROWS = 65_536  # small batches are merged into view segments up to this many rows
VIEW_BYTES = 256 * 2**20  # feature rows held in memory; older segments are read back from their batches' files
_EXAMPLES = 5  # relabeled rows a result names
_SNAPSHOTS_KEPT = 16  # snapshots whose rows are kept for reading; older ones are rebuilt


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


def _escaped(text: str) -> str:
    """``text`` as valid Unicode: a lone surrogate (which JSON can carry and UTF-8 cannot) as ``\\ud800``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cell_text(v: Any) -> str | None:
    """A cell as the text that keeps it: JSON for nested values, escaped text where Unicode is broken."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, dict | list):
        return json.dumps(v, default=str)
    return _escaped(str(v))


def _as_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as an Arrow table. Cells Arrow cannot store as they are (a number column holding 'abc',
    integers past 64 bits, text that is not valid Unicode, nested records) are kept as text instead."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if not any(pa.types.is_nested(f.type) for f in table.schema):
            return table
    except (pa.ArrowException, ValueError, TypeError, OverflowError, UnicodeEncodeError):
        pass
    fixed = frame.copy()
    for c in fixed.columns:
        if fixed[c].dtype == object or pd.api.types.is_string_dtype(fixed[c].dtype):
            fixed[c] = pd.Series([_cell_text(v) for v in fixed[c]], index=fixed.index, dtype=object)
    fixed.columns = [_escaped(str(c)) for c in fixed.columns]
    return pa.Table.from_pandas(fixed, preserve_index=False)


def _put_parquet(blobs: BlobStore, key: str, frame: pd.DataFrame) -> None:
    """``frame`` as Parquet blob ``key``, streamed into the store (no copy of the file in memory)."""
    table = _as_table(frame)
    # Dictionary encoding pays only on repeated text (categories); on floats and unique ids it is wasted
    # work: 100k x 20 writes 4.5x faster without it (measured with pyarrow 26).
    textual = [f.name for f in table.schema if f.name not in ("_row_id", "prediction_id")
               and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]
    # row numbers run 0, 1, 2, ...: delta-packed they take almost nothing (1M rows: 4 MB less than plain)
    delta = {"_row": "DELTA_BINARY_PACKED"} if "_row" in table.column_names \
        and pa.types.is_integer(table.schema.field("_row").type) else None
    with blobs.open_write(key) as f:
        pq.write_table(table, f, use_dictionary=textual, column_encoding=delta)


def _from_parquet(data: bytes) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(data)).to_pandas()


def _batch_path(kind: str, bid: str) -> str:
    return f"batches/{kind}/{bid}.parquet"


def _bytes(frame: pd.DataFrame) -> int:
    """A frame's size as held, estimated from its column types (text and other objects counted as their
    pointers, nullable columns with their masks): costs nothing, unlike ``memory_usage`` on small frames."""
    per_row = sum(dt.itemsize if isinstance(dt, np.dtype) else 9 for dt in frame.dtypes.tolist())
    return len(frame) * per_row


def _nth_latest(times: np.ndarray, n: int) -> float:
    """The ``n``-th latest of ``times`` (``len(times) >= n``), by partition rather than a full sort."""
    return float(np.partition(times, len(times) - n)[len(times) - n])


class DataStore:
    """Accepted batches, quarantine, matured labels and snapshots of one loop."""

    def __init__(self, name: str, spec: DataSpec, meta: MetadataStore, blobs: BlobStore, *,
                 view_bytes: int = VIEW_BYTES) -> None:
        self.name = name
        self.spec = spec
        self.meta = meta
        self.blobs = blobs
        locked = meta.get_schema(name)
        self.schema: Schema | None = Schema.from_dict(locked) if locked else None
        # The view: the accepted feature batches' frames, never merged into one copy of the history (a
        # snapshot reads only the segments its window touches), with per-row arrays beside them. Small
        # batches of the same columns are merged into segments geometrically (see _compact), so a window
        # of many small batches is read from a few frames.
        # Past ``view_bytes`` of segments, the oldest are let go (None) and read back from their batches' Parquet
        # files when a window reaches them: memory is bounded by the recent rows, not the history.
        self._segs: list[pd.DataFrame | None] = []
        self._seg_starts: list[int] = []  # first position of each segment
        self._seg_bytes: list[int] = []
        self.view_bytes = view_bytes
        self.segments_read = 0  # segments read back from files, for the curious and the tests
        self._columns: dict[str, None] = {}  # every column any batch has, in order of first appearance
        self._pos: dict[str, int] = {}  # row ids a client chose -> position in the view
        # batch id -> (first position, the submitted row numbers of its accepted rows, or their count when
        # none was rejected): generated ids ("<batch id>:<row number>") are never materialised, and a clean
        # million-row batch costs two integers
        self._gen: dict[str, tuple[int, int | np.ndarray]] = {}
        self._starts: list[int] = []  # first position of each feature batch in the view, its id and arrival
        self._batches: list[str] = []
        self._arrivals: list[float] = []  # a batch's rows all arrive when it does: one number per batch
        self._time_max: list[float] = []  # the latest time in batches 0..i: how far back a window must read
        self._n = 0
        self._time = np.empty(0, dtype=float)
        self._label = np.empty(0, dtype=object)
        self._label_time = np.empty(0, dtype=float)
        self._label_batch = np.empty(0, dtype=np.int32)  # index into _label_batches (-1: no label yet)
        self._label_batches: list[str] = []  # ids of the batches labels came in (feature batches with labels too)
        self._label_batch_index: dict[str, int] = {}
        self._pending: dict[str, tuple[Any, float, str]] = {}
        # the rows of recent snapshots; an older one is rebuilt from the view when read (bounded: a server that
        # retrains often on a large window would otherwise keep every snapshot's row positions)
        self._snapshot_rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._reload()

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
            self.schema = Schema.from_dict(self.meta.lock_schema(self.name, infer_schema(frame, self.spec).to_dict(),
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
            if len(ids) != len(set(ids)) or (self._positions(ids) >= 0).any():
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
        pos = self._positions(rids)
        known = pos >= 0
        had = np.zeros(len(rids), dtype=bool)
        had[known] = np.isfinite(self._label_time[pos[known]])
        had[~known] = [r in self._pending for r in rids[~known]]
        before = [self._label[p] if p >= 0 else self._pending[r][0] for r, p in zip(rids[had], pos[had], strict=True)]
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
        p = self._position(row_id)
        label = self.schema.label if self.schema else None
        if p is not None and label is not None:
            row = self._rows_at(np.array([p]))
            if label in row and row[label].notna().iloc[0]:
                k = int(np.searchsorted(np.asarray(self._starts), p, side="right")) - 1
                out.append({"batch_id": self._batches[k], "source": "features", "label": _plain(row[label].iloc[0]),
                            "at": float(row["_arrived"].iloc[0])})
        for b in sorted(self.meta.list_batches("labels", accepted_only=True), key=lambda b: b["created_at"]):
            frame = _from_parquet(self.blobs.get_bytes(b["path"]))
            for lab, t in zip(frame.loc[frame["_row_id"] == row_id, "_label"],
                              frame.loc[frame["_row_id"] == row_id, "_label_time"], strict=True):
                out.append({"batch_id": b["id"], "source": b["source"], "label": _plain(lab), "at": float(t)})
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
        row = self.meta.find_batch(source, key)
        if row is None:
            return None
        if row["content_hash"] != content or row["kind"] != kind:
            raise ConflictError(f"batch {key!r} from {source!r} was already ingested with different content "
                                f"(rule: a batch id names one content).", field="batch_id", rule="idempotency",
                                value=key)
        q = [r["id"] for r in self.meta.list_quarantine() if r["batch_id"] == row["id"]]
        return IngestResult(row["id"], kind, source, key, row["status"], row["rows_submitted"], row["rows_accepted"],
                            row["rows_quarantined"], list(row["reasons"]), q[0] if q else None, replayed=True)

    def _commit(self, kind: str, bid: str, source: str, key: str, content: str, submitted: int,
                acc: pd.DataFrame, rej: pd.DataFrame, batch_reasons: list[str], raw: bytes | None,
                now: float) -> IngestResult:
        if len(acc) + len(rej) != submitted:  # the invariant that nothing is lost
            raise AssertionError(f"ingest lost rows: {len(acc)} + {len(rej)} != {submitted}")
        path = _batch_path(kind, bid) if len(acc) else None
        if path:
            _put_parquet(self.blobs, path, acc)
        raw_path = None
        if raw is not None:
            raw_path = f"raw/{hashlib.sha256(raw).hexdigest()}"
            if not self.blobs.exists(raw_path):
                self.blobs.put_bytes(raw_path, raw)
        reasons = list(dict.fromkeys(batch_reasons + [r for r in rej.get("_reason", []) if r]))[:20]
        qrow = None
        if len(rej):
            qid = "q-" + bid[2:]
            qpath = f"quarantine/{qid}.parquet"
            _put_parquet(self.blobs, qpath, rej)
            qrow = dict(id=qid, batch_id=bid, rows=len(rej), reasons=reasons, path=qpath, status="held",
                        reingested_as=None, created_at=now)
        status = "accepted" if not len(rej) else ("quarantined" if not len(acc) else "partial")
        times = acc["_time"] if "_time" in acc else pd.Series([now])
        self.meta.add_batch(dict(id=bid, kind=kind, source=source, source_batch_id=key, content_hash=content,
                                 status=status, rows_submitted=submitted, rows_accepted=len(acc),
                                 rows_quarantined=len(rej), path=path, raw_path=raw_path,
                                 t_min=float(times.min()) if len(acc) else None,
                                 t_max=float(times.max()) if len(acc) else None, created_at=now,
                                 reasons=reasons), qrow)
        if len(acc):
            self._apply(kind, bid, acc)
        return IngestResult(bid, kind, source, key, status, submitted, len(acc), len(rej), reasons,
                            str(qrow["id"]) if qrow else None, accepted_frame=acc)

    # -- in-memory view -----------------------------------------------------------------------
    def _apply(self, kind: str, bid: str, acc: pd.DataFrame) -> None:
        if kind == "features":
            label = self.schema.label if self.schema else None
            start = self.rows
            if "_row_id" in acc:
                ids = acc["_row_id"].tolist()
                self._pos.update(zip(ids, range(start, start + len(ids)), strict=True))
                waiting = [r for r in ids if r in self._pending] if self._pending else []
            else:
                nums = acc["_row"].to_numpy(dtype=np.int64)  # increasing; all of 0..n-1 when none was rejected
                self._gen[bid] = (start, len(nums) if len(nums) and nums[-1] == len(nums) - 1 else nums)
                prefix = bid + ":"
                waiting = [r for r in self._pending if r.startswith(prefix)]
            # the view keeps the accepted frame as it is (no copy); ids are looked up through _pos and _gen,
            # a row's batch through the batches' first positions
            self._starts.append(start)
            self._batches.append(bid)
            self._arrivals.append(float(acc["_arrived"].iloc[0]) if len(acc) else np.nan)
            self._seg_starts.append(start)
            self._segs.append(acc)
            self._seg_bytes.append(_bytes(acc))
            self._compact()
            self._let_go()
            self._columns.update(dict.fromkeys(acc.columns))
            self._grow(start + len(acc))
            self._n = start + len(acc)
            self._time[start:self._n] = acc["_time"].to_numpy(dtype=float)
            before = self._time_max[-1] if self._time_max else -np.inf
            self._time_max.append(float(np.fmax.reduce(np.r_[before, self._time[start:self._n]])))  # NaN: no time
            if label and label in acc:
                has = acc[label].notna().to_numpy()
                idx = start + np.flatnonzero(has)
                self._label[idx] = acc[label].to_numpy()[has]
                self._label_time[idx] = acc["_arrived"].to_numpy()[has]
                self._label_batch[idx] = self._label_batch_of(bid)
            for rid in waiting:  # labels that arrived before their rows
                p = self._position(rid)
                if p is not None:
                    lab, t, lb = self._pending.pop(rid)
                    self._label[p], self._label_time[p], self._label_batch[p] = lab, t, self._label_batch_of(lb)
        else:
            rids = acc["_row_id"].to_numpy(dtype=object)
            at = self._positions(rids)
            known = at >= 0
            self._label[at[known]] = acc["_label"].to_numpy(dtype=object)[known]
            self._label_time[at[known]] = acc["_label_time"].to_numpy(dtype=float)[known]
            self._label_batch[at[known]] = self._label_batch_of(bid)
            for rid, lab, t in zip(rids[~known], acc["_label"].to_numpy(dtype=object)[~known],
                                   acc["_label_time"].to_numpy(dtype=float)[~known], strict=True):
                self._pending[rid] = (lab, float(t), bid)  # labels that arrived before their rows

    def _grow(self, n: int) -> None:
        if n <= len(self._label):
            return
        cap = max(n, len(self._label) * 3 // 2, 1024)  # 1.5x: room ahead costs at most half the view
        for attr, fill, dt in (("_label", None, object), ("_label_time", np.inf, float),
                               ("_label_batch", -1, np.int32), ("_time", np.nan, float)):
            old = getattr(self, attr)
            new = np.full(cap, fill, dtype=dt)
            new[: len(old)] = old
            setattr(self, attr, new)

    def _label_batch_of(self, bid: str) -> int:
        at = self._label_batch_index.get(bid)
        if at is None:
            at = self._label_batch_index[bid] = len(self._label_batches)
            self._label_batches.append(bid)
        return at

    def _compact(self) -> None:
        """Merge the newest segment into the one before while that one is no larger (a binary counter:
        at most log2 segments per size class, each row copied a logarithmic number of times), if both have
        the same columns and types and the merged one stays under ``SEGMENT_ROWS``; big batches stay alone."""
        while len(self._segs) >= 2:
            a, b = self._segs[-2], self._segs[-1]
            if a is None or b is None or len(a) > len(b) or len(a) + len(b) > SEGMENT_ROWS \
                    or list(a.columns) != list(b.columns) or not a.dtypes.equals(b.dtypes):
                return
            self._segs[-2:] = [pd.concat([a, b], ignore_index=True)]
            self._seg_bytes[-2:] = [self._seg_bytes[-2] + self._seg_bytes[-1]]
            self._seg_starts.pop()

    def _let_go(self) -> None:
        """Drop the oldest held segments (never the newest) while the held ones exceed ``view_bytes``."""
        held = sum(b for b, f in zip(self._seg_bytes, self._segs, strict=True) if f is not None)
        for i in range(len(self._segs) - 1):
            if held <= self.view_bytes:
                return
            if self._segs[i] is not None:
                self._segs[i] = None
                held -= self._seg_bytes[i]

    def _segment(self, i: int) -> pd.DataFrame:
        """Segment ``i``: held, or read back from the Parquet files of the batches it is made of."""
        seg = self._segs[i]
        if seg is not None:
            return seg
        end = self._seg_starts[i + 1] if i + 1 < len(self._seg_starts) else self.rows
        first = bisect_left(self._starts, self._seg_starts[i])
        last = bisect_left(self._starts, end)
        frames = [_from_parquet(self.blobs.get_bytes(_batch_path("features", bid)))
                  for bid in self._batches[first:last]]
        self.segments_read += 1
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def _rows_at(self, pos: np.ndarray) -> pd.DataFrame:
        """The view's rows at positions ``pos``, in that order, read from the batches that hold them."""
        pos = np.asarray(pos, dtype=np.int64)
        if not len(pos):
            return pd.DataFrame(columns=list(self._columns))
        order = np.argsort(pos, kind="stable")
        ranked = pos[order]
        starts = np.asarray(self._seg_starts)
        part = np.searchsorted(starts, ranked, side="right") - 1
        bounds = np.flatnonzero(np.diff(part)) + 1
        pieces = [self._segment(part[i]).iloc[ranked[i:j] - starts[part[i]]]
                  for i, j in zip(np.r_[0, bounds], np.r_[bounds, len(ranked)], strict=True)]
        out = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0].reset_index(drop=True)
        out = out.reindex(columns=list(self._columns))
        if np.array_equal(order, np.arange(len(order))):
            return out
        back = np.empty_like(order)
        back[order] = np.arange(len(order))  # row m of ``out`` holds pos[order[m]]
        return out.iloc[back].reset_index(drop=True)

    def _reload(self) -> None:
        for b in self.meta.list_batches():
            if b["path"] and b["rows_accepted"]:
                self._apply(b["kind"], b["id"], _from_parquet(self.blobs.get_bytes(b["path"])))

    @property
    def rows(self) -> int:
        return self._n

    def _position(self, row_id: str) -> int | None:
        """Where a row id sits in the view (None: not ingested): a client's id, or a generated one."""
        at = int(self._positions([row_id])[0])
        return None if at < 0 else at

    def _positions(self, row_ids: list[str] | np.ndarray) -> np.ndarray:
        """Where each row id sits in the view (-1: not ingested): ids a client chose through their map,
        generated ones (``<batch id>:<row number>``) through their batch's accepted row numbers, per batch."""
        out = np.full(len(row_ids), -1, dtype=np.int64)
        asked: dict[str, tuple[list[int], list[int]]] = {}  # batch id -> (indices in row_ids, row numbers)
        for k, rid in enumerate(row_ids):
            at = self._pos.get(rid)
            if at is not None:
                out[k] = at
                continue
            bid, sep, number = rid.rpartition(":")
            if sep and number.isdigit() and bid in self._gen:
                ks, nums = asked.setdefault(bid, ([], []))
                ks.append(k)
                nums.append(int(number))
        for bid, (ks, nums) in asked.items():
            start, rows = self._gen[bid]
            want = np.asarray(nums, dtype=np.int64)
            if isinstance(rows, int):  # a batch with no row rejected: row number j sits at start + j
                hit = want < rows
                out[np.asarray(ks)[hit]] = start + want[hit]
                continue
            j = np.minimum(np.searchsorted(rows, want), len(rows) - 1)
            hit = rows[j] == want
            out[np.asarray(ks)[hit]] = start + j[hit]
        return out

    def has_row(self, row_id: str) -> bool:
        return self._position(row_id) is not None

    def has_label(self, row_ids: list[str]) -> np.ndarray:
        """Whether each id's label has arrived (for a row not stored yet: whether its label waits for it)."""
        pos = self._positions(row_ids)
        out = np.zeros(len(row_ids), dtype=bool)
        stored = pos >= 0
        out[stored] = np.isfinite(self._label_time[pos[stored]])
        if self._pending and not stored.all():
            out[~stored] = [r in self._pending for r in np.asarray(row_ids, dtype=object)[~stored]]
        return out

    def recent_batches(self, rows: int) -> list[pd.DataFrame]:
        """The newest feature batches that together hold at least ``rows`` rows (all of them when there are
        fewer), oldest first: what a monitor's window of recent rows holds after observing every batch."""
        starts = self._starts
        ends = starts[1:] + [self.rows]
        k, total = len(starts), 0
        while k > 0 and total < rows:
            k -= 1
            total += ends[k] - starts[k]
        return [self._rows_at(np.arange(starts[i], ends[i])) for i in range(k, len(starts))]

    def label_times(self) -> np.ndarray:
        """When each accepted row's label matured (inf: not yet), in ingest order."""
        return self._label_time[: self.rows]

    def labeled_rows(self, row_ids: list[str]) -> pd.DataFrame:
        """The accepted rows among ``row_ids`` with their labels (``_label``, ``_label_time``)."""
        pos = self._positions(row_ids)
        pos = pos[pos >= 0]
        return self._rows_at(pos).assign(_label=self._label[pos], _label_time=self._label_time[pos])

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot(self, window: WindowSpec, *, cutoff: float, now: float) -> Snapshot:
        """Freeze the labeled rows known at ``cutoff`` within ``window`` as a named dataset version."""
        n = self.rows
        times = self._time[:n]
        lt = self._label_time[:n]
        start = window_start(window, cutoff)
        starts = np.asarray(self._starts, dtype=np.int64)  # each feature batch's first position
        pos = self._window_rows(window.rows, start, cutoff, starts)
        if window.rows is not None and len(pos) > window.rows:
            # the newest ``rows`` rows by time, exactly as a stable sort of everything would pick them, but
            # without sorting the whole history on every retrain: a partition finds the cut-off time, and of
            # the rows at that time the last-ingested ones are kept
            t = times[pos]
            cut = _nth_latest(t, window.rows)
            above, tied = pos[t > cut], pos[t == cut]
            pos = np.concatenate([tied[len(tied) - (window.rows - len(above)):], above])
        pos = pos[np.argsort(times[pos], kind="stable")]
        which = np.searchsorted(starts, pos, side="right") - 1
        held = np.unique(which) if n else np.empty(0, dtype=np.int64)
        batch_ids = tuple(sorted(self._batches[i] for i in held))
        label_ids = tuple(sorted(self._label_batches[i] for i in np.unique(self._label_batch[pos]) if i >= 0))
        sid = snapshot_id(batch_ids, label_ids, window, cutoff, len(pos))
        snap = Snapshot(sid, float(cutoff), window.model_dump(), batch_ids, label_ids, int(len(pos)),
                        float(times[pos].min()) if len(pos) else None, float(times[pos].max()) if len(pos) else None,
                        float(max(lt[pos].max(), max(self._arrivals[i] for i in held))) if len(pos) else None)
        self._snapshot_rows[sid] = pos
        self._snapshot_rows.move_to_end(sid)
        while len(self._snapshot_rows) > _SNAPSHOTS_KEPT:
            self._snapshot_rows.popitem(last=False)
        self.meta.add_snapshot(sid, snap.to_dict(), snap.rows, cutoff, now)
        return snap

    def _window_rows(self, rows: int | None, start: float | None, cutoff: float, starts: np.ndarray) -> np.ndarray:
        """Positions of the labeled rows known at ``cutoff`` (rows and labels that arrived later are left
        out, so a snapshot rebuilds the same) that can be in a window of the newest ``rows`` rows or of the
        rows after ``start``: a superset of the window, read from the newest rows back only as far as a row
        in it can be. A retrain on a window costs the window, not the history (the last rows' times bound
        how late any earlier row can be; rows usually arrive roughly in time order)."""
        n = self.rows
        reach = n if rows is None and start is None else max(4 * (rows or 0), SEGMENT_ROWS)
        while True:
            k = max(0, int(np.searchsorted(starts, n - reach, side="right")) - 1)  # read from a batch's start
            lo = int(starts[k]) if len(starts) else 0
            times = self._time[lo:n]
            mask = (times <= cutoff) & (self._label_time[lo:n] <= cutoff)
            for b in k + np.flatnonzero(np.asarray(self._arrivals[k:]) > cutoff):  # batches that came later
                mask[int(starts[b]) - lo:(int(starts[b + 1]) if b + 1 < len(starts) else n) - lo] = False
            if start is not None:
                mask &= times > start
            pos = lo + np.flatnonzero(mask)
            if lo == 0:
                return pos
            # the earliest time a row of the window can have; no row before ``lo`` is later than _time_max[k-1]
            # (a row at exactly the rows-th latest time is not needed either: ties keep the last ingested)
            floor = -np.inf if start is None else start
            if rows is not None and len(pos) >= rows:
                floor = max(floor, _nth_latest(self._time[pos], rows))
            if self._time_max[k - 1] <= floor:
                return pos
            reach *= 4

    def read_snapshot(self, snap: Snapshot) -> pd.DataFrame:
        """The snapshot's rows (features, ``_time``, ``_arrived``) with their labels in ``_label``."""
        pos = self._snapshot_rows.get(snap.id)
        if pos is None:
            again = self.snapshot(WindowSpec(**snap.window), cutoff=snap.cutoff, now=snap.cutoff)
            if again.id != snap.id:
                raise NotFoundError(f"snapshot {snap.id!r} cannot be rebuilt from the stored batches.",
                                    field="snapshot_id", value=snap.id)
            pos = self._snapshot_rows[snap.id]
        return self._rows_at(pos).assign(_label=self._label[pos], _label_time=self._label_time[pos])

    # -- quarantine ---------------------------------------------------------------------------
    def quarantined(self, status: str | None = "held") -> list[dict[str, Any]]:
        return self.meta.list_quarantine(status)

    def read_quarantine(self, qid: str) -> pd.DataFrame:
        return _from_parquet(self.blobs.get_bytes(self.meta.get_quarantine(qid)["path"]))

    def reingest(self, qid: str, *, now: float) -> IngestResult:
        """Submit a quarantined item's rows again (after the schema or spec was fixed)."""
        item = self.meta.get_quarantine(qid)
        if item["status"] != "held":
            raise ConflictError(f"quarantine item {qid!r} was already re-ingested as {item['reingested_as']!r}.",
                                field="quarantine_id", rule="once", value=qid)
        frame = self.read_quarantine(qid)
        if "_text" in frame:
            frame = frame[frame["_text"].isna()]
        frame = frame.drop(columns=[c for c in ("_row", "_reason", "_text") if c in frame]).reset_index(drop=True)
        batch = self.meta.get_batch(item["batch_id"])
        if batch["kind"] == "labels":
            res = self.ingest_labels(list(frame["_row_id"]), list(frame["label"]), now=now, source="reingest",
                                     batch_id=f"{qid}@{now}")
        else:
            res = self.ingest(frame, now=now, source="reingest", batch_id=f"{qid}@{now}")
        self.meta.mark_reingested(qid, res.batch_id)
        return res
