"""berths: the berth repository."""

from __future__ import annotations

from harbor.models import Berth, Vessel
from harbor.repo.base import Repository


class BerthRepository(Repository[Berth]):
    kind = "berth"

    def on_pontoon(self, pontoon: str) -> list[Berth]:
        return self.fetch_many(lambda berth: berth.pontoon == pontoon)

    def that_fit(self, vessel: Vessel) -> list[Berth]:
        return self.fetch_many(
            lambda berth: vessel.fits(berth.max_length_cm, berth.max_beam_cm, berth.depth_cm))
