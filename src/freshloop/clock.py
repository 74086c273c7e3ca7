"""Time is injected, never read inside the stages.

The loop asks a :class:`Clock` for ``now``; production uses :class:`WallClock`, replay uses a
:class:`SimulatedClock` moved by the driver. Times are POSIX seconds (floats); durations are
seconds too, parsed from strings such as ``"30d"`` by :func:`parse_duration`.

Examples
--------
>>> clock = SimulatedClock(start=0.0)
>>> clock.advance_to(86400.0)
>>> clock.now()
86400.0
>>> parse_duration("30d"), parse_duration("1.5h"), parse_duration(90)
(2592000.0, 5400.0, 90.0)
"""

from __future__ import annotations

import math
import re
import time
from typing import Protocol

from .errors import InvalidValueError

__all__ = ["Clock", "SimulatedClock", "WallClock", "format_duration", "human_duration", "parse_duration",
           "round_duration"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(rows?|[smhdwy]?)\s*$")
# with no time column the row number is the clock: one row is one tick of it, written "rows"
_UNITS_ROWS = {"row": 1.0, "rows": 1.0}


class Clock(Protocol):
    #: whether time passes while the loop works (a fit on the wall clock takes seconds; a simulated clock
    #: stands still until the driver moves it)
    moves_while_working: bool

    def now(self) -> float: ...


class WallClock:
    """The real time, for ``freshloop serve``."""

    moves_while_working = True

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "WallClock()"


class SimulatedClock:
    """A clock the replay driver moves; it never goes backwards."""

    moves_while_working = False

    def __init__(self, start: float = 0.0) -> None:
        self.start = start
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        if t < self._now:
            raise InvalidValueError(f"SimulatedClock cannot go backwards: {t} < {self._now}", field="t", value=t)
        self._now = float(t)

    def __repr__(self) -> str:
        return f"SimulatedClock(now={self._now})"


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``: a number of seconds or a string like ``"90s"``, ``"12h"``, ``"30d"``, ``"1y"``.

    >>> parse_duration("2w")
    1209600.0
    >>> parse_duration("soon")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    freshloop.errors.InvalidValueError: must be a duration such as '30d', '12h' or ... Got 'soon' instead.
    """
    if isinstance(value, bool):
        raise InvalidValueError(f"must be a duration such as '30d', '12h' or a number of seconds >= 0. "
                                f"Got {value!r} instead.", value=value)
    if isinstance(value, int | float):
        if value < 0 or value != value:
            raise InvalidValueError(f"must be a duration >= 0. Got {value!r} instead.", value=value)
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise InvalidValueError(f"must be a duration such as '30d', '12h' or a number of seconds >= 0. "
                                f"Got {value!r} instead.", value=value)
    return float(m.group(1)) * {**_UNITS, **_UNITS_ROWS}[m.group(2) or "s"]


def format_duration(seconds: float, *, rows: bool = False) -> str:
    """A short form that parses back: ``format_duration(86400 * 3)`` is ``'3d'``; with ``rows`` (no time
    column: the row number is the clock) a count of rows.

    >>> format_duration(5400), format_duration(86400 * 3), format_duration(30), format_duration(2265, rows=True)
    ('1.5h', '3d', '30s', '2265rows')
    """
    if rows:
        return f"{seconds:.0f}rows"
    for unit in ("y", "w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and (seconds / size) == round(seconds / size, 1):
            n = seconds / size
            return f"{n:g}{unit}"
    return f"{seconds:.6g}s" if seconds < 1e6 else f"{round(seconds)}s"


_ROUND = tuple(float(x) for x in (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                                   2 * 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 60 * 86400,
                                   90 * 86400, 180 * 86400, 365 * 86400))


def round_duration(seconds: float) -> str:
    """The round duration people would pick nearest to ``seconds`` (on a log scale): a minute, an hour, 6 h,
    a day, a week, 30 d, a year, whole years beyond; as :func:`format_duration` writes it.

    >>> round_duration(5000), round_duration(80000), round_duration(9 * 86400), round_duration(3.3e8)
    ('1h', '1d', '1w', '10y')
    """
    year = 365 * 86400.0
    if seconds > 1.5 * year:
        return format_duration(max(2.0, round(seconds / year)) * year)
    best = min(_ROUND, key=lambda r: abs(math.log(max(seconds, 1.0) / r)))
    return format_duration(best)


_HUMAN = (("y", 365 * 86400.0), ("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))


def human_duration(seconds: float | None, *, rows: bool = False) -> str:
    """A duration as people read it in a table: ``'3.2 d'``, ``'14 h'``, ``'4,531 rows'``.

    >>> human_duration(3.2 * 86400), human_duration(50400), human_duration(4531, rows=True), human_duration(None)
    ('3.2 d', '14 h', '4,531 rows', '-')
    """
    if seconds is None or seconds != seconds:
        return "-"
    if rows:
        return f"{seconds:,.0f} rows"
    for unit, size in _HUMAN:
        if abs(seconds) >= size or unit == "s":
            return f"{seconds / size:.3g} {unit}"
    raise AssertionError("unreachable")
