"""Platform-held orders against live prices on the market stream: stops, brackets (OCO), trailing stops and
ladders, and their exact resumption after the order service restarts."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from core.domain.orders import CancelOrder, ModifyOrder, OrderSide, OrderType, PlaceBracketOrder
from tests.platform_harness import Platform

pytestmark = pytest.mark.integration


def last_price(platform: Platform) -> Decimal:
    trade = platform.sim.market.last_trade("BTCUSDT")
    assert trade is not None
    return trade.price


async def test_stop_market_is_held_until_the_price_falls_to_it_then_fills(platform: Platform) -> None:
    user, price = platform.users[0], last_price(platform)
    buy = await platform.place(user, quantity=Decimal("0.01"))
    await platform.wait_status(buy["order_id"], "filled")
    stop = price - 100
    placed = await platform.place(
        user, side=OrderSide.SELL, order_type=OrderType.STOP_MARKET, trigger_price=stop, quantity=Decimal("0.01")
    )
    assert placed["status"] == "armed", placed
    assert platform.sim.engine.open_orders(user.account_id, "BTCUSDT") == []  # held by the platform, not the venue
    await platform.push_price("BTCUSDT", str(stop + 1))
    await platform.push_price("BTCUSDT", str(stop + 50))
    row = await platform.wait_status(placed["order_id"], "armed")
    await platform.push_price("BTCUSDT", str(stop - 1))
    row = await platform.wait_status(placed["order_id"], "filled")
    assert row["filled_quantity"] == Decimal("0.01")
    await platform.wait_for(
        "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'BTCUSDT'", (user.account_id,), Decimal(0)
    )


async def test_bracket_legs_arm_on_entry_fill_and_take_profit_cancels_stop_loss(platform: Platform) -> None:
    user, price = platform.users[0], last_price(platform)
    reply = await platform.send(
        PlaceBracketOrder(
            account_id=user.account_id,
            user_id=user.user_id,
            client_order_id="bracket-1",
            exchange="simulator",
            symbol="BTCUSDT",
            side=OrderSide.BUY,
            quantity=Decimal("0.02"),
            stop_loss=price - 500,
            take_profit=price + 500,
        ),
        user,
    )
    assert reply["ok"] and len(reply["legs"]) == 2, reply
    stop_loss, take_profit = reply["legs"]
    await platform.wait_status(reply["order_id"], "filled")
    for leg in (stop_loss, take_profit):
        row = await platform.wait_status(leg, "armed")
        assert row["quantity"] == Decimal("0.02")
    await platform.wait_for("SELECT count(*) FROM orders WHERE id = %s AND status = 'armed'", (take_profit,), 1)
    for _ in range(40):  # the book picks up legs the lifecycle armed within its sync interval
        if take_profit in platform.orders.triggers:
            break
        await platform.push_price("BTCUSDT", str(price))
        await asyncio.sleep(0.1)
    await platform.push_price("BTCUSDT", str(price + 501))
    await platform.wait_status(take_profit, "filled")
    row = await platform.wait_status(stop_loss, "canceled")
    assert "one-cancels-other" in row["reason"]
    await platform.wait_for(
        "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'BTCUSDT'", (user.account_id,), Decimal(0)
    )


async def test_trailing_stop_ratchets_up_only_and_resumes_exactly_after_restart(platform: Platform) -> None:
    user, price = platform.users[0], last_price(platform)
    buy = await platform.place(user, quantity=Decimal("0.01"))
    await platform.wait_status(buy["order_id"], "filled")
    placed = await platform.place(
        user,
        side=OrderSide.SELL,
        order_type=OrderType.TRAILING_STOP_MARKET,
        trailing_offset_pct=Decimal("1"),
        quantity=Decimal("0.01"),
    )
    assert placed["status"] == "armed", placed
    order_id = placed["order_id"]
    start = (await platform.order_row(order_id))["trigger_price"]  # type: ignore[index]
    assert start == (price * Decimal("0.99")).quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    await platform.push_price("BTCUSDT", str(price + 1000))
    expected = ((price + 1000) * Decimal("0.99")).quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    await platform.wait_for("SELECT trigger_price FROM orders WHERE id = %s", (order_id,), expected)
    await platform.push_price("BTCUSDT", str(price + 500))  # a fall above the stop: the level stays
    await platform.push_price("BTCUSDT", str(price + 900))
    await asyncio.sleep(0.3)
    assert (await platform.order_row(order_id))["trigger_price"] == expected  # type: ignore[index]

    service = await platform.restart_orders()
    armed = service.triggers.get(order_id)
    assert armed is not None and armed.trigger == expected and armed.peak == price + 1000
    await platform.push_price("BTCUSDT", str(expected + 1))
    await asyncio.sleep(0.2)
    assert (await platform.order_row(order_id))["status"] == "armed"  # type: ignore[index]
    await platform.push_price("BTCUSDT", str(expected - 1))
    await platform.wait_status(order_id, "filled")


async def test_profit_lock_ladder_locks_each_rung_and_survives_restart(platform: Platform) -> None:
    user, price = platform.users[0], last_price(platform)
    buy = await platform.place(user, quantity=Decimal("0.01"))
    await platform.wait_status(buy["order_id"], "filled")
    entry = price
    placed = await platform.place(
        user,
        side=OrderSide.SELL,
        order_type=OrderType.STOP_MARKET,
        trigger_price=(entry * Decimal("0.9")).quantize(Decimal("0.01")),
        reference_price=entry,
        lock_steps=((Decimal(1), Decimal("0.5")), (Decimal(2), Decimal("1.5"))),
        quantity=Decimal("0.01"),
    )
    assert placed["status"] == "armed", placed
    order_id = placed["order_id"]
    await platform.push_price("BTCUSDT", str(entry * Decimal("1.011")))
    first = (entry * Decimal("1.005")).quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    await platform.wait_for("SELECT trigger_price FROM orders WHERE id = %s", (order_id,), first)
    service = await platform.restart_orders()
    armed = service.triggers.get(order_id)
    assert armed is not None and armed.trigger == first and armed.lock_step == 1
    await platform.push_price("BTCUSDT", str(entry * Decimal("1.021")))
    second = (entry * Decimal("1.015")).quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    await platform.wait_for("SELECT trigger_price FROM orders WHERE id = %s", (order_id,), second)
    await platform.push_price("BTCUSDT", str(second - 1))
    await platform.wait_status(order_id, "filled")


async def test_armed_order_cancel_and_modify_are_held_by_the_platform(platform: Platform) -> None:
    user, price = platform.users[0], last_price(platform)
    placed = await platform.place(
        user, side=OrderSide.BUY, order_type=OrderType.STOP_MARKET, trigger_price=price + 1000, quantity=Decimal("0.01")
    )
    modified = await platform.send(
        ModifyOrder(order_id=placed["order_id"], user_id=user.user_id, trigger_price=price + 2000), user
    )
    assert modified["status"] == "armed", modified
    assert (await platform.order_row(placed["order_id"]))["status"] == "canceled"  # type: ignore[index]
    assert placed["order_id"] not in platform.orders.triggers and modified["order_id"] in platform.orders.triggers
    cancelled = await platform.send(CancelOrder(order_id=modified["order_id"], user_id=user.user_id), user)
    assert cancelled["status"] == "canceled"
    await platform.push_price("BTCUSDT", str(price + 3000))
    await asyncio.sleep(0.3)
    assert (await platform.order_row(modified["order_id"]))["status"] == "canceled"  # type: ignore[index]


async def test_modify_resting_limit_is_cancel_replace_on_the_venue(platform: Platform) -> None:
    user = platform.users[0]
    placed = await platform.place(user, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    await platform.wait_status(placed["order_id"], "accepted")
    modified = await platform.send(
        ModifyOrder(order_id=placed["order_id"], user_id=user.user_id, price=Decimal("1100.00")), user
    )
    assert modified["ok"], modified
    await platform.wait_status(placed["order_id"], "canceled")
    row = await platform.wait_status(modified["order_id"], "accepted")
    assert row["price"] == Decimal("1100.00")
    open_on_venue = platform.sim.engine.open_orders(user.account_id, "BTCUSDT")
    assert [o.price for o in open_on_venue] == [Decimal("1100.00")]
