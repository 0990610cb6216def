"""Fault test: the relay process is SIGKILLed many times while thousands of events flow; nothing is lost or
applied twice.

Kills come from two sides: the relay's own crash points (between fetching committed rows and publishing them,
and between publishing and deleting them) and SIGKILLs sent from outside at random moments.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from core.bootstrap import Kernel, bootstrap
from core.messaging.consumer import ConsumerConfig, StreamConsumer
from core.messaging.relay import RELAY_LOCK_ID, outbox_backlog
from core.messaging.streams import Stream
from core.settings import Settings
from tests.integration.test_bus import EFFECTS_DDL, recording_handler
from tests.support import place_command, seed_users

pytestmark = [pytest.mark.integration, pytest.mark.kernel]

EVENTS = 3000
MIN_KILLS = 25


@pytest.fixture
async def kernel(settings: Settings, migrated_database_url: str, redis_url: str) -> AsyncIterator[Kernel]:
    k = await bootstrap(settings, migrated_database_url, redis_url, service="test")
    async with k.pool.connection() as conn:
        await conn.execute(EFFECTS_DDL)
        await conn.commit()
    yield k
    await k.close()


def start_relay(kernel: Kernel, faults: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": kernel.database_url,
        "REDIS_URL": kernel.redis_url,
        "PATRIOT_REDIS_PREFIX": kernel.settings.redis.key_prefix,
        "PATRIOT_BUS_PARTITIONS": str(kernel.settings.bus.partitions),
        "PATRIOT_BUS_RELAY_BATCH_SIZE": "50",
        "PATRIOT_FAULTS": faults,
        "PATRIOT_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "relay"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def relay_is_leader(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
    """Whether some session of this database holds the relay's advisory lock (a bigint key: high, low halves)."""
    cur = await conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid = %s "
        "AND objid = %s AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (RELAY_LOCK_ID >> 32, RELAY_LOCK_ID & 0xFFFFFFFF),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def test_relay_killed_repeatedly_delivers_every_event_exactly_once(kernel: Kernel) -> None:
    async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
        users = await seed_users(conn, 40)
    group = f"crash-{uuid.uuid4().hex[:6]}"
    consumer = StreamConsumer(
        kernel.redis,
        kernel.uow_factory,
        kernel.names,
        kernel.codec,
        kernel.metrics,
        recording_handler(group),
        ConsumerConfig(group=group, streams=[Stream.ORDER_EVENTS]),
    )
    await consumer.setup()
    rng = random.Random(7)
    writing_done = asyncio.Event()

    async def write() -> None:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            user, account = users[i % len(users)]
            async with sem:
                await kernel.bus.handle(place_command(user, account))
                await asyncio.sleep(0.01)  # spread the commits over the whole run of kills

        await asyncio.gather(*(one(i) for i in range(EVENTS)))
        writing_done.set()

    async def consume(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await consumer.poll_once(block_ms=50)

    stop_consumer = asyncio.Event()
    consumer_task = asyncio.create_task(consume(stop_consumer))
    writer = asyncio.create_task(write())
    kills = self_kills = 0
    faults = "relay.before_publish=0.04,relay.after_publish=0.04"
    relay = start_relay(kernel, faults)
    loop_time = asyncio.get_running_loop().time
    # A relay is killed from outside only once it has been the leader for a while: on a loaded machine its start
    # (imports, connecting) can take longer than the kill delay, and a relay that never publishes tests nothing.
    leading_since: float | None = None
    admin = await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True)
    try:
        while not writing_done.is_set() or kills + self_kills < MIN_KILLS:
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            code = relay.poll()
            if code is None and leading_since is None and await relay_is_leader(admin):
                leading_since = loop_time()
            if code is None and leading_since is not None and loop_time() - leading_since > rng.uniform(0.8, 2.0):
                relay.send_signal(signal.SIGKILL)
                relay.wait()
                kills += 1
            elif code is not None:
                assert code == -signal.SIGKILL, f"relay exited with {code}, not by a kill"
                self_kills += 1
            else:
                continue
            relay = start_relay(kernel, faults)
            leading_since = None
        await writer
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        relay = start_relay(kernel, "")  # a clean relay finishes the backlog
        async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
            for _ in range(600):
                if await outbox_backlog(conn) == 0:
                    break
                await asyncio.sleep(0.1)
            assert await outbox_backlog(conn) == 0
        await asyncio.sleep(0.5)
    finally:
        await admin.close()
        relay.terminate()
        relay.wait(10)
        stop_consumer.set()
        await consumer_task
    for _ in range(20):
        await consumer.poll_once(block_ms=50)

    async with kernel.pool.connection() as conn:
        stored = await (await conn.execute("SELECT count(*) FROM event_store")).fetchone()
        applied = await (
            await conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM test_effects WHERE consumer = %s", (group,)
            )
        ).fetchone()
        missing = await (
            await conn.execute(
                "SELECT count(*) FROM event_store e WHERE NOT EXISTS "
                "(SELECT 1 FROM test_effects t WHERE t.event_id = e.event_id AND t.consumer = %s)",
                (group,),
            )
        ).fetchone()
    published = sum([await kernel.redis.xlen(k) for k in kernel.names.all_keys(Stream.ORDER_EVENTS)])
    assert stored == (EVENTS,)
    assert missing == (0,), "every committed event reached the consumer"
    assert applied == (EVENTS, EVENTS), "each effect applied exactly once"
    assert kills + self_kills >= MIN_KILLS
    assert self_kills > 0 and kills > 0
    assert published >= EVENTS  # republished duplicates were dropped by the consumer, not the bus
