"""Labels: the prediction log, the delayed-label join and the outcome log (active learning comes next)."""

from .outcomes import OutcomeLog
from .predlog import PredictionLog, Served

__all__ = ["OutcomeLog", "PredictionLog", "Served"]
