"""api: a JSON layer over the services, independent of any web framework."""

from __future__ import annotations

from harbor.api.handlers import Handlers
from harbor.api.routes import Router, build_router

__all__ = ["Handlers", "Router", "build_router"]
