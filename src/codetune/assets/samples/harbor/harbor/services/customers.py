"""customers: registering customers and answering "what do they owe, what do they have"."""

from __future__ import annotations

from harbor.errors import conflict
from harbor.ids import IdFactory
from harbor.logs import get_logger
from harbor.models import Customer
from harbor.models.customer import ensure_customer
from harbor.money import Cents
from harbor.repo import BookingRepository, InvoiceRepository, Repository, VesselRepository

log = get_logger(__name__)


class CustomerRepository(Repository[Customer]):
    kind = "customer"

    def by_email(self, email: str) -> Customer | None:
        found = self.fetch_many(lambda customer: customer.email.lower() == email.lower())
        return found[0] if found else None


class CustomerService:
    def __init__(self, customers: CustomerRepository, vessels: VesselRepository,
                 bookings: BookingRepository, invoices: InvoiceRepository,
                 ids: IdFactory) -> None:
        self.customers = customers
        self.vessels = vessels
        self.bookings = bookings
        self.invoices = invoices
        self.ids = ids

    def register(self, name: str, email: str, phone: str | None = None) -> Customer:
        if self.customers.by_email(email) is not None:
            raise conflict("a customer with this email exists", email=email)
        customer = ensure_customer(Customer(id=self.ids.next("customer"), name=name.strip(),
                                            email=email.strip(), phone=phone))
        self.customers.store(customer)
        log.info("registered", customer_id=customer.id)
        return customer

    def balance(self, customer_id: str) -> Cents:
        self.customers.fetch_one(customer_id)
        return self.invoices.outstanding(customer_id)

    def summary(self, customer_id: str) -> dict[str, object]:
        customer = self.customers.fetch_one(customer_id)
        return {
            "id": customer.id,
            "name": customer.name,
            "vessels": [vessel.id for vessel in self.vessels.owned_by(customer_id)],
            "bookings": [booking.id for booking in self.bookings.for_customer(customer_id)],
            "balance": self.balance(customer_id),
        }
