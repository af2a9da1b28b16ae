"""cli: `harbor berths | free | book | invoice | report` over a seeded in-memory marina."""

from __future__ import annotations

import argparse
import sys
from datetime import date

from harbor.app import build_app
from harbor.errors import HarborError
from harbor.logs import configure, get_logger
from harbor.money import format_cents
from harbor.reports import occupancy_report, table
from harbor.seed import seed

log = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harbor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("berths", help="list berths")
    free = sub.add_parser("free", help="free berths on a night")
    free.add_argument("night", type=date.fromisoformat)
    book = sub.add_parser("book", help="hold and confirm a booking, then invoice it")
    book.add_argument("--vessel", required=True)
    book.add_argument("--berth", required=True)
    book.add_argument("--start", required=True, type=date.fromisoformat)
    book.add_argument("--nights", type=int, default=1)
    book.add_argument("--member", action="store_true")
    report = sub.add_parser("report", help="occupancy for a week")
    report.add_argument("start", type=date.fromisoformat)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app = seed(build_app())
    configure(app.settings.log_level)
    try:
        if args.command == "berths":
            rows = [[berth.id, berth.label, f"{berth.max_length_cm / 100:.1f} m"]
                    for berth in app.berths.fetch_many()]
            print(table(["id", "label", "max length"], rows))
        elif args.command == "free":
            print(", ".join(app.scheduling.free_berths(args.night)) or "none")
        elif args.command == "book":
            booking = app.scheduling.hold(args.vessel, args.berth, args.start, args.nights)
            booking = app.scheduling.confirm(booking.id)
            invoice = app.billing.invoice(booking, member=args.member)
            print(f"{booking.id} confirmed; invoice {invoice.id}: "
                  f"{format_cents(invoice.gross, app.settings.currency)}")
        elif args.command == "report":
            print(occupancy_report(app, args.start))
    except HarborError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
