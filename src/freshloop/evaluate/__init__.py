"""Evaluation: metrics with a direction, paired bootstrap, and the gate that returns a Verdict."""

from .gate import Check, Difference, Verdict, judge, paired_bootstrap
from .metrics import METRICS, Metric, default_metric, get_metric, mean_ci

__all__ = ["METRICS", "Check", "Difference", "Metric", "Verdict", "default_metric", "get_metric", "judge",
           "mean_ci", "paired_bootstrap"]
