"""vessel: a boat that can be booked into a berth."""

from __future__ import annotations

from dataclasses import dataclass

from harbor.errors import invalid
from harbor.ids import ensure_id


@dataclass(slots=True, frozen=True)
class Vessel:
    id: str
    name: str
    owner_id: str
    length_cm: int
    beam_cm: int
    draft_cm: int

    @property
    def length_m(self) -> float:
        return self.length_cm / 100

    def fits(self, max_length_cm: int, max_beam_cm: int, depth_cm: int) -> bool:
        return (self.length_cm <= max_length_cm and self.beam_cm <= max_beam_cm
                and self.draft_cm < depth_cm)


def ensure_vessel(vessel: Vessel) -> Vessel:
    ensure_id("vessel", vessel.id)
    ensure_id("customer", vessel.owner_id)
    if not vessel.name.strip():
        raise invalid("vessel name is empty", vessel_id=vessel.id)
    for name in ("length_cm", "beam_cm", "draft_cm"):
        if getattr(vessel, name) <= 0:
            raise invalid(f"{name} must be positive", vessel_id=vessel.id)
    return vessel
