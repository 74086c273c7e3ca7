"""The policy: a pure ``decide(signals, state)`` returning ``Retrain`` or ``Skip`` with reasons.

Triggers compose by "any fires"; guards against thrashing come after: hysteresis for persistent
signals, a minimum of new labeled rows, a cooldown and a retrain budget.

Examples
--------
>>> from freshloop.monitor import Signals
>>> from freshloop.spec import policy_preset
>>> policy = Policy.from_spec(policy_preset("periodic:30d"))
>>> d = policy.decide(Signals(now=31 * 86400.0, last_trained_at=0.0, new_labels=900), PolicyState())
>>> type(d).__name__, d.triggers, d.reasons
('Retrain', ('schedule',), ('schedule: 31 d since the last training >= every 30 d',))
>>> Policy.from_spec(policy_preset("never")).decide(Signals(now=1e9, last_trained_at=0.0), PolicyState())
Skip(reason='no trigger configured (never retrains)', streaks=(), guard='never')

What the loop does with a decision depends on its fields (``triggers``, ``guard``), never on its text:
the reasons are for people and may be reworded freely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..clock import human_duration, parse_duration
from ..errors import InvalidValueError
from ..monitor import Signals
from ..spec import PolicySpec
from . import triggers as tr
from .triggers import Trigger, TriggerName

__all__ = ["CHANGE_TRIGGERS", "CONCEPT_TRIGGERS", "GUARDS", "Budget", "Decision", "Guard", "Policy", "PolicyState",
           "Retrain", "Skip", "TriggerName", "bootstrap", "first_change", "moves_concept", "run_key"]

CHANGE_TRIGGERS: tuple[TriggerName, ...] = ("detector", "quality", "drift")  # they answer a detected change
# They say the concept moved (the error stream changed, the live metric dropped), not the inputs alone
CONCEPT_TRIGGERS: tuple[TriggerName, ...] = ("detector", "quality")


def first_change(triggers: Sequence[str]) -> str | None:
    """The first of a retrain's ``triggers`` that answers a detected change, or None. A schedule or a volume
    that fires at the same tick as a detector comes first in the list, and the retrain answers the change all
    the same.

    >>> first_change(("schedule", "detector")), first_change(("drift", "quality")), first_change(("gain",))
    ('detector', 'drift', None)
    """
    return next((t for t in triggers if t in CHANGE_TRIGGERS), None)


def moves_concept(triggers: Sequence[str]) -> bool:
    """Whether a retrain's ``triggers`` say the concept moved: the detector or a quality drop fired, whatever
    fired with it. Drift of the inputs alone does not say so; drift firing beside them does not unsay it.

    >>> moves_concept(("drift", "detector")), moves_concept(("schedule", "quality")), moves_concept(("drift",))
    (True, True, False)
    """
    return any(t in CONCEPT_TRIGGERS for t in triggers)


# What held a retrain back, or why none was due
Guard = Literal["never", "online", "no trigger fired", "min_new_labels", "cooldown", "budget", "bootstrap",
                "follow-up pending", "rollout in progress", "recalled"]
GUARDS: tuple[Guard, ...] = get_args(Guard)


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
    retrain_seconds: tuple[float, ...] = ()  # what each of those runs spent on training, in the same order


@dataclass(frozen=True)
class Budget:
    """At most ``max_retrains`` retrains and ``max_seconds`` seconds of training within ``per`` (either may be
    unset). The seconds a retrain will take are not known before it runs: the mean of the last ``runs`` runs
    stands for them, so a retrain is held when it would likely cross the bound, not only once it has. With no
    training spent within ``per``, a retrain is never held by the seconds: a run dearer than the whole budget
    runs once per ``per`` (the budget slows training down, it never stops it).

    >>> b, state = Budget(None, 60.0, 86400.0), PolicyState((0.0, 10.0), retrain_seconds=(20.0, 25.0))
    >>> b.hold(state, now=100.0, d=human_duration)
    'budget: 45 s of training in the last 1 d + 22.5 s expected (the mean of the last 2 runs) > max_seconds 60'
    >>> b.hold(state, now=86405.0, d=human_duration) is None  # the first run has left the last day
    True
    >>> b.hold(PolicyState((0.0,), retrain_seconds=(90.0,)), now=86400.0, d=human_duration) is None  # dearer
    True
    """

    max_retrains: int | None
    max_seconds: float | None
    per: float
    runs: int = 3

    def hold(self, state: PolicyState, now: float, d: Callable[[float], str]) -> str | None:
        """Why a retrain now would break the budget; None when it would not."""
        recent = [i for i, t in enumerate(state.retrain_times) if now - t < self.per]
        if self.max_retrains is not None and len(recent) >= self.max_retrains:
            return f"budget: {len(recent)} retrains in the last {d(self.per)} >= {self.max_retrains}"
        if self.max_seconds is None or not state.retrain_seconds:
            return None
        spent = sum(state.retrain_seconds[i] for i in recent if i < len(state.retrain_seconds))
        last = state.retrain_seconds[-self.runs:]
        expected = sum(last) / len(last)
        if not spent or spent + expected <= self.max_seconds:
            return None
        runs = "the last run" if len(last) == 1 else f"the mean of the last {len(last)} runs"
        return (f"budget: {human_duration(spent)} of training in the last {d(self.per)} + "
                f"{human_duration(expected)} expected ({runs}) > max_seconds {self.max_seconds:g}")


@dataclass(frozen=True)
class Retrain:
    """Train a candidate now. ``triggers`` names what fired, one per reason, in the same order."""

    run_key: str
    reasons: tuple[str, ...]
    streaks: tuple[tuple[str, int], ...] = ()
    triggers: tuple[TriggerName, ...] = ()

    kind = "retrain"
    guard = None

    def __post_init__(self) -> None:
        if len(self.triggers) != len(self.reasons):
            raise InvalidValueError(f"a Retrain names one trigger per reason: {self.triggers} for {self.reasons}",
                                    field="triggers")

    @property
    def answers_change(self) -> bool:
        """Whether it answers a detected change: one of its triggers is (see :func:`first_change`)."""
        return first_change(self.triggers) is not None

    def held(self, guard: Guard, why: str) -> Skip:
        """This retrain, held back by ``guard``: the skip says what it would have retrained for."""
        return Skip(f"{why} (would retrain for {self.reasons[0]})", self.streaks, guard)

    def also(self, trigger: TriggerName, reason: str) -> Retrain:
        return Retrain(self.run_key, self.reasons + (reason,), self.streaks, self.triggers + (trigger,))


@dataclass(frozen=True)
class Skip:
    """No retrain this tick; ``guard`` names what held it back, or why none was due."""

    reason: str
    streaks: tuple[tuple[str, int], ...] = ()
    guard: Guard = "no trigger fired"

    kind = "skip"

    @property
    def reasons(self) -> tuple[str, ...]:
        return (self.reason,)

    @property
    def triggers(self) -> tuple[TriggerName, ...]:
        return ()


Decision = Retrain | Skip


def bootstrap(now: float, *, labeled: int, needed: int, tried: bool) -> Decision:
    """No champion yet: a first model once ``needed`` labeled rows are there to train and judge one (once
    per tick time: ``tried`` says a run already has this tick's key).

    >>> bootstrap(0.0, labeled=40, needed=100, tried=False).reason
    'bootstrap: 40 labeled rows < 100 needed for a first model'
    >>> bootstrap(5.0, labeled=120, needed=100, tried=False).triggers
    ('bootstrap',)
    """
    if tried:
        return Skip("bootstrap: already tried at this time", guard="bootstrap")
    if labeled >= needed:
        return Retrain(run_key("bootstrap", now), (f"bootstrap: no champion yet; {labeled} labeled rows",),
                       triggers=("bootstrap",))
    return Skip(f"bootstrap: {labeled} labeled rows < {needed} needed for a first model", guard="bootstrap")


@dataclass(frozen=True)
class Policy:
    name: str
    triggers: tuple[Trigger, ...] = ()
    min_new_labels: int = 0
    cooldown: float = 0.0
    hysteresis: int = 1
    budget: Budget | None = None
    online: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    rows: bool = False  # no time column: the clock is the row number, and durations are said in rows

    @classmethod
    def from_spec(cls, spec: PolicySpec, *, bigger_is_better: bool = True, rows: bool = False) -> Policy:
        t = spec.triggers
        trig: list[Trigger] = []
        if t.schedule:
            trig.append(tr.ScheduleTrigger(parse_duration(t.schedule), rows))
        if t.volume:
            trig.append(tr.VolumeTrigger(t.volume))
        if t.drift:
            trig.append(tr.DriftTrigger(t.drift.min_features))
        if t.quality:
            trig.append(tr.QualityTrigger(t.quality.max_drop, t.quality.min_labels, bigger_is_better))
        if t.detector:
            trig.append(tr.DetectorTrigger(t.detector))
        if t.staleness:
            trig.append(tr.StalenessTrigger(parse_duration(t.staleness), rows))
        if t.gain:
            trig.append(tr.GainTrigger(t.gain.min_gain, t.gain.runs))
        b = spec.budget
        budget = Budget(b.max_retrains, b.max_seconds, parse_duration(b.per)) if b is not None else None
        return cls(spec.name, tuple(trig), spec.min_new_labels, parse_duration(spec.cooldown), spec.hysteresis,
                   budget, spec.online, rows=rows)

    def _d(self, seconds: float) -> str:
        return human_duration(seconds, rows=self.rows)

    def decide(self, signals: Signals, state: PolicyState) -> Decision:
        if not self.triggers:
            return Skip("online: the model learns from every matured label; no retraining", guard="online") \
                if self.online else Skip("no trigger configured (never retrains)", guard="never")
        streaks = dict(state.streaks)
        fired: list[tuple[TriggerName, str]] = []
        for trig in self.triggers:
            reason = trig.check(signals)
            if trig.persistent:
                streaks[trig.name] = streaks.get(trig.name, 0) + 1 if reason else 0
                if reason and streaks[trig.name] < self.hysteresis:
                    continue
            if reason:
                fired.append((trig.name, reason))
        new_streaks = tuple(sorted(streaks.items()))
        if not fired:
            return Skip("no trigger fired: " + self._quiet(signals), new_streaks, "no trigger fired")
        due = Retrain(run_key(self.name, signals.now), tuple(r for _, r in fired), new_streaks,
                      tuple(t for t, _ in fired))
        if signals.new_labels < self.min_new_labels:
            return due.held("min_new_labels", f"guard: {signals.new_labels} new labeled rows < min_new_labels "
                            f"{self.min_new_labels}")
        if signals.last_trained_at is not None and signals.now - signals.last_trained_at < self.cooldown:
            return due.held("cooldown", f"cooldown: trained {self._d(signals.now - signals.last_trained_at)} ago "
                            f"< {self._d(self.cooldown)}")
        over = self.budget.hold(state, signals.now, self._d) if self.budget is not None else None
        if over is not None:
            return due.held("budget", over)
        return Retrain(due.run_key, due.reasons, tuple((k, 0) for k, _ in new_streaks), due.triggers)

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
