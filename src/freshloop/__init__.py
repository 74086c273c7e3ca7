"""freshloop keeps a production model fresh: one loop, two clocks.

The same :class:`Loop` runs behind ``freshloop serve`` on the wall clock and inside
``freshloop replay`` on a simulated clock, so a replay is an honest forecast of what the loop would do.
"""

__version__ = "0.1.0"

from .clock import SimulatedClock, WallClock, parse_duration  # noqa: E402
from .errors import FreshloopError  # noqa: E402
from .loop import Loop  # noqa: E402
from .spec import LoopSpec, load_spec  # noqa: E402

__all__ = ["FreshloopError", "Loop", "LoopSpec", "SimulatedClock", "WallClock", "__version__", "load_spec",
           "parse_duration"]
