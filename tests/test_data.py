from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freshloop.data.store import DataStore
from freshloop.errors import ConflictError, DataError
from freshloop.spec import DataSpec, QualitySpec, WindowSpec
from freshloop.store import open_stores

from .conftest import make_frame


def store(root: Path, **quality: object) -> DataStore:
    meta, blobs = open_stores(root, durable=False)
    return DataStore("t", DataSpec(label="y", time="t", quality=QualitySpec(**quality)), meta, blobs)


def test_first_batch_locks_schema_and_later_batches_are_checked(tmp_path: Path) -> None:
    ds = store(tmp_path, unseen_categories="quarantine", out_of_range="quarantine")
    ds.ingest(make_frame(100), now=100.0, source="s", batch_id="1")
    assert ds.schema is not None and ds.schema.feature("c").categories == ("a", "b", "c")
    bad = make_frame(5, seed=1, t0=100).astype({"x1": object, "c": object})
    bad.loc[0, "x1"] = "abc"
    bad.loc[1, "x1"] = np.inf
    bad.loc[2, "c"] = "zzz"
    bad.loc[3, "x1"] = 1e9
    res = ds.ingest(bad, now=200.0, source="s", batch_id="2")
    assert (res.accepted, res.quarantined, res.status) == (1, 4, "partial")
    q = ds.read_quarantine(res.quarantine_id or "")
    reasons = dict(zip(q["_row"], q["_reason"], strict=True))
    assert reasons[0] == "field 'x1': must be a number (got 'abc')"
    assert reasons[1] == "field 'x1': must be finite (got inf)"
    assert reasons[2] == "field 'c': must be a known category (got 'zzz')"
    assert reasons[3].startswith("field 'x1': must lie within the learned range")
    assert q.loc[q["_row"] == 0, "x1"].iloc[0] == "abc"  # kept as submitted


def test_missing_column_quarantines_the_whole_batch(tmp_path: Path) -> None:
    ds = store(tmp_path)
    ds.ingest(make_frame(50), now=1.0, source="s", batch_id="1")
    res = ds.ingest(make_frame(10, t0=50).drop(columns="x2"), now=2.0, source="s", batch_id="2")
    assert res.status == "quarantined" and res.quarantined == 10
    assert res.reasons[0] == "column 'x2': missing (rule: every schema column must be present)"


def test_missing_rate_over_the_limit_quarantines_the_batch(tmp_path: Path) -> None:
    ds = store(tmp_path, max_missing_rate=0.3)
    ds.ingest(make_frame(50), now=1.0, source="s", batch_id="1")
    f = make_frame(10, t0=50)
    f.loc[:5, "x1"] = np.nan
    res = ds.ingest(f, now=2.0, source="s", batch_id="2")
    assert res.status == "quarantined"
    assert "missing rate 0.60 exceeds data.quality.max_missing_rate 0.3" in res.reasons[0]


def test_ingest_is_idempotent_by_key_and_content(tmp_path: Path) -> None:
    ds = store(tmp_path)
    f = make_frame(30)
    first = ds.ingest(f, now=1.0, source="s", batch_id="k")
    again = ds.ingest(f, now=2.0, source="s", batch_id="k")
    assert again.replayed and again.batch_id == first.batch_id and ds.rows == 30
    with pytest.raises(ConflictError, match="already ingested with different content"):
        ds.ingest(make_frame(30, seed=9), now=3.0, source="s", batch_id="k")
    no_key = ds.ingest(make_frame(10, t0=30), now=4.0, source="s")
    assert ds.ingest(make_frame(10, t0=30), now=5.0, source="s").batch_id == no_key.batch_id
    assert ds.rows == 40


def test_duplicate_rows_in_a_batch_are_quarantined(tmp_path: Path) -> None:
    ds = store(tmp_path)
    f = make_frame(10)
    f = pd.concat([f, f.iloc[[3]]], ignore_index=True)
    res = ds.ingest(f, now=1.0, source="s", batch_id="1")
    assert res.quarantined == 1 and "duplicate" in res.reasons[0]


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                                st.none()), min_size=1, max_size=30))
def test_nothing_is_lost(tmp_path_factory: pytest.TempPathFactory, cells: list[object]) -> None:
    ds = store(tmp_path_factory.mktemp("d"))
    ds.ingest(make_frame(40), now=1.0, source="s", batch_id="seed")
    f = make_frame(len(cells), t0=100).astype({"x1": object})
    f["x1"] = cells
    res = ds.ingest(f, now=2.0, source="s", batch_id="fuzz")
    assert res.accepted + res.quarantined == res.submitted == len(cells)
    if res.quarantine_id:
        assert len(ds.read_quarantine(res.quarantine_id)) == res.quarantined


def test_csv_files_keep_raw_bytes_and_malformed_rows(tmp_path: Path) -> None:
    ds = store(tmp_path / "s")
    good = tmp_path / "good.csv"
    make_frame(40).to_csv(good, index=False)
    ds.ingest_file(str(good), now=1.0)
    raw = b"t,x1,x2,c,y\n50,0.1,0.2,a,1\n51,0.1,oops,b,0\n52,1,2\n53,0.3,0.1,c,1,extra\n"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(raw)
    res = ds.ingest_file(str(bad), now=2.0)
    assert (res.submitted, res.accepted, res.quarantined) == (4, 1, 3)
    stored = ds.meta.batches.get(res.batch_id).raw_path
    assert ds.blobs.get_bytes(stored) == raw  # the submission, byte for byte
    q = ds.read_quarantine(res.quarantine_id or "")
    assert "field 'x2': must be a number (got 'oops')" in set(q["_reason"])
    texts = set(q["_text"].dropna())
    assert texts == {"52,1,2", "53,0.3,0.1,c,1,extra"}
    assert any("expected 5 fields, got 3" in r for r in q["_reason"])


def test_empty_and_missing_files_are_errors(tmp_path: Path) -> None:
    ds = store(tmp_path / "s")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty file"):
        ds.ingest_file(str(empty), now=1.0)
    with pytest.raises(DataError, match="not found"):
        ds.ingest_file(str(tmp_path / "nope.csv"), now=1.0)


def test_missing_label_column_in_first_batch_is_named(tmp_path: Path) -> None:
    ds = store(tmp_path)
    with pytest.raises(DataError, match="column 'y': the label column is missing"):
        ds.ingest(make_frame(10).drop(columns="y"), now=1.0)


def test_reingest_after_fix(tmp_path: Path) -> None:
    ds = store(tmp_path, unseen_categories="quarantine")
    ds.ingest(make_frame(40), now=1.0, source="s", batch_id="1")
    f = make_frame(3, t0=40)
    f["c"] = "d"
    res = ds.ingest(f, now=2.0, source="s", batch_id="2")
    assert res.quarantined == 3
    # the operator relaxes the rule; the held rows go in, and the item is marked
    ds.spec = ds.spec.model_copy(update={"quality": QualitySpec(unseen_categories="accept")})
    again = ds.reingest(res.quarantine_id or "", now=3.0)
    assert again.accepted == 3 and ds.quarantined("held") == []
    with pytest.raises(ConflictError):
        ds.reingest(res.quarantine_id or "", now=4.0)


def test_labels_arrive_later_and_snapshots_follow_the_window(tmp_path: Path) -> None:
    ds = store(tmp_path)
    ds.ingest(make_frame(100), now=100.0, source="s", batch_id="1", row_ids=[f"r{i}" for i in range(100)])
    later = make_frame(100, seed=2, t0=100).assign(y=None)
    ds.ingest(later, now=200.0, source="s", batch_id="2", row_ids=[f"r{i}" for i in range(100, 200)])
    assert ds.snapshot(WindowSpec(), cutoff=200.0, now=200.0).rows == 100
    res = ds.ingest_labels([f"r{i}" for i in range(100, 150)] + ["ghost"], [1] * 50 + [0], now=250.0)
    assert res.accepted == 51 and res.unknown_row_ids == 1
    assert ds.snapshot(WindowSpec(), cutoff=249.0, now=250.0).rows == 100  # not matured yet at 249
    full = ds.snapshot(WindowSpec(), cutoff=250.0, now=250.0)
    assert full.rows == 150
    assert ds.snapshot(WindowSpec(rows=20), cutoff=250.0, now=250.0).rows == 20
    assert ds.snapshot(WindowSpec(period="110s"), cutoff=250.0, now=250.0).rows == 9  # labeled t in (140, 149]
    bad = ds.ingest_labels(["r150"], [7], now=260.0)
    assert bad.quarantined == 1 and "known classes" in bad.reasons[0]
    # reopening rebuilds the same snapshot from the Parquet batches
    meta, blobs = ds.meta, ds.blobs
    again = DataStore("t", ds.spec, meta, blobs)
    frame = again.read_snapshot(full)
    assert len(frame) == 150 and frame["_label"].notna().all()


def test_drifted_values_are_accepted_with_a_warning_by_default(tmp_path: Path) -> None:
    ds = store(tmp_path)
    ds.ingest(make_frame(100), now=1.0, source="s", batch_id="1")
    far = make_frame(10, t0=100).assign(x1=50.0)
    res = ds.ingest(far, now=2.0, source="s", batch_id="2")
    assert (res.accepted, res.quarantined) == (10, 0)
    assert res.warnings and res.warnings[0].startswith("field 'x1': 10 value(s) outside the learned range")


def test_generated_row_ids_name_rows_across_quarantine_labels_and_reopen(tmp_path: Path) -> None:
    ds = store(tmp_path)
    ds.ingest(make_frame(50), now=10.0, source="s", batch_id="lock")
    frame = make_frame(6, seed=3, t0=100).assign(y=None)
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[2, "x1"] = "abc"  # row 2 is quarantined: its generated id names no stored row
    res = ds.ingest(frame, now=20.0, source="s", batch_id="b")
    assert (res.accepted, res.quarantined) == (5, 1)
    ids = [f"{res.batch_id}:{i}" for i in range(6)]
    assert [ds.has_row(r) for r in ids] == [True, True, False, True, True, True]
    assert not ds.has_row(f"{res.batch_id}:6") and not ds.has_row("b-nope:1") and not ds.has_row("plain")
    lab = ds.ingest_labels(ids[:4], [1, 0, 1, 1], now=30.0)
    assert lab.accepted == 4 and lab.unknown_row_ids == 1
    rows = ds.labeled_rows([ids[3], ids[0], ids[2]])
    assert list(rows["_label"]) == [1, 1] and list(rows["_time"]) == [103.0, 100.0]
    # a label that arrives before its row is held, then joined when the row comes
    early = make_frame(3, seed=4, t0=200).assign(y=None)
    future = ds.row_ids_for("s", "c", 1)[0].rpartition(":")[0]  # the id batch "c" will get
    assert ds.ingest_labels([f"{future}:1"], [0], now=40.0).unknown_row_ids == 1
    assert ds.ingest(early, now=50.0, source="s", batch_id="c").batch_id == future
    assert list(ds.labeled_rows([f"{future}:1"])["_label"]) == [0]
    assert [ds.has_row(f"{future}:{i}") for i in range(4)] == [True, True, True, False]  # a clean batch's ids
    before = ds.snapshot(WindowSpec(), cutoff=60.0, now=60.0)
    again = DataStore("t", ds.spec, ds.meta, ds.blobs)  # reopened from the Parquet batches
    assert [again.has_row(r) for r in ids] == [True, True, False, True, True, True]
    assert again.snapshot(WindowSpec(), cutoff=60.0, now=60.0).id == before.id
    assert list(again.labeled_rows([f"{future}:1", ids[1]])["_label"]) == [0, 0]


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, 10_000), max_size=60),
       batches=st.lists(st.tuples(st.integers(1, 30), st.booleans()), min_size=1, max_size=12))
def test_rows_are_read_from_the_batches_that_hold_them(tmp_path_factory: pytest.TempPathFactory, picks: list[int],
                                                       batches: list[tuple[int, bool]]) -> None:
    """Reading rows from the view's segments (runs of alike batches merged) gives what indexing one frame
    of every batch as submitted gave, in any order; every row id finds its row."""
    ds = store(tmp_path_factory.mktemp("rows"))
    ds.ingest(make_frame(50), now=0.0, source="s", batch_id="lock")
    submitted = [ds.view.rows_at(np.arange(50))]
    named = {f"{ds.view.batch_ids[0]}:{j}": j for j in range(50)}  # every stored row's id and where it sits
    t0 = 50
    for i, (n, client_ids) in enumerate(batches):  # client ids with labels, generated ids without
        frame = make_frame(n, seed=i, t0=t0)
        if client_ids:
            ids = [f"r{t0 + j}" for j in range(n)]
            ds.ingest(frame, now=float(i), source="s", batch_id=f"b{i}", row_ids=ids)
            stored = frame.assign(_row_id=ids)
        else:
            ids = ds.row_ids_for("s", f"b{i}", n)
            ds.ingest(frame.assign(y=None), now=float(i), source="s", batch_id=f"b{i}")
            stored = frame.assign(y=None, _row=np.arange(n))
        named.update({r: t0 + j for j, r in enumerate(ids)})
        submitted.append(stored)
        t0 += n
    segs = ds.view.segments()
    assert len(segs) <= len(batches) + 1 and sum(s.rows for s in segs) == ds.rows
    assert [s.start for s in segs] == sorted({s.start for s in segs})
    pos = np.array([p % ds.rows for p in picks], dtype=np.int64)
    whole = pd.concat(submitted, ignore_index=True)
    got = ds.view.rows_at(pos)
    cols = [c for c in whole.columns if c in got.columns and c not in ("_time", "_arrived")]  # checked below
    pd.testing.assert_frame_equal(got[cols], whole.iloc[pos].reset_index(drop=True)[cols], check_dtype=False)
    assert np.array_equal(ds.view.times, ds.view.rows_at(np.arange(ds.rows))["_time"].to_numpy(dtype=float))
    batch_ids = ds.view.batch_ids
    gen = [f"{batch_ids[1 + i]}:{p % 40}" for i, p in enumerate(picks[: len(batches)])]  # some past a batch's end
    asked = gen + [f"r{p % (t0 + 5)}" for p in picks] + ["plain", "b-x:1", ":3"]
    assert ds.view.positions(asked).tolist() == [named.get(r, -1) for r in asked]
    assert [ds.has_row(r) for r in asked] == [r in named for r in asked]


def test_small_batches_merge_into_few_segments(tmp_path: Path) -> None:
    """Many small alike batches are read from a logarithmic number of segments; rows stay where they were."""
    ds = store(tmp_path)
    frames = [make_frame(10, seed=i, t0=10 * i) for i in range(64)]
    for i, f in enumerate(frames):
        ds.ingest(f, now=float(i), source="s", batch_id=f"b{i}")
    # 64 equal batches: one segment, batches still known
    assert len(ds.view.segments()) == 1 and len(ds.view.batch_ids) == 64
    ds.ingest(make_frame(10, seed=99, t0=640), now=99.0, source="s", batch_id="b64")
    assert [s.rows for s in ds.view.segments()] == [640, 10]
    got = ds.view.rows_at(np.arange(645, 635, -1))
    want = pd.concat(frames + [make_frame(10, seed=99, t0=640)], ignore_index=True).iloc[636:646][::-1]
    assert list(got["x1"]) == list(want["x1"]) and list(got["_time"]) == list(want["t"].astype(float))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(times=st.lists(st.integers(0, 8), min_size=1, max_size=80), k=st.integers(1, 90))
def test_a_row_window_keeps_the_newest_rows_as_a_full_sort_would(tmp_path_factory: pytest.TempPathFactory,
                                                                  times: list[int], k: int) -> None:
    """Many rows share a time: the window takes the same rows, in the same order, as a stable sort of all."""
    ds = store(tmp_path_factory.mktemp("window"))
    ds.ingest(make_frame(50), now=0.0, source="s", batch_id="lock")
    frame = make_frame(len(times), seed=1).assign(t=[float(t) for t in times])
    ds.ingest(frame, now=1.0, source="s", batch_id="b", row_ids=[f"r{i}" for i in range(len(times))])
    snap = ds.snapshot(WindowSpec(rows=k), cutoff=100.0, now=100.0)
    every = np.arange(ds.rows)
    expected = every[np.argsort(ds.view.times[every], kind="stable")][-k:]
    assert np.array_equal(ds.snapshots.positions(snap.id), expected)


def test_an_old_snapshot_is_rebuilt_as_it_was_after_late_rows_arrive(tmp_path: Path) -> None:
    from freshloop.data.snapshot import SNAPSHOTS_KEPT

    ds = store(tmp_path)
    ds.ingest(make_frame(100), now=100.0, source="s", batch_id="1")
    first = ds.snapshot(WindowSpec(period="1000s"), cutoff=100.0, now=100.0)
    rows = ds.read_snapshot(first)
    # rows that arrive later, carrying earlier event times and labels sent before them; then many snapshots
    late = make_frame(50, seed=2, t0=40)
    ids = [f"late{i}" for i in range(50)]
    ds.ingest_labels(ids, late["y"].tolist(), now=90.0, source="s", batch_id="labels")
    ds.ingest(late.drop(columns="y"), now=150.0, source="s", batch_id="late", row_ids=ids)
    for k in range(SNAPSHOTS_KEPT + 2):
        ds.snapshot(WindowSpec(period="1000s"), cutoff=150.0 + k, now=150.0 + k)
    assert ds.snapshots.positions(first.id) is None  # no longer kept: read again, it is rebuilt as of its cutoff
    again = ds.read_snapshot(first)
    assert len(again) == len(rows) == 100 and again["_time"].tolist() == rows["_time"].tolist()
    assert ds.snapshot(WindowSpec(period="1000s"), cutoff=150.0, now=150.0).rows == 150


def test_a_window_over_a_long_history_reads_back_as_far_as_a_row_of_it_can_be(tmp_path: Path) -> None:
    """A snapshot reads only the newest rows when no older row can be in its window, yet finds an old row
    whose time is late (and skips a late-ingested row whose time is old), as a scan of all rows would."""
    ds = store(tmp_path)
    n, each = 300_000, 50_000
    times = np.arange(n, dtype=float)
    times[10] = n + 5.0  # ingested first, carrying the latest time of all
    times[n - 100:] -= 200_000  # ingested last, carrying old times
    frame = make_frame(n, seed=3).assign(t=times)
    arrived = np.repeat(np.arange(0, n, each) + each + 10.0, each)  # batch b arrives after its rows' times
    for i in range(0, n, each):
        ds.ingest(frame.iloc[i:i + each], now=arrived[i], source="s", batch_id=f"b{i}")

    def scanned(window: WindowSpec, cutoff: float) -> np.ndarray:
        every = np.arange(ds.rows)
        t = ds.view.times[every]
        ok = (t <= cutoff) & (ds.view.label_times[every] <= cutoff) & (arrived <= cutoff)
        if window.period is not None:
            ok &= t > cutoff - float(window.period.rstrip("s"))
        chosen = every[ok][np.argsort(t[ok], kind="stable")]
        return chosen[-window.rows:] if window.rows is not None else chosen

    cases = [(WindowSpec(rows=20_000), float(n + 10)), (WindowSpec(rows=20_000), float(n - 50_000)),
             (WindowSpec(period="30000s"), float(n + 10)), (WindowSpec(period="250000s"), float(n))]
    for window, cutoff in cases:
        snap = ds.snapshot(window, cutoff=cutoff, now=cutoff)
        assert np.array_equal(ds.snapshots.positions(snap.id), scanned(window, cutoff)), (window, cutoff)
    newest = ds.snapshots.positions(ds.snapshot(WindowSpec(rows=20_000), cutoff=n + 10.0, now=n + 10.0).id)
    assert newest is not None
    assert 10 in newest and not set(range(n - 100, n)) & set(newest.tolist())


def test_old_rows_leave_memory_and_are_read_back_from_their_files(tmp_path: Path) -> None:
    """Past the view's byte budget the oldest segments are let go; a window over them reads them back from the
    batches' Parquet files, row for row what a store holding everything gives, and a window of recent rows
    reads no file."""
    frames = [make_frame(20_000, seed=i, t0=20_000 * i) for i in range(6)]
    stores = []
    for name, budget in (("small", 1_000_000), ("all", 1 << 40)):
        meta, blobs = open_stores(tmp_path / name, durable=False)
        ds = DataStore("t", DataSpec(label="y", time="t"), meta, blobs, view_bytes=budget)
        for i, f in enumerate(frames):
            ds.ingest(f, now=float(120_000 + i), source="s", batch_id=f"b{i}")
        stores.append(ds)
    small, everything = stores
    segs = small.view.segments()
    assert not segs[0].held and segs[-1].held and all(s.held for s in everything.view.segments())
    assert sum(s.bytes for s in segs if s.held) <= 1_000_000 or sum(s.held for s in segs) == 1
    recent = small.snapshot(WindowSpec(rows=5_000), cutoff=200_000.0, now=200_000.0)
    assert len(small.read_snapshot(recent)) == 5_000 and small.segments_read == 0
    for window in (WindowSpec(), WindowSpec(period="70000s")):
        a, b = (ds.read_snapshot(ds.snapshot(window, cutoff=200_000.0, now=200_000.0)) for ds in stores)
        pd.testing.assert_frame_equal(a, b)
    assert small.segments_read > 0 and everything.segments_read == 0
    again = DataStore("t", small.spec, small.meta, small.blobs, view_bytes=1_000_000)  # reopened: bounded too
    assert not again.view.segments()[0].held and again.rows == small.rows


def test_a_streamed_blob_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    from freshloop.store.blobs import LocalBlobStore

    blobs = LocalBlobStore(tmp_path, durable=True)
    with blobs.open_write("batches/a.bin") as f:
        f.write(b"first half ")
        assert not blobs.exists("batches/a.bin")  # nothing visible while it is written
        f.write(b"second half")
    assert blobs.get_bytes("batches/a.bin") == b"first half second half"
    with pytest.raises(RuntimeError, match="writer failed"), blobs.open_write("batches/b.bin") as f:
        f.write(b"half")
        raise RuntimeError("writer failed")
    assert not blobs.exists("batches/b.bin")
    assert sorted(p.name for p in (tmp_path / "batches").iterdir()) == ["a.bin"]  # no temp file left behind


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from([0.0, 1.0, 2.0, np.nan]), st.sampled_from([0.5, -0.0, 0.0, np.nan]),
                               st.sampled_from(["a", "b", None])), min_size=2, max_size=40),
       spread=st.booleans())
def test_duplicates_found_through_the_time_column_are_those_of_a_full_comparison(
        rows: list[tuple[float, float, str | None]], spread: bool) -> None:
    from freshloop.data.validate import _duplicated

    frame = pd.DataFrame(rows, columns=["_time", "x", "c"])
    if spread:  # mostly distinct times, a few shared: the narrowed path compares only the shared ones
        frame["_time"] = np.where(np.arange(len(frame)) % 3 == 0, frame["_time"], np.arange(len(frame)) + 10.0)
    full = _duplicated(frame)
    assert _duplicated(frame, "_time").tolist() == full.tolist()

    def same(a: object, b: object) -> bool:  # equal values (0.0 == -0.0), or both missing
        return bool(pd.isna(a) and pd.isna(b)) or (not pd.isna(a) and not pd.isna(b) and a == b)

    recs = list(frame.itertuples(index=False))
    expected = [any(all(map(same, recs[i], recs[j])) for j in range(i)) for i in range(len(recs))]
    assert full.tolist() == expected  # the comparison itself


def test_a_snapshot_leaves_out_rows_that_arrived_after_its_cutoff_even_when_their_labels_came_first(
        tmp_path: Path) -> None:
    ds = store(tmp_path)
    ds.ingest(make_frame(50), now=100.0, source="s", batch_id="lock")  # times 0..49, labelled on arrival
    future = ds.row_ids_for("s", "late", 1)[0].rpartition(":")[0]
    assert ds.ingest_labels([f"{future}:{i}" for i in range(5)], [1, 0, 1, 0, 1], now=110.0).unknown_row_ids == 5
    ds.ingest(make_frame(5, seed=2, t0=10).assign(y=None), now=130.0, source="s", batch_id="late")  # old times
    ds.ingest(make_frame(5, seed=4, t0=20), now=140.0, source="s", batch_id="later")
    # at 120 the labels had come but not their rows: those rows are not in it, though their times are old
    for cutoff, rows in ((105.0, 50), (120.0, 50), (135.0, 55), (150.0, 60)):
        snap = ds.snapshot(WindowSpec(), cutoff=cutoff, now=cutoff)
        assert snap.rows == rows, (cutoff, snap.rows)
        assert (future in snap.batch_ids) == (cutoff >= 130.0)
    again = DataStore("t", ds.spec, ds.meta, ds.blobs)  # reopened: the same snapshots
    assert again.snapshot(WindowSpec(), cutoff=120.0, now=120.0).rows == 50
    assert again.snapshot(WindowSpec(rows=52), cutoff=135.0, now=135.0).label_batch_ids == \
        ds.snapshot(WindowSpec(rows=52), cutoff=135.0, now=135.0).label_batch_ids


def test_quarantined_rows_are_kept_as_submitted_from_a_frame_and_from_json(tmp_path: Path) -> None:
    """What "as submitted" means: a file's bytes byte for byte, and each quarantined row's cells as they
    came (a column that mixes numbers and text keeps each cell's text)."""
    ds = store(tmp_path)
    ds.ingest(make_frame(40), now=1.0, source="s", batch_id="warm")
    frame = make_frame(3, seed=2, t0=40).astype({"x1": object})
    frame.loc[1, "x1"] = "abc"
    res = ds.ingest(frame, now=2.0, source="s", batch_id="frame")
    q = ds.read_quarantine(res.quarantine_id or "")
    assert q["_row"].tolist() == [1] and q["x1"].iloc[0] == "abc"
    assert q["x2"].iloc[0] == frame.loc[1, "x2"] and q["c"].iloc[0] == frame.loc[1, "c"]  # the other cells exact
    path = tmp_path / "rows.jsonl"
    raw = (b'{"t": 50, "x1": 0.25, "x2": 1.5, "c": "a", "y": 1}\n'
           b'{"t": 51, "x1": "n/a", "x2": -0.5, "c": "b", "y": 0}\n')
    path.write_bytes(raw)
    res = ds.ingest_file(str(path), now=3.0)
    assert (res.accepted, res.quarantined) == (1, 1)
    raw_path = ds.meta.batches.get(res.batch_id).raw_path
    assert raw_path is not None and ds.blobs.get_bytes(raw_path) == raw
    q = ds.read_quarantine(res.quarantine_id or "")
    assert (q["x1"].iloc[0], q["x2"].iloc[0], q["c"].iloc[0]) == ("n/a", -0.5, "b")


def test_columns_the_schema_does_not_know_are_named_with_their_fate(make_loop) -> None:  # type: ignore[no-untyped-def]
    """A DataFrame's unknown column is not stored, and the answer says so (a server's JSON rows keep theirs, in
    the submission: tests/test_hostile_input.py); a column left out when the schema was locked is not named."""
    loop, _, _ = make_loop()
    first = make_frame(300).assign(order_id=[f"o-{i}" for i in range(300)])  # an id: left out at lock
    assert loop.ingest(first).warnings == []
    res = loop.ingest(make_frame(50, seed=1, t0=300).assign(order_id="o", note="from the app"))
    assert res.warnings == ["column 'note': not in the schema, so not stored"]
    loop.close()
