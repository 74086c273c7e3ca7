from __future__ import annotations

from pathlib import Path

import pytest

from freshloop.errors import SpecError
from freshloop.spec import load_spec, load_spec_dict, policy_preset


def base() -> dict[str, object]:
    return {"name": "x", "data": {"label": "y"}}


@pytest.mark.parametrize(("patch", "field", "words"), [
    ({"polcy": {}}, "polcy", "unknown field"),
    ({"policy": {"cooldown": "-3d"}}, "policy.cooldown", "'-3d'"),
    ({"gate": {"holdout": 2}}, "gate.holdout", "less than 1"),
    ({"model": {"mode": "sometimes"}}, "model.mode", "sometimes"),
    ({"rollout": {"steps": [50, 25, 100]}}, "rollout.steps", "increasing"),
    ({"replay": {"batch": {"rows": 5, "period": "1d"}}}, "replay.batch", "exactly one"),
    ({"name": "has space"}, "name", "has space"),
])
def test_spec_errors_name_field_rule_and_value(patch: dict[str, object], field: str, words: str) -> None:
    raw = {**base(), **patch}
    with pytest.raises(SpecError) as e:
        load_spec_dict(raw)
    assert e.value.field == field
    assert e.value.code == "invalid_spec"
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_label_is_named() -> None:
    with pytest.raises(SpecError, match=r"data.label: field required"):
        load_spec_dict({"name": "x", "data": {}})


def test_load_spec_resolves_store_next_to_file(tmp_path: Path) -> None:
    p = tmp_path / "loop.yaml"
    p.write_text("name: demo\ndata:\n  label: y\n")
    spec = load_spec(p)
    assert spec.store.root == str((tmp_path / ".freshloop").resolve())


def test_load_spec_reports_file_and_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: demo\ndata:\n  lable: y\n")
    with pytest.raises(SpecError, match=r"typo.yaml: 2 errors: data.lable: unknown field .* Did you mean .label."):
        load_spec(typo)


def test_policy_presets() -> None:
    assert policy_preset("never").triggers.schedule is None
    assert policy_preset("periodic:7d").triggers.schedule == "7d"
    assert policy_preset("online").online
    with pytest.raises(SpecError, match="periodic:soon"):
        policy_preset("periodic:soon")


def test_a_misspelled_key_names_the_closest_valid_one() -> None:
    with pytest.raises(SpecError) as e:
        load_spec_dict({"name": "x", "data": {"lable": "y"}})
    assert e.value.field == "data.lable"
    assert "data.lable: unknown field" in str(e.value) and "Did you mean 'label'?" in str(e.value)
    with pytest.raises(SpecError, match="Did you mean 'cooldown'"):
        load_spec_dict({**base(), "policy": {"coldown": "3d"}})
    with pytest.raises(SpecError) as e:
        load_spec_dict({**base(), "policy": {"triggers": {"drfit": {}}}})
    assert "Did you mean 'drift'?" in str(e.value)
    with pytest.raises(SpecError) as e:
        load_spec_dict({**base(), "zzz": 1})
    assert "Did you mean" not in str(e.value)


def test_every_error_of_a_spec_is_listed() -> None:
    with pytest.raises(SpecError) as e:
        load_spec_dict({**base(), "policy": {"coldown": "3d", "hysteresis": 0}, "gate": {"holdout": 2}})
    text = str(e.value)
    assert text.startswith("3 errors: policy.coldown: unknown field")
    assert "policy.hysteresis" in text and "gate.holdout" in text and "\n" not in text


def test_a_metric_that_does_not_score_the_task_is_refused() -> None:
    with pytest.raises(SpecError, match=r"gate.metric: 'accuracy' does not score a regression") as e:
        load_spec_dict({"name": "x", "data": {"label": "y", "task": "regression"}, "gate": {"metric": "accuracy"}})
    assert e.value.field == "gate.metric"
    with pytest.raises(SpecError, match="gate.metric"):
        load_spec_dict({**base(), "gate": {"metric": "f1"}})  # not a metric the gate can compute
    assert load_spec_dict({**base(), "gate": {"metric": "balanced_accuracy"}}).gate.metric == "balanced_accuracy"
    with pytest.raises(SpecError, match="gate.metric: 'balanced_accuracy' does not score a regression"):
        load_spec_dict({"name": "x", "data": {"label": "y", "task": "regression"},
                        "gate": {"metric": "balanced_accuracy"}})
    with pytest.raises(SpecError) as e:
        load_spec_dict({"name": "x", "data": {"label": "y", "task": "regression"}, "model": {"balance": True}})
    assert e.value.field == "model.balance" and "only for data.task 'classification'" in str(e.value)
    slices = load_spec_dict({"name": "x", "data": {"label": "y", "task": "regression"},
                             "model": {"balance": ["region"]}})  # a regression's slices can be balanced
    assert slices.model.balanced("y") == ["region"]


def test_a_window_share_outside_zero_to_one_names_the_field_the_rule_and_the_value() -> None:
    with pytest.raises(SpecError) as e:
        load_spec_dict({"name": "t", "data": {"label": "y"}, "model": {"window": {"choose": [0.5, 1.5]}}})
    assert e.value.field == "model.window.choose"
    assert "must be shares in (0, 1]" in str(e.value) and "[0.5, 1.5]" in str(e.value)
    with pytest.raises(SpecError, match="model.window.choose_budget"):
        load_spec_dict({"name": "t", "data": {"label": "y"}, "model": {"window": {"choose_budget": "soon"}}})
    ok = load_spec_dict({"name": "t", "data": {"label": "y"}, "model": {"window": {"choose": [1.0, 0.25, 0.25]}}})
    assert ok.model.window.choose == [0.25, 1.0]
    with pytest.raises(SpecError) as e:
        load_spec_dict({"name": "t", "data": {"label": "y"}, "model": {"window": {"decay": [0]}}})
    assert e.value.field == "model.window.decay" and "shares of the window in (0, 1]" in str(e.value)
    ok = load_spec_dict({"name": "t", "data": {"label": "y"}, "model": {"window": {"decay": [0.1, 0.5, 0.1]}}})
    assert ok.model.window.decay == [0.5, 0.1]  # the longest half-life first


def test_a_budget_names_a_bound() -> None:
    with pytest.raises(SpecError) as e:
        load_spec_dict({"name": "t", "data": {"label": "y"}, "policy": {"budget": {"per": "1d"}}})
    assert e.value.field == "policy.budget" and "max_retrains, max_seconds or both" in str(e.value)
    with pytest.raises(SpecError, match="policy.budget.max_seconds"):
        load_spec_dict({"name": "t", "data": {"label": "y"}, "policy": {"budget": {"max_seconds": 0}}})
    ok = load_spec_dict({"name": "t", "data": {"label": "y"}, "policy": {"budget": {"max_seconds": 90.5}}})
    assert ok.policy.budget is not None and (ok.policy.budget.max_retrains, ok.policy.budget.max_seconds) == \
        (None, 90.5)


def test_react_needs_labels_enough_to_train_and_judge() -> None:
    """``model.window.react``: the labels after a change before a retrain on them alone; at least twice
    ``gate.min_holdout_rows`` (half to train, half to judge), or 0 for off (the default)."""
    def spec(react: int, hold: int = 30) -> dict[str, object]:
        return {"name": "t", "data": {"label": "y"}, "gate": {"min_holdout_rows": hold},
                "model": {"window": {"rows": 1000, "react": react}}}

    with pytest.raises(SpecError) as e:
        load_spec_dict(spec(50))
    assert (e.value.field, e.value.value) == ("model.window.react", 50)
    assert "at least twice gate.min_holdout_rows, 60" in str(e.value)
    assert load_spec_dict(spec(50, hold=25)).model.window.react == 50
    assert load_spec_dict(spec(0)).model.window.react == 0
    assert load_spec_dict({"name": "t", "data": {"label": "y"}}).model.window.react == 0
    with pytest.raises(SpecError, match="model.window.react: counts labels against a window in rows"):
        load_spec_dict({"name": "t", "data": {"label": "y"}, "model": {"window": {"period": "30d", "react": 60}}})
