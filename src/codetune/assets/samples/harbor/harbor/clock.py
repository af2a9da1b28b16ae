"""clock: the current time, injectable so services and tests agree on "now"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

Now = Callable[[], datetime]


def system_now() -> datetime:
    return datetime.now(UTC)


class FrozenClock:
    """A clock for tests: `now()` returns the same instant until `advance` moves it."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> datetime:
        self._now += timedelta(**delta)
        return self._now


def nights_between(start: date, end: date) -> int:
    return max((end - start).days, 0)


def each_night(start: date, nights: int) -> list[date]:
    return [start + timedelta(days=offset) for offset in range(nights)]
