"""Triggers: small components that look at :class:`Signals` and say why retraining is due, or not.

Each trigger has the same contract: ``check(signals) -> str | None`` (the reason when it fires)
and a ``persistent`` flag saying whether the policy's hysteresis applies. The baselines are just
more triggers: ``ScheduleTrigger`` is "retrain every N days", and a policy with no trigger never retrains.

Examples
--------
>>> from freshloop.monitor import Signals
>>> ScheduleTrigger(every=86400.0).check(Signals(now=2 * 86400.0, last_trained_at=0.0))
'schedule: 2 d since the last training >= every 1 d'
>>> ScheduleTrigger(every=86400.0).check(Signals(now=3600.0, last_trained_at=0.0)) is None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from ..clock import human_duration
from ..monitor import Signals

__all__ = ["DetectorTrigger", "DriftTrigger", "GainTrigger", "QualityTrigger", "ScheduleTrigger", "StalenessTrigger",
           "Trigger", "TriggerName", "VolumeTrigger"]

# What fired a retrain: the policy's triggers, and the loop's own two (a first model; the follow-up after a change)
TriggerName = Literal["schedule", "volume", "drift", "quality", "detector", "staleness", "gain", "bootstrap",
                      "follow-up"]


def _d(seconds: float, rows: bool) -> str:
    """A duration in a decision's reason, as people read it: ``2.5 min``, ``15.5 d``, or ``4,531 rows`` when
    the row number is the clock."""
    return human_duration(seconds, rows=rows)


class Trigger:
    name: ClassVar[TriggerName]
    persistent = False  # True: must fire on `hysteresis` consecutive ticks

    def check(self, signals: Signals) -> str | None:
        raise NotImplementedError


def _since_training(signals: Signals, limit: float) -> float | None:
    """The time since the last training, once it has reached ``limit``; None before, or before any."""
    if signals.last_trained_at is None:
        return None
    age = signals.now - signals.last_trained_at
    return age if age >= limit else None


@dataclass(frozen=True)
class ScheduleTrigger(Trigger):
    every: float
    rows: bool = False  # no time column: the clock counts rows
    name = "schedule"

    def check(self, signals: Signals) -> str | None:
        age = _since_training(signals, self.every)
        return None if age is None else \
            f"schedule: {_d(age, self.rows)} since the last training >= every {_d(self.every, self.rows)}"


@dataclass(frozen=True)
class VolumeTrigger(Trigger):
    min_labels: int
    name = "volume"

    def check(self, signals: Signals) -> str | None:
        if signals.new_labels >= self.min_labels:
            return f"volume: {signals.new_labels} new labeled rows >= {self.min_labels}"
        return None


@dataclass(frozen=True)
class DriftTrigger(Trigger):
    min_features: int = 1
    name = "drift"
    persistent = True

    def check(self, signals: Signals) -> str | None:
        # Drift counts when it is over the threshold and has grown by half a threshold since the last
        # training: drift that a retrain did not remove (seasonality a long window already holds) would
        # otherwise re-trigger every tick.
        before = signals.drift_at_training
        drifted = sorted((k for k in signals.drifted
                          if signals.drift[k].value - before.get(k, 0.0) >= 0.5 * signals.drift[k].threshold),
                         key=lambda k: -signals.drift[k].value)
        if len(drifted) >= self.min_features:
            shown = ", ".join(f"{signals.drift[k].statistic}({k})={signals.drift[k].value:.3f}>"
                              f"{signals.drift[k].threshold:g}" for k in drifted[:3])
            more = f" and {len(drifted) - 3} more" if len(drifted) > 3 else ""
            return f"drift: {len(drifted)} feature(s) drifted: {shown}{more}"
        return None


@dataclass(frozen=True)
class QualityTrigger(Trigger):
    max_drop: float
    min_labels: int
    bigger_is_better: bool = True
    name = "quality"
    persistent = True

    def check(self, signals: Signals) -> str | None:
        ref, live = signals.reference_metric, signals.live_metric
        if ref is None or live is None or signals.live_n < self.min_labels:
            return None
        drop = (ref - live) if self.bigger_is_better else (live - ref)
        # Fire only when the drop is large and the interval of the difference excludes zero: both figures
        # are measured on a window of noisy labels, so both half-widths count (a reference read as exact
        # mistakes its own noise for a drop on noisy labels).
        margin = math.hypot(_half(live, signals.live_low, signals.live_high),
                            _half(ref, signals.reference_low, signals.reference_high))
        if drop > self.max_drop and drop > margin:
            return (f"quality: live metric {live:.4f} on {signals.live_n} matured labels is {drop:.4f} worse than "
                    f"the champion's established {ref:.4f} (> {self.max_drop}, and > {margin:.4f}, the interval "
                    f"of the difference)")
        return None


def _half(value: float, low: float | None, high: float | None) -> float:
    """Half-width of an interval around ``value`` (the wider side; 0 when there is none)."""
    sides = [value - low if low is not None else 0.0, high - value if high is not None else 0.0]
    return max(0.0, *sides)


@dataclass(frozen=True)
class DetectorTrigger(Trigger):
    detector: str
    name = "detector"

    def check(self, signals: Signals) -> str | None:
        return f"detector: {self.detector} detected a change in the error stream" if signals.detector_fired else None


@dataclass(frozen=True)
class GainTrigger(Trigger):
    """Retrain while retraining pays: when the last retrain's candidate and the last ``runs`` retrains' on
    average beat the champion they were judged against by ``min_gain`` (relative to the champion's score, on
    rows neither had trained on), the next retrain is due as soon as the guards allow (``min_new_labels``,
    cooldown, budget). The first retrain that does not pay stops it, and the other triggers answer the next
    change.

    >>> from freshloop.monitor import Signals
    >>> GainTrigger(0.02).check(Signals(now=0.0, gains=(0.01, 0.08, 0.05)))
    'gain: the last 3 retrains beat the champion by 4.67 % on average (>= 2 %): retraining pays'
    >>> GainTrigger(0.02).check(Signals(now=0.0, gains=(0.08, 0.0, 0.01, -0.02))) is None
    True
    >>> GainTrigger(0.02).check(Signals(now=0.0, gains=(0.20, 0.10, 0.0))) is None  # the last one did not pay
    True
    """

    min_gain: float
    runs: int = 3
    name = "gain"

    def check(self, signals: Signals) -> str | None:
        recent = signals.gains[-self.runs:]
        if not recent:
            return None
        mean = sum(recent) / len(recent)
        if mean < self.min_gain or recent[-1] < self.min_gain:
            return None
        last = f"the last {len(recent)} retrains" if len(recent) > 1 else "the last retrain"
        return (f"gain: {last} beat the champion by {100 * mean:.2f} % on average (>= {100 * self.min_gain:g} %): "
                "retraining pays")


@dataclass(frozen=True)
class StalenessTrigger(Trigger):
    """The spec's ``triggers.staleness``: the time since the last training reached ``max_age`` (unlike
    :class:`ScheduleTrigger`, it is one of the default policy's signals, not a fixed period)."""

    max_age: float
    rows: bool = False
    name = "staleness"

    def check(self, signals: Signals) -> str | None:
        age = _since_training(signals, self.max_age)
        return None if age is None else \
            f"staleness: model trained {_d(age, self.rows)} ago >= max {_d(self.max_age, self.rows)}"
