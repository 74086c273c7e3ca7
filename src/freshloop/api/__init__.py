"""The HTTP service: FastAPI app factory, role-checked tokens, the loop on the wall clock."""

from .app import create_app
from .service import LoopService, Settings

__all__ = ["LoopService", "Settings", "create_app"]
