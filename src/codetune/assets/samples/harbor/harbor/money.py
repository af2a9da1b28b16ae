"""money: amounts are whole cents (`Cents`), never floats; rounding is half up, once."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from harbor.errors import invalid

Cents = int

VAT_RATE = Decimal("0.21")


def ensure_cents(value: object, name: str = "amount") -> Cents:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be whole cents", value=repr(value))
    if value < 0:
        raise invalid(f"{name} must not be negative", value=value)
    return value


def parse_cents(text: str) -> Cents:
    """'12.50' -> 1250; '12' -> 1200."""
    try:
        amount = Decimal(text.strip())
    except ArithmeticError:
        raise invalid("not an amount", text=text) from None
    return ensure_cents(int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def format_cents(amount: Cents, currency: str = "EUR") -> str:
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole:,}.{cents:02d} {currency}"


def apply_rate(amount: Cents, rate: Decimal) -> Cents:
    return int((Decimal(amount) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def split_vat(gross: Cents) -> tuple[Cents, Cents]:
    """(net, vat) of a gross amount, so that net + vat == gross exactly."""
    net = int((Decimal(gross) / (1 + VAT_RATE)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return net, gross - net


def allocate(total: Cents, weights: list[int]) -> list[Cents]:
    """Split `total` in proportion to `weights`; the shares sum to `total` exactly."""
    if not weights or sum(weights) <= 0:
        raise invalid("weights must be positive", weights=weights)
    shares = [total * weight // sum(weights) for weight in weights]
    for index in range(total - sum(shares)):
        shares[index % len(shares)] += 1
    return shares
