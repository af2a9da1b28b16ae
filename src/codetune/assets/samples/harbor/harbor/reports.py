"""reports: plain-text tables for the harbour master: occupancy, arrivals, unpaid invoices."""

from __future__ import annotations

from datetime import date, timedelta

from harbor.app import App
from harbor.money import format_cents


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join(lines)


def occupancy_report(app: App, start: date, days: int = 7) -> str:
    rows = []
    for offset in range(days):
        night = start + timedelta(days=offset)
        share = app.scheduling.occupancy(night)
        rows.append([night.isoformat(), f"{share:.0%}", str(len(app.scheduling.free_berths(night)))])
    return table(["night", "occupied", "free berths"], rows)


def arrivals_report(app: App, day: date) -> str:
    rows = [[booking.id, booking.berth_id, app.vessels.fetch_one(booking.vessel_id).name,
             str(booking.nights)]
            for booking in app.bookings.fetch_many(lambda b: b.active and b.start == day)]
    return table(["booking", "berth", "vessel", "nights"], rows)


def unpaid_report(app: App) -> str:
    rows = [[invoice.id, invoice.customer_id, invoice.issued_on.isoformat(),
             format_cents(invoice.gross, app.settings.currency)]
            for invoice in app.invoices.unpaid()]
    return table(["invoice", "customer", "issued", "amount"], rows)
