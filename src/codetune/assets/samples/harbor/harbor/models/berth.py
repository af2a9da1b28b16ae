"""berth: a numbered place at a pontoon, with the largest vessel it takes."""

from __future__ import annotations

from dataclasses import dataclass

from harbor.errors import invalid
from harbor.ids import ensure_id
from harbor.money import Cents


@dataclass(slots=True, frozen=True)
class Berth:
    id: str
    pontoon: str
    max_length_cm: int
    max_beam_cm: int
    depth_cm: int
    has_power: bool = True
    night_rate: Cents | None = None  # None: the marina's rate per metre

    @property
    def label(self) -> str:
        return f"{self.pontoon}{self.id.removeprefix('B-')}"


def ensure_berth(berth: Berth) -> Berth:
    ensure_id("berth", berth.id)
    if len(berth.pontoon) != 1 or not berth.pontoon.isupper():
        raise invalid("pontoon is one capital letter", berth_id=berth.id, pontoon=berth.pontoon)
    if min(berth.max_length_cm, berth.max_beam_cm, berth.depth_cm) <= 0:
        raise invalid("berth dimensions must be positive", berth_id=berth.id)
    return berth
