"""models: the plain records harbor stores; behaviour lives in services."""

from __future__ import annotations

from harbor.models.berth import Berth
from harbor.models.booking import Booking, BookingStatus
from harbor.models.customer import Customer
from harbor.models.invoice import Invoice, InvoiceLine
from harbor.models.vessel import Vessel

__all__ = ["Berth", "Booking", "BookingStatus", "Customer", "Invoice", "InvoiceLine", "Vessel"]
