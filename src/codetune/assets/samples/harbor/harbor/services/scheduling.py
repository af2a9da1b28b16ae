"""scheduling: hold, confirm, cancel and complete bookings without double-booking a berth."""

from __future__ import annotations

from datetime import date, timedelta

from harbor.clock import Now, system_now
from harbor.errors import conflict, invalid
from harbor.ids import IdFactory
from harbor.logs import get_logger
from harbor.models import Booking, BookingStatus
from harbor.models.booking import ensure_booking
from harbor.repo import BerthRepository, BookingRepository, VesselRepository
from harbor.settings import Settings

log = get_logger(__name__)


class SchedulingService:
    def __init__(self, bookings: BookingRepository, berths: BerthRepository,
                 vessels: VesselRepository, settings: Settings, ids: IdFactory,
                 now: Now = system_now) -> None:
        self.bookings = bookings
        self.berths = berths
        self.vessels = vessels
        self.settings = settings
        self.ids = ids
        self.now = now

    def hold(self, vessel_id: str, berth_id: str, start: date, nights: int) -> Booking:
        vessel = self.vessels.fetch_one(vessel_id)
        berth = self.berths.fetch_one(berth_id)
        if not vessel.fits(berth.max_length_cm, berth.max_beam_cm, berth.depth_cm):
            raise invalid("vessel does not fit the berth", vessel_id=vessel_id,
                          berth_id=berth_id)
        if start < self.now().date():
            raise invalid("bookings cannot start in the past", start=start.isoformat())
        booking = Booking(id=self.ids.next("booking"), vessel_id=vessel.id, berth_id=berth.id,
                          customer_id=vessel.owner_id, start=start, nights=nights,
                          created_at=self.now())
        ensure_booking(booking, self.settings.min_nights, self.settings.max_nights)
        clash = next((other for other in self.bookings.for_berth(berth_id)
                      if booking.overlaps(other)), None)
        if clash is not None:
            raise conflict("berth is taken on some of those nights", berth_id=berth_id,
                           clashing_booking=clash.id)
        self.bookings.store(booking)
        log.info("held", booking_id=booking.id, berth_id=berth_id, nights=nights)
        return booking

    def confirm(self, booking_id: str) -> Booking:
        booking = self.bookings.fetch_one(booking_id).moved_to(BookingStatus.CONFIRMED)
        self.bookings.store(booking, replace=True)
        log.info("confirmed", booking_id=booking_id)
        return booking

    def cancel(self, booking_id: str) -> Booking:
        booking = self.bookings.fetch_one(booking_id)
        deadline = booking.created_at + timedelta(hours=self.settings.cancellation_hours)
        if booking.status == BookingStatus.CONFIRMED and self.now() > deadline:
            raise conflict("the free cancellation period is over", booking_id=booking_id)
        booking = booking.moved_to(BookingStatus.CANCELLED)
        self.bookings.store(booking, replace=True)
        log.info("cancelled", booking_id=booking_id)
        return booking

    def complete(self, booking_id: str) -> Booking:
        booking = self.bookings.fetch_one(booking_id).moved_to(BookingStatus.COMPLETED)
        self.bookings.store(booking, replace=True)
        log.info("completed", booking_id=booking_id)
        return booking

    def free_berths(self, night: date) -> list[str]:
        taken = {booking.berth_id for booking in self.bookings.on_night(night)}
        return [berth.id for berth in self.berths.fetch_many() if berth.id not in taken]

    def occupancy(self, night: date) -> float:
        total = len(self.berths)
        if total == 0:
            return 0.0
        return len(self.bookings.on_night(night)) / total
