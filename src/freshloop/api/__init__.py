"""The HTTP service: FastAPI app factory, role-checked tokens, the loop on the wall clock."""

from .app import BackgroundServer, create_app, free_port
from .service import LoopService, Settings

__all__ = ["BackgroundServer", "LoopService", "Settings", "create_app", "free_port"]
