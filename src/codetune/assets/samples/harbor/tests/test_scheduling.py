from __future__ import annotations

from datetime import date

import pytest
from harbor.app import App
from harbor.clock import FrozenClock
from harbor.errors import HarborError
from harbor.models import BookingStatus


def test_hold_then_confirm(app: App) -> None:
    booking = app.scheduling.hold("V-0001", "B-01", date(2024, 6, 1), 3)
    assert booking.status == BookingStatus.HELD
    confirmed = app.scheduling.confirm(booking.id)
    assert confirmed.status == BookingStatus.CONFIRMED
    assert app.bookings.fetch_one(booking.id).status == BookingStatus.CONFIRMED


def test_overlapping_hold_is_a_conflict(app: App) -> None:
    app.scheduling.hold("V-0001", "B-01", date(2024, 6, 1), 3)
    with pytest.raises(HarborError) as info:
        app.scheduling.hold("V-0002", "B-03", date(2024, 6, 2), 2)
        app.scheduling.hold("V-0001", "B-01", date(2024, 6, 3), 2)
    assert info.value.code == "conflict"


def test_vessel_too_long_for_berth(app: App) -> None:
    with pytest.raises(HarborError) as info:
        app.scheduling.hold("V-0004", "B-05", date(2024, 6, 1), 1)
    assert info.value.code == "invalid"


def test_cancel_after_deadline(app: App, clock: FrozenClock) -> None:
    booking = app.scheduling.confirm(
        app.scheduling.hold("V-0001", "B-01", date(2024, 6, 1), 2).id)
    clock.advance(hours=49)
    with pytest.raises(HarborError) as info:
        app.scheduling.cancel(booking.id)
    assert info.value.code == "conflict"


def test_free_berths_and_occupancy(app: App) -> None:
    app.scheduling.hold("V-0001", "B-01", date(2024, 6, 1), 2)
    assert "B-01" not in app.scheduling.free_berths(date(2024, 6, 1))
    assert "B-01" in app.scheduling.free_berths(date(2024, 6, 3))
    assert app.scheduling.occupancy(date(2024, 6, 1)) == pytest.approx(1 / 12)
