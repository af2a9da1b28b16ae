"""Fixtures: a seeded marina on a frozen clock, so "now" is the same in every test."""

from __future__ import annotations

from datetime import datetime

import pytest
from harbor.app import App, build_app
from harbor.clock import FrozenClock
from harbor.seed import seed
from harbor.settings import Settings


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2024, 5, 20, 9, 0))


@pytest.fixture
def app(clock: FrozenClock) -> App:
    return seed(build_app(Settings(), now=clock))
