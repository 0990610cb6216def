"""Outbox relay and stream consumers against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from redis.asyncio import Redis

from core.bootstrap import Kernel, bootstrap
from core.domain.messages import Command, Event
from core.domain.strategies import ChangeStrategy, DefineStrategy
from core.messaging.bus import CommandRefused, MessageBus
from core.messaging.consumer import ConsumerConfig, StreamConsumer
from core.messaging.relay import OutboxRelay, outbox_backlog
from core.messaging.streams import Stream
from core.observability.logging import configure_logging
from core.settings import Settings
from core.uow import UnitOfWork
from tests.support import place_command, seed_users

pytestmark = [pytest.mark.integration, pytest.mark.kernel]

EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS test_effects (consumer text, event_id uuid, aggregate_id text, "
    "version int, correlation_id text)"
)


@pytest.fixture
async def kernel(settings: Settings, migrated_database_url: str, redis_url: str) -> AsyncIterator[Kernel]:
    """A kernel on a database of this test's own: no other test's outbox rows get relayed here."""
    k = await bootstrap(settings, migrated_database_url, redis_url, service="test")
    async with k.pool.connection() as conn:
        await conn.execute(EFFECTS_DDL)
        await conn.commit()
    yield k
    await k.close()


@pytest.fixture
async def aconn(kernel: Kernel) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
        yield conn


def recording_handler(group: str, fail_when: object = None):  # type: ignore[no-untyped-def]
    """A consumer effect: one row per applied event, written in the consumer's transaction."""

    async def handle(event: Event, uow: UnitOfWork) -> None:
        if callable(fail_when) and fail_when(event):
            raise RuntimeError("handler refused this event")
        from core.observability.context import get_correlation_id

        await (await uow.connection()).execute(
            "INSERT INTO test_effects VALUES (%s, %s, %s, %s, %s)",
            (group, event.event_id, event.aggregate_id, event.version, get_correlation_id()),
        )

    return handle


def consumer(kernel: Kernel, group: str, handler, **config: object) -> StreamConsumer:  # type: ignore[no-untyped-def]
    return StreamConsumer(
        kernel.redis,
        kernel.uow_factory,
        kernel.names,
        kernel.codec,
        kernel.metrics,
        handler,
        ConsumerConfig(group=group, streams=[Stream.ORDER_EVENTS], **config),  # type: ignore[arg-type]
    )


def relay(kernel: Kernel) -> OutboxRelay:
    return OutboxRelay(kernel.database_url, kernel.redis, kernel.names, kernel.metrics, batch_size=500)


async def drain(kernel: Kernel, *consumers: StreamConsumer, rounds: int = 250) -> None:
    r = relay(kernel)
    async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
        for _ in range(rounds):
            await r.publish_batch(conn)
            handled = 0
            for c in consumers:
                handled += await c.poll_once(block_ms=20)
            if handled == 0 and await outbox_backlog(conn) == 0 and not any(c.retries_pending for c in consumers):
                return


async def effects(kernel: Kernel, group: str) -> list[tuple[object, ...]]:
    async with kernel.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT event_id, aggregate_id, version, correlation_id FROM test_effects WHERE consumer = %s",
            (group,),
        )
        return await cur.fetchall()


async def test_events_flow_from_commit_to_consumer_once_in_version_order(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    users = await seed_users(aconn, 5)
    group = f"g-{uuid.uuid4().hex[:6]}"
    c = consumer(kernel, group, recording_handler(group))
    await c.setup()
    order_ids = []
    for user, account in users:
        oid = await kernel.bus.handle(place_command(user, account, correlation_id=f"req-{user[:6]}"))
        order_ids.append(oid)
        async with kernel.uow_factory() as uow:
            order = await uow.orders.get(oid)
            assert order is not None
            order.submit(correlation_id=f"req-{user[:6]}")
            order.accept("ex-1", correlation_id=f"req-{user[:6]}")
            await uow.commit()
    await drain(kernel, c)
    rows = await effects(kernel, group)
    assert len(rows) == 15 and len({r[0] for r in rows}) == 15
    per_order: dict[object, list[object]] = {}
    for _eid, agg, version, _cid in rows:
        per_order.setdefault(agg, []).append(version)
    assert all(v == [1, 2, 3] for v in per_order.values())
    assert all(
        cid == f"req-{u[:6]}"
        for (u, _), oid in zip(users, order_ids, strict=True)
        for _e, agg, _v, cid in rows
        if agg == oid
    )


async def test_redelivered_message_is_applied_once(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    group = f"g-{uuid.uuid4().hex[:6]}"
    c = consumer(kernel, group, recording_handler(group))
    await c.setup()
    await kernel.bus.handle(place_command(user, account))
    await drain(kernel, c)
    # publish the same event again, as a relay crash between publish and delete would
    key = kernel.names.key(Stream.ORDER_EVENTS, user)
    ((_mid, fields),) = (await kernel.redis.xrange(key, count=1))[-1:]
    await kernel.redis.xadd(key, fields)
    await c.poll_once(block_ms=50)
    assert len(await effects(kernel, group)) == 1


async def test_malformed_payload_goes_to_dead_letter_and_consumer_continues(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    group = f"g-{uuid.uuid4().hex[:6]}"
    c = consumer(kernel, group, recording_handler(group))
    await c.setup()
    key = kernel.names.key(Stream.ORDER_EVENTS, user)
    await kernel.redis.xadd(key, {"id": "x", "p": b"{not json"})
    await kernel.redis.xadd(key, {"id": "y", "p": b'{"type":"OrderInitialized","aggregate_type":"order","event":{}}'})
    await kernel.redis.xadd(key, {"nothing": "here"})
    await kernel.bus.handle(place_command(user, account))
    await drain(kernel, c)
    dead = await kernel.redis.xrange(kernel.names.dead_letter)
    assert len(dead) == 3
    assert all(b"malformed" in f[b"error"] and f[b"group"] == group.encode() for _, f in dead)
    assert len(await effects(kernel, group)) == 1  # the good event still applied
    pending = await kernel.redis.xpending(key, group)
    assert pending["pending"] == 0


async def test_failing_handler_is_retried_then_dead_lettered_without_blocking_others(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    users = await seed_users(aconn, 3)
    poison_user = users[0][0]
    group = f"g-{uuid.uuid4().hex[:6]}"
    c = consumer(
        kernel,
        group,
        recording_handler(group, fail_when=lambda e: e.user_id == poison_user),
        max_deliveries=3,
        retry_delay_s=0.01,
    )
    await c.setup()
    for user, account in users:
        await kernel.bus.handle(place_command(user, account))
    await drain(kernel, c)
    rows = await effects(kernel, group)
    assert len(rows) == 2
    dead = await kernel.redis.xrange(kernel.names.dead_letter)
    assert len(dead) == 1 and b"handler failed 3 times" in dead[0][1][b"error"]
    failures = kernel.metrics.bus_handler_failures.labels(consumer=group, error="RuntimeError")._value.get()
    assert failures == 3


async def test_transient_failure_is_retried_and_applied_once(kernel: Kernel, aconn) -> None:  # type: ignore[no-untyped-def]
    ((user, account),) = await seed_users(aconn, 1)
    group = f"g-{uuid.uuid4().hex[:6]}"
    calls = {"n": 0}

    def flaky(_event: Event) -> bool:
        calls["n"] += 1
        return calls["n"] <= 2

    c = consumer(kernel, group, recording_handler(group, fail_when=flaky), retry_delay_s=0.01)
    await c.setup()
    await kernel.bus.handle(place_command(user, account))
    await drain(kernel, c)
    assert len(await effects(kernel, group)) == 1
    assert await kernel.redis.xlen(kernel.names.dead_letter) == 0


async def test_messages_left_pending_by_dead_consumer_are_claimed(kernel: Kernel, aconn, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    users = await seed_users(aconn, 4)
    group = f"g-{uuid.uuid4().hex[:6]}"
    survivor = consumer(kernel, group, recording_handler(group), consumer_name="survivor", claim_idle_ms=200)
    await survivor.setup()
    for user, account in users:
        await kernel.bus.handle(place_command(user, account))
    async with await psycopg.AsyncConnection.connect(kernel.database_url, autocommit=True) as conn:
        published = 0
        for _ in range(200):  # a transaction still open anywhere on the server holds the relay back: wait
            published += await relay(kernel).publish_batch(conn)
            if published == 4:
                break
            await asyncio.sleep(0.02)
    # a consumer reads everything and dies before acknowledging
    dead = Redis.from_url(redis_url)
    got = await dead.xreadgroup(
        group, "doomed", dict.fromkeys(kernel.names.all_keys(Stream.ORDER_EVENTS), ">"), count=100
    )
    await dead.aclose()
    assert sum(len(m) for _, m in got) == 4
    assert await survivor.poll_once(block_ms=10) == 0  # nothing new, and not idle long enough yet
    await asyncio.sleep(0.25)
    survivor._last_claim = 0.0
    await survivor.poll_once(block_ms=10)
    assert len(await effects(kernel, group)) == 4
    for key in kernel.names.all_keys(Stream.ORDER_EVENTS):
        assert (await kernel.redis.xpending(key, group))["pending"] == 0


async def test_a_refused_command_is_counted_and_logged_as_information_not_as_an_error(kernel: Kernel) -> None:
    class NameTaken(CommandRefused):
        pass

    async def refuse(cmd: Command, uow: UnitOfWork) -> None:
        raise NameTaken("a strategy named 'x' exists")

    async def crash(cmd: Command, uow: UnitOfWork) -> None:
        raise RuntimeError("a bug")

    bus = MessageBus(kernel.uow_factory, {DefineStrategy: refuse, ChangeStrategy: crash}, kernel.metrics)
    stream = io.StringIO()
    configure_logging("test", stream=stream)  # loggers cached earlier write to it too
    try:
        with pytest.raises(NameTaken):
            await bus.handle(DefineStrategy(strategy_id="s", name="x", kind="k"))
        with pytest.raises(RuntimeError):
            await bus.handle(ChangeStrategy(strategy_id="s", changes={}))
    finally:
        configure_logging("test")
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    levels = {line["event"]: line["level"] for line in lines if line.get("logger") == "core.messaging.bus"}
    assert levels == {"command refused": "info", "command failed": "error"}
    failed = kernel.metrics.registry.get_sample_value(
        "patriot_commands_failed_total", {"command": "DefineStrategy", "error": "NameTaken"}
    )
    assert failed == 1


async def test_dedupe_rows_past_the_retention_are_pruned_and_a_redelivery_inside_it_is_still_deduplicated(
    kernel: Kernel,
    aconn,  # type: ignore[no-untyped-def]
) -> None:
    ((user, account),) = await seed_users(aconn, 1)
    group = f"g-{uuid.uuid4().hex[:6]}"
    c = consumer(kernel, group, recording_handler(group), dedupe_retention_s=3600.0, prune_batch=2)
    await c.setup()
    await kernel.bus.handle(place_command(user, account))
    await drain(kernel, c)
    # Five rows of this group and one of another group, all processed long before the retention.
    expired = [uuid.uuid4() for _ in range(5)]
    rows = [(group, e) for e in expired] + [("another-group", uuid.uuid4())]
    for consumer_group, event_id in rows:
        await aconn.execute(
            "INSERT INTO processed_messages (consumer, event_id, processed_at) "
            "VALUES (%s, %s, now() - interval '2 hours')",
            (consumer_group, event_id),
        )
    assert await c.prune_processed() == 5, "in batches of two, until none is left"
    left = await (
        await aconn.execute("SELECT consumer, count(*) FROM processed_messages GROUP BY consumer ORDER BY consumer")
    ).fetchall()
    assert left == [("another-group", 1), (group, 1)], "only this group's expired rows go"
    # The event applied a moment ago is inside the retention: its redelivery is still a duplicate.
    key = kernel.names.key(Stream.ORDER_EVENTS, user)
    ((_mid, fields),) = (await kernel.redis.xrange(key, count=1))[-1:]
    await kernel.redis.xadd(key, fields)
    await c.poll_once(block_ms=50)
    assert len(await effects(kernel, group)) == 1
    assert await c.prune_processed() == 0
