"""The policy: a pure ``decide(signals, state)`` returning ``Retrain`` or ``Skip`` with reasons.

Triggers compose by "any fires"; guards against thrashing come after: hysteresis for persistent
signals, a minimum of new labeled rows, a cooldown and a retrain budget.

Examples
--------
>>> from freshloop.monitor import Signals
>>> from freshloop.spec import policy_preset
>>> policy = Policy.from_spec(policy_preset("periodic:30d"))
>>> d = policy.decide(Signals(now=31 * 86400.0, last_trained_at=0.0, new_labels=900), PolicyState())
>>> type(d).__name__, d.reasons
('Retrain', ('schedule: 31 d since the last training >= every 30 d',))
>>> Policy.from_spec(policy_preset("never")).decide(Signals(now=1e9, last_trained_at=0.0), PolicyState())
Skip(reason='no trigger configured (never retrains)', streaks=())
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..clock import human_duration, parse_duration
from ..monitor import Signals
from ..spec import PolicySpec
from .triggers import DetectorTrigger, DriftTrigger, QualityTrigger, Schedule, Staleness, Trigger, Volume

__all__ = ["Decision", "Policy", "PolicyState", "Retrain", "Skip", "run_key"]


def run_key(name: str, now: float) -> str:
    """Idempotency key of a training run: the policy and the tick time, to the millisecond.

    >>> run_key("default", 86400.0), run_key("default", 1763790000.1234)
    ('default@86400', 'default@1763790000.123')
    """
    return f"{name}@{now:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between ticks (kept by the loop, passed in)."""

    retrain_times: tuple[float, ...] = ()
    streaks: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Retrain:
    run_key: str
    reasons: tuple[str, ...]
    streaks: tuple[tuple[str, int], ...] = ()

    kind = "retrain"


@dataclass(frozen=True)
class Skip:
    reason: str
    streaks: tuple[tuple[str, int], ...] = ()

    kind = "skip"

    @property
    def reasons(self) -> tuple[str, ...]:
        return (self.reason,)


Decision = Retrain | Skip


@dataclass(frozen=True)
class Policy:
    name: str
    triggers: tuple[Trigger, ...] = ()
    min_new_labels: int = 0
    cooldown: float = 0.0
    hysteresis: int = 1
    budget: tuple[int, float] | None = None
    online: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    rows: bool = False  # no time column: the clock is the row number, and durations are said in rows

    @classmethod
    def from_spec(cls, spec: PolicySpec, *, bigger_is_better: bool = True, rows: bool = False) -> Policy:
        t = spec.triggers
        trig: list[Trigger] = []
        if t.schedule:
            trig.append(Schedule(parse_duration(t.schedule), rows))
        if t.volume:
            trig.append(Volume(t.volume))
        if t.drift:
            trig.append(DriftTrigger(t.drift.min_features))
        if t.quality:
            trig.append(QualityTrigger(t.quality.max_drop, t.quality.min_labels, bigger_is_better))
        if t.detector:
            trig.append(DetectorTrigger(t.detector))
        if t.staleness:
            trig.append(Staleness(parse_duration(t.staleness), rows))
        budget = (spec.budget.max_retrains, parse_duration(spec.budget.per)) if spec.budget else None
        return cls(spec.name, tuple(trig), spec.min_new_labels, parse_duration(spec.cooldown), spec.hysteresis,
                   budget, spec.online, rows=rows)

    def _d(self, seconds: float) -> str:
        return human_duration(seconds, rows=self.rows)

    def decide(self, signals: Signals, state: PolicyState) -> Decision:
        if not self.triggers:
            return Skip("no trigger configured (never retrains)" if not self.online
                        else "online: the model learns from every matured label; no retraining")
        streaks = dict(state.streaks)
        fired: list[str] = []
        for trig in self.triggers:
            reason = trig.check(signals)
            if trig.persistent:
                streaks[trig.name] = streaks.get(trig.name, 0) + 1 if reason else 0
                if reason and streaks[trig.name] < self.hysteresis:
                    continue
            if reason:
                fired.append(reason)
        new_streaks = tuple(sorted(streaks.items()))
        if not fired:
            return Skip("no trigger fired: " + self._quiet(signals), new_streaks)
        if signals.new_labels < self.min_new_labels:
            return Skip(f"guard: {signals.new_labels} new labeled rows < min_new_labels {self.min_new_labels} "
                        f"(would retrain for {fired[0]})", new_streaks)
        if signals.last_trained_at is not None and signals.now - signals.last_trained_at < self.cooldown:
            return Skip(f"cooldown: trained {self._d(signals.now - signals.last_trained_at)} ago < "
                        f"{self._d(self.cooldown)} (would retrain for {fired[0]})", new_streaks)
        if self.budget:
            n, per = self.budget
            recent = [t for t in state.retrain_times if signals.now - t < per]
            if len(recent) >= n:
                return Skip(f"budget: {len(recent)} retrains in the last {self._d(per)} >= {n} "
                            f"(would retrain for {fired[0]})", new_streaks)
        reset = tuple((k, 0) for k, _ in new_streaks)
        return Retrain(run_key(self.name, signals.now), tuple(fired), reset)

    def _quiet(self, s: Signals) -> str:
        parts = []
        if s.drift:
            top = max(s.drift, key=lambda k: s.drift[k].value)
            parts.append(f"max drift {s.drift[top].statistic}({top})={s.drift[top].value:.3f}")
        if s.live_metric is not None:
            ref = f" vs {s.reference_metric:.4f}" if s.reference_metric is not None else ""
            parts.append(f"live {s.live_metric:.4f}{ref} on {s.live_n} labels")
        if s.last_trained_at is not None:
            parts.append(f"trained {self._d(s.now - s.last_trained_at)} ago")
        return "; ".join(parts) or "no signals yet"
