"""The in-memory view of a loop's accepted rows: where each row sits, its time and its label.

The view keeps the accepted feature batches' frames, never merged into one copy of the history (a
snapshot reads only the segments its window touches), with per-row arrays beside them (event time, label,
when the label matured, the batch it came in). Small batches of the same columns are merged into segments
geometrically (see :meth:`View._compact`), so a window of many small batches is read from a few frames.
Past ``view_bytes`` of segments, the oldest are let go and read back from their batches' Parquet files
when a window reaches them: memory is bounded by the recent rows, not the history.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..store import BlobStore
from .parquet import batch_path, frame_bytes, read_parquet

__all__ = ["SEGMENT_ROWS", "VIEW_BYTES", "Segment", "View"]

SEGMENT_ROWS = 65_536  # small batches are merged into view segments up to this many rows
VIEW_BYTES = 256 * 2**20  # feature rows held in memory; older segments are read back from their batches' files


@dataclass(frozen=True)
class Segment:
    """A run of alike feature batches the view reads as one frame: its first position, rows and size, and
    whether it is held in memory (else it is read back from its batches' files when a window reaches it)."""

    start: int
    rows: int
    bytes: int
    held: bool


def _nth_latest(times: np.ndarray, n: int) -> float:
    """The ``n``-th latest of ``times`` (``len(times) >= n``), by partition rather than a full sort."""
    return float(np.partition(times, len(times) - n)[len(times) - n])


class View:
    """Accepted rows by position (ingest order), with their ids, times and labels."""

    def __init__(self, blobs: BlobStore, *, view_bytes: int = VIEW_BYTES) -> None:
        self.blobs = blobs
        self.view_bytes = view_bytes
        self.segments_read = 0  # segments read back from files, for the curious and the tests
        self._segs: list[pd.DataFrame | None] = []  # None: let go, read back from the files
        self._seg_starts: list[int] = []  # first position of each segment
        self._seg_bytes: list[int] = []
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
        self._pending: dict[str, tuple[Any, float, str]] = {}  # labels that arrived before their rows

    # -- what it holds ------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self._n

    @property
    def batch_ids(self) -> list[str]:
        """The feature batches in the view, in ingest order."""
        return list(self._batches)

    @property
    def times(self) -> np.ndarray:
        """Each row's event time (``_time``), in ingest order."""
        return self._time[: self._n]

    @property
    def label_times(self) -> np.ndarray:
        """When each row's label matured (inf: not yet), in ingest order."""
        return self._label_time[: self._n]

    def segments(self) -> list[Segment]:
        return [Segment(start, len(seg) if seg is not None else end - start, size, seg is not None)
                for start, end, size, seg in zip(self._seg_starts, self._seg_starts[1:] + [self._n],
                                                 self._seg_bytes, self._segs, strict=True)]

    def batch_of(self, position: int) -> str:
        """The feature batch a row came in."""
        return self._batches[int(np.searchsorted(np.asarray(self._starts), position, side="right")) - 1]

    # -- adding rows and labels ---------------------------------------------------------------
    def add_features(self, bid: str, acc: pd.DataFrame, label: str | None) -> None:
        """An accepted feature batch (its rows carry ``_row_id``, or their submitted row number in ``_row``)."""
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
        self._seg_bytes.append(frame_bytes(acc))
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
            p = self.position(rid)
            if p is not None:
                lab, t, lb = self._pending.pop(rid)
                self._label[p], self._label_time[p], self._label_batch[p] = lab, t, self._label_batch_of(lb)

    def add_labels(self, bid: str, acc: pd.DataFrame) -> None:
        """An accepted label batch (``_row_id``, ``_label``, ``_label_time``); a label for a row not stored yet
        waits for it."""
        rids = acc["_row_id"].to_numpy(dtype=object)
        at = self.positions(rids)
        known = at >= 0
        self._label[at[known]] = acc["_label"].to_numpy(dtype=object)[known]
        self._label_time[at[known]] = acc["_label_time"].to_numpy(dtype=float)[known]
        self._label_batch[at[known]] = self._label_batch_of(bid)
        for rid, lab, t in zip(rids[~known], acc["_label"].to_numpy(dtype=object)[~known],
                               acc["_label_time"].to_numpy(dtype=float)[~known], strict=True):
            self._pending[rid] = (lab, float(t), bid)

    def labels_now(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """For each id: whether its row is stored, whether it has a label (or one waits for it), and the labels
        of those that have one."""
        pos = self.positions(row_ids)
        known = pos >= 0
        had = np.zeros(len(row_ids), dtype=bool)
        had[known] = np.isfinite(self._label_time[pos[known]])
        had[~known] = [r in self._pending for r in row_ids[~known]]
        before = [self._label[p] if p >= 0 else self._pending[r][0]
                  for r, p in zip(row_ids[had], pos[had], strict=True)]
        return known, had, before

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

    # -- reading rows -------------------------------------------------------------------------
    def _segment(self, i: int) -> pd.DataFrame:
        """Segment ``i``: held, or read back from the Parquet files of the batches it is made of."""
        seg = self._segs[i]
        if seg is not None:
            return seg
        end = self._seg_starts[i + 1] if i + 1 < len(self._seg_starts) else self.rows
        first = bisect_left(self._starts, self._seg_starts[i])
        last = bisect_left(self._starts, end)
        frames = [read_parquet(self.blobs.get_bytes(batch_path("features", bid)))
                  for bid in self._batches[first:last]]
        self.segments_read += 1
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def rows_at(self, pos: np.ndarray) -> pd.DataFrame:
        """The rows at positions ``pos``, in that order, read from the batches that hold them."""
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

    def labeled_rows_at(self, pos: np.ndarray) -> pd.DataFrame:
        """The rows at ``pos`` with their labels (``_label``, ``_label_time``)."""
        return self.rows_at(pos).assign(_label=self._label[pos], _label_time=self._label_time[pos])

    def position(self, row_id: str) -> int | None:
        """Where a row id sits (None: not ingested): a client's id, or a generated one."""
        at = int(self.positions([row_id])[0])
        return None if at < 0 else at

    def positions(self, row_ids: list[str] | np.ndarray) -> np.ndarray:
        """Where each row id sits (-1: not ingested): ids a client chose through their map, generated ones
        (``<batch id>:<row number>``) through their batch's accepted row numbers, per batch."""
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

    def has_label(self, row_ids: list[str]) -> np.ndarray:
        """Whether each id's label has arrived (for a row not stored yet: whether its label waits for it)."""
        pos = self.positions(row_ids)
        out = np.zeros(len(row_ids), dtype=bool)
        stored = pos >= 0
        out[stored] = np.isfinite(self._label_time[pos[stored]])
        if self._pending and not stored.all():
            out[~stored] = [r in self._pending for r in np.asarray(row_ids, dtype=object)[~stored]]
        return out

    def recent_batches(self, rows: int) -> list[pd.DataFrame]:
        """The newest feature batches that together hold at least ``rows`` rows (all of them when there are
        fewer), oldest first."""
        starts = self._starts
        ends = starts[1:] + [self.rows]
        k, total = len(starts), 0
        while k > 0 and total < rows:
            k -= 1
            total += ends[k] - starts[k]
        return [self.rows_at(np.arange(starts[i], ends[i])) for i in range(k, len(starts))]

    # -- windows ------------------------------------------------------------------------------
    def window(self, rows: int | None, start: float | None, cutoff: float) -> np.ndarray:
        """Positions of the labeled rows known at ``cutoff`` in a window of the newest ``rows`` rows by time
        and/or of the rows after ``start``, oldest first (ties in time: the last ingested are kept, as a
        stable sort of everything would keep them)."""
        times = self.times
        pos = self._window_rows(rows, start, cutoff, np.asarray(self._starts, dtype=np.int64))
        if rows is not None and len(pos) > rows:
            # the newest ``rows`` rows by time, exactly as a stable sort of everything would pick them, but
            # without sorting the whole history on every retrain: a partition finds the cut-off time, and of
            # the rows at that time the last-ingested ones are kept
            t = times[pos]
            cut = _nth_latest(t, rows)
            above, tied = pos[t > cut], pos[t == cut]
            pos = np.concatenate([tied[len(tied) - (rows - len(above)):], above])
        return pos[np.argsort(times[pos], kind="stable")]

    def provenance(self, pos: np.ndarray) -> tuple[tuple[str, ...], tuple[str, ...], float | None]:
        """The feature batches and label batches the rows at ``pos`` came in (sorted ids), and the newest
        arrival among them (a row's or its label's)."""
        if not len(pos):
            return (), (), None
        held = np.unique(np.searchsorted(np.asarray(self._starts, dtype=np.int64), pos, side="right") - 1)
        batch_ids = tuple(sorted(self._batches[i] for i in held))
        label_ids = tuple(sorted(self._label_batches[i] for i in np.unique(self._label_batch[pos]) if i >= 0))
        return batch_ids, label_ids, float(max(self._label_time[pos].max(), max(self._arrivals[i] for i in held)))

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
