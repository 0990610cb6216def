"""Orders through the whole money path: command stream -> order service -> simulator (real HTTP) -> private
stream (real WebSocket) -> lifecycle -> orders, fills, positions, balances in PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.domain.orders import CancelOrder, OrderSide, OrderType
from tests.platform_harness import Platform

pytestmark = pytest.mark.integration


async def test_market_order_fills_and_moves_position_and_balances(platform: Platform) -> None:
    user = platform.users[0]
    reply = await platform.place(user, quantity=Decimal("0.01"))
    assert reply["ok"] and reply["status"] == "submitted", reply
    row = await platform.wait_status(reply["order_id"], "filled")
    assert row["filled_quantity"] == Decimal("0.01") and row["exchange_order_id"]
    qty = await platform.wait_for(
        "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'BTCUSDT'",
        (user.account_id,),
        Decimal("0.01"),
    )
    assert qty == Decimal("0.01")
    async with platform.kernel.pool.connection() as conn:
        fills = await (
            await conn.execute("SELECT sum(quantity), count(*) FROM fills WHERE order_id = %s", (reply["order_id"],))
        ).fetchone()
        avg = await (
            await conn.execute("SELECT avg_entry_price FROM positions WHERE account_id = %s", (user.account_id,))
        ).fetchone()
    assert fills is not None and fills[0] == Decimal("0.01") and fills[1] >= 1
    assert avg is not None and avg[0] == row["avg_fill_price"]
    await platform.wait_for(
        "SELECT free > 1 FROM balances WHERE account_id = %s AND asset = 'BTC'", (user.account_id,), True
    )


async def test_same_client_order_id_twice_places_one_order(platform: Platform) -> None:
    user = platform.users[0]
    first = await platform.place(user, client_order_id="dup-1", order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    second = await platform.place(user, client_order_id="dup-1", order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    assert first["order_id"] == second["order_id"] and second["duplicate"] is True
    await platform.wait_status(first["order_id"], "accepted")
    venue_orders = platform.sim.engine.all_orders(user.account_id, "BTCUSDT")
    assert len([o for o in venue_orders if o.client_order_id == first["order_id"]]) == 1


async def test_limit_order_cancel_reaches_the_venue(platform: Platform) -> None:
    user = platform.users[0]
    placed = await platform.place(user, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    await platform.wait_status(placed["order_id"], "accepted")
    cancelled = await platform.send(CancelOrder(order_id=placed["order_id"], user_id=user.user_id), user)
    assert cancelled["ok"] and cancelled["status"] == "pending_cancel"
    await platform.wait_status(placed["order_id"], "canceled")
    assert platform.sim.engine.open_orders(user.account_id, "BTCUSDT") == []


async def test_cancel_of_someone_elses_order_is_not_found(platform: Platform) -> None:
    owner, other = platform.users
    placed = await platform.place(owner, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    await platform.wait_status(placed["order_id"], "accepted")
    reply = await platform.send(CancelOrder(order_id=placed["order_id"], user_id=other.user_id), other)
    assert reply["status"] == "not_found"
    assert (await platform.order_row(placed["order_id"]))["status"] == "accepted"  # type: ignore[index]


async def test_sell_closes_position_and_realizes_pnl(platform: Platform) -> None:
    user = platform.users[1]
    buy = await platform.place(user, quantity=Decimal("0.02"))
    await platform.wait_status(buy["order_id"], "filled")
    sell = await platform.place(user, side=OrderSide.SELL, quantity=Decimal("0.02"))
    await platform.wait_status(sell["order_id"], "filled")
    await platform.wait_for(
        "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'BTCUSDT'", (user.account_id,), Decimal(0)
    )
    async with platform.kernel.pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT side, quantity, price FROM fills WHERE account_id = %s", (user.account_id,))
        ).fetchall()
        realized = await (
            await conn.execute("SELECT realized_pnl FROM positions WHERE account_id = %s", (user.account_id,))
        ).fetchone()
    bought = sum(q * p for s, q, p in rows if s == "buy")
    sold = sum(q * p for s, q, p in rows if s == "sell")
    assert realized is not None and realized[0] == sold - bought
