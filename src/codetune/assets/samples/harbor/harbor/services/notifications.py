"""notifications: messages to customers, queued in an outbox and sent in batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from harbor.clock import Now, system_now
from harbor.logs import get_logger
from harbor.models import Booking, Customer, Invoice
from harbor.money import format_cents
from harbor.settings import Settings

log = get_logger(__name__)

Send = Callable[["Message"], None]


@dataclass(slots=True, frozen=True)
class Message:
    to: str
    subject: str
    body: str
    queued_at: datetime


@dataclass(slots=True)
class Outbox:
    pending: list[Message] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)

    def flush(self, send: Send) -> int:
        count = 0
        while self.pending:
            message = self.pending.pop(0)
            send(message)
            self.sent.append(message)
            count += 1
        log.info("flushed", count=count)
        return count


class Notifier:
    def __init__(self, outbox: Outbox, settings: Settings, now: Now = system_now) -> None:
        self.outbox = outbox
        self.settings = settings
        self.now = now

    def _queue(self, customer: Customer, subject: str, body: str) -> Message:
        message = Message(to=customer.email, subject=f"[{self.settings.marina_name}] {subject}",
                          body=body, queued_at=self.now())
        self.outbox.pending.append(message)
        log.debug("queued", to=customer.email, subject=subject)
        return message

    def booking_confirmed(self, customer: Customer, booking: Booking) -> Message:
        body = (f"Dear {customer.name},\n\nyour berth {booking.berth_id} is confirmed from "
                f"{booking.start:%d %B %Y} for {booking.nights} nights.\n")
        return self._queue(customer, f"Booking {booking.id} confirmed", body)

    def booking_cancelled(self, customer: Customer, booking: Booking) -> Message:
        body = f"Dear {customer.name},\n\nbooking {booking.id} has been cancelled.\n"
        return self._queue(customer, f"Booking {booking.id} cancelled", body)

    def invoice_issued(self, customer: Customer, invoice: Invoice) -> Message:
        amount = format_cents(invoice.gross, self.settings.currency)
        body = f"Dear {customer.name},\n\ninvoice {invoice.id} of {amount} is attached.\n"
        return self._queue(customer, f"Invoice {invoice.id}", body)
