"""The outbox relay against the real PostgreSQL and Redis: commit order, exact deletes, prompt shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from core.bootstrap import Kernel, bootstrap
from core.messaging.relay import OutboxRelay, outbox_backlog
from core.messaging.streams import Stream
from core.settings import Settings
from tests.support import place_command, seed_users

pytestmark = [pytest.mark.integration, pytest.mark.kernel]


@pytest.fixture
async def kernel(settings: Settings, migrated_database_url: str, redis_url: str) -> AsyncIterator[Kernel]:
    """A kernel on a database of this test's own: no other test's outbox rows get relayed here."""
    k = await bootstrap(settings, migrated_database_url, redis_url, service="test")
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
