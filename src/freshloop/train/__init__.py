"""Training: the model bundle, trainers (full, warm start, online) and executors."""

from .executor import DaskExecutor, Executor, InlineExecutor, ProcessExecutor, make_executor
from .model import ModelBundle, import_estimator
from .trainer import Candidate, TrainingFailed, TrainRequest, train_candidate

__all__ = ["Candidate", "DaskExecutor", "Executor", "InlineExecutor", "ModelBundle", "ProcessExecutor", "TrainRequest",
           "TrainingFailed", "import_estimator", "make_executor", "train_candidate"]
