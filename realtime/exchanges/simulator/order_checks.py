"""Pure pre-trade arithmetic of the matching engine: Binance's filters, what a taker would get, what it must hold."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal

from realtime.exchanges.simulator.engine_types import (
    BUY,
    MARKET,
    ZERO,
    OrderRejected,
    OrderRequest,
    SymbolRules,
    filter_failure,
)

Take = tuple[Decimal, Decimal]  # (price, qty)


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_DOWN) * step


def check_filters(rules: SymbolRules, request: OrderRequest, reference_price: Decimal | None) -> None:
    """Binance's PRICE_FILTER, LOT_SIZE and NOTIONAL/MIN_NOTIONAL checks, in that order; market orders are
    measured at ``reference_price`` (skipped when there is none yet)."""
    price, qty = request.price, request.quantity
    if request.type != MARKET:
        if price is None or qty is None:
            raise OrderRejected(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        if price < rules.min_price or price > rules.max_price or (price - rules.min_price) % rules.tick_size:
            raise filter_failure("PRICE_FILTER")
    if qty is not None and (qty < rules.min_qty or qty > rules.max_qty or (qty - rules.min_qty) % rules.step_size):
        raise filter_failure("LOT_SIZE")
    if request.type == MARKET:
        if not rules.apply_min_to_market:
            return
        notional = request.quote_order_qty
        if notional is None and reference_price is not None and qty is not None:
            notional = qty * reference_price
    else:
        notional = (price or ZERO) * (qty or ZERO)
    if notional is not None and (notional < rules.min_notional or notional > rules.max_notional):
        raise filter_failure(rules.notional_filter)


def plan_take(
    levels: Sequence[Sequence[Decimal]],
    rules: SymbolRules,
    side: str,
    limit: Decimal | None,
    qty: Decimal | None,
    quote_qty: Decimal | None,
) -> list[Take]:
    """The fills a taker would get from ``levels`` (the opposite side, best first), in lot-size steps."""
    plan: list[Take] = []
    left_qty, left_quote = qty, quote_qty
    for price, available in levels:
        if limit is not None and (price > limit if side == BUY else price < limit):
            return plan
        wanted = left_qty if left_qty is not None else (left_quote or ZERO) / price
        take = floor_to(min(available, wanted), rules.step_size)
        if take > 0:
            plan.append((price, take))
        if left_qty is not None:
            left_qty -= take
            if left_qty <= 0:
                return plan
        else:
            left_quote = (left_quote or ZERO) - take * price
            if floor_to(left_quote / price, rules.step_size) <= 0:
                return plan
    return plan


def funds_needed(rules: SymbolRules, request: OrderRequest, plan: Sequence[Take]) -> tuple[str, Decimal]:
    """(asset, amount) the order must have free: locked by a limit order, spent at once by a market one."""
    if request.side == BUY:
        if request.type != MARKET:
            return rules.quote_asset, (request.quantity or ZERO) * (request.price or ZERO)
        if request.quote_order_qty is not None:
            return rules.quote_asset, request.quote_order_qty
        return rules.quote_asset, sum((p * q for p, q in plan), ZERO)
    if request.quantity is not None:
        return rules.base_asset, request.quantity
    return rules.base_asset, sum((q for _, q in plan), ZERO)
