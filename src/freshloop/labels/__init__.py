"""Labels: the prediction log and the delayed-label join (active learning comes next)."""

from .predlog import PredictionLog, Served

__all__ = ["PredictionLog", "Served"]
