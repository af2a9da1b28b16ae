"""settings: configuration from the environment, read once, with typed defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

from harbor.errors import invalid
from harbor.money import Cents


@dataclass(slots=True, frozen=True)
class Settings:
    marina_name: str = "Harbor Marina"
    currency: str = "EUR"
    night_rate_per_metre: Cents = 250
    min_nights: int = 1
    max_nights: int = 60
    cancellation_hours: int = 48
    notify_sender: str = "bookings@harbor.example"
    log_level: str = "INFO"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer", value=raw) from None


def load_settings() -> Settings:
    return Settings(
        marina_name=os.environ.get("HARBOR_MARINA_NAME", Settings.marina_name),
        currency=os.environ.get("HARBOR_CURRENCY", Settings.currency),
        night_rate_per_metre=_int("HARBOR_NIGHT_RATE", Settings.night_rate_per_metre),
        min_nights=_int("HARBOR_MIN_NIGHTS", Settings.min_nights),
        max_nights=_int("HARBOR_MAX_NIGHTS", Settings.max_nights),
        cancellation_hours=_int("HARBOR_CANCELLATION_HOURS", Settings.cancellation_hours),
        notify_sender=os.environ.get("HARBOR_NOTIFY_SENDER", Settings.notify_sender),
        log_level=os.environ.get("HARBOR_LOG_LEVEL", Settings.log_level),
    )
