"""Embedded server ports: every clash is named at once, and the ports chosen are remembered in the data dir."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.runtime.embedded import (
    EmbeddedServiceError,
    embedded_addresses,
    running_services,
    start_services,
    stop_services,
)
from core.settings import DatabaseSettings, RedisSettings, RuntimeSettings, Settings

pytestmark = pytest.mark.integration


def _listener() -> socket.socket:
    """A socket holding a free port, as another program would."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _free_port() -> int:
    with _listener() as sock:
        return int(sock.getsockname()[1])


def _settings(data_dir: Path, pg_port: int | None = None, redis_port: int | None = None) -> Settings:
    """Embedded servers for ``data_dir``; a port left None is as if its variable were not set."""
    pg = {"DATABASE_URL": None} | ({"PATRIOT_EMBEDDED_PG_PORT": pg_port} if pg_port is not None else {})
    rd = {"REDIS_URL": None} | ({"PATRIOT_EMBEDDED_REDIS_PORT": redis_port} if redis_port is not None else {})
    return Settings(
        runtime=RuntimeSettings(data_dir=data_dir),
        database=DatabaseSettings.model_validate(pg),
        redis=RedisSettings.model_validate(rd),
    )


@pytest.fixture
def two_taken_ports() -> Iterator[tuple[int, int]]:
    first, second = _listener(), _listener()
    try:
        yield int(first.getsockname()[1]), int(second.getsockname()[1])
    finally:
        first.close()
        second.close()


def test_both_port_clashes_are_reported_at_once(tmp_path: Path, two_taken_ports: tuple[int, int]) -> None:
    pg_port, redis_port = two_taken_ports
    settings = _settings(tmp_path / "data", pg_port, redis_port)
    with pytest.raises(EmbeddedServiceError) as caught:
        start_services(settings)
    message = str(caught.value)
    assert f"127.0.0.1:{pg_port}" in message and "PATRIOT_EMBEDDED_PG_PORT" in message
    assert f"127.0.0.1:{redis_port}" in message and "PATRIOT_EMBEDDED_REDIS_PORT" in message
    assert running_services(settings) == {"postgres": False, "valkey": False}  # nothing was started


def test_chosen_ports_are_remembered_for_a_shell_without_variables(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    pg_port, redis_port = _free_port(), _free_port()
    chosen = _settings(data_dir, pg_port, redis_port)
    try:
        start_services(chosen)
        plain = _settings(data_dir)  # a second shell: no port variables
        assert embedded_addresses(plain) == {"postgres": f"127.0.0.1:{pg_port}", "valkey": f"127.0.0.1:{redis_port}"}
        assert running_services(plain) == {"postgres": True, "valkey": True}
        endpoints = start_services(plain)  # reuses the running servers instead of clashing with defaults
        assert f":{pg_port}/" in endpoints.database_url and f":{redis_port}/" in endpoints.redis_url
        other = _free_port()
        assert embedded_addresses(_settings(data_dir, pg_port=other))["postgres"] == f"127.0.0.1:{other}"
    finally:
        stop_services(chosen)
    assert running_services(chosen) == {"postgres": False, "valkey": False}


def test_malformed_ports_file_counts_as_none_remembered(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "ports.json").write_text('{"postgres": "x", "valkey": [1]')
    defaults = _settings(tmp_path / "other")
    assert embedded_addresses(_settings(data_dir)) == embedded_addresses(defaults)
