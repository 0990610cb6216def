"""Pre-trade risk on the live order path, bad input, kill switches, and reconciliation when the stream is down."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from core.domain.orders import OrderType
from core.domain.risk import ActivateKillSwitch, DeactivateKillSwitch, SetRiskLimit
from tests.platform_harness import Platform

pytestmark = pytest.mark.integration


async def order_count(platform: Platform) -> int:
    async with platform.kernel.pool.connection() as conn:
        return int((await (await conn.execute("SELECT count(*) FROM orders")).fetchone())[0])  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"quantity": Decimal(0)}, "quantity 0 must be positive"),
        ({"quantity": Decimal(-1)}, "quantity -1 must be positive"),
        ({"quantity": Decimal("NaN")}, "quantity NaN is not a finite number"),
        ({"quantity": Decimal("Infinity")}, "quantity Infinity is not a finite number"),
        ({"order_type": OrderType.LIMIT, "price": Decimal("-5")}, "price -5 must be positive"),
        ({"order_type": OrderType.LIMIT, "price": Decimal("-Infinity")}, "price -Infinity is not a finite number"),
        ({"order_type": OrderType.LIMIT}, "price is required for a limit order"),
        ({"order_type": OrderType.STOP_MARKET}, "trigger price is required"),
    ],
)
async def test_invalid_numbers_are_denied_with_reason_and_nothing_written(
    platform: Platform, fields: dict[str, object], reason: str
) -> None:
    before = await order_count(platform)
    reply = await platform.place(platform.users[0], **fields)
    assert reply["ok"] and reply["status"] == "denied" and reason in reply["reason"], reply
    assert reply["order_id"] is None and await order_count(platform) == before
    assert platform.sim.engine.all_orders(platform.users[0].account_id, "BTCUSDT") == []


async def test_order_for_someone_elses_account_is_denied_and_nothing_written(platform: Platform) -> None:
    owner, intruder = platform.users
    before = await order_count(platform)
    reply = await platform.place(intruder, account_id=owner.account_id)
    assert reply["status"] == "denied" and "does not own account" in reply["reason"], reply
    assert await order_count(platform) == before


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"symbol": "NOPEUSDT"}, "unknown symbol NOPEUSDT"),
        ({"order_type": OrderType.LIMIT, "price": Decimal("50000.001")}, "not a multiple of the tick size"),
        ({"quantity": Decimal("0.000001")}, "below the minimum"),
        ({"quantity": Decimal("0.0100001")}, "not a multiple of the step size"),
        ({"order_type": OrderType.LIMIT, "price": Decimal("0.01"), "quantity": Decimal("0.001")}, "below the minimum"),
    ],
)
async def test_exchange_filter_violations_are_recorded_as_denied(
    platform: Platform, fields: dict[str, object], reason: str
) -> None:
    user = platform.users[0]
    reply = await platform.place(user, **fields)
    assert reply["status"] == "denied" and reason in reply["reason"], reply
    row = await platform.order_row(reply["order_id"])
    assert row is not None and row["status"] == "denied" and reason in row["reason"]
    assert platform.sim.engine.all_orders(user.account_id, "BTCUSDT") == []


async def test_limits_set_at_run_time_apply_to_the_next_order(platform: Platform) -> None:
    user = platform.users[0]
    limit = SetRiskLimit(scope="user", scope_id=user.user_id, limit_type="max_order_notional", value=Decimal(100))
    assert (await platform.send(limit, user))["ok"]
    denied = await platform.place(user, quantity=Decimal("0.01"))
    assert denied["status"] == "denied" and "exceeds the maximum 100 per order" in denied["reason"], denied
    band = SetRiskLimit(scope="fund", scope_id="", limit_type="price_band_pct", value=Decimal(5))
    await platform.send(band, user)
    lifted = SetRiskLimit(scope="user", scope_id=user.user_id, limit_type="max_order_notional", value=None)
    await platform.send(lifted, user)
    fat_finger = await platform.place(user, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    assert fat_finger["status"] == "denied" and "outside ±5%" in fat_finger["reason"], fat_finger
    ok = await platform.place(user, quantity=Decimal("0.01"))
    assert ok["status"] == "submitted", ok


async def test_kill_switch_cancels_open_orders_and_denies_new_ones(platform: Platform) -> None:
    user, other = platform.users
    resting = [await platform.place(user, order_type=OrderType.LIMIT, price=Decimal(p)) for p in ("1000.00", "1001.00")]
    trade = platform.sim.market.last_trade("BTCUSDT")
    assert trade is not None
    armed = await platform.place(
        user, order_type=OrderType.STOP_MARKET, trigger_price=trade.price + 5000, quantity=Decimal("0.01")
    )
    bystander = await platform.place(other, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    for placed in [*resting, bystander]:
        await platform.wait_status(placed["order_id"], "accepted")
    kill = await platform.send(ActivateKillSwitch(scope="user", scope_id=user.user_id, reason="test"), user)
    assert kill["ok"] and "3 open orders cancelled" in kill["reason"], kill
    for placed in [*resting, armed]:
        await platform.wait_status(placed["order_id"], "canceled")
    assert platform.sim.engine.open_orders(user.account_id, "BTCUSDT") == []
    assert armed["order_id"] not in platform.orders.triggers
    denied = await platform.place(user, quantity=Decimal("0.01"))
    assert denied["status"] == "denied" and "user kill switch is active" in denied["reason"]
    assert (await platform.order_row(bystander["order_id"]))["status"] == "accepted"  # type: ignore[index]
    await platform.send(DeactivateKillSwitch(scope="user", scope_id=user.user_id), user)
    assert (await platform.place(user, quantity=Decimal("0.01")))["status"] == "submitted"


async def test_fills_arrive_by_rest_polling_while_the_private_stream_is_down(platform: Platform) -> None:
    user = platform.users[0]
    await platform.streams.close()  # the account data service is down: no stream reports at all
    await asyncio.sleep(3.1)  # its heartbeat lapses
    placed = await platform.place(user, quantity=Decimal("0.01"))
    row = await platform.wait_status(placed["order_id"], "filled", timeout_s=20)
    assert row["filled_quantity"] == Decimal("0.01")
    await platform.wait_for(
        "SELECT quantity FROM positions WHERE account_id = %s AND symbol = 'BTCUSDT'",
        (user.account_id,),
        Decimal("0.01"),
    )
    resting = await platform.place(user, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    await platform.wait_status(resting["order_id"], "accepted")
    platform.sim.engine.cancel_order(user.account_id, "BTCUSDT", None, resting["order_id"])  # cancelled on the venue
    await platform.wait_status(resting["order_id"], "canceled", timeout_s=20)


async def test_limits_that_read_figures_deny_on_positions_open_orders_rate_and_exposure(platform: Platform) -> None:
    user = platform.users[0]

    async def limit(limit_type: str, value: str | None, scope: str = "account") -> None:
        scope_id = {"account": user.account_id, "user": user.user_id, "fund": ""}[scope]
        number = None if value is None else Decimal(value)
        await platform.send(SetRiskLimit(scope=scope, scope_id=scope_id, limit_type=limit_type, value=number), user)

    buy = await platform.place(user, quantity=Decimal("0.02"))
    await platform.wait_status(buy["order_id"], "filled")
    await platform.wait_for("SELECT quantity FROM positions WHERE account_id = %s", (user.account_id,), Decimal("0.02"))
    await limit("max_position_per_symbol", "0.025")
    denied = await platform.place(user, quantity=Decimal("0.01"))
    assert "position in BTCUSDT would be 0.03, beyond the limit of 0.025" in denied["reason"], denied
    await limit("max_position_per_symbol", None)

    async with platform.kernel.pool.connection() as conn:  # the risk monitor's role: the mark of the position
        await conn.execute(
            "INSERT INTO mark_prices VALUES ('binance', 'BTCUSDT', %s, now())",
            (platform.orders.feed.marks["BTCUSDT"],),
        )
    await limit("max_gross_exposure", "100", scope="fund")
    denied = await platform.place(user, quantity=Decimal("0.001"))
    assert denied["reason"].startswith("fund gross exposure would be"), denied
    await limit("max_gross_exposure", None, scope="fund")

    await limit("max_open_orders", "1")
    first = await platform.place(user, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    assert first["status"] == "submitted"
    second = await platform.place(user, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    assert "1 open orders already; the limit is 1" in second["reason"], second
    await limit("max_open_orders", None)

    await limit("max_orders_per_minute", "2")
    third = await platform.place(user, quantity=Decimal("0.001"))
    assert "orders in the last minute; the limit is 2 per minute" in third["reason"], third
