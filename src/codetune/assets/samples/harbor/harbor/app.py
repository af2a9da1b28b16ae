"""app: wires repositories, services and the router together; the one place that knows them all."""

from __future__ import annotations

from dataclasses import dataclass

from harbor.api import Handlers, Router, build_router
from harbor.clock import Now, system_now
from harbor.ids import IdFactory
from harbor.repo import (
    BerthRepository,
    BookingRepository,
    InvoiceRepository,
    MemoryStore,
    VesselRepository,
)
from harbor.services import BillingService, CustomerService, Notifier, Outbox, SchedulingService
from harbor.services.customers import CustomerRepository
from harbor.settings import Settings, load_settings


@dataclass(slots=True)
class App:
    store: MemoryStore
    settings: Settings
    vessels: VesselRepository
    berths: BerthRepository
    bookings: BookingRepository
    invoices: InvoiceRepository
    customers: CustomerRepository
    scheduling: SchedulingService
    billing: BillingService
    customer_service: CustomerService
    notifier: Notifier
    router: Router


def build_app(settings: Settings | None = None, now: Now = system_now) -> App:
    settings = settings or load_settings()
    store = MemoryStore()
    ids = IdFactory()
    vessels = VesselRepository(store)
    berths = BerthRepository(store)
    bookings = BookingRepository(store)
    invoices = InvoiceRepository(store)
    customers = CustomerRepository(store)
    scheduling = SchedulingService(bookings, berths, vessels, settings, ids, now)
    billing = BillingService(invoices, berths, vessels, settings, ids, now)
    customer_service = CustomerService(customers, vessels, bookings, invoices, ids)
    notifier = Notifier(Outbox(), settings, now)
    router = build_router(Handlers(scheduling, billing))
    return App(store, settings, vessels, berths, bookings, invoices, customers, scheduling,
               billing, customer_service, notifier, router)
