"""invoice: what a customer owes for a booking, line by line, in cents."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from harbor.money import Cents, split_vat


@dataclass(slots=True, frozen=True)
class InvoiceLine:
    description: str
    quantity: int
    unit_price: Cents

    @property
    def total(self) -> Cents:
        return self.quantity * self.unit_price


@dataclass(slots=True, frozen=True)
class Invoice:
    id: str
    booking_id: str
    customer_id: str
    issued_on: date
    lines: tuple[InvoiceLine, ...] = field(default_factory=tuple)
    paid: bool = False

    @property
    def gross(self) -> Cents:
        return sum(line.total for line in self.lines)

    @property
    def net_and_vat(self) -> tuple[Cents, Cents]:
        return split_vat(self.gross)
