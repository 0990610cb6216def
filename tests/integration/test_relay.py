"""The outbox relay against the real PostgreSQL and Redis: commit order, exact deletes, prompt shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from core.bootstrap import Kernel, bootstrap
from core.messaging.consumer import ConsumerConfig, StreamConsumer
from core.messaging.relay import OutboxRelay, outbox_backlog
from core.messaging.streams import Stream
from core.settings import Settings
from tests.integration.test_bus import EFFECTS_DDL, drain, recording_handler
from tests.integration.test_relay_crash import relay_is_leader, start_relay
from tests.support import place_command, seed_users

pytestmark = [pytest.mark.integration, pytest.mark.kernel]


@pytest.fixture
async def kernel(settings: Settings, migrated_database_url: str, redis_url: str) -> AsyncIterator[Kernel]:
    """A kernel on a database of this test's own: no other test's outbox rows get relayed here."""
    k = await bootstrap(settings, migrated_database_url, redis_url, service="test")
    async with k.pool.connection() as conn:
        await conn.execute(EFFECTS_DDL)
        await conn.commit()
    yield k
    await k.close()


async def published_event_ids(kernel: Kernel) -> list[str]:
    """Event ids on the order-event streams, in publish order per shard, shards concatenated."""
    ids: list[str] = []
    for key in kernel.names.all_keys(Stream.ORDER_EVENTS):
        ids += [fields[b"id"].decode() for _mid, fields in await kernel.redis.xrange(key)]
    return ids


async def test_transaction_ids_of_different_digit_counts_publish_in_numeric_order_and_none_is_dropped(
    kernel: Kernel,
) -> None:
    # A fresh cluster's transaction ids cross 999 -> 1000 within minutes: as text, "1000" sorts before "999".
    async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
        users = await seed_users(conn, 3)
        for user, account in users:
            await kernel.bus.handle(place_command(user, account))
        rows = await (await conn.execute("SELECT id, event_id::text FROM outbox ORDER BY id")).fetchall()
        assert len(rows) == 3
        for (row_id, _event), txid in zip(rows, (9, 10, 11), strict=True):
            await conn.execute("UPDATE outbox SET txid = %s::text::xid8 WHERE id = %s", (str(txid), row_id))
        relay = OutboxRelay(kernel.database_url, kernel.redis, kernel.names, kernel.metrics, batch_size=1)
        first = await relay.publish_batch(conn)
        assert first == 1
        first_published = await published_event_ids(kernel)
        assert first_published == [rows[0][1]], "the oldest transaction (txid 9) is published first"
        while await relay.publish_batch(conn):
            pass
        assert await outbox_backlog(conn) == 0
    assert sorted(await published_event_ids(kernel)) == sorted(str(e) for _id, e in rows)


async def test_delete_removes_only_the_published_rows(kernel: Kernel) -> None:
    async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
        users = await seed_users(conn, 4)
        for user, account in users:
            await kernel.bus.handle(place_command(user, account))
        assert await _wait_for(lambda: _committed_rows(conn, 4), 30), "other sessions' transactions ended"
        relay = OutboxRelay(kernel.database_url, kernel.redis, kernel.names, kernel.metrics, batch_size=2)
        assert await relay.publish_batch(conn) == 2
        left = await (await conn.execute("SELECT event_id::text FROM outbox")).fetchall()
    published = await published_event_ids(kernel)
    assert len(published) == 2 and len(left) == 2
    assert not set(published) & {str(r[0]) for r in left}, "a published row is deleted, an unpublished one kept"


async def test_sigterm_under_load_stops_the_relay_promptly_and_loses_nothing(kernel: Kernel) -> None:
    events = 3000
    async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
        users = await seed_users(conn, 20)
    group = f"term-{uuid.uuid4().hex[:6]}"
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

    async def write() -> None:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            user, account = users[i % len(users)]
            async with sem:
                await kernel.bus.handle(place_command(user, account))
                await asyncio.sleep(0.01)  # keep committing for longer than the relay takes to start

        await asyncio.gather(*(one(i) for i in range(events)))

    writer = asyncio.create_task(write())
    relay = start_relay(kernel, "")
    loop_time = asyncio.get_running_loop().time
    try:
        async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as admin:
            assert await _wait_for(lambda: relay_is_leader(admin), 60), "the relay took the lock"
            assert await _wait_for(lambda: _any_published(kernel), 30), "the relay is publishing"
            assert not writer.done(), "the relay is stopped while events are still being committed"
            relay.send_signal(signal.SIGTERM)
            sent = loop_time()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(relay.wait, 10)
            exit_s = loop_time() - sent
            print(f"relay exited {exit_s * 1000:.0f} ms after SIGTERM")  # the figure for docs/reports
            assert relay.returncode == 0, "the relay stopped cleanly, within 10 s of SIGTERM"
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
    await writer
    await drain(kernel, consumer, rounds=2000)
    async with kernel.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM test_effects WHERE consumer = %s", (group,)
        )
        applied = await cur.fetchone()
        stored = await (await conn.execute("SELECT count(*) FROM event_store")).fetchone()
    assert stored == (events,)
    assert applied == (events, events), "every event applied once after the relay stopped mid-load"


async def _any_published(kernel: Kernel) -> bool:
    return sum([await kernel.redis.xlen(k) for k in kernel.names.all_keys(Stream.ORDER_EVENTS)]) > 0


async def _committed_rows(conn: psycopg.AsyncConnection[tuple[object, ...]], n: int) -> bool:
    """Whether ``n`` outbox rows are readable by the relay (every older transaction on the server has ended)."""
    cur = await conn.execute("SELECT count(*) FROM outbox WHERE txid < pg_snapshot_xmin(pg_current_snapshot())")
    row = await cur.fetchone()
    return row is not None and row[0] == n


async def _wait_for(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False
