"""Rollout of a gated version: immediate, shadow, or canary steps, with automatic rollback.

The same analysis runs in replay and production: at every step the candidate and the champion
are compared on matured labels of rows served during the step (both models score every row, so
the comparison is paired), with the gate's statistics. Too few labels is never success: a step
waits up to its deadline, then aborts.

Examples
--------
>>> r = Rollout("r1", version=2, champion_version=1, strategy="canary", steps=(5.0, 50.0, 100.0), started_at=0.0)
>>> r.share, route_to_candidate(["a", "b", "c", "d"], 50.0).tolist()
(5.0, [True, True, False, True])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..clock import parse_duration
from ..evaluate.gate import paired_bootstrap
from ..evaluate.metrics import Metric
from ..spec import GateSpec, RolloutSpec
from ..store.entities import RolloutRecord

__all__ = ["Action", "Rollout", "Status", "StepOutcome", "Strategy", "analyze_step", "route_to_candidate"]

Strategy = Literal["shadow", "canary"]  # an immediate promotion has no rollout
Status = Literal["running", "awaiting_approval", "promoted", "rolled_back"]
Action = Literal["wait", "continue", "promote", "abort"]  # what a step's analysis says to do


def route_to_candidate(keys: list[str], share: float) -> np.ndarray:
    """Deterministic split by key: the same key always lands on the same side for a given share."""
    if share <= 0:
        return np.zeros(len(keys), dtype=bool)
    if share >= 100:
        return np.ones(len(keys), dtype=bool)
    buckets = np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=4).digest(), "big") % 10000
                        for k in keys])
    return buckets < share * 100


@dataclass
class Rollout:
    id: str
    version: int
    champion_version: int | None
    strategy: Strategy
    steps: tuple[float, ...]
    started_at: float
    step: int = 0
    step_started_at: float = 0.0
    status: Status = "running"
    evidence: list[dict[str, Any]] = field(default_factory=list)
    cand_scores: list[float] = field(default_factory=list)
    champ_scores: list[float] = field(default_factory=list)
    errors: int = 0  # rows the candidate failed to predict during this step
    last_error: str = ""
    cand_seconds: float = 0.0  # predict time of each side on the same requests during this step
    champ_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.step_started_at = self.step_started_at or self.started_at

    @property
    def share(self) -> float:
        if self.strategy == "shadow" or self.status == "awaiting_approval":
            return 0.0
        return self.steps[self.step]

    @property
    def active(self) -> bool:
        return self.status in ("running", "awaiting_approval")

    def observe(self, cand: float, champ: float) -> None:
        self.cand_scores.append(cand)
        self.champ_scores.append(champ)

    def observe_latency(self, cand: float, champ: float) -> None:
        self.cand_seconds += cand
        self.champ_seconds += champ

    def next_step(self, now: float) -> None:
        self.step += 1
        self.step_started_at = now
        self.cand_scores, self.champ_scores = [], []
        self.errors, self.last_error = 0, ""
        self.cand_seconds = self.champ_seconds = 0.0

    def to_record(self, now: float) -> RolloutRecord:
        """As the metadata store keeps it (what a restart reads back, with :meth:`from_record`)."""
        return RolloutRecord(id=self.id, version=self.version, champion_version=self.champion_version,
                             strategy=self.strategy, status=self.status, step=self.step, started_at=self.started_at,
                             step_started_at=self.step_started_at, updated_at=now, evidence=self.evidence)

    @classmethod
    def from_record(cls, rec: RolloutRecord, steps: tuple[float, ...]) -> Rollout:
        """A stored rollout, with the spec's ``steps`` (the evidence its step gathered is added by the caller)."""
        return cls(rec.id, rec.version, rec.champion_version, rec.strategy,  # type: ignore[arg-type]
                   steps, rec.started_at, rec.step, rec.step_started_at, rec.status,  # type: ignore[arg-type]
                   list(rec.evidence))


@dataclass(frozen=True)
class StepOutcome:
    action: Action
    detail: str
    evidence: dict[str, Any]


def analyze_step(r: Rollout, spec: RolloutSpec, gate: GateSpec, metric: Metric, now: float,
                 seed: int = 0) -> StepOutcome:
    n = len(r.cand_scores)
    waited = now - r.step_started_at
    if r.errors:
        return StepOutcome("abort", f"the candidate failed to predict {r.errors} rows ({r.last_error})",
                           {"errors": r.errors, "error": r.last_error})
    if spec.max_latency_ratio is not None and r.champ_seconds > 0:
        ratio = r.cand_seconds / r.champ_seconds
        if ratio > spec.max_latency_ratio:
            return StepOutcome("abort", f"the candidate predicts {ratio:.2f}x slower than the champion (rule: "
                                        f"rollout.max_latency_ratio {spec.max_latency_ratio})",
                               {"latency_ratio": ratio})
    if r.strategy == "shadow" and spec.shadow_duration is not None and \
            waited < parse_duration(spec.shadow_duration):
        return StepOutcome("wait", f"shadow runs for {spec.shadow_duration}", {"labels": n})
    deadline = parse_duration(spec.step_deadline)
    if n < spec.min_labels:
        if waited >= deadline:
            return StepOutcome("abort", f"inconclusive: {n} matured labels < {spec.min_labels} after the "
                                        f"{spec.step_deadline} step deadline", {"labels": n})
        return StepOutcome("wait", f"{n}/{spec.min_labels} matured labels", {"labels": n})
    d = paired_bootstrap(np.array(r.cand_scores), np.array(r.champ_scores), metric, n=gate.bootstrap,
                         confidence=gate.confidence, seed=seed)
    ev = {"labels": n, "candidate": d.candidate, "champion": d.champion, "delta": d.delta, "low": d.low,
          "high": d.high, "share": r.share}
    summary = (f"{metric.name} {d.candidate:.4f} vs champion {d.champion:.4f} on {n} labels "
               f"(better by {d.delta:+.4f}, CI {d.low:+.4f} to {d.high:+.4f})")
    if d.delta < spec.min_improvement or d.low < -spec.max_regression:
        return StepOutcome("abort", "worse than the champion: " + summary, ev)
    last = r.strategy == "shadow" or r.step >= len(r.steps) - 1
    return StepOutcome("promote" if last else "continue", summary, ev)
