"""Applies what venues report about our accounts to orders, fills, positions and balances.

Runs as a consumer of ``account.events`` in one transaction per batch with the dedupe rows, so a report received
twice (stream reconnect, reconciliation replaying it) takes effect once; a fill is also keyed by its venue trade
id on the order and in ``fills``. A fill, its order's new state, its ``fills`` row and the position it moves
commit together: positions always equal the sum of fills. A bracket's legs are armed (for the quantity the
entry filled) in the same transaction as the fill that completes the entry.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import structlog

from core.domain.accounts import ExchangeBalanceReported, ExchangeFillReported, ExchangeOrderReported
from core.domain.messages import DomainError, Event
from core.domain.orders import Order, OrderStatus
from core.observability.metrics import Metrics
from core.uow import UnitOfWork
from realtime.portfolio.positions import Position, apply_fill, fee_in_quote

log = structlog.get_logger(__name__)

_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_INSERT_FILL = """
INSERT INTO fills (id, order_id, account_id, user_id, exchange, symbol, side, trade_id, quantity, price, fee,
                   fee_asset, liquidity, filled_at, exchange_ts_ms)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), %s)
ON CONFLICT (account_id, exchange, trade_id) DO NOTHING RETURNING id
"""
_LOCK_POSITION = """
SELECT quantity, avg_entry_price, realized_pnl, fees FROM positions WHERE account_id = %s AND symbol = %s FOR UPDATE
"""
_SAVE_POSITION = """
INSERT INTO positions (account_id, symbol, user_id, exchange, quantity, avg_entry_price, realized_pnl, fees, version)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1)
ON CONFLICT (account_id, symbol) DO UPDATE SET quantity = EXCLUDED.quantity,
  avg_entry_price = EXCLUDED.avg_entry_price, realized_pnl = EXCLUDED.realized_pnl, fees = EXCLUDED.fees,
  version = positions.version + 1, updated_at = now()
"""
_SAVE_BALANCE = """
INSERT INTO balances (account_id, asset, free, locked) VALUES (%s, %s, %s, %s)
ON CONFLICT (account_id, asset) DO UPDATE SET free = EXCLUDED.free, locked = EXCLUDED.locked, updated_at = now()
"""
_WAITING_LEGS = "SELECT id::text FROM orders WHERE parent_order_id = %s AND status = 'initialized'"


class FillsPending(Exception):
    """A terminal report names more filled quantity than we have recorded: apply it after the missing fills
    (the consumer retries it; reconciliation replays the fills if the stream lost them)."""


def base_asset(symbol: str) -> str | None:
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return None


def _order_id(client_order_id: str) -> str | None:
    """Our orders carry their own id as the venue client id; anything else was placed outside the platform."""
    try:
        return str(uuid.UUID(client_order_id))
    except ValueError:
        return None


def _note_venue_id(order: Order, exchange_order_id: str) -> None:
    """The venue has the order: record its id (an accept) if we had not heard of it yet."""
    if order.exchange_order_id is None and order.status in (OrderStatus.SUBMITTED, OrderStatus.PENDING_CANCEL):
        order.accept(exchange_order_id)


class Lifecycle:
    """``handle(event, uow)`` is the consumer's handler; ``touched`` collects users whose read models changed."""

    def __init__(self, metrics: Metrics) -> None:
        self._external = metrics.counter(
            "patriot_external_reports_total", "Venue reports about orders not placed by the platform", ("kind",)
        )
        self._fills = metrics.counter("patriot_fills_applied_total", "Fills applied to orders and positions")
        self._duplicates = metrics.counter("patriot_fills_duplicate_total", "Fills seen again and ignored")
        self.touched: set[str] = set()

    async def handle(self, event: Event, uow: UnitOfWork) -> None:
        if isinstance(event, ExchangeFillReported):
            await self.apply_fill(event, uow)
        elif isinstance(event, ExchangeOrderReported):
            await self.apply_report(event, uow)
        elif isinstance(event, ExchangeBalanceReported):
            conn = await uow.connection()
            await conn.execute(_SAVE_BALANCE, (event.aggregate_id, event.asset, event.free, event.locked))
            self.touched.add(event.user_id)

    async def _order(self, uow: UnitOfWork, client_order_id: str, kind: str) -> Order | None:
        order_id = _order_id(client_order_id)
        order = await uow.orders.get(order_id) if order_id else None
        if order is None:
            self._external.labels(kind=kind).inc()
        return order

    async def apply_fill(self, event: ExchangeFillReported, uow: UnitOfWork) -> None:
        order = await self._order(uow, event.client_order_id, "fill")
        if order is None:
            return
        if event.trade_id in order.trade_ids:
            self._duplicates.inc()
            return
        _note_venue_id(order, event.exchange_order_id)
        order.fill(
            event.trade_id,
            event.quantity,
            event.price,
            event.fee,
            event.correlation_id,
            fee_asset=event.fee_asset,
            liquidity="maker" if event.is_maker else "taker",
        )
        conn = await uow.connection()
        cur = await conn.execute(
            _INSERT_FILL,
            (
                uuid.uuid5(uuid.UUID(order.id), event.trade_id),
                order.id,
                order.account_id,
                order.user_id,
                order.exchange,
                order.symbol,
                order.side.value,
                event.trade_id,
                event.quantity,
                event.price,
                event.fee,
                event.fee_asset,
                "maker" if event.is_maker else "taker",
                event.exchange_ts_ms,
                event.exchange_ts_ms,
            ),
        )
        if await cur.fetchone() is None:
            raise DomainError(f"fill {event.trade_id} is stored but its order {order.id} did not have it")
        await self._move_position(uow, order, event)
        self._fills.inc()
        self.touched.add(order.user_id)
        if order.is_terminal and order.filled_quantity > 0:
            await self._arm_legs(uow, order)

    async def _move_position(self, uow: UnitOfWork, order: Order, event: ExchangeFillReported) -> None:
        conn = await uow.connection()
        cur = await conn.execute(_LOCK_POSITION, (order.account_id, order.symbol))
        row = await cur.fetchone()
        position = (
            Position(Decimal(row[0]), None if row[1] is None else Decimal(row[1]), Decimal(row[2]), Decimal(row[3]))
            if row
            else Position()
        )
        fee = fee_in_quote(event.fee, event.fee_asset, event.price, base_asset(order.symbol))
        moved = apply_fill(position, order.side.value, event.quantity, event.price, fee)
        await conn.execute(
            _SAVE_POSITION,
            (
                order.account_id,
                order.symbol,
                order.user_id,
                order.exchange,
                moved.quantity,
                moved.avg_entry_price,
                moved.realized_pnl,
                moved.fees,
            ),
        )

    async def apply_report(self, event: ExchangeOrderReported, uow: UnitOfWork) -> None:
        order = await self._order(uow, event.client_order_id, "order")
        if order is None or order.is_terminal:
            return
        status = event.status.upper()
        if status != "REJECTED":
            _note_venue_id(order, event.exchange_order_id)
        if status in ("CANCELED", "EXPIRED", "EXPIRED_IN_MATCH"):
            if event.filled_quantity > order.filled_quantity:
                raise FillsPending(
                    f"order {order.id} reported {status} with {event.filled_quantity} filled; "
                    f"{order.filled_quantity} recorded so far"
                )
            if status == "CANCELED":
                order.cancel(event.reason or "canceled on the venue", event.correlation_id)
            else:
                order.expire(event.correlation_id)
        elif status == "REJECTED" and order.status is OrderStatus.SUBMITTED:
            order.reject(event.reason or "rejected by the venue", event.correlation_id)
        if order.is_terminal:
            self.touched.add(order.user_id)
            if order.filled_quantity > 0:
                await self._arm_legs(uow, order)
            else:
                await self._cancel_legs(uow, order)

    async def _legs(self, uow: UnitOfWork, parent: Order) -> list[Order]:
        cur = await (await uow.connection()).execute(_WAITING_LEGS, (parent.id,))
        found = [await uow.orders.get(str(r[0])) for r in await cur.fetchall()]
        return [o for o in found if o is not None]

    async def _arm_legs(self, uow: UnitOfWork, parent: Order) -> None:
        """The entry is done and filled: its stop-loss and take-profit protect what it filled."""
        for leg in await self._legs(uow, parent):
            assert leg.trigger_price is not None
            peak = parent.avg_fill_price if leg.trailing_offset_pct or leg.trailing_offset else None
            leg.arm(leg.trigger_price, quantity=parent.filled_quantity, peak_price=peak)

    async def _cancel_legs(self, uow: UnitOfWork, parent: Order) -> None:
        for leg in await self._legs(uow, parent):
            leg.cancel(f"entry {parent.id} ended unfilled ({parent.status})")
