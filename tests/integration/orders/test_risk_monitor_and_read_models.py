"""The real-time risk monitor and the live read models, on the real PostgreSQL and Redis with the platform
running: a breach is published once on risk.alerts and, with auto_kill_switch, switches the scope off; the
cached portfolio is invalidated by the user's own fill."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import psycopg
import pytest

from core.domain.orders import OrderType
from core.domain.risk import RiskLimitBreached, SetRiskLimit
from core.messaging.relay import OutboxRelay
from core.messaging.streams import Stream
from realtime.orders.price_feed import PriceFeed
from realtime.portfolio.readmodels import PortfolioReadModels
from realtime.risk.monitor import RiskMonitor
from tests.platform_harness import Platform

pytestmark = pytest.mark.integration


async def alerts(platform: Platform, user_id: str) -> list[RiskLimitBreached]:
    entries = await platform.kernel.redis.xrange(platform.kernel.names.key(Stream.RISK_ALERTS, user_id))
    events = [platform.kernel.codec.decode_envelope(fields[b"p"]) for _, fields in entries]
    return [e for e in events if isinstance(e, RiskLimitBreached)]


async def test_exposure_breach_is_published_once_and_auto_kill_switch_stops_the_user(platform: Platform) -> None:
    user, other = platform.users
    buy = await platform.place(user, quantity=Decimal("0.05"))
    await platform.wait_status(buy["order_id"], "filled")
    await platform.wait_for("SELECT quantity FROM positions WHERE account_id = %s", (user.account_id,), Decimal("0.05"))
    resting = await platform.place(user, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    await platform.wait_status(resting["order_id"], "accepted")
    for limit_type, value in (("max_gross_exposure", Decimal(1000)), ("auto_kill_switch", Decimal(1))):
        await platform.send(SetRiskLimit(scope="user", scope_id=user.user_id, limit_type=limit_type, value=value), user)
    relay = OutboxRelay(
        platform.kernel.database_url, platform.kernel.redis, platform.kernel.names, platform.kernel.metrics
    )
    monitor = RiskMonitor(
        platform.kernel,
        PriceFeed(platform.kernel.redis, platform.kernel.names, platform.kernel.metrics),
        platform.client,
    )
    await monitor.feed.opening_marks()
    first = await monitor.check_once()
    assert [(b.scope, b.scope_id, b.metric) for b in first] == [("user", user.user_id, "gross_exposure")]
    assert await monitor.check_once() == []  # still breached: not published again
    async with await psycopg.AsyncConnection.connect(platform.kernel.database_url, autocommit=True) as conn:
        while await relay.publish_batch(conn):
            pass
    published = await alerts(platform, user.user_id)
    assert len(published) == 1 and published[0].value > 1000 and "gross_exposure" in published[0].message
    await platform.wait_status(resting["order_id"], "canceled")
    denied = await platform.place(user, quantity=Decimal("0.001"))
    assert denied["status"] == "denied" and "kill switch" in denied["reason"]
    assert (await platform.place(other, quantity=Decimal("0.001")))["status"] == "submitted"
    async with platform.kernel.pool.connection() as conn:
        marks = await (await conn.execute("SELECT count(*) FROM mark_prices")).fetchone()
    assert marks is not None and marks[0] >= 1


async def test_cached_portfolio_is_invalidated_by_the_users_fill(platform: Platform) -> None:
    user = platform.users[0]
    models = PortfolioReadModels(platform.kernel.pool, platform.kernel.redis, platform.kernel.names.prefix, ttl_s=60)
    assert await models.positions(user.user_id) == []
    assert await platform.kernel.redis.exists(models.key(user.user_id, "positions"))
    placed = await platform.place(user, quantity=Decimal("0.01"))
    await platform.wait_status(placed["order_id"], "filled")
    for _ in range(100):  # the lifecycle deletes the user's cache entries after the batch that moved them
        if not await platform.kernel.redis.exists(models.key(user.user_id, "positions")):
            break
        await asyncio.sleep(0.05)
    positions = await models.positions(user.user_id)
    assert [(p["symbol"], Decimal(p["quantity"])) for p in positions] == [("BTCUSDT", Decimal("0.01"))]
    summary = await models.summary(user.user_id)
    assert summary is not None and Decimal(summary["cash"]) > 0 and summary["open_positions"] == 1
    async with platform.kernel.pool.connection() as conn:
        fee = (await (await conn.execute("SELECT sum(fee) FROM fills WHERE fee_asset = 'BTC'")).fetchone())[0]  # type: ignore[index]
    balances = {b["asset"]: Decimal(b["free"]) for b in await models.balances(user.user_id)}
    assert balances["BTC"] == Decimal("1.01") - fee  # the venue takes a buyer's fee in the asset bought
