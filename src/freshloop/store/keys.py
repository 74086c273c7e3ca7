"""The key that signs model artifacts, kept outside the store.

A model artifact is a pickle, and unpickling runs code. Its sha256 sits in the metadata store beside
everything else, so write access to that database would be code execution at the next load. Each
artifact is therefore signed when it is registered (an HMAC-SHA256 of its bytes) with a key the store
does not hold, and :meth:`freshloop.registry.Registry.load` unpickles only bytes whose signature this
key makes. The key is ``FRESHLOOP_ARTIFACT_KEY`` (64 hex digits: for servers and workers on several
machines sharing one database), else the file ``FRESHLOOP_KEY_FILE`` or ``~/.config/freshloop/artifact.key``,
made on first use (``freshloop init`` makes it) with 32 random bytes, readable by its user alone (0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pickle
import secrets
import tempfile
from pathlib import Path
from typing import Any

from ..errors import SpecError

__all__ = ["artifact_key", "key_file", "sign", "signed_pickle", "unpickle_signed"]


def key_file() -> Path:
    if os.environ.get("FRESHLOOP_KEY_FILE"):
        return Path(os.environ["FRESHLOOP_KEY_FILE"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "freshloop" / "artifact.key"


def artifact_key() -> bytes:
    """This machine's signing key (made on first use, 0600; see the module's notes)."""
    given = os.environ.get("FRESHLOOP_ARTIFACT_KEY")
    if given:
        try:
            key = bytes.fromhex(given)
        except ValueError:
            key = b""
        if len(key) < 32:
            raise SpecError("FRESHLOOP_ARTIFACT_KEY: must be at least 64 hex digits (rule: a 256-bit key).",
                            field="FRESHLOOP_ARTIFACT_KEY")
        return key
    path = key_file()
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-key-")  # mkstemp makes it 0600
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
        os.close(fd)
        with contextlib.suppress(FileExistsError):  # of two processes making it at once, the first wins
            os.link(tmp, path)  # whole or not at all
    finally:
        Path(tmp).unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def sign(data: bytes, key: bytes | None = None) -> str:
    return hmac.new(key if key is not None else artifact_key(), data, hashlib.sha256).hexdigest()


def signed_pickle(obj: Any) -> bytes:
    """``obj`` pickled, behind its signature: the state a loop keeps between processes (an online model)."""
    data = pickle.dumps(obj, protocol=5)
    return sign(data).encode() + b"\n" + data


def unpickle_signed(raw: bytes) -> Any | None:
    """What :func:`signed_pickle` made, or None when this machine's key did not sign it (not unpickled)."""
    signature, _, data = raw.partition(b"\n")
    if not hmac.compare_digest(sign(data).encode(), signature):
        return None
    return pickle.loads(data)  # noqa: S301 - bytes this machine signed, with a key the store does not hold
