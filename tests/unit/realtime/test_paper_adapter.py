"""The paper adapter: the ExchangeAdapter protocol on an in-process matching engine fed by market data."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce
from realtime.exchanges.base import (
    ExchangeAdapter,
    InsufficientFunds,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
)
from realtime.exchanges.paper import PaperAdapter

D = Decimal


def paper(balances: dict[str, Decimal] | None = None) -> PaperAdapter:
    adapter = PaperAdapter(balances or {"USDT": D(10_000), "BTC": D(1)}, clock_ms=lambda: 1_700_000_000_000)
    adapter.on_book("BTCUSDT", D(50_000), D(2), D("50000.10"), D(2))
    return adapter


def order(cid: str, side: OrderSide, kind: OrderType, qty: str, price: str | None = None) -> OrderRequest:
    return OrderRequest(cid, "BTCUSDT", side, kind, D(qty), D(price) if price else None, TimeInForce.GTC)


async def test_paper_adapter_satisfies_the_protocol_with_the_venue_filters() -> None:
    adapter = paper()
    assert isinstance(adapter, ExchangeAdapter)
    btc = (await adapter.load_markets())["BTCUSDT"]
    assert (btc.tick_size, btc.step_size, btc.min_notional) == (D("0.01"), D("0.00001"), D(5))


async def test_market_buy_takes_the_live_ask_and_pays_the_fee() -> None:
    adapter = paper()
    ack = await adapter.place_order(order("m1", OrderSide.BUY, OrderType.MARKET, "0.1"))
    balances = await adapter.fetch_balances()
    assert (ack.status, ack.filled_qty, ack.avg_price, ack.fee, ack.fee_asset) == (
        OrderStatus.FILLED,
        D("0.1"),
        D("50000.10"),
        D("0.0001"),
        "BTC",
    )
    assert balances["BTC"].free == D("1.0999") and balances["USDT"].free == D(10_000) - D("5000.010")


async def test_resting_limit_fills_only_when_a_live_trade_prints_through() -> None:
    adapter = paper()
    ack = await adapter.place_order(order("l1", OrderSide.BUY, OrderType.LIMIT, "0.02", "49000"))
    assert ack.status == OrderStatus.ACCEPTED
    assert (await adapter.fetch_balances())["USDT"].locked == D(980)
    assert adapter.on_trade("BTCUSDT", D(49000), D(1), 1_700_000_000_500) == []  # at the price: not through it
    fills = adapter.on_trade("BTCUSDT", D("48999.99"), D(1), 1_700_000_001_000)
    assert [(f.exchange_order_id, f.price, f.qty, f.is_maker) for f in fills] == [
        (ack.exchange_order_id, D(49000), D("0.02"), True)
    ]
    state = await adapter.fetch_order("BTCUSDT", client_order_id="l1")
    assert (state.status, state.avg_price) == (OrderStatus.FILLED, D(49000))
    assert [t.trade_id for t in await adapter.fetch_my_trades("BTCUSDT")] == [fills[0].trade_id]
    assert await adapter.fetch_open_orders() == []


async def test_cancel_releases_the_lock_and_unknown_orders_are_not_found() -> None:
    adapter = paper()
    ack = await adapter.place_order(order("s1", OrderSide.SELL, OrderType.LIMIT, "0.5", "60000"))
    assert [o.client_order_id for o in await adapter.fetch_open_orders("BTCUSDT")] == ["s1"]
    cancelled = await adapter.cancel_order("BTCUSDT", ack.exchange_order_id)
    assert cancelled.status == OrderStatus.CANCELED
    assert (await adapter.fetch_balances())["BTC"].locked == D(0)
    with pytest.raises(OrderNotFound):
        await adapter.cancel_order("BTCUSDT", ack.exchange_order_id)
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order("BTCUSDT", "999")


async def test_refusals_map_to_the_same_domain_errors_as_the_live_adapter() -> None:
    adapter = paper({"USDT": D(10)})
    with pytest.raises(InsufficientFunds):
        await adapter.place_order(order("p1", OrderSide.BUY, OrderType.LIMIT, "0.001", "50000"))
    with pytest.raises(OrderRejected, match="NOTIONAL"):
        await adapter.place_order(order("p2", OrderSide.BUY, OrderType.LIMIT, "0.00001", "50000"))
    with pytest.raises(OrderRejected, match="Invalid symbol"):
        await adapter.fetch_open_orders("DOGEUSDT")
    with pytest.raises(OrderRejected, match="market and limit orders only"):
        await adapter.place_order(order("p3", OrderSide.BUY, OrderType.STOP_MARKET, "0.001"))


async def test_each_paper_account_has_its_own_engine() -> None:
    first, second = paper(), paper()
    await first.place_order(order("a1", OrderSide.BUY, OrderType.LIMIT, "0.01", "49000"))
    assert await second.fetch_open_orders() == []
    assert second.on_trade("BTCUSDT", D(48000), D(1), 1) == []
