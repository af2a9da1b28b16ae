"""invoices: the invoice repository."""

from __future__ import annotations

from harbor.models import Invoice
from harbor.money import Cents
from harbor.repo.base import Repository


class InvoiceRepository(Repository[Invoice]):
    kind = "invoice"

    def for_booking(self, booking_id: str) -> list[Invoice]:
        return self.fetch_many(lambda invoice: invoice.booking_id == booking_id)

    def unpaid(self) -> list[Invoice]:
        return self.fetch_many(lambda invoice: not invoice.paid)

    def outstanding(self, customer_id: str) -> Cents:
        return sum(invoice.gross for invoice in self.unpaid()
                   if invoice.customer_id == customer_id)
