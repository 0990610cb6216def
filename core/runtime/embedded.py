"""Embedded services runtime: with no DATABASE_URL / REDIS_URL, run PostgreSQL and Valkey under the data dir.

Servers are detached from the process that starts them and reused by the next start; ``stop_services``
(``patriot down``) stops them. With the URLs set, those servers are used and nothing is started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from core.runtime.embedded_common import EmbeddedServiceError
from core.runtime.embedded_postgres import EmbeddedPostgres
from core.runtime.embedded_valkey import EmbeddedValkey

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedServiceError",
    "EmbeddedValkey",
    "Endpoints",
    "running_services",
    "start_services",
    "stop_services",
]

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Endpoints:
    """Where the platform's PostgreSQL and Redis are, and which of them are embedded servers."""

    database_url: str
    redis_url: str
    embedded: tuple[str, ...]


def _embedded_postgres(settings: Settings) -> EmbeddedPostgres | None:
    if settings.database.url is not None:
        return None
    return EmbeddedPostgres(
        settings.runtime.data_dir, settings.database.embedded_port, settings.database.embedded_database
    )


def _embedded_valkey(settings: Settings) -> EmbeddedValkey | None:
    if settings.redis.url is not None:
        return None
    return EmbeddedValkey(settings.runtime.data_dir, settings.redis.embedded_port)


def start_services(settings: Settings) -> Endpoints:
    """Start or reuse the embedded servers for every URL left unset; configured URLs are used as they are."""
    embedded: list[str] = []
    postgres = _embedded_postgres(settings)
    postgres_was_running = postgres is not None and postgres.is_running()
    if postgres is None:
        database_url = str(settings.database.url)
    else:
        database_url = postgres.start()
        embedded.append("postgres")
    valkey = _embedded_valkey(settings)
    if valkey is None:
        redis_url = str(settings.redis.url)
    else:
        try:
            redis_url = valkey.start()
        except BaseException:
            # Leave nothing behind that this call started when the second server cannot come up.
            if postgres is not None and not postgres_was_running:
                postgres.stop()
            raise
        embedded.append("valkey")
    if embedded:
        logger.info("embedded services ready", services=embedded, data_dir=str(settings.runtime.data_dir))
    return Endpoints(database_url=database_url, redis_url=redis_url, embedded=tuple(embedded))


def stop_services(settings: Settings) -> list[str]:
    """Stop the data dir's embedded servers (not replaced by URLs); return those that were running."""
    stopped: list[str] = []
    valkey = _embedded_valkey(settings)
    if valkey is not None:
        was_running = valkey.is_running()
        valkey.stop()
        if was_running:
            stopped.append("valkey")
    postgres = _embedded_postgres(settings)
    if postgres is not None:
        was_running = postgres.is_running()
        postgres.stop()
        if was_running:
            stopped.append("postgres")
    return stopped


def running_services(settings: Settings) -> dict[str, bool]:
    """Whether each embedded server of the data dir runs; services configured by URL are not listed."""
    status: dict[str, bool] = {}
    postgres = _embedded_postgres(settings)
    if postgres is not None:
        status["postgres"] = postgres.is_running()
    valkey = _embedded_valkey(settings)
    if valkey is not None:
        status["valkey"] = valkey.is_running()
    return status


def running_database_url(settings: Settings) -> str | None:
    """The configured database URL, or the embedded server's when it is running; None otherwise."""
    if settings.database.url is not None:
        return settings.database.url
    postgres = _embedded_postgres(settings)
    return postgres.url if postgres is not None and postgres.is_running() else None
