"""Rollout: deterministic routing, shadow and canary analysis, automatic rollback."""

from .rollout import Rollout, StepOutcome, analyze_step, route_to_candidate

__all__ = ["Rollout", "StepOutcome", "analyze_step", "route_to_candidate"]
