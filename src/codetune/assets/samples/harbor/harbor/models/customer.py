"""customer: who pays, and how to reach them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harbor.errors import invalid
from harbor.ids import ensure_id

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.IGNORECASE)


@dataclass(slots=True, frozen=True)
class Customer:
    id: str
    name: str
    email: str
    phone: str | None = None
    member: bool = False


def ensure_customer(customer: Customer) -> Customer:
    ensure_id("customer", customer.id)
    if not customer.name.strip():
        raise invalid("customer name is empty", customer_id=customer.id)
    if not _EMAIL.match(customer.email):
        raise invalid("not an email address", customer_id=customer.id, email=customer.email)
    return customer
