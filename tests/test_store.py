"""The metadata store: migrations, old rows read by the new code, writers sharing one database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from freshloop.errors import ConflictError
from freshloop.store import open_stores
from freshloop.store.tables import metadata


def test_migrations_match_the_tables(tmp_path: Path, db_url: str | None) -> None:
    meta, _ = open_stores(tmp_path, db_url, durable=False)
    with meta.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    meta.close()
    assert diff == []


def test_decisions_stored_before_their_fields_existed_get_them_from_their_reasons(tmp_path: Path) -> None:
    """A store written before revision 0004 opens with each decision's triggers and guard filled in, so a
    loop opened on it finds a pending follow-up (it reads the triggers, not the words)."""
    import sqlalchemy as sa
    from alembic import command

    from freshloop.store.sql import _alembic_config

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        old = [("retrain", ["drift: 1 feature(s) drifted", "follow-up: 250 labels since the change"]),
               ("retrain", ["bootstrap: no champion yet; 80 labeled rows"]),
               ("skip", ["guard: 10 new labeled rows < min_new_labels 100 (would retrain for volume: 300)"]),
               ("skip", ["rollout of version 4 in progress (would retrain for drift: 2 feature(s) drifted)"]),
               ("skip", ["no trigger configured (never retrains)"]), ("skip", ["cooldown: trained 1 h ago < 7 d"])]
        for i, (kind, reasons) in enumerate(old):
            conn.execute(sa.text("INSERT INTO decisions (at, kind, reasons) VALUES (:at, :kind, :reasons)"),
                         {"at": float(i), "kind": kind, "reasons": json.dumps(reasons)})
    engine.dispose()
    meta, _ = open_stores(tmp_path, f"sqlite:///{tmp_path / 'old.db'}", durable=False)
    got = [(d.triggers, d.guard) for d in meta.decisions.list()]
    meta.close()
    assert got == [(["drift", "follow-up"], None), (["bootstrap"], None), ([], "min_new_labels"),
                   ([], "rollout in progress"), ([], "never"), ([], "cooldown")]


def test_versions_and_alias_moves_from_two_processes_sharing_a_store_never_collide(tmp_path: Path,
                                                                                   db_url: str | None) -> None:
    """Two writers (two stores on one database, as two servers would open it) register versions and move
    one alias at once: every version gets its own number, and each revision of the alias has one winner."""
    from concurrent.futures import ThreadPoolExecutor

    stores = [open_stores(tmp_path, db_url, durable=False)[0] for _ in range(2)]
    row = dict(run_id="r", verdict_id="v", artifact_sha256="0" * 64, artifact_path="p", artifact_hmac=None,
               lineage={}, created_at=1.0)

    def register(meta: Any) -> list[int]:
        return [meta.versions.add(**row).version for _ in range(25)]

    with ThreadPoolExecutor(2) as pool:
        numbers = [v for got in pool.map(register, stores) for v in got]
    assert sorted(numbers) == list(range(1, 51))

    def move(meta: Any, version: int) -> int:
        won = 0
        for _ in range(25):
            rev = meta.versions.alias("champion")[1]
            try:
                meta.versions.move_alias("champion", version, expected_revision=rev, actor="a", reason="race", at=2.0)
                won += 1
            except ConflictError:
                pass
        return won

    with ThreadPoolExecutor(2) as pool:
        wins = sum(pool.map(move, stores, [1, 2]))
    history = stores[0].versions.alias_history("champion")
    assert len(history) == wins and stores[0].versions.alias("champion")[1] == wins
    assert [m.old_version for m in history[1:]] == [m.new_version for m in history[:-1]]  # one unbroken chain
    for meta in stores:
        meta.close()


def test_a_log_limited_to_n_rows_gives_its_newest_n_in_the_order_written(tmp_path: Path) -> None:
    meta, _ = open_stores(tmp_path, durable=False)
    for i in range(5):
        meta.events.add(float(i), "a" if i % 2 else "b", "t", f"e{i}", {})
    assert [e.reason for e in meta.events.list(limit=2)] == ["e3", "e4"]
    assert [e.reason for e in meta.events.list("b", limit=2)] == ["e2", "e4"]
    assert [e.reason for e in meta.events.list()] == [f"e{i}" for i in range(5)]
    meta.close()
