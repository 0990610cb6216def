"""Spot matching engine against an external price feed: pure Python, no I/O, deterministic.

Takers (market orders, crossing limit orders) trade against the book the feed last set (``on_book``/``on_depth``),
best level first, consuming its quantity until the next update. Resting limit orders trade when the feed prints a
trade through their price (``on_trade``), up to that trade's quantity, at their own price, as makers. Balances are
locked while an order rests and settled on every fill; commission is charged in the asset the fill gives.
Accounts' own orders never meet each other: the feed is the market.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal

from realtime.exchanges.simulator.engine_types import (
    BUY,
    CANCELED,
    EXPIRED,
    FILLED,
    FOK,
    GTC,
    LIMIT,
    LIMIT_MAKER,
    MARKET,
    PARTIALLY_FILLED,
    SELL,
    ZERO,
    Balance,
    BalancesUpdated,
    Book,
    EngineEvent,
    FeeSchedule,
    Fill,
    Listener,
    Order,
    OrderRejected,
    OrderRequest,
    OrderUpdated,
    SymbolRules,
    default_cancel_id,
    insufficient_balance,
)
from realtime.exchanges.simulator.order_checks import check_filters, floor_to, funds_needed, plan_take

COMMISSION_STEP = Decimal("0.00000001")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class MatchingEngine:
    """Accounts, orders and fills for a set of spot symbols; emits executionReport/account-position events."""

    def __init__(
        self,
        symbols: Iterable[SymbolRules],
        fees: FeeSchedule | None = None,
        clock_ms: Callable[[], int] | None = None,
        fill_at_touch: bool = False,
    ) -> None:
        self.rules: dict[str, SymbolRules] = {r.symbol: r for r in symbols}
        self.fees = fees or FeeSchedule()
        self._clock = clock_ms or wall_clock_ms
        # A trade at exactly a resting order's price says nothing about its place in the queue; by default only
        # trades strictly through the price fill it (conservative, as backtesters usually assume).
        self._fill_at_touch = fill_at_touch
        self._accounts: dict[str, dict[str, Balance]] = {}
        self._orders: dict[str, dict[int, Order]] = {s: {} for s in self.rules}
        self._open: dict[str, dict[int, Order]] = {s: {} for s in self.rules}
        self._by_client_id: dict[tuple[str, str, str], Order] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._next_order_id = dict.fromkeys(self.rules, 1)
        self._next_trade_id = dict.fromkeys(self.rules, 1)
        self._books = {s: Book() for s in self.rules}
        self._last_price: dict[str, Decimal] = {}
        self._listeners: list[Listener] = []

    def open_account(self, account_id: str, balances: Mapping[str, Decimal] | None = None) -> None:
        self._accounts.setdefault(account_id, {})
        self._fills.setdefault(account_id, [])
        for asset, amount in (balances or {}).items():
            self.deposit(account_id, asset, amount)

    def deposit(self, account_id: str, asset: str, amount: Decimal) -> None:
        balance = self._balances(account_id).setdefault(asset, Balance())
        balance.free += amount
        self._emit([self._balance_event(account_id, [asset])])

    def has_account(self, account_id: str) -> bool:
        return account_id in self._accounts

    def balances(self, account_id: str) -> dict[str, Balance]:
        return {asset: replace(b) for asset, b in self._balances(account_id).items()}

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def on_book(self, symbol: str, bid: Decimal, bid_qty: Decimal, ask: Decimal, ask_qty: Decimal) -> None:
        self.on_depth(symbol, [(bid, bid_qty)], [(ask, ask_qty)])

    def on_depth(
        self, symbol: str, bids: Iterable[tuple[Decimal, Decimal]], asks: Iterable[tuple[Decimal, Decimal]]
    ) -> None:
        """Replace the liquidity takers trade against (levels best first)."""
        book = self._books[self._rules(symbol).symbol]
        book.bids = [[p, q] for p, q in bids if q > 0]
        book.asks = [[p, q] for p, q in asks if q > 0]
        book.update_id += 1

    def on_trade(self, symbol: str, price: Decimal, qty: Decimal, ts_ms: int) -> list[Fill]:
        """A market trade printed: resting orders it went through fill, best price then oldest first."""
        rules = self._rules(symbol)
        self._last_price[symbol] = price
        fills: list[Fill] = []
        events: list[EngineEvent] = []
        for side in (BUY, SELL):
            left = qty
            for order in self._crossed_by_trade(symbol, side, price):
                take = min(order.remaining_qty, floor_to(left, rules.step_size))
                if take <= 0:
                    break
                fills.append(self._fill(order, order.price, take, True, events))
                left -= take
                if not order.is_open:
                    del self._open[symbol][order.order_id]
        self._emit(events)
        return fills

    def _crossed_by_trade(self, symbol: str, side: str, price: Decimal) -> list[Order]:
        def crossed(order: Order) -> bool:
            if order.side != side:
                return False
            if order.price == price:
                return self._fill_at_touch
            return order.price > price if side == BUY else order.price < price

        sign = -1 if side == BUY else 1
        return sorted(filter(crossed, self._open[symbol].values()), key=lambda o: (sign * o.price, o.order_id))

    def book(self, symbol: str) -> Book:
        book = self._books[self._rules(symbol).symbol]
        return Book([list(level) for level in book.bids], [list(level) for level in book.asks], book.update_id)

    def reference_price(self, symbol: str) -> Decimal | None:
        """Last trade, else the book's mid: what market orders' notional is checked against."""
        if symbol in self._last_price:
            return self._last_price[symbol]
        book = self._books[symbol]
        if book.bids and book.asks:
            return (book.bids[0][0] + book.asks[0][0]) / 2
        return None

    def place_order(self, account_id: str, request: OrderRequest) -> Order:
        """Validate, lock, take what the book offers, then rest (GTC), expire (IOC/FOK/market) or fill."""
        rules = self._rules(request.symbol)
        balances = self._balances(account_id)
        check_filters(rules, request, self.reference_price(rules.symbol))
        if request.client_order_id is not None:
            previous = self._by_client_id.get((account_id, rules.symbol, request.client_order_id))
            if previous is not None and previous.is_open:
                raise OrderRejected(-2010, "Duplicate order sent.")
        limit = request.price if request.type != MARKET else None
        book = self._books[rules.symbol]
        levels = book.asks if request.side == BUY else book.bids
        plan = plan_take(levels, rules, request.side, limit, request.quantity, request.quote_order_qty)
        if request.type == LIMIT_MAKER and plan:
            raise OrderRejected(-2010, "Order would immediately match and take.")
        locked_asset, need = funds_needed(rules, request, plan)
        if balances.setdefault(locked_asset, Balance()).free < need:
            raise insufficient_balance()

        now = self._clock()
        order_id = self._next_order_id[rules.symbol]
        self._next_order_id[rules.symbol] += 1
        planned_qty = sum((q for _, q in plan), ZERO)
        order = Order(
            account_id=account_id,
            symbol=rules.symbol,
            order_id=order_id,
            client_order_id=request.client_order_id or f"sim{rules.symbol}{order_id}",
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force or GTC,
            price=request.price if request.price is not None and request.type != MARKET else ZERO,
            orig_qty=request.quantity if request.quantity is not None else planned_qty,
            orig_quote_qty=request.quote_order_qty or ZERO,
            time_ms=now,
            update_time_ms=now,
        )
        self._orders[rules.symbol][order_id] = order
        self._by_client_id[(account_id, rules.symbol, order.client_order_id)] = order
        events: list[EngineEvent] = [OrderUpdated(account_id, replace(order), "NEW", now)]
        if request.type != MARKET:
            order.locked_asset, order.locked_amount = locked_asset, need
            balances[locked_asset].free -= need
            balances[locked_asset].locked += need
            events.append(self._balance_event(account_id, [locked_asset]))

        fok_short = request.time_in_force == FOK and planned_qty < order.orig_qty
        if not fok_short:
            for price, qty in plan:
                self._fill(order, price, qty, False, events)
                for level in levels:
                    if level[0] == price:
                        level[1] -= qty
                        break
            levels[:] = [level for level in levels if level[1] > 0]
        if order.is_open:
            resting = request.type == LIMIT_MAKER or (request.type == LIMIT and order.time_in_force == GTC)
            if resting and not fok_short:
                self._open[rules.symbol][order_id] = order
            else:
                self._close(order, EXPIRED, events)
        self._emit(events)
        return order

    def check_order(self, request: OrderRequest) -> None:
        """The filters alone, as ``/api/v3/order/test`` applies them: nothing is placed."""
        check_filters(self._rules(request.symbol), request, self.reference_price(request.symbol))

    def cancel_order(
        self,
        account_id: str,
        symbol: str,
        order_id: int | None = None,
        client_order_id: str | None = None,
        cancel_client_order_id: str | None = None,
    ) -> Order:
        """Cancel an open order and release its lock; an unknown or already closed order is -2011."""
        try:
            order = self.get_order(account_id, symbol, order_id, client_order_id)
        except OrderRejected:
            raise OrderRejected(-2011, "Unknown order sent.") from None
        if not order.is_open:
            raise OrderRejected(-2011, "Unknown order sent.")
        events: list[EngineEvent] = []
        self._close(order, CANCELED, events, cancel_client_order_id or default_cancel_id(order))
        self._emit(events)
        return order

    def cancel_open_orders(self, account_id: str, symbol: str) -> list[Order]:
        mine = [o for o in self._open[self._rules(symbol).symbol].values() if o.account_id == account_id]
        if not mine:
            raise OrderRejected(-2011, "Unknown order sent.")
        return [self.cancel_order(account_id, symbol, o.order_id) for o in sorted(mine, key=lambda o: o.order_id)]

    def _close(self, order: Order, status: str, events: list[EngineEvent], cancel_id: str | None = None) -> None:
        balances = self._balances(order.account_id)
        if order.locked_amount > 0:
            balance = balances[order.locked_asset]
            balance.locked -= order.locked_amount
            balance.free += order.locked_amount
            order.locked_amount = ZERO
        order.status = status
        order.update_time_ms = self._clock()
        self._open[order.symbol].pop(order.order_id, None)
        events.append(OrderUpdated(order.account_id, replace(order), status, order.update_time_ms, None, cancel_id))
        if order.locked_asset:
            events.append(self._balance_event(order.account_id, [order.locked_asset]))

    def _fill(self, order: Order, price: Decimal, qty: Decimal, maker: bool, events: list[EngineEvent]) -> Fill:
        rules = self.rules[order.symbol]
        balances = self._balances(order.account_id)
        base = balances.setdefault(rules.base_asset, Balance())
        quote = balances.setdefault(rules.quote_asset, Balance())
        rate = self.fees.maker if maker else self.fees.taker
        cost = price * qty
        if order.side == BUY:
            commission, commission_asset = (qty * rate).quantize(COMMISSION_STEP, ROUND_HALF_UP), rules.base_asset
            if order.locked_asset == rules.quote_asset:
                release = min(qty * order.price, order.locked_amount)
                order.locked_amount -= release
                quote.locked -= release
                quote.free += release - cost  # a better price than the limit gives the difference back
            else:
                quote.free -= cost
            base.free += qty - commission
        else:
            commission, commission_asset = (cost * rate).quantize(COMMISSION_STEP, ROUND_HALF_UP), rules.quote_asset
            if order.locked_asset == rules.base_asset:
                order.locked_amount -= qty
                base.locked -= qty
            else:
                base.free -= qty
            quote.free += cost - commission
        now = self._clock()
        order.executed_qty += qty
        order.cumulative_quote_qty += cost
        order.update_time_ms = now
        order.status = FILLED if order.remaining_qty <= 0 else PARTIALLY_FILLED
        trade_id = self._next_trade_id[order.symbol]
        self._next_trade_id[order.symbol] += 1
        fill = Fill(
            order.account_id,
            order.symbol,
            trade_id,
            order.order_id,
            order.client_order_id,
            order.side,
            price,
            qty,
            commission,
            commission_asset,
            now,
            maker,
        )
        self._fills[order.account_id].append(fill)
        events.append(OrderUpdated(order.account_id, replace(order), "TRADE", now, fill))
        events.append(self._balance_event(order.account_id, [rules.base_asset, rules.quote_asset]))
        return fill

    def get_order(
        self, account_id: str, symbol: str, order_id: int | None = None, client_order_id: str | None = None
    ) -> Order:
        rules = self._rules(symbol)
        order = (
            self._orders[rules.symbol].get(order_id)
            if order_id is not None
            else self._by_client_id.get((account_id, rules.symbol, client_order_id or ""))
        )
        if order is None or order.account_id != account_id:
            raise OrderRejected(-2013, "Order does not exist.")
        return order

    def open_orders(self, account_id: str, symbol: str | None = None) -> list[Order]:
        symbols = [self._rules(symbol).symbol] if symbol is not None else list(self.rules)
        found = [o for s in symbols for o in self._open[s].values() if o.account_id == account_id]
        return sorted(found, key=lambda o: (o.time_ms, o.symbol, o.order_id))

    def all_orders(
        self,
        account_id: str,
        symbol: str,
        from_order_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Order]:
        orders = [
            o
            for o in self._orders[self._rules(symbol).symbol].values()
            if o.account_id == account_id
            and (from_order_id is None or o.order_id >= from_order_id)
            and (start_ms is None or o.time_ms >= start_ms)
            and (end_ms is None or o.time_ms <= end_ms)
        ]
        return orders[:limit] if from_order_id is not None or start_ms is not None else orders[-limit:]

    def my_trades(
        self,
        account_id: str,
        symbol: str,
        order_id: int | None = None,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Fill]:
        sym = self._rules(symbol).symbol
        fills = [
            f
            for f in self._fills.get(account_id, [])
            if f.symbol == sym
            and (order_id is None or f.order_id == order_id)
            and (from_id is None or f.trade_id >= from_id)
            and (start_ms is None or f.time_ms >= start_ms)
            and (end_ms is None or f.time_ms <= end_ms)
        ]
        return fills[:limit] if from_id is not None or start_ms is not None else fills[-limit:]

    def _rules(self, symbol: str) -> SymbolRules:
        rules = self.rules.get(symbol)
        if rules is None:
            raise OrderRejected(-1121, "Invalid symbol.")
        return rules

    def _balances(self, account_id: str) -> dict[str, Balance]:
        balances = self._accounts.get(account_id)
        if balances is None:
            raise OrderRejected(-2015, "Invalid API-key, IP, or permissions for action.")
        return balances

    def _balance_event(self, account_id: str, assets: list[str]) -> BalancesUpdated:
        balances = self._balances(account_id)
        lines = tuple((a, balances[a].free, balances[a].locked) for a in dict.fromkeys(assets) if a in balances)
        return BalancesUpdated(account_id, lines, self._clock())

    def _emit(self, events: list[EngineEvent]) -> None:
        # Emitted only once the state change is complete, so a listener always sees a consistent engine.
        for event in events:
            for listener in list(self._listeners):
                listener(event)
