"""The registry: versions verified by hash, aliases moved by compare-and-set, recent models kept."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest

from freshloop.errors import ConflictError, IntegrityError
from freshloop.registry import Registry
from freshloop.store import open_stores
from freshloop.train import ModelBundle, train_candidate

from .conftest import make_frame, train_request


def test_registry_verifies_hashes_and_moves_aliases_by_compare_and_set(tmp_path: Path, db_url: str | None) -> None:
    meta, blobs = open_stores(tmp_path, db_url, durable=False)
    reg = Registry(meta, blobs)
    f = make_frame(100)
    bundle = train_candidate(train_request(f)).bundle
    v1 = reg.register(bundle, run_id="r1", verdict_id="v1", lineage={"snapshot_id": "s"}, now=1.0)
    v2 = reg.register(bundle, run_id="r2", verdict_id="v2", lineage={"snapshot_id": "s2"}, now=2.0)
    assert (v1.version, v2.version) == (1, 2) and v1.artifact_sha256 == v2.artifact_sha256
    data = blobs.get_bytes(v1.artifact_path)
    assert hashlib.sha256(data).hexdigest() == v1.artifact_sha256
    fresh = Registry(meta, blobs)
    assert isinstance(fresh.load(1), ModelBundle)
    # tamper with the artifact: a fresh registry refuses to unpickle it
    blobs.put_bytes(v1.artifact_path, pickle.dumps({"evil": True}))
    with pytest.raises(IntegrityError, match="does not match"):
        Registry(meta, blobs).load(1)
    rev = reg.revision("champion")
    reg.set_alias("champion", 1, actor="a", reason="first", now=3.0, expected_revision=rev)
    with pytest.raises(ConflictError, match="moved concurrently"):
        reg.set_alias("champion", 2, actor="b", reason="lost race", now=4.0, expected_revision=rev)
    reg.set_alias("champion", 2, actor="c", reason="second", now=5.0)
    hist = reg.history("champion")
    assert [(m.old_version, m.new_version, m.actor) for m in hist] == [(None, 1, "a"), (1, 2, "c")]
    meta.close()


def test_the_registry_keeps_only_recent_models_in_memory(tmp_path: Path) -> None:
    meta, blobs = open_stores(tmp_path)
    reg = Registry(meta, blobs)
    versions = [reg.register({"model": i}, run_id=f"r{i}", verdict_id=None, lineage={"i": i}, now=float(i)).version
                for i in range(12)]
    assert versions == list(range(1, 13)) and reg.get(12).lineage == {"i": 11}
    assert len(reg.loaded()) == 8 and 1 not in reg.loaded()
    assert reg.load(1) == {"model": 0}  # read back from the store, its checksum verified
    assert reg.loaded()[-1] == 1 and len(reg.loaded()) == 8
