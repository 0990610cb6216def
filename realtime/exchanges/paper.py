"""Dry-run trading: ``ExchangeAdapter`` on an in-process ``MatchingEngine`` fed by live market data.

Each paper account owns its engine, so paper accounts never see each other's orders. The market-data service calls
``on_trade``/``on_book``/``on_depth`` with normalised live data; market orders take the last book, resting limit
orders fill when a trade prints through their price.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from core.domain.orders import OrderSide, OrderStatus, OrderType
from realtime.exchanges.base import (
    AuthenticationFailed,
    Balance,
    Capabilities,
    ExchangeError,
    ExchangeTrade,
    InsufficientFunds,
    Market,
    OrderAck,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
)
from realtime.exchanges.simulator import engine_types as sim
from realtime.exchanges.simulator.engine import MatchingEngine

PAPER_CAPABILITIES = Capabilities(
    exchange="paper",
    native_stop_orders=False,
    oco_orders=False,
    reduce_only=False,
    bucket_capacity=1_000_000,
    bucket_window_s=1.0,
)

_STATUS = {
    sim.NEW: OrderStatus.ACCEPTED,
    sim.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    sim.FILLED: OrderStatus.FILLED,
    sim.CANCELED: OrderStatus.CANCELED,
    sim.EXPIRED: OrderStatus.EXPIRED,
}


def map_engine_rejection(rejected: sim.OrderRejected) -> ExchangeError:
    """The engine answers with Binance's codes; map them as the live Binance adapter's errors are mapped."""
    code, text = str(rejected.code), str(rejected)
    if rejected.code == -2010 and "insufficient balance" in rejected.msg:
        return InsufficientFunds(text, code)
    if rejected.code in (-2011, -2013):
        return OrderNotFound(text, code)
    if rejected.code in (-2014, -2015):
        return AuthenticationFailed(text, code)
    return OrderRejected(text, code)


class PaperAdapter:
    """A paper account: real filters, fees and matching against the live market, no venue involved."""

    def __init__(
        self,
        balances: Mapping[str, Decimal],
        symbols: Iterable[sim.SymbolRules] | None = None,
        fees: sim.FeeSchedule | None = None,
        clock_ms: Callable[[], int] | None = None,
        account_id: str = "paper",
        fill_at_touch: bool = False,
    ) -> None:
        rules = list(symbols) if symbols is not None else sim.default_symbol_rules()
        self.engine = MatchingEngine(rules, fees, clock_ms, fill_at_touch)
        self.account_id = account_id
        self.engine.open_account(account_id, balances)
        self.capabilities = PAPER_CAPABILITIES

    def __repr__(self) -> str:
        return f"PaperAdapter(account_id={self.account_id!r}, symbols={sorted(self.engine.rules)})"

    # --- market data in -----------------------------------------------------------------------------------

    def on_trade(self, symbol: str, price: Decimal, qty: Decimal, ts_ms: int) -> list[ExchangeTrade]:
        """A live trade printed; returns the paper fills it caused."""
        fills = self.engine.on_trade(symbol, price, qty, ts_ms)
        return [_trade(f) for f in fills if f.account_id == self.account_id]

    def on_book(self, symbol: str, bid: Decimal, bid_qty: Decimal, ask: Decimal, ask_qty: Decimal) -> None:
        """Best bid/ask: the liquidity market orders take."""
        self.engine.on_book(symbol, bid, bid_qty, ask, ask_qty)

    def on_depth(
        self, symbol: str, bids: Iterable[tuple[Decimal, Decimal]], asks: Iterable[tuple[Decimal, Decimal]]
    ) -> None:
        self.engine.on_depth(symbol, bids, asks)

    # --- the protocol -------------------------------------------------------------------------------------

    async def load_markets(self) -> dict[str, Market]:
        return {
            r.symbol: Market(r.symbol, r.base_asset, r.quote_asset, r.tick_size, r.step_size, r.min_qty, r.min_notional)
            for r in self.engine.rules.values()
        }

    async def fetch_balances(self) -> dict[str, Balance]:
        return {a: Balance(a, b.free, b.locked) for a, b in self.engine.balances(self.account_id).items()}

    async def place_order(self, request: OrderRequest) -> OrderAck:
        if request.type not in (OrderType.MARKET, OrderType.LIMIT):
            raise OrderRejected(f"paper trading places market and limit orders only, not {request.type}")
        limit = request.type is OrderType.LIMIT
        engine_request = sim.OrderRequest(
            symbol=request.symbol,
            side=request.side.value.upper(),
            type=sim.LIMIT if limit else sim.MARKET,
            quantity=request.quantity,
            price=request.price if limit else None,
            time_in_force=request.time_in_force.value if limit else None,
            client_order_id=request.client_order_id,
        )
        try:
            order = self.engine.place_order(self.account_id, engine_request)
        except sim.OrderRejected as rejected:
            raise map_engine_rejection(rejected) from None
        return self._state(order)

    async def cancel_order(
        self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None
    ) -> OrderAck:
        order_id = int(exchange_order_id) if exchange_order_id else None
        try:
            order = self.engine.cancel_order(self.account_id, symbol, order_id, client_order_id)
        except sim.OrderRejected as rejected:
            raise map_engine_rejection(rejected) from None
        return self._state(order)

    async def fetch_order(
        self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None
    ) -> OrderState:
        order_id = int(exchange_order_id) if exchange_order_id else None
        try:
            return self._state(self.engine.get_order(self.account_id, symbol, order_id, client_order_id))
        except sim.OrderRejected as rejected:
            raise map_engine_rejection(rejected) from None

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        try:
            return [self._state(o) for o in self.engine.open_orders(self.account_id, symbol)]
        except sim.OrderRejected as rejected:
            raise map_engine_rejection(rejected) from None

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[ExchangeTrade]:
        try:
            fills = self.engine.my_trades(self.account_id, symbol, start_ms=since_ms, limit=1000)
        except sim.OrderRejected as rejected:
            raise map_engine_rejection(rejected) from None
        return [_trade(f) for f in fills]

    async def close(self) -> None:
        return None

    def _state(self, order: sim.Order) -> OrderState:
        fills = self.engine.my_trades(self.account_id, order.symbol, order_id=order.order_id, limit=10_000)
        fee = sum((f.commission for f in fills), Decimal(0)) if fills else None
        market = order.type == sim.MARKET
        return OrderState(
            symbol=order.symbol,
            exchange_order_id=str(order.order_id),
            client_order_id=order.client_order_id,
            status=_STATUS.get(order.status, OrderStatus.ACCEPTED),
            side=OrderSide(order.side.lower()),
            type=OrderType.MARKET if market else OrderType.LIMIT,
            quantity=order.orig_qty,
            price=None if market else order.price,
            filled_qty=order.executed_qty,
            avg_price=order.cumulative_quote_qty / order.executed_qty if order.executed_qty > 0 else None,
            fee=fee,
            fee_asset=fills[0].commission_asset if fills else None,
            updated_ms=order.update_time_ms or order.time_ms,
        )


def _trade(fill: sim.Fill) -> ExchangeTrade:
    return ExchangeTrade(
        trade_id=str(fill.trade_id),
        exchange_order_id=str(fill.order_id),
        symbol=fill.symbol,
        side=OrderSide(fill.side.lower()),
        price=fill.price,
        qty=fill.qty,
        fee=fill.commission,
        fee_asset=fill.commission_asset,
        is_maker=fill.is_maker,
        ts_ms=fill.time_ms,
    )
