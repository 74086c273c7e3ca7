"""The gate: candidate and champion judged on the same most-recent rows.

A paired bootstrap over per-row scores gives a confidence interval on the difference in the
metric's better direction; optional slice checks guard subgroups. The result is a :class:`Verdict`
listing every check with its evidence; a rejected candidate never serves.

Examples
--------
>>> import numpy as np
>>> from freshloop.evaluate.metrics import get_metric
>>> rng = np.random.default_rng(0)
>>> champ = (rng.random(400) < 0.70).astype(float)
>>> cand = np.maximum(champ, (rng.random(400) < 0.2).astype(float))  # right wherever champ is, and more
>>> d = paired_bootstrap(cand, champ, get_metric("accuracy"), n=400, confidence=0.9, seed=0)
>>> round(d.delta, 3), d.low > 0
(0.065, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..errors import InvalidValueError
from .metrics import Metric

__all__ = ["Check", "Difference", "GateRule", "Verdict", "judge", "paired_bootstrap"]


class GateRule(Protocol):
    """What the gate reads of its rule: the spec's ``gate`` section (the spec imports this package to name the
    metrics it accepts, so the gate names only the fields it reads)."""

    @property
    def min_holdout_rows(self) -> int: ...
    @property
    def bootstrap(self) -> int: ...
    @property
    def confidence(self) -> float: ...
    @property
    def min_improvement(self) -> float: ...
    @property
    def max_regression(self) -> float: ...
    @property
    def slices(self) -> list[str]: ...


@dataclass(frozen=True)
class Difference:
    candidate: float
    champion: float
    delta: float  # candidate better by this much (metric direction applied)
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    metric: str
    checks: tuple[Check, ...]
    candidate_score: float
    champion_score: float | None
    holdout_rows: int

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        return "; ".join(c.detail for c in (failed or self.checks))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reason"] = self.reason
        return d


def paired_bootstrap(cand_rows: np.ndarray, champ_rows: np.ndarray, metric: Metric, *, n: int,
                     confidence: float, seed: int) -> Difference:
    """CI of (candidate − champion) in the better direction, resampling rows jointly."""
    k = len(cand_rows)
    c_score = float(metric.aggregate(cand_rows))
    h_score = float(metric.aggregate(champ_rows))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, size=(n, k))
    diffs = np.asarray(metric.aggregate(cand_rows[idx], axis=1)) - np.asarray(metric.aggregate(champ_rows[idx], axis=1))
    if not metric.bigger_is_better:
        diffs = -diffs
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return Difference(c_score, h_score, metric.better(c_score, h_score), float(lo), float(hi), k)


def judge(spec: GateRule, metric: Metric, holdout: pd.DataFrame, y: np.ndarray, cand_rows: np.ndarray,
          champ_rows: np.ndarray | None, baseline_rows: np.ndarray | None, *, seed: int,
          champion_seen: int = 0) -> Verdict:
    """Apply the gate's checks to per-row scores already computed on ``holdout``: against the champion's,
    or without a champion against a constant baseline's (``baseline_rows``, needed only then).
    ``champion_seen`` counts the newest rows kept out of the holdout because the champion was fitted on them."""
    checks: list[Check] = []
    n = len(y)
    enough = n >= spec.min_holdout_rows
    left_out = (f"; {champion_seen} newer rows the champion was fitted on left out, so neither model is scored "
                "on rows it learned") if champion_seen else ""
    checks.append(Check("holdout_rows", enough, f"{n} holdout rows (need >= {spec.min_holdout_rows}){left_out}",
                        {"rows": n, "min": spec.min_holdout_rows, "champion_seen_rows": champion_seen}))
    cand_score = float(metric.aggregate(cand_rows)) if n else float("nan")
    if champ_rows is None:
        if baseline_rows is None:
            raise InvalidValueError("judge: baseline_rows are needed when there is no champion", field="baseline_rows")
        base = paired_bootstrap(cand_rows, baseline_rows, metric, n=spec.bootstrap, confidence=spec.confidence,
                                seed=seed) if n else None
        ok = base is not None and base.delta > 0
        checks.append(Check("beats_baseline", ok,
                            f"{metric.name} {cand_score:.4f} vs constant baseline "
                            f"{base.champion if base else float('nan'):.4f}",
                            asdict(base) if base else {}))
        return Verdict(enough and ok, metric.name, tuple(checks), cand_score, None, n)
    d = paired_bootstrap(cand_rows, champ_rows, metric, n=spec.bootstrap, confidence=spec.confidence, seed=seed)
    ok = d.delta >= spec.min_improvement and d.low >= -spec.max_regression
    checks.append(Check(
        "vs_champion", ok,
        f"{metric.name} {d.candidate:.4f} vs champion {d.champion:.4f}: better by {d.delta:+.4f} "
        f"({spec.confidence:.0%} CI {d.low:+.4f} to {d.high:+.4f}; need >= {spec.min_improvement:+.4f} "
        f"and CI low >= {-spec.max_regression:+.4f})", asdict(d)))
    for col in spec.slices:
        if col not in holdout:
            checks.append(Check(f"slice:{col}", False, f"slice column {col!r} not in the holdout", {}))
            continue
        worst: dict[str, Any] = {}
        slice_ok = True
        for value, idx in holdout.groupby(holdout[col].astype(str)).indices.items():
            if len(idx) < spec.min_holdout_rows:
                continue
            delta = metric.better(float(metric.aggregate(cand_rows[idx])), float(metric.aggregate(champ_rows[idx])))
            if delta < -spec.max_regression:
                slice_ok = False
            if not worst or delta < worst["delta"]:
                worst = {"value": value, "delta": delta, "rows": len(idx)}
        checks.append(Check(f"slice:{col}", slice_ok,
                            f"worst slice {col}={worst.get('value')} by {worst.get('delta', 0):+.4f}"
                            if worst else f"no slice of {col} has >= {spec.min_holdout_rows} rows", worst))
    passed = all(c.passed for c in checks)
    return Verdict(passed, metric.name, tuple(checks), d.candidate, d.champion, n)
