"""The relay and a consumer lose their PostgreSQL sessions (``pg_terminate_backend``) and Redis connections
(``CLIENT KILL``) again and again under load: they reconnect by themselves, and every event is applied once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from core.bootstrap import Kernel, bootstrap
from core.db.urls import libpq_url
from core.messaging.consumer import ConsumerConfig, StreamConsumer
from core.messaging.relay import OutboxRelay, outbox_backlog
from core.messaging.streams import Stream
from core.settings import Settings
from core.uow import UnitOfWorkFactory
from tests.integration.test_bus import EFFECTS_DDL, recording_handler
from tests.support import place_command, seed_users

pytestmark = [pytest.mark.integration, pytest.mark.kernel]

EVENTS = 600
RELAY_APP = "patriot-test-relay"
CONSUMER_APP = "patriot-test-consumer"


@pytest.fixture
async def kernel(settings: Settings, migrated_database_url: str, redis_url: str) -> AsyncIterator[Kernel]:
    k = await bootstrap(settings, migrated_database_url, redis_url, service="test")
    async with k.pool.connection() as conn:
        await conn.execute(EFFECTS_DDL)
        await conn.commit()
    yield k
    await k.close()


def named(url: str, application_name: str) -> str:
    """The database URL with an application name, so the test can find (and end) that component's sessions."""
    return f"{libpq_url(url)}{'&' if '?' in url else '?'}application_name={application_name}"


async def terminate_sessions(admin: psycopg.AsyncConnection[tuple[object, ...]], application_name: str) -> int:
    cur = await admin.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        (application_name,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


async def kill_clients(admin: Redis, client_name: str) -> int:
    killed = 0
    for client in await admin.client_list():
        if client.get("name") == client_name:
            killed += int(await admin.client_kill_filter(_id=client["id"]))
    return killed


def reconnects(kernel: Kernel, component: str, backend: str) -> float:
    value = kernel.metrics.registry.get_sample_value(
        "patriot_reconnects_total", {"component": component, "backend": backend}
    )
    return value or 0.0


async def test_dropped_connections_under_load_lose_nothing_and_double_nothing(kernel: Kernel) -> None:
    async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
        users = await seed_users(conn, 20)
    group = f"reconnect-{uuid.uuid4().hex[:6]}"
    relay_redis = Redis.from_url(kernel.redis_url, client_name=RELAY_APP)
    consumer_redis = Redis.from_url(kernel.redis_url, client_name=CONSUMER_APP)
    admin_redis = Redis.from_url(kernel.redis_url)
    consumer_pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]] = AsyncConnectionPool(
        named(kernel.database_url, CONSUMER_APP), min_size=1, max_size=4, open=False
    )
    await consumer_pool.open(wait=True)
    relay = OutboxRelay(named(kernel.database_url, RELAY_APP), relay_redis, kernel.names, kernel.metrics, batch_size=50)
    consumer = StreamConsumer(
        consumer_redis,
        UnitOfWorkFactory(consumer_pool, kernel.codec, kernel.metrics),
        kernel.names,
        kernel.codec,
        kernel.metrics,
        recording_handler(group),
        ConsumerConfig(group=group, streams=[Stream.ORDER_EVENTS], block_ms=50),
    )
    await consumer.setup()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]

    async def write() -> None:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            user, account = users[i % len(users)]
            async with sem:
                await kernel.bus.handle(place_command(user, account))
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one(i) for i in range(EVENTS)))

    writer = asyncio.create_task(write())
    rng = random.Random(11)
    drops = {"pg-relay": 0, "pg-consumer": 0, "redis-relay": 0, "redis-consumer": 0}
    try:
        async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as admin:
            while not writer.done() or min(drops.values()) < 2:
                await asyncio.sleep(rng.uniform(0.1, 0.3))
                target = rng.choice(sorted(drops))
                if target == "pg-relay":
                    drops[target] += await terminate_sessions(admin, RELAY_APP)
                elif target == "pg-consumer":
                    drops[target] += await terminate_sessions(admin, CONSUMER_APP)
                elif target == "redis-relay":
                    drops[target] += await kill_clients(admin_redis, RELAY_APP)
                else:
                    drops[target] += await kill_clients(admin_redis, CONSUMER_APP)
            await writer
            for _ in range(600):
                if await outbox_backlog(admin) == 0 and await applied(admin, group) == (EVENTS, EVENTS):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a late duplicate would show up as a second effect
            result = await applied(admin, group)
            backlog = await outbox_backlog(admin)
    finally:
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await consumer_pool.close()
        for client in (relay_redis, consumer_redis, admin_redis):
            await client.aclose()
    assert outcomes == [None, None], "the relay and the consumer survived every drop and stopped cleanly"
    assert backlog == 0
    assert result == (EVENTS, EVENTS), "every event applied, none twice"
    assert all(n >= 2 for n in drops.values()), drops
    # The relay's Redis connection is idle between batches: one killed then is replaced by redis-py on its next
    # use without an error, so only the relay's PostgreSQL reconnects are sure to be counted.
    assert reconnects(kernel, "relay", "postgres") > 0
    assert reconnects(kernel, f"consumer.{group}", "postgres") > 0
    assert reconnects(kernel, f"consumer.{group}", "redis") > 0


async def applied(conn: psycopg.AsyncConnection[tuple[object, ...]], group: str) -> tuple[int, int]:
    cur = await conn.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM test_effects WHERE consumer = %s", (group,)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])  # type: ignore[call-overload]
