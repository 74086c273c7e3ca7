"""Rollout: deterministic routing, shadow and canary analysis, automatic rollback."""

from .rollout import Action, Rollout, Status, StepOutcome, Strategy, analyze_step, route_to_candidate

__all__ = ["Action", "Rollout", "Status", "StepOutcome", "Strategy", "analyze_step", "route_to_candidate"]
