from __future__ import annotations

from harbor.app import App


def test_hold_and_invoice_through_the_router(app: App) -> None:
    status, body = app.router.dispatch("POST", "/bookings", {
        "vessel_id": "V-0001", "berth_id": "B-01", "start": "2024-06-01", "nights": 2})
    assert status == 201
    booking_id = body["booking"]["id"]
    status, body = app.router.dispatch("POST", "/invoices", {"booking_id": booking_id})
    assert status == 201
    assert body["invoice"]["gross"] == body["invoice"]["net"] + body["invoice"]["vat"]


def test_errors_become_responses(app: App) -> None:
    status, body = app.router.dispatch("POST", "/bookings", {"vessel_id": "V-0001"})
    assert status == 422
    assert body["error"]["code"] == "invalid"
    status, body = app.router.dispatch("POST", "/bookings/confirm", {"booking_id": "BK-999999"})
    assert status == 404


def test_unknown_route(app: App) -> None:
    status, body = app.router.dispatch("GET", "/nowhere", {})
    assert status == 404
    assert body["error"]["code"] == "no_route"
