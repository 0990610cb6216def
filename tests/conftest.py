"""Shared fixtures: real PostgreSQL and Redis, each test session in its own fresh database and key prefix.

The servers are the ones named by ``DATABASE_URL`` / ``REDIS_URL`` when set (CI sets them to the machine's
servers); otherwise the embedded PostgreSQL and Valkey are started in a temporary directory and stopped after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from core.db.migrate import upgrade
from core.db.urls import libpq_url, with_database
from core.settings import (
    BusSettings,
    DatabaseSettings,
    ObservabilitySettings,
    RedisSettings,
    RuntimeSettings,
    SecuritySettings,
    Settings,
)

os.environ.setdefault("PATRIOT_ENV", "test")


@dataclass(frozen=True)
class Servers:
    database_url: str
    redis_url: str


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    db_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if db_url and redis_url:
        yield Servers(libpq_url(db_url), redis_url)
        return
    from core.runtime.embedded import EmbeddedPostgres, EmbeddedValkey

    root = tmp_path_factory.mktemp("embedded")
    pg = EmbeddedPostgres(root, port=_free_port(), database="postgres") if not db_url else None
    vk = EmbeddedValkey(root, port=_free_port()) if not redis_url else None
    try:
        yield Servers(db_url or pg.start(), redis_url or vk.start())  # type: ignore[union-attr]
    finally:
        if pg:
            pg.stop()
        if vk:
            vk.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_database(server_url: str, name: str) -> str:
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(server_url: str, *, migrated: bool = True, name: str | None = None) -> Iterator[str]:
    """A database of its own (uniquely named unless ``name`` is given; migrated unless told not to), dropped
    when the block ends."""
    name = name or f"patriot_test_{uuid.uuid4().hex[:12]}"
    url = create_database(server_url, name)
    try:
        if migrated:
            upgrade(url)
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> Iterator[str]:
    """A migrated database of this test session's own, dropped at the end."""
    with scratch_database(servers.database_url) as url:
        yield url


@pytest.fixture
def empty_database_url(servers: Servers) -> Iterator[str]:
    """A blank database for one test (migration tests)."""
    with scratch_database(servers.database_url, migrated=False) as url:
        yield url


@pytest.fixture
def migrated_database_url(empty_database_url: str) -> str:
    """A freshly migrated database for one test that must see no other test's rows."""
    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def key_prefix(servers: Servers) -> Iterator[str]:
    """A Redis key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"patriot-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(servers.redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_url(servers: Servers) -> str:
    return servers.redis_url


def make_settings(database_url: str, redis_url: str, key_prefix: str, data_dir: Path, **bus: object) -> Settings:
    """Settings for a test: its own database, key prefix and data directory."""
    return Settings(
        runtime=RuntimeSettings(env="test", data_dir=data_dir, service_name="test"),
        database=DatabaseSettings(DATABASE_URL=database_url),
        redis=RedisSettings(REDIS_URL=redis_url, PATRIOT_REDIS_PREFIX=key_prefix),
        security=SecuritySettings(),
        observability=ObservabilitySettings(),
        bus=BusSettings(**bus),
    )


@pytest.fixture
def settings(database_url: str, redis_url: str, key_prefix: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, redis_url, key_prefix, tmp_path / "data")


@pytest.fixture
async def aconn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def recorded_spans() -> Iterator[Any]:
    """An in-memory exporter on the process's tracer provider for one test, removed afterwards (OpenTelemetry
    has no public way to remove a span processor, and a left-over one would record into every later test)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from core.observability.tracing import configure_tracing

    provider = configure_tracing("test")
    processors = provider._active_span_processor
    before = processors._span_processors
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        processors._span_processors = before
        exporter.shutdown()
