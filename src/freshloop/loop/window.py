"""How far back a retrain looks, chosen by the data.

A retrain fits one candidate per window length (the newest rows of its snapshot's training part) and scores
each on the gate's holdout (the newest labeled rows, which none of them trained on). The whole window is
fitted first and is the one kept unless a shorter one beats it surely (the low end of the confidence interval
of their difference above zero): after a change the short windows win by far, as they hold the new concept
alone; on a stable or seasonal stream a short window that wins by a hair on one holdout is luck, and more
rows mean less noise. Klinkenberg's adaptive time windows choose the same way. The lengths are tried longest
first, halving, and the shorter ones are left untried once one scores below the one before it (or the time
budget is spent).

Examples
--------
>>> window_lengths(1000, [0.125, 0.25, 0.5, 1.0], least=30)
[1000, 500, 250, 125]
>>> window_lengths(100, [0.125, 0.25, 0.5, 1.0], least=30)  # too short to judge: the shortest is 30 rows
[100, 50, 30]
>>> window_lengths(20, [0.5, 1.0], least=30)  # fewer rows than the least: the whole of them
[20]
>>> c = WindowChoice("accuracy", (Tried(500, 0.62, 0.02), Tried(250, 0.74, 0.01), Tried(125, 0.71, 0.01)), 250,
...                  "surely better than the whole window: by +0.1200, CI low +0.0500")
>>> c.describe()  # doctest: +NORMALIZE_WHITESPACE
'window 250 rows (surely better than the whole window: by +0.1200, CI low +0.0500); holdout accuracy:
 500 rows 0.6200, 250 rows 0.7400, 125 rows 0.7100'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Tried", "WindowChoice", "window_lengths"]


def window_lengths(n: int, shares: Sequence[float], *, least: int) -> list[int]:
    """The window lengths to try on ``n`` training rows: each share of ``n``, at least ``least`` rows (no
    fewer than the gate needs to judge), no more than ``n``, each once, longest first."""
    return sorted({min(n, max(least, round(s * n))) for s in shares}, reverse=True)


@dataclass(frozen=True)
class Tried:
    """One window length tried: its holdout score, its fitting time, or why it could not be fitted."""

    rows: int
    score: float | None
    seconds: float
    error: str | None = None
    half_life: int | None = None  # rows weighted by age, halving every half_life rows back (None: unweighted)
    balanced: tuple[str, ...] = ()  # rows weighted so that each value of these columns counts the same

    def name(self) -> str:
        return f"{self.rows} rows" + (f" half-life {self.half_life}" if self.half_life else "") + \
            (f" balanced by {', '.join(self.balanced)}" if self.balanced else "")


@dataclass(frozen=True)
class WindowChoice:
    """The window lengths a retrain tried, the one it kept and why."""

    metric: str
    tried: tuple[Tried, ...]
    rows: int
    why: str
    skipped: tuple[int, ...] = ()  # shorter lengths left untried
    stopped: str | None = None  # why they were
    half_life: int | None = None  # the kept fit's rows weighted by age (``model.window.decay``); None: unweighted
    balanced: tuple[str, ...] = ()  # the kept fit's rows weighted so each value of these columns counts the same
    chose: bool = True  # window lengths were compared (False: the whole window, only its weights were tried)

    def describe(self) -> str:
        parts = [f"{t.name()} {t.score:.4f}" if t.score is not None else f"{t.name()} failed ({t.error})"
                 for t in self.tried]
        left = f"; {', '.join(map(str, self.skipped))} rows not tried ({self.stopped})" if self.skipped else ""
        weighed = (f", half-life {self.half_life} rows" if self.half_life else "") + \
            (f", balanced by {', '.join(self.balanced)}" if self.balanced else "")
        return f"window {self.rows} rows{weighed} ({self.why}); holdout {self.metric}: " + ", ".join(parts) + left

    def to_dict(self) -> dict[str, Any]:
        tried = [{**asdict(t), "balanced": list(t.balanced)} for t in self.tried]  # as JSON gives it back
        return {"rows": self.rows, "why": self.why, "metric": self.metric, "tried": tried,
                "skipped": list(self.skipped), "stopped": self.stopped, "half_life": self.half_life,
                "balanced": list(self.balanced), "chose": self.chose}
