"""repo: where records live; every repository speaks fetch_one / fetch_many / store / discard."""

from __future__ import annotations

from harbor.repo.base import Repository
from harbor.repo.berths import BerthRepository
from harbor.repo.bookings import BookingRepository
from harbor.repo.invoices import InvoiceRepository
from harbor.repo.memory import MemoryStore
from harbor.repo.vessels import VesselRepository

__all__ = ["BerthRepository", "BookingRepository", "InvoiceRepository", "MemoryStore",
           "Repository", "VesselRepository"]
