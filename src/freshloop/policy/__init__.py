"""Policy: triggers, guards against thrashing, and the pure decide() returning Retrain or Skip."""

from .policy import (
                       CHANGE_TRIGGERS,
                       CONCEPT_TRIGGERS,
                       GUARDS,
                       Budget,
                       Decision,
                       Guard,
                       Policy,
                       PolicyState,
                       Retrain,
                       Skip,
                       bootstrap,
                       first_change,
                       moves_concept,
                       run_key,
)
from .triggers import (
                       DetectorTrigger,
                       DriftTrigger,
                       GainTrigger,
                       QualityTrigger,
                       ScheduleTrigger,
                       StalenessTrigger,
                       Trigger,
                       TriggerName,
                       VolumeTrigger,
)

__all__ = ["CHANGE_TRIGGERS", "CONCEPT_TRIGGERS", "GUARDS", "Budget", "Decision", "DetectorTrigger", "DriftTrigger",
           "GainTrigger", "Guard", "Policy", "PolicyState", "QualityTrigger", "Retrain", "ScheduleTrigger", "Skip",
           "StalenessTrigger", "Trigger", "TriggerName", "VolumeTrigger", "bootstrap", "first_change", "moves_concept",
           "run_key"]
