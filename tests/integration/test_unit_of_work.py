"""Unit of work, event store and outbox against the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from core.bootstrap import Kernel, bootstrap
from core.eventstore import ConcurrencyError, read_all
from core.settings import Settings
from tests.support import place_command, seed_users

pytestmark = [pytest.mark.integration, pytest.mark.kernel]


@pytest.fixture
async def kernel(settings: Settings, database_url: str, redis_url: str) -> AsyncIterator[Kernel]:
    k = await bootstrap(settings, database_url, redis_url, service="test")
    yield k
    await k.close()


async def count(conn: psycopg.AsyncConnection[tuple[object, ...]], sql: str, *args: object) -> int:
    cur = await conn.execute(sql, args)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


async def test_place_order_commits_row_event_and_outbox_together(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    order_id = await kernel.bus.handle(place_command(user, account, correlation_id="req-1"))
    assert await count(aconn, "SELECT count(*) FROM orders WHERE id = %s AND status = 'initialized'", order_id) == 1
    assert await count(aconn, "SELECT count(*) FROM event_store WHERE aggregate_id = %s", order_id) == 1
    assert (
        await count(
            aconn,
            "SELECT count(*) FROM event_store WHERE aggregate_id = %s AND metadata->>'correlation_id' = 'req-1'",
            order_id,
        )
        == 1
    )
    assert (
        await count(
            aconn,
            "SELECT count(*) FROM outbox o JOIN event_store e USING (event_id) "
            "WHERE e.aggregate_id = %s AND o.stream = 'order.events'",
            order_id,
        )
        == 1
    )


async def test_failed_handler_writes_nothing(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    cmd = place_command(user, account)
    before = await count(aconn, "SELECT count(*) FROM event_store")
    async with kernel.uow_factory() as uow:
        from core.domain.orders import Order

        uow.orders.add(Order.place(cmd, "11111111-1111-1111-1111-111111111111"))
        # leaving without commit: rolled back
    assert await count(aconn, "SELECT count(*) FROM event_store") == before
    assert await count(aconn, "SELECT count(*) FROM orders WHERE client_order_id = %s", cmd.client_order_id) == 0


async def test_two_writers_on_one_aggregate_exactly_one_wins(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    order_id = await kernel.bus.handle(place_command(user, account))
    async with kernel.uow_factory() as first, kernel.uow_factory() as second:
        a = await first.orders.get(order_id)
        b = await second.orders.get(order_id)
        assert a is not None and b is not None
        a.submit()
        b.cancel(reason="racing")
        await first.commit()
        with pytest.raises(ConcurrencyError):
            await second.commit()
    async with kernel.uow_factory() as uow:
        order = await uow.orders.get(order_id)
        assert order is not None and order.status.value == "submitted" and order.version == 2
    assert await count(aconn, "SELECT count(*) FROM event_store WHERE aggregate_id = %s", order_id) == 2
    assert await count(aconn, "SELECT version FROM orders WHERE id = %s", order_id) == 2


async def test_many_concurrent_writers_on_one_aggregate_never_fork_its_history(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    order_id = await kernel.bus.handle(place_command(user, account, qty="100"))
    async with kernel.uow_factory() as uow:
        order = await uow.orders.get(order_id)
        assert order is not None
        order.submit()
        await uow.commit()

    async def fill(n: int) -> bool:
        async with kernel.uow_factory() as uow:
            o = await uow.orders.get(order_id)
            assert o is not None
            from decimal import Decimal

            o.fill(f"t{n}", Decimal("1"), Decimal("10"))
            try:
                await uow.commit()
                return True
            except ConcurrencyError:
                return False

    results = await asyncio.gather(*(fill(n) for n in range(12)))
    wins = sum(results)
    assert wins >= 1
    versions = await aconn.execute(
        "SELECT event_version FROM event_store WHERE aggregate_id = %s ORDER BY event_version", (order_id,)
    )
    assert [r[0] for r in await versions.fetchall()] == list(range(1, 3 + wins))
    assert await count(aconn, "SELECT filled_quantity FROM orders WHERE id = %s", order_id) == wins


async def test_same_client_order_id_twice_places_one_order(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    cmds = [place_command(user, account, client_order_id="dup-1") for _ in range(6)]
    ids = await asyncio.gather(*(kernel.bus.handle(c) for c in cmds))
    assert len(set(ids)) == 1
    assert await count(aconn, "SELECT count(*) FROM orders WHERE client_order_id = 'dup-1'") == 1
    assert await count(aconn, "SELECT count(*) FROM event_store WHERE aggregate_id = %s", ids[0]) == 1


async def test_event_store_replay_reads_all_events_in_global_order(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    first = await kernel.bus.handle(place_command(user, account))
    second = await kernel.bus.handle(place_command(user, account))
    async with kernel.pool.connection() as conn:
        page = await read_all(conn, 0, 100_000, kernel.codec)
    positions = [s.global_position for s in page]
    assert positions == sorted(positions)
    ids = [s.event.aggregate_id for s in page]
    assert ids.index(first) < ids.index(second)


async def test_order_under_another_users_account_is_refused_by_the_schema(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    (owner, account), (intruder, _other) = await seed_users(aconn, 2)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await kernel.bus.handle(place_command(intruder, account))
    assert await count(aconn, "SELECT count(*) FROM orders WHERE account_id = %s", account) == 0
    assert (
        await count(
            aconn,
            "SELECT count(*) FROM event_store e JOIN outbox o USING (event_id) WHERE e.event_data->>'account_id' = %s",
            account,
        )
        == 0
    )
    assert await kernel.bus.handle(place_command(owner, account))  # the owner still can
