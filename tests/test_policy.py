"""The policy: triggers, guards against thrashing, and decisions that name what fired or held them."""

from __future__ import annotations

import pytest

from freshloop.monitor import Signals
from freshloop.monitor.drift import DriftScore
from freshloop.policy import Policy, PolicyState, Retrain, Skip
from freshloop.spec import DriftTriggerSpec, PolicySpec, QualityTriggerSpec, TriggerSpec, policy_preset


def sig(**kw: object) -> Signals:
    return Signals(**{"now": 100 * 86400.0, "last_trained_at": 0.0, "new_labels": 500, **kw})  # type: ignore[arg-type]


def drifted(v: float = 0.5) -> dict[str, DriftScore]:
    return {"x": DriftScore("psi", v, 0.2, v > 0.2)}


def test_policy_triggers_and_guards() -> None:
    p = Policy.from_spec(PolicySpec(triggers=TriggerSpec(drift=DriftTriggerSpec()), hysteresis=2, cooldown="7d",
                                    min_new_labels=100))
    first = p.decide(sig(drift=drifted()), PolicyState())
    assert isinstance(first, Skip) and first.reason.startswith("no trigger fired")  # hysteresis: 1 of 2
    second = p.decide(sig(drift=drifted()), PolicyState(streaks=first.streaks))
    assert isinstance(second, Retrain) and second.reasons[0].startswith("drift: 1 feature(s) drifted: psi(x)=0.500")
    few = p.decide(sig(drift=drifted(), new_labels=10), PolicyState(streaks=first.streaks))
    assert isinstance(few, Skip) and few.reason.startswith("guard: 10 new labeled rows < min_new_labels 100")
    cool = p.decide(sig(drift=drifted(), last_trained_at=100 * 86400.0 - 3600), PolicyState(streaks=first.streaks))
    assert isinstance(cool, Skip) and cool.reason.startswith("cooldown: trained 1 h ago < 7 d")
    seen = p.decide(sig(drift=drifted(), drift_at_training={"x": 0.45}), PolicyState(streaks=first.streaks))
    assert isinstance(seen, Skip)  # drift a retrain already faced does not re-trigger


def test_budget_quality_staleness_and_run_keys() -> None:
    spec = PolicySpec.model_validate({"triggers": {"staleness": "30d"}, "budget": {"max_retrains": 2, "per": "10d"},
                                      "cooldown": "0s", "min_new_labels": 0})
    p = Policy.from_spec(spec)
    now = 100 * 86400.0
    out = p.decide(sig(), PolicyState(retrain_times=(now - 86400, now - 2 * 86400)))
    assert isinstance(out, Skip) and out.reason.startswith("budget: 2 retrains in the last 10 d >= 2")
    ok = p.decide(sig(), PolicyState(retrain_times=(now - 20 * 86400,)))
    assert isinstance(ok, Retrain) and ok.run_key == f"default@{now:.0f}"
    assert ok.reasons == ("staleness: model trained 100 d ago >= max 30 d",)
    q = Policy.from_spec(PolicySpec(triggers=TriggerSpec(quality=QualityTriggerSpec(max_drop=0.02, min_labels=50)),
                                    hysteresis=1, cooldown="0s"))
    drop = q.decide(sig(live_metric=0.70, live_low=0.66, live_high=0.74, live_n=200, reference_metric=0.80),
                    PolicyState())
    assert isinstance(drop, Retrain) and "0.1000 worse" in drop.reasons[0]
    noisy = q.decide(sig(live_metric=0.77, live_low=0.70, live_high=0.84, live_n=200, reference_metric=0.80),
                     PolicyState())
    assert isinstance(noisy, Skip)  # the CI still holds the reference
    # the reference is measured too: a drop inside the interval of the difference is noise, not a change
    exact = sig(live_metric=0.77, live_low=0.75, live_high=0.79, live_n=500, reference_metric=0.80)
    assert isinstance(q.decide(exact, PolicyState()), Retrain)
    measured = sig(live_metric=0.77, live_low=0.75, live_high=0.79, live_n=500, reference_metric=0.80,
                   reference_low=0.775, reference_high=0.825)
    skip = q.decide(measured, PolicyState())
    assert isinstance(skip, Skip), skip


def test_decisions_name_their_triggers_and_guards_as_fields() -> None:
    """The loop acts on ``triggers`` and ``guard``, never on the reasons' words: each decision carries them."""
    p = Policy.from_spec(PolicySpec.model_validate(
        {"triggers": {"drift": {}, "staleness": "30d"}, "hysteresis": 1, "cooldown": "7d", "min_new_labels": 100,
         "budget": {"max_retrains": 1, "per": "10d"}}))
    now = 100 * 86400.0
    both = p.decide(sig(drift=drifted()), PolicyState())
    assert isinstance(both, Retrain) and both.triggers == ("drift", "staleness") and both.answers_change
    assert both.guard is None and len(both.reasons) == 2
    stale = p.decide(sig(), PolicyState())
    assert isinstance(stale, Retrain) and stale.triggers == ("staleness",) and not stale.answers_change
    held = [p.decide(s, st) for s, st in [
        (sig(drift=drifted(), new_labels=10), PolicyState()),
        (sig(drift=drifted(), last_trained_at=now - 3600), PolicyState()),
        (sig(drift=drifted()), PolicyState(retrain_times=(now - 86400,)))]]
    assert [d.guard for d in held] == ["min_new_labels", "cooldown", "budget"]
    assert all(isinstance(d, Skip) and d.triggers == () for d in held)
    quiet = Policy.from_spec(PolicySpec.model_validate({"triggers": {"staleness": "300d"}}))
    assert quiet.decide(sig(), PolicyState()).guard == "no trigger fired"
    assert Policy.from_spec(policy_preset("never")).decide(sig(), PolicyState()).guard == "never"
    with pytest.raises(ValueError, match="one trigger per reason"):
        Retrain("k", ("drift: x", "schedule: y"), triggers=("drift",))
    assert both.held("rollout in progress", "rollout of version 3 in progress").reason == \
        f"rollout of version 3 in progress (would retrain for {both.reasons[0]})"


def test_the_gain_trigger_retrains_while_retraining_pays_and_stops_when_it_does_not() -> None:
    p = Policy.from_spec(PolicySpec.model_validate({"triggers": {"gain": {"min_gain": 0.02, "runs": 3}},
                                                    "cooldown": "0s", "min_new_labels": 50}))
    paying = p.decide(sig(gains=(-0.01, 0.05, 0.03, 0.04)), PolicyState())
    assert isinstance(paying, Retrain) and paying.triggers == ("gain",)
    assert paying.reasons[0].startswith("gain: the last 3 retrains beat the champion by 4.00 % on average (>= 2 %)")
    # the same gains, but too few new labels to judge another candidate: the guard still holds it
    few = p.decide(sig(gains=(0.05, 0.03, 0.04), new_labels=20), PolicyState())
    assert isinstance(few, Skip) and few.guard == "min_new_labels"
    # one good retrain among poor ones is not a trend; no retrain judged against a champion yet is none
    assert isinstance(p.decide(sig(gains=(0.06, 0.0, -0.01)), PolicyState()), Skip)
    # the first retrain that does not pay stops it, however well the ones before it paid
    assert isinstance(p.decide(sig(gains=(0.30, 0.20, 0.0)), PolicyState()), Skip)
    assert isinstance(p.decide(sig(), PolicyState()), Skip)
    # the default policy has it
    assert "gain" in [t.name for t in Policy.from_spec(PolicySpec()).triggers]
