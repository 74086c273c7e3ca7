"""The loop spec: one YAML file, validated by pydantic.

Every mistake is answered with the field, the rule and the value, and unknown keys are refused,
so a typo never silently falls back to a default.

Examples
--------
>>> spec = LoopSpec.model_validate({"name": "demo", "data": {"label": "y"}})
>>> spec.policy.cooldown, spec.gate.holdout, spec.model.mode
('7d', 0.2, 'full')
>>> load_spec_dict({"name": "demo", "data": {"label": "y"}, "polcy": {}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
freshloop.errors.SpecError: polcy: unknown field (rule: extra fields ...). Got {} instead. Did you mean 'policy'?
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .clock import parse_duration
from .errors import SpecError
from .evaluate.metrics import TASK_METRICS

__all__ = [
    "CompanionSpec", "DataSpec", "FeatureSpec", "GateSpec", "LoopSpec", "ModelSpec", "PolicySpec", "QualitySpec",
    "ReplaySpec", "RolloutSpec", "StoreSpec", "TriggerSpec", "WindowSpec", "load_spec", "load_spec_dict",
    "policy_preset", "preset_period",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(v: Any) -> Any:
    if v is None:
        return v
    try:
        parse_duration(v)
    except ValueError as e:
        raise ValueError(str(e)) from None
    return v


class FeatureSpec(_Strict):
    name: str
    kind: Literal["numeric", "categorical"]


class QualitySpec(_Strict):
    """Validation rules applied to every batch; ranges and domains are learned at schema lock."""

    max_missing_rate: float = Field(0.5, ge=0, le=1, description="a column above this quarantines the batch")
    range_margin: float = Field(1.0, ge=0, description="allowed widening of a learned range, in ranges")
    # Drifted values are what the monitor must see and what retraining needs, so by default a value outside
    # the learned range is accepted and reported as a warning; "quarantine" holds such rows instead.
    out_of_range: Literal["accept", "quarantine"] = "accept"
    unseen_categories: Literal["accept", "quarantine"] = "accept"
    duplicates: Literal["accept", "quarantine"] = "quarantine"


class DataSpec(_Strict):
    label: str
    task: Literal["classification", "regression"] | None = None
    classes: list[int | str] | None = Field(None, description="label classes; learned from the first batch if unset")
    time: str | None = None
    time_unit: Literal["ns", "us", "ms", "s", "m", "h", "d"] = Field(
        "s", description="what a number in the time column counts (epoch seconds: s, epoch milliseconds: ms, ...); "
        "dates and datetimes need none")
    entity: str | None = None
    features: list[FeatureSpec] | None = None
    quality: QualitySpec = QualitySpec()
    label_horizon: str | None = Field(None, description="how long a served prediction waits for its label; an older "
                                      "one stops waiting (a later label is stored for training, not scored)")

    _check_horizon = field_validator("label_horizon")(classmethod(lambda cls, v: _duration(v)))

    @model_validator(mode="after")
    def _label_not_feature(self) -> DataSpec:
        for f in self.features or []:
            if f.name in (self.label, self.time):
                raise ValueError(f"feature {f.name!r} is also the label or time column")
        return self


class WindowSpec(_Strict):
    """Which accepted rows a snapshot holds: all, the last N rows, or the last period; and how much of it a
    retrain fits on, chosen by the data (``choose``)."""

    rows: int | None = Field(None, gt=0)
    period: str | float | None = Field(None, description="a duration ('90d') or a number of seconds")
    choose: list[float] = Field(
        default_factory=lambda: [0.125, 0.25, 0.5, 1.0],
        description="shares of the window's training rows (its newest ones) a full retrain for a moved concept "
                    "(detector, quality) fits a candidate on, longest first; a shorter one is gated only when it "
                    "beats the whole window surely on the gate's holdout (rows none of them trained on). [1.0]: "
                    "always the whole window")
    choose_budget: str | float | None = Field(
        "60s", description="fitting time after which no shorter window is tried (a duration or seconds); "
                           "null: no limit")
    decay: list[float] = Field(
        default_factory=list,
        description="half-lives to try, as shares of the window ``choose`` kept: a candidate fitted on the same "
                    "rows weighted by age (a row that many rows older than the newest weighs half) is kept only "
                    "when it beats the unweighted one surely on the gate's holdout; for estimators whose fit "
                    "takes sample_weight. []: rows weigh the same")

    react: int = Field(
        0, ge=0, description="with a window in rows: labels to mature after a moved concept (detector, quality) "
                             "before a retrain trains on the rows after it alone; the next retrains follow as "
                             "that count doubles, up to a quarter of the window (each judged by the gate). At "
                             "least twice gate.min_holdout_rows (60 by default: half to train, half to judge). "
                             "0: off (the change's retrain fits the window at once, and one follow-up comes at a "
                             "quarter of it)")
    _check_period = field_validator("period", "choose_budget")(classmethod(lambda cls, v: _duration(v)))

    @field_validator("choose")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < s <= 1 for s in v):
            raise ValueError(f"must be shares in (0, 1], at least one. Got {v!r} instead")
        return sorted(set(v))

    @field_validator("decay")
    @classmethod
    def _half_lives(cls, v: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in v):
            raise ValueError(f"must be shares of the window in (0, 1]. Got {v!r} instead")
        return sorted(set(v), reverse=True)

    @model_validator(mode="after")
    def _one(self) -> WindowSpec:
        if self.rows is not None and self.period is not None:
            raise ValueError("set either rows or period, not both")
        return self


class CompanionSpec(_Strict):
    """An online model that learns every matured label beside the batch champion; of the two, the one better
    on the latest matured rows serves (see :mod:`freshloop.loop.companion`)."""

    estimator: str | None = Field(None, description="a River model, or an estimator with partial_fit; default: "
                                  "River's adaptive random forest (ARFClassifier, ARFRegressor)")
    params: dict[str, Any] = Field(default_factory=dict)
    rows: int = Field(200, gt=0, description="the most matured rows both answered that decide who serves (fewer "
                      "after a change in which of the two is better)")
    refit: int | None = Field(None, gt=0, description="instead of an online model, the spec's own model "
                              "(model.estimator, model.params) fitted anew at every tick on the newest this many "
                              "matured labels: a short window that follows a concept moving faster than retrains "
                              "can; leave estimator unset")
    every: int | None = Field(None, gt=0, description="with refit: the labels that must mature after its last "
                              "fit before it is fitted again, at most refit (default: any, so at every tick that "
                              "brought labels); bounds its cost on a large model or a short batch")

    @model_validator(mode="after")
    def _one_kind(self) -> CompanionSpec:
        if self.refit is not None and (self.estimator is not None or self.params):
            raise ValueError(f"model.companion.refit refits model.estimator: leave model.companion.estimator and "
                             f"params unset (got estimator {self.estimator!r}, params {self.params!r})")
        if self.every is not None and (self.refit is None or self.every > self.refit):
            raise ValueError(f"model.companion.every: the labels between two refits (rule: with "
                             f"model.companion.refit, and at most it, {self.refit}). Got {self.every} instead.")
        return self


class ModelSpec(_Strict):
    estimator: str = "sklearn.linear_model.LogisticRegression"
    params: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["full", "warm_start", "online", "auto"] = Field(
        "full", description="full: fit anew; warm_start: learn the new rows into the champion; online: learn each "
        "batch of labels; auto: full after a moved concept, warm_start otherwise")
    seed: int = 0
    window: WindowSpec = WindowSpec()
    scale: bool | None = Field(None, description="standardise numeric features (sklearn estimators); default: "
                               "yes, except for trees (sklearn.ensemble, sklearn.tree), which split on order alone")
    executor: str = Field("inline", description="where training runs: inline, process[:N] (a local process pool), "
                          "dask://HOST:PORT (a running Dask scheduler) or dask:local[:N] (N local Dask workers)")
    companion: CompanionSpec | None = Field(None, description="an online model beside the champion, serving when "
                                            "it is surely better on the latest matured rows; {}: River's ARF")
    balance: bool | list[str] = Field(
        False, description="at each full retrain, also fit the window with rows weighted so that each value of these "
        "columns counts the same (true: the label's, so rare classes count more; a feature: rare slices), kept only "
        "when surely better on the holdout (gate.metric balanced_accuracy values the rare classes; a feature's "
        "values are judged by the mean over them)")

    def balanced(self, label: str) -> list[str]:
        """The columns ``balance`` weighs rows by: the label's for ``true``.

        >>> ModelSpec(balance=True).balanced("y"), ModelSpec(balance=["region"]).balanced("y")
        (['y'], ['region'])
        """
        return [label] if self.balance is True else list(self.balance or [])


class DriftTriggerSpec(_Strict):
    statistic: Literal["auto", "psi", "ks", "wasserstein", "jensen_shannon", "chi2"] = "auto"
    threshold: float | None = Field(None, gt=0, description="default depends on the statistic")
    min_features: int = Field(1, ge=1, description="how many features must drift at once")
    window: int = Field(500, gt=10, description="recent rows compared with the training snapshot")


class QualityTriggerSpec(_Strict):
    max_drop: float = Field(0.02, gt=0, description="drop of the live metric below the gate's figure")
    min_labels: int = Field(100, gt=0)
    window: int = Field(500, gt=10, description="recent matured labels the live metric uses")


class GainTriggerSpec(_Strict):
    min_gain: float = Field(0.02, gt=0, description="retrain again while the last retrains beat their champion by "
                            "this much on average, relative to its score (0.02: 2 %)")
    runs: int = Field(3, gt=0, description="how many of the last retrains the average covers")


class TriggerSpec(_Strict):
    schedule: str | None = None
    volume: int | None = Field(None, gt=0, description="new matured labeled rows since the last training")
    drift: DriftTriggerSpec | None = None
    quality: QualityTriggerSpec | None = None
    detector: Literal["adwin", "page_hinkley"] | None = None
    staleness: str | None = None
    gain: GainTriggerSpec | None = None

    _check = field_validator("schedule", "staleness")(classmethod(lambda cls, v: _duration(v)))


class BudgetSpec(_Strict):
    max_retrains: int | None = Field(None, gt=0, description="retrains started within `per`")
    max_seconds: float | None = Field(None, gt=0, description="seconds of training within `per`: every fit of the "
                                      "runs (window choice and refit included); the next run is expected to cost "
                                      "what the last three did, and runs anyway when none ran within `per`")
    per: str = "30d"

    _check = field_validator("per")(classmethod(lambda cls, v: _duration(v)))

    @model_validator(mode="after")
    def _bounded(self) -> BudgetSpec:
        if self.max_retrains is None and self.max_seconds is None:
            raise ValueError("set max_retrains, max_seconds or both")
        return self


class PolicySpec(_Strict):
    name: str = "default"
    triggers: TriggerSpec = TriggerSpec(
        drift=DriftTriggerSpec(), quality=QualityTriggerSpec(), detector="adwin", staleness="365d",
        gain=GainTriggerSpec())
    min_new_labels: int = Field(50, ge=0, description="never retrain on fewer new labeled rows")
    cooldown: str = "7d"
    hysteresis: int = Field(2, ge=1, description="ticks a drift signal must persist before it counts")
    budget: BudgetSpec | None = None
    online: bool = Field(False, description="update the serving model on every matured label batch")

    _check = field_validator("cooldown")(classmethod(lambda cls, v: _duration(v)))


def policy_preset(name: str) -> PolicySpec:
    """The built-in policies: ``never``, ``periodic:<duration>``, ``default`` and ``online``.

    >>> policy_preset("periodic:30d").triggers.schedule
    '30d'
    >>> policy_preset("sometimes")
    Traceback (most recent call last):
    ...
    freshloop.errors.SpecError: The 'policy' parameter of replay.compare must be one of never, \
periodic:<duration>, default, online, hybrid. Got 'sometimes' instead.
    """
    if name == "never":
        return PolicySpec(name="never", triggers=TriggerSpec(), min_new_labels=0, cooldown="0s", hysteresis=1)
    if name == "default":
        return PolicySpec()
    if name == "online":
        return PolicySpec(name="online", triggers=TriggerSpec(), online=True, min_new_labels=0,
                          cooldown="0s", hysteresis=1)
    if name.startswith("periodic:"):
        every = name.split(":", 1)[1]
        try:
            parse_duration(every)
        except ValueError as e:
            raise SpecError(f"replay.compare: {name!r}: {e}", field="replay.compare", value=name) from None
        return PolicySpec(name=name, triggers=TriggerSpec(schedule=every), min_new_labels=0,
                          cooldown="0s", hysteresis=1)
    from .errors import param_message

    # hybrid (the spec's policy with an online companion) swaps the model too: see replay.resolve_policy
    raise SpecError(param_message("policy", "replay.compare", "one of never, periodic:<duration>, default, "
                                  "online, hybrid", name), field="replay.compare", value=name)


def preset_period(name: str) -> float | None:
    """The period of a built-in ``periodic:<duration>`` policy, in seconds; None for any other name.

    >>> preset_period("periodic:30d"), preset_period("default")
    (2592000.0, None)
    """
    return parse_duration(name.split(":", 1)[1]) if name.startswith("periodic:") else None


class GateSpec(_Strict):
    metric: Literal["accuracy", "balanced_accuracy", "log_loss", "brier", "mae", "rmse"] | None = Field(
        None, description="accuracy, balanced_accuracy, log_loss or brier for a classification; mae or rmse for a "
        "regression")
    holdout: float = Field(0.2, gt=0, lt=1, description="most recent share of labeled rows kept for judging")
    min_holdout_rows: int = Field(30, gt=0)
    max_holdout_rows: int = Field(500, gt=0)
    bootstrap: int = Field(400, ge=50)
    confidence: float = Field(0.9, gt=0.5, lt=1)
    # A non-inferiority test: a fresher model may replace the champion unless it is clearly worse.
    min_improvement: float = Field(-0.005, description="least candidate - champion (better direction) on the "
                                                       "point estimate")
    max_regression: float = Field(0.03, ge=0, description="how far below the champion the CI's low end may reach")
    refit: bool = Field(True, description="after passing, refit on the whole snapshot so the newest rows "
                                          "(the holdout) are not left out of the served model; a server serves "
                                          "the gated fit until the refit replaces it. Not for a retrain that a "
                                          "follow-up will replace")
    serve_before_refit: bool | None = Field(
        None, description="with refit, promote the gated fit as soon as it passes and the refit when it is done "
                          "(two versions per run), so the newest model serves without waiting for a second fit; "
                          "only for an immediate promotion. Unset: on for freshloop serve, off for a replay and "
                          "CLI calls, where no request waits")
    slices: list[str] = Field(default_factory=list, description="categorical features checked per value")
    recall: int = Field(0, ge=0, description="past concepts whose newest version is scored beside the champion at "
                        "every tick with new labels, on the newest min_holdout_rows labeled rows none of them was "
                        "fitted on; the best, when surely better than the champion, is promoted back without "
                        "training (a concept that returns). 0: off")


class RolloutSpec(_Strict):
    strategy: Literal["immediate", "shadow", "canary"] = "immediate"
    steps: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])
    min_labels: int = Field(100, gt=0, description="matured labels needed per step before it is judged")
    step_deadline: str = "30d"
    manual_approval: bool = False
    max_auto_rollbacks: int = Field(3, ge=1)
    # The live analysis has its own bar, so a lenient offline gate does not make a lenient canary.
    min_improvement: float = Field(-0.005, description="least candidate - champion on live labels")
    max_regression: float = Field(0.03, ge=0, description="how far below the champion the live CI may reach")
    # Wall-clock predict time is not reproducible, so the latency check is off unless asked for.
    max_latency_ratio: float | None = Field(None, gt=0, description="abort when the candidate's predict time "
                                                                     "exceeds the champion's by this factor")
    shadow_duration: str | None = Field(None, description="a shadow runs at least this long")

    _check_shadow = field_validator("shadow_duration")(classmethod(lambda cls, v: _duration(v)))

    _check = field_validator("step_deadline")(classmethod(lambda cls, v: _duration(v)))

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < s <= 100 for s in v) or v != sorted(v) or v[-1] != 100:
            raise ValueError(f"must be increasing percentages in (0, 100] ending at 100. Got {v!r} instead")
        return v


class BatchingSpec(_Strict):
    rows: int | None = Field(None, gt=0)
    period: str | float | None = Field(None, description="a duration ('90d') or a number of seconds")

    _check = field_validator("period")(classmethod(lambda cls, v: _duration(v)))

    @model_validator(mode="after")
    def _one(self) -> BatchingSpec:
        if (self.rows is None) == (self.period is None):
            raise ValueError("set exactly one of rows or period")
        return self


class ReplaySpec(_Strict):
    batch: BatchingSpec = BatchingSpec(rows=100)
    label_delay: str = "0s"
    warmup: int = Field(500, gt=0, description="rows used to train the first champion before serving")
    compare: list[str] | None = None

    _check = field_validator("label_delay")(classmethod(lambda cls, v: _duration(v)))


class StoreSpec(_Strict):
    root: str | None = Field(None, description="folder for data, artifacts and the SQLite file")
    url: str | None = Field(None, description="SQLAlchemy URL of the metadata store; default SQLite in root")
    outside_spec_folder: bool = Field(False, description="allow a root outside the spec file's folder (a spec "
                                      "from elsewhere must not make freshloop write to /etc or ../x unasked)")
    view_mb: int = Field(256, ge=0, description="megabytes of accepted rows held in memory for training snapshots; "
                         "older batches are read back from their Parquet files when a window reaches them")


class LoopSpec(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    data: DataSpec
    model: ModelSpec = ModelSpec()
    policy: PolicySpec = PolicySpec()
    gate: GateSpec = GateSpec()
    rollout: RolloutSpec = RolloutSpec()
    replay: ReplaySpec = ReplaySpec()
    store: StoreSpec = StoreSpec()

    def with_policy(self, policy: PolicySpec) -> LoopSpec:
        return self.model_copy(update={"policy": policy})


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section at ``loc`` (empty when it is not a section of the spec)."""
    model: Any = LoopSpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and
                      issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _describe(e: Any) -> str:
    loc = ".".join(str(p) for p in e["loc"]) or "(spec)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(e["loc"][-1]), _fields_at(tuple(e["loc"][:-1])), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{loc}: unknown field (rule: extra fields are not permitted). Got {e['input']!r} instead.{hint}"
    if e["type"] == "missing":
        return f"{loc}: field required (rule: the field must be present)."
    return f"{loc}: {msg}. Got {e['input']!r} instead." if "Got" not in msg else f"{loc}: {msg}"


def _ordered(err: ValidationError) -> list[Any]:
    """The errors of a spec, unknown keys first: a typo explains the "field required" beside it."""
    return sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")


def _format_error(errors: list[Any]) -> str:
    """Every error of the spec on one line, the first first: a user fixes them in one go."""
    lines = [_describe(e) for e in errors]
    return lines[0] if len(lines) == 1 else f"{len(lines)} errors: " + " | ".join(lines)


def load_spec_dict(raw: Any) -> LoopSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"(spec): must be a mapping of sections. Got {type(raw).__name__} instead.")
    try:
        spec = LoopSpec.model_validate(raw)
    except ValidationError as e:
        errors = _ordered(e)
        first = errors[0]
        raise SpecError(_format_error(errors), field=".".join(str(p) for p in first["loc"]),
                        rule=first["type"], value=first.get("input")) from None
    task, metric = spec.data.task, spec.gate.metric
    if task and metric and metric not in TASK_METRICS[task]:
        raise SpecError(f"gate.metric: {metric!r} does not score a {task} (rule: one of "
                        f"{list(TASK_METRICS[task])} for data.task {task!r}).", field="gate.metric",
                        rule="metric for the task", value=metric)
    if task == "regression" and spec.data.label in spec.model.balanced(spec.data.label):
        raise SpecError(f"model.balance: weighs rows by their class, and a regression has none (rule: the label only "
                        f"for data.task 'classification'). Got {spec.model.balance!r} instead.", field="model.balance",
                        rule="the label only for a classification", value=spec.model.balance)
    react, hold = spec.model.window.react, spec.gate.min_holdout_rows
    if react and spec.model.window.rows is None:
        raise SpecError(f"model.window.react: counts labels against a window in rows (rule: with model.window.rows; "
                        f"0 otherwise). Got {react} instead.", field="model.window.react",
                        rule="with model.window.rows", value=react)
    if react and react < 2 * hold:
        raise SpecError(f"model.window.react: {react} labels cannot both train a candidate and judge it (rule: at "
                        f"least twice gate.min_holdout_rows, {2 * hold}; or 0 for off). Got {react} instead.",
                        field="model.window.react", rule="at least twice gate.min_holdout_rows", value=react)
    return spec


def load_spec(path: str | Path) -> LoopSpec:
    """Read and validate a spec file; relative store roots resolve next to the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found.", field="spec", value=str(path)) from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML ({e}).", field="spec") from None
    try:
        spec = load_spec_dict(raw)
    except SpecError as e:
        raise SpecError(f"{path}: {e.message}", field=e.field, rule=e.rule, value=e.value) from None
    given = spec.store.root or ".freshloop"
    folder = path.parent.resolve()
    root = (folder / given).resolve()  # an absolute root stays itself
    if not root.is_relative_to(folder) and not spec.store.outside_spec_folder:
        raise SpecError(f"{path}: store.root: {given!r} is outside the spec's folder (rule: a store elsewhere needs "
                        "store.outside_spec_folder: true, so a spec cannot make freshloop write anywhere unasked).",
                        field="store.root", rule="inside the spec's folder", value=given)
    return spec.model_copy(update={"store": spec.store.model_copy(update={"root": str(root)})})

