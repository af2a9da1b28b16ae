"""schemas: request parsing and response shaping; every field is checked, nothing is trusted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from harbor.errors import invalid
from harbor.ids import ensure_id
from harbor.models import Booking, Invoice
from harbor.money import format_cents


def require(payload: dict[str, Any], name: str, kind: type) -> Any:
    if name not in payload:
        raise invalid(f"missing field {name}", field=name)
    value = payload[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise invalid(f"field {name} must be {kind.__name__}", field=name)
    return value


def require_date(payload: dict[str, Any], name: str) -> date:
    text = require(payload, name, str)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise invalid(f"field {name} must be a date (YYYY-MM-DD)", field=name) from None


@dataclass(slots=True, frozen=True)
class HoldRequest:
    vessel_id: str
    berth_id: str
    start: date
    nights: int

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> HoldRequest:
        return cls(vessel_id=ensure_id("vessel", require(payload, "vessel_id", str)),
                   berth_id=ensure_id("berth", require(payload, "berth_id", str)),
                   start=require_date(payload, "start"),
                   nights=require(payload, "nights", int))


def booking_out(booking: Booking) -> dict[str, Any]:
    return {"id": booking.id, "vessel_id": booking.vessel_id, "berth_id": booking.berth_id,
            "customer_id": booking.customer_id, "start": booking.start.isoformat(),
            "nights": booking.nights, "status": str(booking.status)}


def invoice_out(invoice: Invoice, currency: str) -> dict[str, Any]:
    net, vat = invoice.net_and_vat
    return {"id": invoice.id, "booking_id": invoice.booking_id,
            "issued_on": invoice.issued_on.isoformat(), "paid": invoice.paid,
            "lines": [{"description": line.description, "quantity": line.quantity,
                       "unit_price": line.unit_price} for line in invoice.lines],
            "net": net, "vat": vat, "gross": invoice.gross,
            "gross_text": format_cents(invoice.gross, currency)}
