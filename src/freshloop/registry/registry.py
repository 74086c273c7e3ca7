"""The model registry: immutable versions with lineage, content-addressed artifacts, and aliases.

Artifacts are stored under their sha256 and signed with a key kept outside the store
(:mod:`freshloop.store.keys`); before every load both are checked, so the registry only ever unpickles
bytes it signed itself, whoever could write the database or the files. Aliases (``champion``, ``candidate`` …) move by
compare-and-set on a revision number, and every move is kept in the alias history.

Examples
--------
>>> import tempfile
>>> from freshloop.store import open_stores
>>> reg = Registry(*open_stores(tempfile.mkdtemp(), durable=False))
>>> v = reg.register({"weights": [1, 2]}, run_id="r1", verdict_id=None, lineage={"snapshot_id": "s1"}, now=0.0)
>>> reg.load(v.version)
{'weights': [1, 2]}
>>> reg.set_alias("champion", v.version, actor="test", reason="first", now=1.0).new_version
1
>>> reg.set_alias("champion", None, actor="b", reason="stale", now=2.0, expected_revision=0)
Traceback (most recent call last):
...
freshloop.errors.ConflictError: alias 'champion' moved concurrently (revision 1, expected 0); re-read it and \
try again.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections import OrderedDict
from typing import Any

from ..errors import IntegrityError
from ..store import AliasMove, BlobStore, MetadataStore, ModelVersion
from ..store.keys import sign

__all__ = ["ModelVersion", "Registry"]

_KEEP_LOADED = 8  # models kept in memory after registering or loading them


class Registry:
    def __init__(self, meta: MetadataStore, blobs: BlobStore) -> None:
        self.meta = meta
        self.blobs = blobs
        # models registered or loaded lately, newest last: a promotion right after registering, or a rollback
        # to a recent version, skips the read and the checksum; bounded, so a long-running server does not
        # keep every model it ever trained
        self._loaded: OrderedDict[int, Any] = OrderedDict()

    def register(self, model: Any, *, run_id: str, verdict_id: str | None, lineage: dict[str, Any],
                 now: float) -> ModelVersion:
        data = pickle.dumps(model, protocol=5)
        sha = hashlib.sha256(data).hexdigest()
        path = f"artifacts/sha256/{sha[:2]}/{sha}"
        if not self.blobs.exists(path):
            self.blobs.put_bytes(path, data)
        mv = self.meta.versions.add(run_id=run_id, verdict_id=verdict_id, artifact_sha256=sha, artifact_path=path,
                                    artifact_hmac=sign(data), lineage=lineage, created_at=now)
        self._keep(mv.version, model)
        return mv

    def _keep(self, version: int, model: Any) -> None:
        self._loaded[version] = model
        self._loaded.move_to_end(version)
        while len(self._loaded) > _KEEP_LOADED:
            self._loaded.popitem(last=False)

    def get(self, version: int) -> ModelVersion:
        return self.meta.versions.get(version)

    def versions(self) -> list[ModelVersion]:
        return self.meta.versions.list()

    def load(self, version: int) -> Any:
        """The model of ``version``, after checking its bytes against the recorded sha256."""
        if version in self._loaded:
            self._loaded.move_to_end(version)
            return self._loaded[version]
        mv = self.get(version)
        expected = f"artifacts/sha256/{mv.artifact_sha256[:2]}/{mv.artifact_sha256}"
        if mv.artifact_path != expected:
            raise IntegrityError(f"version {version}: artifact path {mv.artifact_path!r} is not the content "
                                 f"address the registry writes.", field="artifact_path", value=mv.artifact_path)
        data = self.blobs.get_bytes(mv.artifact_path)
        actual = hashlib.sha256(data).hexdigest()
        if actual != mv.artifact_sha256:
            raise IntegrityError(f"version {version}: artifact sha256 {actual[:12]}… does not match the "
                                 f"registry's {mv.artifact_sha256[:12]}…; refusing to load it.",
                                 field="artifact_sha256", rule="hash verified before load", value=actual)
        if not hmac.compare_digest(sign(data), mv.artifact_hmac or ""):
            raise IntegrityError(f"version {version}: its artifact is not signed with this machine's artifact key "
                                 "(rule: only artifacts the registry signed are unpickled); refusing to load it. "
                                 "A version registered on another machine loads with that machine's key in "
                                 "FRESHLOOP_ARTIFACT_KEY.", field="artifact_hmac", rule="signed artifact",
                                 value=version)
        model = pickle.loads(data)  # noqa: S301 - bytes this registry signed, with a key the store does not hold
        self._keep(version, model)
        return model

    def loaded(self) -> tuple[int, ...]:
        """The versions whose models are held in memory, the least recently used first."""
        return tuple(self._loaded)

    def forget(self, version: int) -> None:
        """Drop a version from the in-process cache (it stays in the store)."""
        self._loaded.pop(version, None)

    def alias(self, name: str) -> int | None:
        return self.meta.versions.alias(name)[0]

    def aliases(self) -> dict[str, int | None]:
        return self.meta.versions.aliases()

    def set_alias(self, name: str, version: int | None, *, actor: str, reason: str, now: float,
                  expected_revision: int | None = None) -> AliasMove:
        """Point ``name`` at ``version`` (or clear it); ``expected_revision`` makes it a compare-and-set."""
        if version is not None:
            self.get(version)  # NotFound for an unknown version
        rev = self.meta.versions.alias(name)[1] if expected_revision is None else expected_revision
        return self.meta.versions.move_alias(name, version, expected_revision=rev, actor=actor, reason=reason, at=now)

    def revision(self, name: str) -> int:
        return self.meta.versions.alias(name)[1]

    def history(self, name: str | None = None) -> list[AliasMove]:
        return self.meta.versions.alias_history(name)
