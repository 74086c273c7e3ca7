"""The monitor: drift of recent rows and predictions against the champion's training snapshot,
live quality on matured labels with a confidence interval, and a streaming detector on the error
stream (River's ADWIN or Page-Hinkley). Memory is bounded by the windows, not the history.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..data.schema import Schema
from ..evaluate.metrics import Metric, mean_ci
from ..spec import TriggerSpec
from .drift import DriftScore, Reference, drift_score

__all__ = ["Monitor", "Signals"]


@dataclass(frozen=True)
class Signals:
    """Everything the policy may look at, as of ``now``."""

    now: float
    new_labels: int = 0
    drift: dict[str, DriftScore] = field(default_factory=dict)
    prediction_drift: DriftScore | None = None
    live_metric: float | None = None
    live_low: float | None = None
    live_high: float | None = None
    live_n: int = 0
    reference_metric: float | None = None
    reference_low: float | None = None  # the reference's own confidence interval (it is measured, too)
    reference_high: float | None = None
    detector_fired: bool = False
    last_trained_at: float | None = None
    champion_since: float | None = None
    drift_at_training: dict[str, float] = field(default_factory=dict)
    # how much the last retrains' candidates beat the champion they were judged against on rows neither had
    # trained on, relative to the champion's score (oldest first; the loop's record, not the monitor's)
    gains: tuple[float, ...] = ()

    @property
    def drifted(self) -> list[str]:
        return [k for k, v in self.drift.items() if v.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now, "new_labels": self.new_labels,
                "drift": {k: round(v.value, 6) for k, v in self.drift.items()},
                "prediction_drift": None if self.prediction_drift is None else round(self.prediction_drift.value, 6),
                "live_metric": self.live_metric, "live_n": self.live_n, "reference_metric": self.reference_metric,
                "detector_fired": self.detector_fired}


def _make_detector(name: str | None) -> Any:
    if name == "adwin":
        from river.drift import ADWIN

        return ADWIN()
    if name == "page_hinkley":
        from river.drift import PageHinkley

        return PageHinkley()
    return None


class Monitor:
    """Watches one champion; :meth:`reset` when the champion changes."""

    def __init__(self, schema: Schema, triggers: TriggerSpec, metric: Metric, confidence: float = 0.9) -> None:
        self.schema = schema
        self.triggers = triggers
        self.metric = metric
        self.confidence = confidence
        self.drift_window = triggers.drift.window if triggers.drift else 500
        self.quality_window = triggers.quality.window if triggers.quality else 500
        self._refs: dict[str, Reference] = {}
        self._pred_ref: Reference | None = None
        self.reference_metric: float | None = None
        self.reference_ci: tuple[float, float] | None = None
        self._rows: dict[str, deque[np.ndarray]] = {}
        self._n_rows: deque[int] = deque()
        self._preds: deque[float] = deque(maxlen=self.drift_window)
        self._scores: deque[float] = deque(maxlen=self.quality_window)
        self._seen = 0  # matured scores since the champion took over (the window holds the last of them)
        self._detector = _make_detector(triggers.detector)
        self.detector_fired = False
        self.new_labels = 0
        self._last_drift: dict[str, float] = {}
        self.drift_at_training: dict[str, float] = {}

    def reset(self, reference: pd.DataFrame, reference_predictions: np.ndarray | None) -> None:
        """A new champion: new reference distributions, empty live windows, a fresh detector."""
        self._refs = {}
        for f in self.schema.features:
            if f.name not in reference:
                continue
            col = reference[f.name]
            if f.kind == "numeric":
                self._refs[f.name] = Reference.numeric(pd.to_numeric(col, errors="coerce").to_numpy(dtype=float))
            else:
                self._refs[f.name] = Reference.categorical(col.dropna().astype(str).to_numpy())
        self._pred_ref = (Reference.numeric(reference_predictions)
                          if reference_predictions is not None and len(reference_predictions) else None)
        # The quality reference is the champion's own live metric over its first full window of matured
        # labels (a gate figure from a small holdout is too noisy to alarm on), kept with its interval.
        self.reference_metric = None
        self.reference_ci = None
        self._scores.clear()
        self._seen = 0
        self._preds.clear()
        self._detector = _make_detector(self.triggers.detector)
        self.detector_fired = False
        self.drift_at_training = {}

    def trained(self) -> None:
        """A training run happened (promoted or not): start counting new labels and detections afresh,
        and remember the drift it was trained under, so drift a retrain could not remove is not re-alarmed."""
        self.drift_at_training = dict(self._last_drift)
        self.new_labels = 0
        self.restart_detector()

    def restart_detector(self) -> None:
        self.detector_fired = False
        self._detector = _make_detector(self.triggers.detector)

    def _reference_needs(self) -> int:
        # the reference takes a full window, so it is as precise as the live figure it is compared with
        return max(self.triggers.quality.min_labels, self.quality_window) if self.triggers.quality else 100

    def restore_outcomes(self, scores: np.ndarray, detector_from: int) -> None:
        """Rebuild, right after :meth:`reset`, what :meth:`observe_outcomes` would hold had it been fed
        ``scores`` (the champion's, oldest first) with the detector restarted before ``scores[detector_from]``:
        the reference from the first full window, the live window from the last, the detector from the rest."""
        need = self._reference_needs()
        if len(scores) >= need:
            ref, low, high = mean_ci(np.asarray(scores[max(0, need - self.quality_window):need]), self.metric,
                                     self.confidence)
            self.reference_metric, self.reference_ci = float(ref), (low, high)
        self._scores.extend(float(s) for s in scores[-self.quality_window:])
        self._seen = len(scores)
        self._feed_detector(scores[detector_from:])

    def _feed_detector(self, scores: np.ndarray) -> None:
        if self._detector is None:
            return
        for s in scores:
            self._detector.update(float(s) if not self.metric.bigger_is_better else 1.0 - float(s))
            if self._detector.drift_detected:
                self.detector_fired = True

    def observe_rows(self, frame: pd.DataFrame, prediction_scores: np.ndarray | None = None) -> None:
        if len(frame):
            for f in self.schema.features:
                if f.name in frame:
                    col = frame[f.name]
                    values = col.to_numpy(dtype=float, na_value=np.nan) if f.kind == "numeric" \
                        else col.dropna().astype(str).to_numpy()
                    self._rows.setdefault(f.name, deque()).append(values)
            self._n_rows.append(len(frame))
            while len(self._n_rows) > 1 and sum(self._n_rows) - self._n_rows[0] >= self.drift_window:
                self._n_rows.popleft()
                for q in self._rows.values():
                    if len(q) > len(self._n_rows):
                        q.popleft()
        if prediction_scores is not None:
            self._preds.extend(float(v) for v in prediction_scores)

    def observe_outcomes(self, per_row_scores: np.ndarray, labeled_rows: int) -> None:
        """Per-row metric scores of the champion's served predictions whose labels just matured."""
        self.new_labels += labeled_rows
        need = self._reference_needs()
        for s in per_row_scores:
            self._scores.append(float(s))
            self._seen += 1
            if self.reference_metric is None and self._seen >= need:
                ref, low, high = mean_ci(np.array(self._scores), self.metric, self.confidence)
                self.reference_metric, self.reference_ci = float(ref), (low, high)
        self._feed_detector(np.asarray(per_row_scores))

    @property
    def last_drift(self) -> dict[str, float]:
        """Each feature's drift value at the last :meth:`signals`."""
        return dict(self._last_drift)

    def signals(self, now: float, *, last_trained_at: float | None, champion_since: float | None,
                gains: tuple[float, ...] = ()) -> Signals:
        drift: dict[str, DriftScore] = {}
        if self._rows and self._refs:
            spec = self.triggers.drift
            stat = spec.statistic if spec else "auto"
            thr = spec.threshold if spec else None
            for name, ref in self._refs.items():
                if name not in self._rows:
                    continue
                values = np.concatenate(list(self._rows[name]))[-self.drift_window:]
                if len(values):
                    drift[name] = drift_score(ref, values, stat, thr)
        self._last_drift = {k: v.value for k, v in drift.items()}
        pred_drift = drift_score(self._pred_ref, np.array(self._preds), "psi") \
            if self._pred_ref is not None and len(self._preds) else None
        live = low = high = None
        if self._scores:
            live, low, high = mean_ci(np.array(self._scores), self.metric, self.confidence)
        return Signals(now=now, new_labels=self.new_labels, drift=drift, prediction_drift=pred_drift,
                       live_metric=live, live_low=low, live_high=high, live_n=len(self._scores),
                       reference_metric=self.reference_metric,
                       reference_low=None if self.reference_ci is None else self.reference_ci[0],
                       reference_high=None if self.reference_ci is None else self.reference_ci[1],
                       detector_fired=self.detector_fired,
                       last_trained_at=last_trained_at, champion_since=champion_since,
                       drift_at_training=dict(self.drift_at_training), gains=gains)
