"""Policy: triggers, guards against thrashing, and the pure decide() returning Retrain or Skip."""

from .policy import Decision, Policy, PolicyState, Retrain, Skip, run_key
from .triggers import DetectorTrigger, DriftTrigger, QualityTrigger, Schedule, Staleness, Trigger, Volume

__all__ = ["Decision", "DetectorTrigger", "DriftTrigger", "Policy", "PolicyState", "QualityTrigger", "Retrain",
           "Schedule", "Skip", "Staleness", "Trigger", "Volume", "run_key"]
