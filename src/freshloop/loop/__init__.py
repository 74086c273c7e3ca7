"""The loop and its stages: serving, the label join, online learning, training runs and deployment."""

from .context import Champion, Context, LoopStats, PredictResult, TickReport
from .join import FeedbackResult
from .loop import Loop

__all__ = ["Champion", "Context", "FeedbackResult", "Loop", "LoopStats", "PredictResult", "TickReport"]
