"""freshloop: keeps a production model fresh — one loop, two clocks."""

__version__ = "0.1.0"
