"""vessels: the vessel repository."""

from __future__ import annotations

from harbor.models import Vessel
from harbor.repo.base import Repository


class VesselRepository(Repository[Vessel]):
    kind = "vessel"

    def owned_by(self, customer_id: str) -> list[Vessel]:
        return self.fetch_many(lambda vessel: vessel.owner_id == customer_id)

    def longer_than(self, length_cm: int) -> list[Vessel]:
        return self.fetch_many(lambda vessel: vessel.length_cm > length_cm)
