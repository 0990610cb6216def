"""Composition root of a kernel process: builds pool, Redis client, codec, metrics, unit of work and bus once.

Every process calls :func:`bootstrap` at start and passes the resulting :class:`Kernel` down; nothing is a
module-level global. Outer tiers add their own handlers and dependencies through the arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import BlockingConnectionPool, Redis

from core.commit import GroupCommitter
from core.db.urls import libpq_url
from core.domain.messages import Command
from core.handlers import COMMAND_HANDLERS
from core.messaging.bus import CommandHandler, MessageBus
from core.messaging.codec import Codec
from core.messaging.streams import StreamNames
from core.observability.metrics import Metrics, build_metrics
from core.settings import Settings
from core.uow import Conn, UnitOfWorkFactory


@dataclass(slots=True)
class Kernel:
    settings: Settings
    database_url: str
    redis_url: str
    pool: AsyncConnectionPool[Conn]
    redis: Redis
    codec: Codec
    names: StreamNames
    metrics: Metrics
    uow_factory: UnitOfWorkFactory
    bus: MessageBus
    committer: GroupCommitter

    async def close(self) -> None:
        await self.committer.close()
        await self.pool.close()
        await self.redis.aclose()


async def bootstrap(
    settings: Settings,
    database_url: str,
    redis_url: str,
    *,
    service: str | None = None,
    handlers: Mapping[type[Command], CommandHandler] | None = None,
    dependencies: Mapping[str, object] | None = None,
    metrics: Metrics | None = None,
) -> Kernel:
    """Open the shared clients of one process and wire the command bus."""
    metrics = metrics or build_metrics(service or settings.runtime.service_name)
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        libpq_url(database_url),
        min_size=settings.database.pool_min_size,
        max_size=settings.database.pool_max_size,
        open=False,
        name=service or settings.runtime.service_name,
    )
    await pool.open(wait=True, timeout=30)
    # a blocking pool: under load a caller waits for a free connection instead of failing (redis-py's default
    # pool raises once 100 connections are in use)
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=512, timeout=30))
    codec = Codec.create()
    names = StreamNames(prefix=settings.redis.key_prefix, partitions=settings.bus.partitions)
    committer = GroupCommitter(pool, codec, metrics)
    committer.start()
    uow_factory = UnitOfWorkFactory(pool, codec, metrics, committer)
    bus = MessageBus(uow_factory, handlers or COMMAND_HANDLERS, metrics, dependencies)
    return Kernel(settings, database_url, redis_url, pool, redis, codec, names, metrics, uow_factory, bus, committer)
