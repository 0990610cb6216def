"""An order already past the risk check when its account is deactivated never goes live on that account.

The order is held at the ``orders.before_commit`` fault point (after risk, before its commit) while the
deactivation runs to the end in the same order service; released, it commits and must end cancelled, unsent.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest

from core.domain.exchange_accounts import DeactivateExchangeAccount
from core.domain.orders import OrderSide, OrderType, PlaceOrder
from realtime.orders.handlers import DEACTIVATED_ON_ARRIVAL, OrderResult
from tests.platform_harness import Platform, User

pytestmark = pytest.mark.integration


def hold_once(platform: Platform, point: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the next command that reaches ``point`` until ``release`` is set; ``reached`` is set when it arrives."""
    reached, release = asyncio.Event(), asyncio.Event()
    pauses = platform.orders.execution.faults.pauses

    async def hold() -> None:
        pauses.pop(point, None)
        reached.set()
        await release.wait()

    pauses[point] = hold
    return reached, release


def order_for(user: User, **fields: Any) -> PlaceOrder:
    values: dict[str, Any] = {
        "account_id": user.account_id,
        "user_id": user.user_id,
        "client_order_id": uuid.uuid4().hex,
        "exchange": "simulator",
        "symbol": "BTCUSDT",
        "side": OrderSide.BUY,
        "order_type": OrderType.MARKET,
        "quantity": Decimal("0.01"),
    }
    return PlaceOrder(**{**values, **fields})


async def event_types(platform: Platform, order_id: str) -> list[str]:
    async with platform.kernel.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT event_type FROM event_store WHERE aggregate_id = %s ORDER BY event_version", (order_id,)
        )
        return [str(r[0]) for r in await cur.fetchall()]


@pytest.mark.parametrize(
    ("fields", "first_step"),
    [
        ({}, "OrderSubmitted"),  # for the venue
        ({"order_type": OrderType.STOP_MARKET, "trigger_price": Decimal("1000000")}, "OrderArmed"),  # platform-held
    ],
    ids=["market", "stop"],
)
async def test_deactivation_between_risk_and_commit_cancels_the_order_unsent(
    platform: Platform, fields: dict[str, Any], first_step: str
) -> None:
    user = platform.users[0]
    reached, release = hold_once(platform, "orders.before_commit")
    placing = asyncio.create_task(platform.orders.handle(order_for(user, **fields)))
    await asyncio.wait_for(reached.wait(), 10)  # risk passed: the account was active

    deactivated = await platform.orders.handle(
        DeactivateExchangeAccount(account_id=user.account_id, user_id=user.user_id)
    )
    assert deactivated.status == "inactive" and deactivated.reason == "0 open orders cancelled", deactivated
    release.set()
    result: OrderResult = await asyncio.wait_for(placing, 10)
    await platform.orders.execution.drain()

    assert result.status == "canceled" and result.reason == DEACTIVATED_ON_ARRIVAL, result
    assert result.order_id is not None
    row = await platform.order_row(result.order_id)
    assert row is not None and row["status"] == "canceled" and row["reason"] == DEACTIVATED_ON_ARRIVAL
    assert await event_types(platform, result.order_id) == ["OrderInitialized", first_step, "OrderCanceled"]
    assert result.order_id not in platform.orders.triggers
    assert platform.sim.engine.all_orders(user.account_id, "BTCUSDT") == []  # the venue never heard of it
    counted = platform.kernel.metrics.counter(
        "patriot_orders_cancelled_on_arrival_total", "Orders cancelled unsent: their account was deactivated"
    )
    assert counted._value.get() >= 1


async def test_order_on_an_active_account_is_still_sent_after_the_check(platform: Platform) -> None:
    user, bystander = platform.users
    await platform.orders.handle(DeactivateExchangeAccount(account_id=bystander.account_id, user_id=bystander.user_id))
    result: OrderResult = await platform.orders.handle(order_for(user))
    assert result.status == "submitted" and result.order_id is not None, result
    await platform.wait_status(result.order_id, "filled")
