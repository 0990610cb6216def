"""Shared benchmark plumbing: which servers to use, a scratch database, percentiles."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from core.db.migrate import upgrade
from core.db.urls import libpq_url, with_database


@dataclass(frozen=True)
class Servers:
    database_url: str
    redis_url: str


def resolve_servers() -> Servers:
    """DATABASE_URL / REDIS_URL when set, else the embedded servers of the data directory (started if needed)."""
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        return Servers(libpq_url(os.environ["DATABASE_URL"]), os.environ["REDIS_URL"])
    from core.runtime.embedded import start_services
    from core.settings import load_settings

    endpoints = start_services(load_settings())
    return Servers(endpoints.database_url, endpoints.redis_url)


@contextmanager
def scratch_database(servers: Servers) -> Iterator[str]:
    """A migrated database for one benchmark run, dropped afterwards."""
    name = f"patriot_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(servers.database_url, name)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation), as latency reports usually quote it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
