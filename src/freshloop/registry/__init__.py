"""Registry: immutable model versions, hash-verified artifacts, aliases moved by compare-and-set."""

from .registry import ModelVersion, Registry

__all__ = ["ModelVersion", "Registry"]
