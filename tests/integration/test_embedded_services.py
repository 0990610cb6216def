"""The embedded PostgreSQL and Valkey: started from nothing, reused, stopped with no process left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from core.runtime.embedded import (
    EmbeddedPostgres,
    EmbeddedServiceError,
    EmbeddedValkey,
    running_services,
    start_services,
    stop_services,
)
from core.settings import (
    BusSettings,
    DatabaseSettings,
    ObservabilitySettings,
    RedisSettings,
    RuntimeSettings,
    SecuritySettings,
    Settings,
)

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _processes_of(root: Path) -> list[psutil.Process]:
    """Live processes that mention ``root`` on their command line or work inside it."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.cmdline())
            if str(root) in cmdline or proc.cwd().startswith(str(root)):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _server_processes(pg: EmbeddedPostgres, vk: EmbeddedValkey) -> list[psutil.Process]:
    """The postmaster with all its children, and the Valkey server."""
    postmaster = psutil.Process(int((pg.pgdata / "postmaster.pid").read_text().split()[0]))
    valkey = psutil.Process(int(vk.pid_path.read_text().strip()))
    return [postmaster, *postmaster.children(recursive=True), valkey]


def _pids(stack: Stack) -> tuple[int, int]:
    """Pids of the running postmaster and Valkey server."""
    procs = _server_processes(stack.pg, stack.vk)
    return procs[0].pid, procs[-1].pid


def _settings(
    data_dir: Path, database_url: str | None, redis_url: str | None, pg_port: int, redis_port: int
) -> Settings:
    return Settings(
        runtime=RuntimeSettings(data_dir=data_dir),
        # Aliases, not field names: the settings read only their environment names, and explicit None
        # keeps a DATABASE_URL / REDIS_URL from the environment out of the test.
        database=DatabaseSettings.model_validate({"DATABASE_URL": database_url, "PATRIOT_EMBEDDED_PG_PORT": pg_port}),
        redis=RedisSettings.model_validate({"REDIS_URL": redis_url, "PATRIOT_EMBEDDED_REDIS_PORT": redis_port}),
        security=SecuritySettings(),
        observability=ObservabilitySettings(),
        bus=BusSettings(),
    )


@dataclass
class Stack:
    data_dir: Path
    pg: EmbeddedPostgres
    vk: EmbeddedValkey

    def settings(self) -> Settings:
        return _settings(self.data_dir, None, None, self.pg.port, self.vk.port)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Embedded servers on free ports in a fresh dir (with a space, to test quoting); always torn down."""
    data_dir = tmp_path / "patriot data"
    stack = Stack(data_dir, EmbeddedPostgres(data_dir, _free_port()), EmbeddedValkey(data_dir, _free_port()))
    yield stack
    try:
        stack.vk.stop()
        stack.pg.stop()
    finally:
        leftovers = _processes_of(tmp_path)
        for proc in leftovers:
            proc.kill()
        assert not leftovers, f"processes left behind: {leftovers}"


def _assert_nothing_left(stack: Stack, procs: list[psutil.Process]) -> None:
    assert not stack.pg.is_running() and not stack.vk.is_running()
    assert [p for p in procs if _alive(p)] == []
    assert _processes_of(stack.data_dir) == []
    assert not _listening(stack.pg.port) and not _listening(stack.vk.port)


def test_fresh_machine_start_stop_restart_persists_data_and_leaves_no_process(stack: Stack) -> None:
    assert not stack.data_dir.exists()
    database_url, redis_url = stack.pg.start(), stack.vk.start()
    assert database_url == f"postgresql://patriot@127.0.0.1:{stack.pg.port}/patriot"
    assert redis_url == f"redis://127.0.0.1:{stack.vk.port}/0"
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.execute("create table fills (id int primary key, qty numeric)")
        conn.execute("insert into fills values (1, 0.5)")
    client = redis.Redis.from_url(redis_url)
    client.set("patriot:probe", "kept")
    client.close()
    procs = _server_processes(stack.pg, stack.vk)

    stack.vk.stop()
    stack.pg.stop()
    _assert_nothing_left(stack, procs)

    stack.pg.start()
    stack.vk.start()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select qty from fills where id = 1").fetchone() == (pytest.approx(0.5),)
    client = redis.Redis.from_url(redis_url)
    assert client.get("patriot:probe") == b"kept"
    client.close()
    procs = _server_processes(stack.pg, stack.vk)
    stack.vk.stop()
    stack.pg.stop()
    _assert_nothing_left(stack, procs)


def test_concurrent_and_repeated_starts_reuse_one_server(stack: Stack) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        urls = list(pool.map(lambda _: stack.pg.start(), range(2)))
    assert urls[0] == urls[1]
    stack.vk.start()
    first = _pids(stack)
    assert stack.pg.start() == urls[0]
    stack.vk.start()
    assert _pids(stack) == first

    settings = stack.settings()
    endpoints = start_services(settings)
    assert endpoints.embedded == ("postgres", "valkey")
    assert (endpoints.database_url, endpoints.redis_url) == (stack.pg.url, stack.vk.url)
    assert _pids(stack) == first
    assert running_services(settings) == {"postgres": True, "valkey": True}

    procs = _server_processes(stack.pg, stack.vk)
    assert stop_services(settings) == ["valkey", "postgres"]
    assert running_services(settings) == {"postgres": False, "valkey": False}
    _assert_nothing_left(stack, procs)


def test_crashed_servers_leave_stale_pid_files_that_stop_and_start_clear(stack: Stack) -> None:
    stack.pg.start()
    stack.vk.start()
    procs = _server_processes(stack.pg, stack.vk)
    for proc in (procs[0], procs[-1]):
        proc.kill()
    psutil.wait_procs([procs[0], procs[-1]], timeout=5)
    assert (stack.pg.pgdata / "postmaster.pid").exists() and stack.vk.pid_path.exists()
    assert not stack.pg.is_running() and not stack.vk.is_running()

    stack.vk.stop()
    stack.pg.stop()
    _assert_nothing_left(stack, procs)
    assert not (stack.pg.pgdata / "postmaster.pid").exists()

    # A pid file naming a process that no longer exists, as after a reboot.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = dead.stdout.strip()
    (stack.pg.pgdata / "postmaster.pid").write_text(f"{dead_pid}\n{stack.pg.pgdata}\n0\n{stack.pg.port}\n\n\n\nready\n")
    stack.vk.pid_path.write_text(f"{dead_pid}\n")
    stack.pg.stop()
    stack.vk.stop()
    stack.pg.start()
    stack.vk.start()
    with psycopg.connect(stack.pg.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    client = redis.Redis.from_url(stack.vk.url)
    assert client.ping()
    client.close()
    procs = _server_processes(stack.pg, stack.vk)
    stack.vk.stop()
    stack.pg.stop()
    _assert_nothing_left(stack, procs)


def test_urls_set_start_services_starts_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(data_dir, "postgresql://u@db.invalid:5432/x", "redis://cache.invalid:6379/0", 1, 2)
    endpoints = start_services(settings)
    assert endpoints.embedded == ()
    assert endpoints.database_url == "postgresql://u@db.invalid:5432/x"
    assert endpoints.redis_url == "redis://cache.invalid:6379/0"
    assert running_services(settings) == {}
    assert stop_services(settings) == []
    assert not (data_dir / "postgres").exists() and not (data_dir / "valkey").exists()
    assert _processes_of(tmp_path) == []


def test_port_taken_by_another_program_fails_naming_port_and_setting(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(EmbeddedServiceError, match=rf"{port}.*PATRIOT_EMBEDDED_PG_PORT"):
            EmbeddedPostgres(tmp_path, port).start()
        with pytest.raises(EmbeddedServiceError, match=rf"{port}.*PATRIOT_EMBEDDED_REDIS_PORT"):
            EmbeddedValkey(tmp_path, port).start()
    assert _processes_of(tmp_path) == []
