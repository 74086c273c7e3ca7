"""The loop and its stages: serving, the label join, online learning, training runs and deployment."""

from .context import Champion, Context, LoopStats, PredictResult, TickReport
from .join import FeedbackResult
from .loop import Loop
from .router import predicted_batch_id

__all__ = ["Champion", "Context", "FeedbackResult", "Loop", "LoopStats", "PredictResult", "TickReport",
           "predicted_batch_id"]
