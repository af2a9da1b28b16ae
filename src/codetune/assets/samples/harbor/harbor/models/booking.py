"""booking: a vessel in a berth for a run of nights."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import date, datetime

from harbor.clock import each_night
from harbor.errors import conflict, invalid
from harbor.ids import ensure_id


class BookingStatus(enum.StrEnum):
    HELD = "held"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


_NEXT = {
    BookingStatus.HELD: {BookingStatus.CONFIRMED, BookingStatus.CANCELLED},
    BookingStatus.CONFIRMED: {BookingStatus.CANCELLED, BookingStatus.COMPLETED},
    BookingStatus.CANCELLED: set(),
    BookingStatus.COMPLETED: set(),
}


@dataclass(slots=True, frozen=True)
class Booking:
    id: str
    vessel_id: str
    berth_id: str
    customer_id: str
    start: date
    nights: int
    created_at: datetime
    status: BookingStatus = BookingStatus.HELD

    @property
    def nights_booked(self) -> list[date]:
        return each_night(self.start, self.nights)

    @property
    def active(self) -> bool:
        return self.status in (BookingStatus.HELD, BookingStatus.CONFIRMED)

    def overlaps(self, other: Booking) -> bool:
        return (self.berth_id == other.berth_id and self.active and other.active
                and bool(set(self.nights_booked) & set(other.nights_booked)))

    def moved_to(self, status: BookingStatus) -> Booking:
        if status not in _NEXT[self.status]:
            raise conflict(f"a {self.status} booking cannot become {status}",
                           booking_id=self.id)
        return replace(self, status=status)


def ensure_booking(booking: Booking, min_nights: int, max_nights: int) -> Booking:
    ensure_id("booking", booking.id)
    ensure_id("vessel", booking.vessel_id)
    ensure_id("berth", booking.berth_id)
    if not min_nights <= booking.nights <= max_nights:
        raise invalid(f"nights must be between {min_nights} and {max_nights}",
                      booking_id=booking.id, nights=booking.nights)
    return booking
