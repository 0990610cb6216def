"""Embedded services runtime: with no DATABASE_URL / REDIS_URL, run PostgreSQL and Valkey under the data dir.

Servers are detached from the process that starts them and reused by the next start; ``stop_services``
(``patriot down``) stops them. With the URLs set, those servers are used and nothing is started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from core.runtime.embedded_common import EmbeddedServiceError, port_is_free
from core.runtime.embedded_postgres import PORT_ENV_VAR as PG_PORT_ENV_VAR
from core.runtime.embedded_postgres import EmbeddedPostgres
from core.runtime.embedded_valkey import PORT_ENV_VAR as VALKEY_PORT_ENV_VAR
from core.runtime.embedded_valkey import EmbeddedValkey

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedServiceError",
    "EmbeddedValkey",
    "Endpoints",
    "embedded_addresses",
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


def ports_file(data_dir: Path) -> Path:
    """Where the ports the embedded servers last started on are remembered, so another shell finds them."""
    return data_dir / "ports.json"


def _remembered_ports(data_dir: Path) -> dict[str, int]:
    """The remembered ports; an unreadable or malformed file counts as none remembered."""
    try:
        raw = json.loads(ports_file(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, int) and 0 < v < 65536}


def _remember_ports(data_dir: Path, ports: dict[str, int]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    ports_file(data_dir).write_text(json.dumps({**_remembered_ports(data_dir), **ports}, sort_keys=True))


def _port(settings: Settings, service: str) -> int:
    """The port set in the environment, else the one remembered in the data dir, else the default."""
    area = settings.database if service == "postgres" else settings.redis
    if "embedded_port" in area.model_fields_set:
        return area.embedded_port
    return _remembered_ports(settings.runtime.data_dir).get(service, area.embedded_port)


def _embedded_postgres(settings: Settings) -> EmbeddedPostgres | None:
    if settings.database.url is not None:
        return None
    return EmbeddedPostgres(settings.runtime.data_dir, _port(settings, "postgres"), settings.database.embedded_database)


def _embedded_valkey(settings: Settings) -> EmbeddedValkey | None:
    if settings.redis.url is not None:
        return None
    return EmbeddedValkey(settings.runtime.data_dir, _port(settings, "valkey"))


def _check_ports(postgres: EmbeddedPostgres | None, valkey: EmbeddedValkey | None) -> None:
    """Name every port clash at once (not one per attempt) for the servers that are not yet running."""
    clashes = [
        f"{name} needs 127.0.0.1:{server.port} (set {env_var} to a free port)"
        for name, server, env_var in (("postgres", postgres, PG_PORT_ENV_VAR), ("valkey", valkey, VALKEY_PORT_ENV_VAR))
        if server is not None and not server.is_running() and not port_is_free(server.port)
    ]
    if clashes:
        raise EmbeddedServiceError(
            "cannot start the embedded servers: ports already in use by another program: " + "; ".join(clashes)
        )


def start_services(settings: Settings) -> Endpoints:
    """Start or reuse the embedded servers for every URL left unset; configured URLs are used as they are."""
    embedded: list[str] = []
    postgres = _embedded_postgres(settings)
    valkey = _embedded_valkey(settings)
    _check_ports(postgres, valkey)
    postgres_was_running = postgres is not None and postgres.is_running()
    if postgres is None:
        database_url = str(settings.database.url)
    else:
        database_url = postgres.start()
        embedded.append("postgres")
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
        ports = {"postgres": postgres.port} if postgres is not None else {}
        _remember_ports(settings.runtime.data_dir, ports | ({"valkey": valkey.port} if valkey is not None else {}))
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


def embedded_addresses(settings: Settings) -> dict[str, str]:
    """The address each embedded server of the data dir listens on (or would)."""
    servers = {"postgres": _embedded_postgres(settings), "valkey": _embedded_valkey(settings)}
    return {name: f"127.0.0.1:{server.port}" for name, server in servers.items() if server is not None}


def running_database_url(settings: Settings) -> str | None:
    """The configured database URL, or the embedded server's when it is running; None otherwise."""
    if settings.database.url is not None:
        return settings.database.url
    postgres = _embedded_postgres(settings)
    return postgres.url if postgres is not None and postgres.is_running() else None
