"""billing: invoices for bookings, from the berth's rate and the vessel's length."""

from __future__ import annotations

from decimal import Decimal

from harbor.clock import Now, system_now
from harbor.errors import conflict
from harbor.ids import IdFactory
from harbor.logs import get_logger
from harbor.models import Booking, Invoice, InvoiceLine
from harbor.money import Cents, apply_rate
from harbor.repo import BerthRepository, InvoiceRepository, VesselRepository
from harbor.settings import Settings

log = get_logger(__name__)

MEMBER_DISCOUNT = Decimal("0.10")
POWER_PER_NIGHT: Cents = 450


class BillingService:
    def __init__(self, invoices: InvoiceRepository, berths: BerthRepository,
                 vessels: VesselRepository, settings: Settings, ids: IdFactory,
                 now: Now = system_now) -> None:
        self.invoices = invoices
        self.berths = berths
        self.vessels = vessels
        self.settings = settings
        self.ids = ids
        self.now = now

    def night_rate(self, booking: Booking) -> Cents:
        berth = self.berths.fetch_one(booking.berth_id)
        if berth.night_rate is not None:
            return berth.night_rate
        vessel = self.vessels.fetch_one(booking.vessel_id)
        metres = -(-vessel.length_cm // 100)  # started metres are charged
        return metres * self.settings.night_rate_per_metre

    def lines_for(self, booking: Booking, member: bool = False) -> list[InvoiceLine]:
        rate = self.night_rate(booking)
        lines = [InvoiceLine(f"Berth {booking.berth_id}, {booking.nights} nights",
                             booking.nights, rate)]
        if self.berths.fetch_one(booking.berth_id).has_power:
            lines.append(InvoiceLine("Shore power", booking.nights, POWER_PER_NIGHT))
        if member:
            discount = apply_rate(sum(line.total for line in lines), MEMBER_DISCOUNT)
            lines.append(InvoiceLine("Member discount", 1, -discount))
        return lines

    def invoice(self, booking: Booking, member: bool = False) -> Invoice:
        if self.invoices.for_booking(booking.id):
            raise conflict("booking is already invoiced", booking_id=booking.id)
        invoice = Invoice(id=self.ids.next("invoice"), booking_id=booking.id,
                          customer_id=booking.customer_id, issued_on=self.now().date(),
                          lines=tuple(self.lines_for(booking, member)))
        self.invoices.store(invoice)
        log.info("invoiced", invoice_id=invoice.id, booking_id=booking.id, gross=invoice.gross)
        return invoice

    def mark_paid(self, invoice_id: str) -> Invoice:
        invoice = self.invoices.fetch_one(invoice_id)
        if invoice.paid:
            raise conflict("invoice is already paid", invoice_id=invoice_id)
        from dataclasses import replace

        invoice = replace(invoice, paid=True)
        self.invoices.store(invoice, replace=True)
        log.info("paid", invoice_id=invoice_id, gross=invoice.gross)
        return invoice
