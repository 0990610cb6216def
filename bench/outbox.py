"""Outbox benchmark: commands committed, relayed to Redis Streams and applied by a consumer, end to end.

    python -m bench.outbox [--rate 2500] [--seconds 8]

This process offers PlaceOrder commands at a fixed rate (open loop, like wrk2: a command's latency counts from
when it was due, so a stall is not hidden by the load backing off). Each command commits an order row, its
event and an outbox row atomically (grouped with concurrent commands by the group committer). The relay and
a consumer run as separate processes, as in production; the consumer applies each event exactly once (dedupe
row + effect in one transaction). The last line is one JSON object: events/s end to end; commit latency
p50/p99 (the unit of work's commit: writes handed over -> durable, group commit included); command latency
p50/p99 (command due -> committed, so generator lateness and handler time included); delivery latency
p50/p99 (event time -> consumer effect committed). The commit latency is also given as a ratio to the physical
floor measured first in the same run (``bench.floor``: single-row durable transactions at the same rate over the
same number of connections), ``commit_p99_vs_floor``. Latency is judged at 2,500 events/s; throughput at
saturation (``--rate 10000``: ``events_per_s`` is then what the path sustains end to end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import psycopg

from bench.common import Servers, percentile, resolve_servers, scratch_database
from bench.floor import measure_floor
from core.bootstrap import bootstrap
from core.domain.messages import Event
from core.handlers import COMMAND_HANDLERS
from core.messaging.bus import MessageBus
from core.messaging.consumer import ConsumerConfig, StreamConsumer
from core.messaging.streams import Stream
from core.runtime.processes import tune_gc
from core.settings import load_settings
from core.uow import UnitOfWork, UnitOfWorkFactory
from tests.support import place_command, seed_users

EFFECT_DDL = "CREATE TABLE IF NOT EXISTS bench_effects (event_id uuid, occurred_at timestamptz, applied_at timestamptz)"


async def _consume(group: str, expected: int) -> None:
    """Consumer process: apply every event once, until ``expected`` effects exist."""
    settings = load_settings()
    kernel = await bootstrap(settings, os.environ["DATABASE_URL"], os.environ["REDIS_URL"], service="bench-consumer")

    async def effect(event: Event, uow: UnitOfWork) -> None:
        await (await uow.connection()).execute(
            "INSERT INTO bench_effects VALUES (%s, %s, clock_timestamp())",
            (event.event_id, event.occurred_at),
        )

    consumer = StreamConsumer(
        kernel.redis,
        kernel.uow_factory,
        kernel.names,
        kernel.codec,
        kernel.metrics,
        effect,
        ConsumerConfig(group=group, streams=[Stream.ORDER_EVENTS], batch_size=1000, block_ms=50),
    )
    await consumer.setup()
    tune_gc()
    applied = 0
    while applied < expected:
        await consumer.poll_once()
        applied = int(
            kernel.metrics.bus_consumed.labels(stream=f"{kernel.names.prefix}order.events", consumer=group)._value.get()
        )
    await kernel.close()


class _TimedUnitOfWork(UnitOfWork):
    """Records how long each commit takes: from handing over the writes to their transaction being durable."""

    def __init__(self, factory: UnitOfWorkFactory, commits: list[float]) -> None:
        super().__init__(factory.pool, factory.codec, factory.metrics, factory.committer)
        self._commits = commits

    async def commit(self) -> list[Event]:
        started = time.perf_counter()
        events = await super().commit()
        self._commits.append(time.perf_counter() - started)
        return events


@dataclass(frozen=True)
class TimedUnitOfWorkFactory:
    factory: UnitOfWorkFactory
    commits: list[float]

    def __call__(self, transactional: bool = False) -> UnitOfWork:
        return self.factory(transactional) if transactional else _TimedUnitOfWork(self.factory, self.commits)


def _child_env(servers: Servers, database_url: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "PATRIOT_REDIS_PREFIX": prefix,
        "PATRIOT_LOG_LEVEL": "WARNING",
    }


async def run(rate: float, seconds: float) -> dict[str, float | int]:
    events = int(rate * seconds)
    servers = resolve_servers()
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with scratch_database(servers) as database_url:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            users = await seed_users(conn, 100)
            await conn.execute(EFFECT_DDL)
        connections = load_settings().database.pool_max_size
        print(f"measuring the commit floor at {rate:.0f}/s over {connections} connections ...", file=sys.stderr)
        floor = await measure_floor(database_url, rate, seconds, connections)
        env = _child_env(servers, database_url, prefix)
        group = "bench"
        relay = subprocess.Popen([sys.executable, "-m", "cli.main", "relay"], env=env)
        consumer = subprocess.Popen(
            [sys.executable, "-m", "bench.outbox", "--consume", group, "--events", str(events)], env=env
        )
        os.environ.update(PATRIOT_REDIS_PREFIX=prefix)
        settings = load_settings()
        kernel = await bootstrap(settings, database_url, servers.redis_url, service="bench")
        commits: list[float] = []
        kernel.bus = MessageBus(TimedUnitOfWorkFactory(kernel.uow_factory, commits), COMMAND_HANDLERS, kernel.metrics)
        latencies: list[float] = []
        await asyncio.sleep(2.0)  # let relay and consumer finish importing
        tune_gc()
        started = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()

        async def place(i: int, due: float) -> None:
            user, account = users[i % len(users)]
            await kernel.bus.handle(place_command(user, account))
            latencies.append(time.perf_counter() - due)

        for i in range(events):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            task = asyncio.create_task(place(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        committed = time.perf_counter()
        print(
            f"committed {events} commands in {committed - started:.1f}s; waiting for delivery ...",
            file=sys.stderr,
        )
        try:
            consumer.wait(timeout=300)
        finally:
            delivered = time.perf_counter()
            relay.terminate()
            relay.wait(10)
            if consumer.poll() is None:
                consumer.kill()
        async with kernel.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), count(DISTINCT event_id), "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - occurred_at)), "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - occurred_at)) "
                "FROM bench_effects"
            )
            applied, distinct, lag50, lag99 = await cur.fetchone()  # type: ignore[misc]
        await kernel.close()
        await _drop_keys(servers.redis_url, prefix)
    if applied != events or distinct != events:
        raise SystemExit(f"delivery check failed: {applied} effects, {distinct} distinct, {events} expected")
    return {
        "events": events,
        "offered_per_s": rate,
        "events_per_s": round(events / (delivered - started), 1),
        "commands_per_s": round(events / (committed - started), 1),
        "commit_p50_ms": round(percentile(commits, 50) * 1000, 3),
        "commit_p99_ms": round(percentile(commits, 99) * 1000, 3),
        "command_p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "command_p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "delivery_p50_ms": round(float(lag50) * 1000, 2),
        "delivery_p99_ms": round(float(lag99) * 1000, 2),
        **floor.figures(),
        "commit_p99_vs_floor": floor.ratio(percentile(commits, 99) * 1000),
    }


async def _drop_keys(redis_url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2_500, help="commands offered per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long to offer them")
    parser.add_argument("--events", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--consume", metavar="GROUP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    runner = _runner()
    if args.consume:
        runner(_consume(args.consume, args.events))
        return
    figures = runner(run(args.rate, args.seconds))
    print(json.dumps(figures))


def _runner():  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


if __name__ == "__main__":
    main()
