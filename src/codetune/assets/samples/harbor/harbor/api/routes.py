"""routes: method + path to handler, and the one place HarborError becomes a response."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harbor.api.handlers import Handlers, Response, error_response
from harbor.errors import HarborError
from harbor.logs import get_logger

log = get_logger(__name__)

Handler = Callable[[dict[str, Any]], Response]


@dataclass(slots=True)
class Router:
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method.upper(), path)] = handler

    def dispatch(self, method: str, path: str, payload: dict[str, Any]) -> Response:
        handler = self.routes.get((method.upper(), path))
        if handler is None:
            return 404, {"error": {"code": "no_route", "detail": f"{method} {path}"}}
        try:
            return handler(payload)
        except HarborError as error:
            return error_response(error)


def build_router(handlers: Handlers) -> Router:
    router = Router()
    router.add("POST", "/bookings", handlers.hold_booking)
    router.add("POST", "/bookings/confirm", handlers.confirm_booking)
    router.add("POST", "/bookings/cancel", handlers.cancel_booking)
    router.add("POST", "/invoices", handlers.issue_invoice)
    router.add("POST", "/invoices/pay", handlers.pay_invoice)
    log.debug("routes", count=len(router.routes))
    return router
