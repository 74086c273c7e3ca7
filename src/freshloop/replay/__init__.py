"""Replay: the simulated-time driver, the policy comparison and the HTML report."""

from .compare import compare
from .driver import default_compare, replay, resolve_policy
from .report import summary_rows, write_report

__all__ = ["compare", "default_compare", "replay", "resolve_policy", "summary_rows", "write_report"]
