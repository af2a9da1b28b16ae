"""ids: readable prefixed ids (`V-0001`, `B-07`, `BK-000042`) and their validation."""

from __future__ import annotations

import itertools
import re

from harbor.errors import invalid

PREFIXES = {"vessel": ("V", 4), "berth": ("B", 2), "booking": ("BK", 6), "invoice": ("INV", 6),
            "customer": ("C", 5)}

_PATTERN = re.compile(r"^(?P<prefix>[A-Z]+)-(?P<number>\d+)$")


class IdFactory:
    """Hands out the next id of each kind, starting at 1."""

    def __init__(self) -> None:
        self._counters = {kind: itertools.count(1) for kind in PREFIXES}

    def next(self, kind: str) -> str:
        prefix, width = PREFIXES[kind]
        return f"{prefix}-{next(self._counters[kind]):0{width}d}"


def ensure_id(kind: str, value: str) -> str:
    prefix, width = PREFIXES[kind]
    match = _PATTERN.match(value)
    if match is None or match["prefix"] != prefix or len(match["number"]) != width:
        raise invalid(f"not a {kind} id", value=value, expected=f"{prefix}-{'0' * width}")
    return value
