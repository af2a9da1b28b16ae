"""handlers: one method per endpoint, taking a parsed payload and returning (status, body)."""

from __future__ import annotations

from typing import Any

from harbor.api.schemas import HoldRequest, booking_out, invoice_out, require
from harbor.errors import STATUS_BY_CODE, HarborError
from harbor.logs import get_logger
from harbor.services import BillingService, SchedulingService

log = get_logger(__name__)

Response = tuple[int, dict[str, Any]]


def error_response(error: HarborError) -> Response:
    status = STATUS_BY_CODE.get(error.code, 400)
    log.info("rejected", code=error.code, status=status)
    return status, {"error": error.to_dict()}


class Handlers:
    def __init__(self, scheduling: SchedulingService, billing: BillingService) -> None:
        self.scheduling = scheduling
        self.billing = billing

    def hold_booking(self, payload: dict[str, Any]) -> Response:
        request = HoldRequest.parse(payload)
        booking = self.scheduling.hold(request.vessel_id, request.berth_id, request.start,
                                       request.nights)
        return 201, {"booking": booking_out(booking)}

    def confirm_booking(self, payload: dict[str, Any]) -> Response:
        booking = self.scheduling.confirm(require(payload, "booking_id", str))
        return 200, {"booking": booking_out(booking)}

    def cancel_booking(self, payload: dict[str, Any]) -> Response:
        booking = self.scheduling.cancel(require(payload, "booking_id", str))
        return 200, {"booking": booking_out(booking)}

    def issue_invoice(self, payload: dict[str, Any]) -> Response:
        booking = self.scheduling.bookings.fetch_one(require(payload, "booking_id", str))
        invoice = self.billing.invoice(booking, member=bool(payload.get("member", False)))
        return 201, {"invoice": invoice_out(invoice, self.billing.settings.currency)}

    def pay_invoice(self, payload: dict[str, Any]) -> Response:
        invoice = self.billing.mark_paid(require(payload, "invoice_id", str))
        return 200, {"invoice": invoice_out(invoice, self.billing.settings.currency)}
