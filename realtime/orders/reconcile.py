"""Reconciliation with the venue: what the venue says about our open orders, fills and balances, replayed as the
same account events its private stream would have carried (same ids), so the lifecycle applies each exactly once.

Run for every active account at start and periodically, and often for an account whose private stream is down
(REST polling as the fallback). Orders the venue never heard of are the order service's to resolve (its sweep).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from core.domain.accounts import (
    AccountEvent,
    ExchangeBalanceReported,
    ExchangeFillReported,
    ExchangeOrderReported,
    fill_report_id,
    report_id,
)
from core.domain.orders import OrderStatus
from core.observability.metrics import Metrics
from realtime.exchanges.base import ExchangeAdapter, ExchangeError, ExchangeTrade, OrderNotFound, OrderState
from realtime.orders.venues import AccountRef

log = structlog.get_logger(__name__)

Publish = Callable[[Sequence[AccountEvent]], Awaitable[None]]

_OURS_IN_FLIGHT = """
SELECT id::text, symbol, status, filled_quantity, created_at FROM orders
WHERE account_id = %s AND status IN ('submitted', 'accepted', 'partially_filled', 'pending_cancel')
"""
_VENUE_STATUS = {
    OrderStatus.ACCEPTED: "NEW",
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.CANCELED: "CANCELED",
    OrderStatus.EXPIRED: "EXPIRED",
    OrderStatus.REJECTED: "REJECTED",
}


@dataclass(frozen=True, slots=True)
class OurOrder:
    order_id: str
    symbol: str
    status: str
    filled: object
    created_ms: int


def fill_event(account: AccountRef, trade: ExchangeTrade, client_order_id: str) -> ExchangeFillReported:
    """The fill as the private stream reports it, with the stream's event id (``user_stream.parse_user_event``)."""
    return ExchangeFillReported(
        aggregate_id=account.account_id,
        version=0,
        event_id=fill_report_id(account.account_id, trade.symbol, trade.trade_id, trade.exchange_order_id),
        user_id=account.user_id,
        exchange=account.exchange,
        exchange_ts_ms=trade.ts_ms,
        symbol=trade.symbol,
        client_order_id=client_order_id,
        exchange_order_id=trade.exchange_order_id,
        trade_id=trade.trade_id,
        side=trade.side.value,
        quantity=trade.qty,
        price=trade.price,
        fee=trade.fee,
        fee_asset=trade.fee_asset,
        is_maker=trade.is_maker,
    )


def order_event(account: AccountRef, state: OrderState) -> ExchangeOrderReported:
    ts = state.updated_ms or 0
    status = _VENUE_STATUS.get(state.status, "NEW")
    return ExchangeOrderReported(
        aggregate_id=account.account_id,
        version=0,
        event_id=report_id(account.account_id, "reconciled", state.exchange_order_id, status, state.filled_qty),
        user_id=account.user_id,
        exchange=account.exchange,
        exchange_ts_ms=ts,
        symbol=state.symbol,
        client_order_id=state.client_order_id,
        exchange_order_id=state.exchange_order_id,
        side=state.side.value,
        order_type=state.type.value,
        status=status,
        price=state.price or state.avg_price or 0,  # type: ignore[arg-type]
        quantity=state.quantity,
        filled_quantity=state.filled_qty,
    )


class Reconciler:
    def __init__(self, metrics: Metrics, publish: Publish, grace_s: float = 3.0) -> None:
        self._publish = publish
        self._grace_ms = int(grace_s * 1000)
        self._corrections = metrics.counter(
            "patriot_reconciliation_events_total", "Account events replayed by reconciliation", ("kind",)
        )
        self._failures = metrics.counter("patriot_reconciliation_failures_total", "Reconciliations that failed")

    async def reconcile(self, account: AccountRef, adapter: ExchangeAdapter, ours: Sequence[OurOrder]) -> int:
        """Replay the venue's view of ``ours`` (our in-flight orders) and the balances; returns events published."""
        try:
            return await self._reconcile(account, adapter, ours)
        except ExchangeError as exc:
            self._failures.inc()
            log.warning("reconciliation failed", account=account.account_id, error=repr(exc))
            return 0

    async def _reconcile(self, account: AccountRef, adapter: ExchangeAdapter, ours: Sequence[OurOrder]) -> int:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        events: list[AccountEvent] = []
        venue_open: dict[str, OrderState] = {}
        for symbol in sorted({o.symbol for o in ours}):  # per symbol: weight 6 each, not 80 for all
            venue_open.update({o.client_order_id: o for o in await adapter.fetch_open_orders(symbol)})
        trades_by_symbol: dict[str, list[ExchangeTrade]] = {}
        for order in ours:
            state = venue_open.get(order.order_id)
            if state is not None and order.status != "submitted" and state.filled_qty <= order.filled:  # type: ignore[operator]
                continue  # open on both sides and nothing new
            if state is None:
                if now_ms - order.created_ms < self._grace_ms:
                    continue  # may still be on its way
                try:
                    state = await adapter.fetch_order(order.symbol, client_order_id=order.order_id)
                except OrderNotFound:
                    continue  # never reached the venue: the order service's sweep resolves it
            if state.filled_qty > 0:
                if order.symbol not in trades_by_symbol:
                    since = min(o.created_ms for o in ours if o.symbol == order.symbol) - 60_000
                    trades_by_symbol[order.symbol] = await adapter.fetch_my_trades(order.symbol, since)
                events += [
                    fill_event(account, t, order.order_id)
                    for t in trades_by_symbol[order.symbol]
                    if t.exchange_order_id == state.exchange_order_id
                ]
            events.append(order_event(account, state))
        balances = await adapter.fetch_balances()
        events += [
            ExchangeBalanceReported(
                aggregate_id=account.account_id,
                version=0,
                event_id=report_id(account.account_id, "balance-reconciled", b.asset, b.free, b.locked),
                user_id=account.user_id,
                exchange=account.exchange,
                exchange_ts_ms=now_ms,
                asset=b.asset,
                free=b.free,
                locked=b.locked,
            )
            for b in balances.values()
        ]
        if events:
            await self._publish(events)
            for e in events:
                self._corrections.labels(kind=e.event_type).inc()
        return len(events)


async def gather_limited(work: Sequence[Awaitable[int]], limit: int = 8) -> int:
    """Run reconciliations with at most ``limit`` at once (the venue's request budget is shared)."""
    slots = asyncio.Semaphore(limit)

    async def run(item: Awaitable[int]) -> int:
        async with slots:
            return await item

    return sum(await asyncio.gather(*(run(w) for w in work)))
