"""services: the operations of the marina, each a class taking its repositories and a clock."""

from __future__ import annotations

from harbor.services.billing import BillingService
from harbor.services.customers import CustomerService
from harbor.services.notifications import Notifier, Outbox
from harbor.services.scheduling import SchedulingService

__all__ = ["BillingService", "CustomerService", "Notifier", "Outbox", "SchedulingService"]
