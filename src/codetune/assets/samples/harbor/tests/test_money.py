from __future__ import annotations

import pytest
from harbor.errors import HarborError
from harbor.money import allocate, ensure_cents, format_cents, parse_cents, split_vat


def test_parse_cents_rounds_half_up() -> None:
    assert parse_cents("12.50") == 1250
    assert parse_cents("12") == 1200
    assert parse_cents("0.005") == 1


def test_parse_cents_rejects_text() -> None:
    with pytest.raises(HarborError) as info:
        parse_cents("twelve")
    assert info.value.code == "invalid"


def test_ensure_cents_rejects_floats_and_bools() -> None:
    for value in (1.5, True, -1):
        with pytest.raises(HarborError):
            ensure_cents(value)


def test_format_cents() -> None:
    assert format_cents(123456) == "1,234.56 EUR"
    assert format_cents(-5, "USD") == "-0.05 USD"


def test_split_vat_adds_up() -> None:
    for gross in (0, 1, 121, 9999, 123457):
        net, vat = split_vat(gross)
        assert net + vat == gross


def test_allocate_is_exact() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert sum(allocate(1001, [3, 5, 7])) == 1001
