from __future__ import annotations

import pytest
from harbor.errors import HarborError
from harbor.models import Berth
from harbor.repo import BerthRepository, MemoryStore


def berth(number: int, pontoon: str = "A") -> Berth:
    return Berth(id=f"B-{number:02d}", pontoon=pontoon, max_length_cm=1200, max_beam_cm=400,
                 depth_cm=250)


def test_store_fetch_discard() -> None:
    berths = BerthRepository(MemoryStore())
    berths.store(berth(1))
    assert berths.fetch_one("B-01").pontoon == "A"
    berths.discard("B-01")
    with pytest.raises(HarborError) as info:
        berths.fetch_one("B-01")
    assert info.value.code == "not_found"


def test_store_twice_is_a_conflict() -> None:
    berths = BerthRepository(MemoryStore())
    berths.store(berth(1))
    with pytest.raises(HarborError) as info:
        berths.store(berth(1))
    assert info.value.code == "conflict"


def test_transaction_rolls_back() -> None:
    store = MemoryStore()
    berths = BerthRepository(store)
    with pytest.raises(HarborError), store.transaction():
        berths.store(berth(1))
        berths.store(berth(1))
    assert len(berths) == 0


def test_fetch_many_is_sorted_and_filtered() -> None:
    berths = BerthRepository(MemoryStore())
    berths.store_many([berth(3, "B"), berth(1), berth(2, "B")])
    assert [b.id for b in berths.on_pontoon("B")] == ["B-02", "B-03"]
