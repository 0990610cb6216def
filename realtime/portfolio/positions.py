"""Position arithmetic: quantity, average entry, realized PnL and fees from a sequence of fills.

Signed quantity (a sell past flat opens a short, as on margin venues); the average entry moves only when the
position grows; reducing realizes ``(price - avg_entry) * closed quantity`` (sign flipped for shorts); crossing
flat realizes the closed part and opens the rest at the fill price. Fees are kept in the quote asset: a fee
charged in the base asset is valued at the fill price. Pure: the lifecycle writes what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Position:
    quantity: Decimal = ZERO
    avg_entry_price: Decimal | None = None
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO

    def unrealized_pnl(self, mark: Decimal | None) -> Decimal:
        if mark is None or self.avg_entry_price is None or self.quantity == 0:
            return ZERO
        return (mark - self.avg_entry_price) * self.quantity


def fee_in_quote(fee: Decimal, fee_asset: str | None, price: Decimal, base_asset: str | None) -> Decimal:
    """A fee valued in the quote asset (a fee in the base asset is worth ``fee * price``)."""
    if fee_asset is not None and base_asset is not None and fee_asset == base_asset:
        return fee * price
    return fee


def apply_fill(position: Position, side: str, quantity: Decimal, price: Decimal, fee_quote: Decimal) -> Position:
    """The position after one fill (``side`` 'buy' or 'sell')."""
    if quantity <= 0 or price <= 0:
        raise ValueError("a fill needs a positive quantity and price")
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
    signed = quantity if side == "buy" else -quantity
    held = position.quantity
    fees = position.fees + fee_quote
    if held == 0 or (held > 0) == (signed > 0):  # opening or adding
        total = held + signed
        avg = position.avg_entry_price or price
        new_avg = (avg * abs(held) + price * quantity) / abs(total)
        return replace(position, quantity=total, avg_entry_price=new_avg, fees=fees)
    closed = min(abs(held), quantity)
    avg = position.avg_entry_price or price
    direction = Decimal(1) if held > 0 else Decimal(-1)
    realized = position.realized_pnl + (price - avg) * closed * direction
    remaining = held + signed
    if remaining == 0:
        return Position(ZERO, None, realized, fees)
    if (remaining > 0) == (held > 0):  # reduced, same side: the average entry stays
        return Position(remaining, avg, realized, fees)
    return Position(remaining, price, realized, fees)  # flipped: the rest opens at this price
