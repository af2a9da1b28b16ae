"""harbor: berth bookings, billing and notifications for a small marina."""

from __future__ import annotations

from harbor.errors import HarborError
from harbor.money import Cents

__all__ = ["Cents", "HarborError", "__version__"]

__version__ = "0.3.0"
