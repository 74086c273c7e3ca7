"""Training a candidate: full, warm start or online; deterministic given snapshot rows and seed.

:func:`train_candidate` is a plain function of picklable inputs so any :class:`Executor` can run it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pickle
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..data.numbers import LARGEST, past_largest
from ..data.schema import Schema
from ..errors import TrainingFailed
from ..evaluate.metrics import balance_weights, class_shares
from .model import ModelBundle

__all__ = ["Candidate", "TrainRequest", "TrainingFailed", "age_weights", "package_versions", "train_candidate"]


@dataclass(frozen=True)
class TrainRequest:
    run_key: str
    snapshot_id: str
    schema: Schema
    estimator: str
    params: dict[str, Any]
    mode: str  # full | warm_start | online
    seed: int
    scale: bool | None
    frame: pd.DataFrame = field(repr=False)  # training rows with the label in ``_label``
    base: ModelBundle | None = field(default=None, repr=False)  # the champion, for warm start
    half_life: float | None = None  # rows: a full fit weighs each row by age, halving every half_life rows back
    # a full fit weighs each row by the inverse of its value's share in each of these columns (the label's: rare
    # classes count more; a feature's: rare slices do)
    balance: tuple[str, ...] = ()


def age_weights(n: int, half_life: float) -> np.ndarray:
    """Weights of ``n`` rows in time order, oldest first: the newest weighs 1, one ``half_life`` rows older 1/2.

    >>> age_weights(5, 2.0).round(3).tolist()
    [0.25, 0.354, 0.5, 0.707, 1.0]
    """
    return np.power(0.5, np.arange(n - 1, -1, -1, dtype=float) / half_life)


def _weights(req: TrainRequest, y: pd.Series) -> np.ndarray | None:
    weights = age_weights(len(y), req.half_life) if req.half_life else None
    for name in req.balance:
        column = y if name == req.schema.label else req.frame[name]
        weights = balance_weights(column) * (weights if weights is not None else 1.0)
    return weights


@dataclass
class Candidate:
    bundle: ModelBundle
    lineage: dict[str, Any]
    train_rows: int
    train_seconds: float


_VERSIONS: dict[str, str] | None = None


def package_versions() -> dict[str, str]:
    global _VERSIONS
    if _VERSIONS is None:
        found = {}
        for pkg in ("scikit-learn", "river", "numpy", "pandas", "scipy", "pyarrow"):
            try:
                found[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                found[pkg] = "absent"
        _VERSIONS = found
    return dict(_VERSIONS)


def _code_version() -> str:
    src = importlib.metadata.distribution("freshloop")
    files = src.files or []
    h = hashlib.sha256()
    for f in sorted(str(p) for p in files if str(p).endswith(".py")):
        try:
            h.update(Path(str(src.locate_file(f))).read_bytes())
        except OSError:
            continue
    return f"{__version__}+{h.hexdigest()[:12]}"


_CODE: str | None = None


def _culprits(frame: pd.DataFrame, schema: Schema) -> str:
    """The columns and rows of a training frame that a model's arithmetic cannot take: numbers infinite or past
    ±1e38 (validation quarantines them; rows stored before that rule may hold them). Empty if there are none."""
    found = []
    for f in schema.features:
        if f.kind != "numeric" or f.name not in frame.columns:
            continue
        values = pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(past_largest(values))
        if len(bad):
            rows = ", ".join(f"row {i}" + (f" (time {frame['_time'].iloc[i]:g})" if "_time" in frame else "") +
                             f" = {values[i]:g}" for i in bad[:3])
            more = ", …" if len(bad) > 3 else ""
            found.append(f"column {f.name!r}: {len(bad)} values past ±{LARGEST:g} ({rows}{more})")
    return "; ".join(found)


def train_candidate(req: TrainRequest) -> Candidate:
    global _CODE
    if _CODE is None:
        _CODE = _code_version()
    started = time.perf_counter()
    y = req.frame["_label"]
    if y.isna().any():
        raise TrainingFailed(f"snapshot {req.snapshot_id}: {int(y.isna().sum())} rows without labels")
    if len(req.frame) == 0:
        raise TrainingFailed(f"snapshot {req.snapshot_id}: no labeled rows")
    if req.schema.task == "classification" and y.nunique() < 2 and req.mode == "full":
        raise TrainingFailed(f"snapshot {req.snapshot_id}: only one class ({y.iloc[0]!r}) among "
                             f"{len(y)} rows; a classifier needs two")
    missing = [c for c in req.balance if c != req.schema.label and c not in req.frame]
    if missing:
        raise TrainingFailed(f"model.balance: {missing[0]!r} is not a column of the data (rule: the label or a "
                             f"column of the rows; columns: {', '.join(req.schema.feature_names)})")
    if req.mode in ("warm_start", "online") and req.base is not None:
        bundle: ModelBundle = pickle.loads(pickle.dumps(req.base))
        try:
            bundle.learn(req.frame, y)
        except ValueError as e:  # e.g. new rows without every class, for an ensemble grown on them
            raise TrainingFailed(f"snapshot {req.snapshot_id}: learning {len(y)} new rows into the champion: {e}"
                                 ) from None
    else:
        bundle = ModelBundle(req.schema, req.estimator, req.params, seed=req.seed, scale=req.scale)
        try:
            bundle.fit(req.frame, y, _weights(req, y))
        except ValueError as e:
            culprits = _culprits(req.frame, req.schema)
            raise TrainingFailed(f"snapshot {req.snapshot_id}: {e}" + (f" Caused by {culprits}." if culprits else "")
                                 ) from None
    seconds = time.perf_counter() - started
    lineage = {
        "run_key": req.run_key,
        "snapshot_id": req.snapshot_id,
        "estimator": req.estimator,
        "params": req.params,
        "mode": req.mode,
        "seed": req.seed,
        "train_rows": len(req.frame),
        "half_life": req.half_life,
        "balance": list(req.balance),
        "base": getattr(req.base, "version_", None),
        "packages": package_versions(),
        "code_version": _CODE,
        "trained_in": f"{socket.gethostname()}/{os.getpid()}",  # host/process: the executor's worker
    }
    if req.schema.task == "classification":
        # what the live rows of a metric scored by class weigh by
        lineage["class_shares"] = {k: round(v, 6) for k, v in class_shares(y).items()}
    return Candidate(bundle, lineage, len(req.frame), seconds)
