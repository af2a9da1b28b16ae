"""bookings: the booking repository, with the queries scheduling needs."""

from __future__ import annotations

from datetime import date

from harbor.models import Booking
from harbor.repo.base import Repository


class BookingRepository(Repository[Booking]):
    kind = "booking"

    def for_berth(self, berth_id: str, active_only: bool = True) -> list[Booking]:
        return self.fetch_many(
            lambda booking: booking.berth_id == berth_id and (booking.active or not active_only))

    def for_vessel(self, vessel_id: str) -> list[Booking]:
        return self.fetch_many(lambda booking: booking.vessel_id == vessel_id)

    def for_customer(self, customer_id: str) -> list[Booking]:
        return self.fetch_many(lambda booking: booking.customer_id == customer_id)

    def on_night(self, night: date) -> list[Booking]:
        return self.fetch_many(
            lambda booking: booking.active and night in booking.nights_booked)
