from __future__ import annotations

from datetime import date

import pytest
from harbor.app import App
from harbor.errors import HarborError


def test_invoice_charges_started_metres_and_power(app: App) -> None:
    booking = app.scheduling.hold("V-0001", "B-01", date(2024, 6, 1), 3)
    invoice = app.billing.invoice(booking)
    # Skylark is 11.2 m: 12 started metres at 2.50 a night, plus shore power.
    assert [line.total for line in invoice.lines] == [3 * 12 * 250, 3 * 450]
    assert invoice.gross == 9000 + 1350


def test_member_discount(app: App) -> None:
    booking = app.scheduling.hold("V-0001", "B-01", date(2024, 6, 1), 2)
    invoice = app.billing.invoice(booking, member=True)
    assert invoice.lines[-1].description == "Member discount"
    assert invoice.gross == 6900 - 690


def test_second_invoice_is_a_conflict(app: App) -> None:
    booking = app.scheduling.hold("V-0001", "B-01", date(2024, 6, 1), 1)
    app.billing.invoice(booking)
    with pytest.raises(HarborError) as info:
        app.billing.invoice(booking)
    assert info.value.code == "conflict"


def test_mark_paid(app: App) -> None:
    booking = app.scheduling.hold("V-0001", "B-01", date(2024, 6, 1), 1)
    invoice = app.billing.mark_paid(app.billing.invoice(booking).id)
    assert invoice.paid
    assert app.invoices.unpaid() == []
