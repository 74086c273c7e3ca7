"""Monitoring: per-feature and prediction drift, live quality with a CI, streaming error detectors."""

from .drift import DEFAULT_THRESHOLDS, DriftScore, Reference, drift_report, drift_score, psi
from .monitor import Monitor, Signals

__all__ = ["DEFAULT_THRESHOLDS", "DriftScore", "Monitor", "Reference", "Signals", "drift_report", "drift_score", "psi"]
