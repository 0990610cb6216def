"""`patriot up` as a user runs it: embedded servers from nothing, migrations, relay; Ctrl-C or `patriot down`
stops everything with no process left behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def platform_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        PATRIOT_DATA_DIR=str(data_dir),
        PATRIOT_ENV="dev",
        PATRIOT_EMBEDDED_PG_PORT=str(free_port()),
        PATRIOT_EMBEDDED_REDIS_PORT=str(free_port()),
        PATRIOT_MD_SIMULATOR_PORT=str(free_port()),
        PATRIOT_API_PORT=str(free_port()),
        PATRIOT_DAGSTER_PORT=str(free_port()),
        PATRIOT_LOG_JSON="false",
    )
    return env


def processes_under(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
            text += " " + proc.environ().get("PATRIOT_DATA_DIR", "")  # platform services started by `up`
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if str(data_dir) in text:
            found.append(proc)
    return found


def leftovers(data_dir: Path, timeout_s: float = 20.0) -> list[str]:
    """The command lines of processes still running under ``data_dir`` once ``timeout_s`` has passed (a child
    such as Dagster's code server finishes its own shutdown a moment after its parent)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for process in processes_under(data_dir):
            try:
                left.append(" ".join(process.cmdline()))
            except psutil.Error:
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 400) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed; output:\n{''.join(lines)}")


def drain(proc: subprocess.Popen[str], into: list[str] | None = None) -> None:
    """Keep reading the platform's output, as a terminal would, so its log writes never block."""
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            if into is not None:
                into.append(line)

    threading.Thread(target=read, daemon=True).start()


def _get_when_up(url: str, timeout: float = 60) -> str:
    """The body of GET ``url`` once it answers 200 (the service may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def start_up(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def assert_schema_and_relay(env: dict[str, str], lines: list[str]) -> None:
    text = "".join(lines)
    assert "relay" in text and "postgres" in text and "embedded" in text
    url = f"postgresql://patriot@127.0.0.1:{env['PATRIOT_EMBEDDED_PG_PORT']}/patriot"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('outbox') IS NOT NULL").fetchone() == (True,)


def test_up_from_nothing_then_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    env = platform_env(data_dir)
    proc = start_up(env)
    try:
        lines = wait_for_line(proc, "stops everything")
        later: list[str] = []
        drain(proc, later)
        assert_schema_and_relay(env, lines)
        assert all(f"  {name} " in "".join(lines) for name in ("orders", "lifecycle", "risk", "simulator", "api"))
        assert len(processes_under(data_dir)) >= 2  # postgres and valkey at least
        api = f"http://127.0.0.1:{env['PATRIOT_API_PORT']}"
        assert api in "".join(lines)  # `up` says where the API listens
        assert _get_when_up(f"{api}/ready").startswith('{"status":"ready"')
        assert "/orders" in _get_when_up(f"{api}/openapi.json")  # the OpenAPI docs are served
        time.sleep(5)
        assert not [line for line in later if "exited; restarting" in line], "".join(later)[-3000:]
        assert (data_dir / "secrets").exists()  # dev master key generated once
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert leftovers(data_dir) == []


def test_up_twice_reuses_data_and_down_stops_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "reuse"
    env = platform_env(data_dir)
    first = start_up(env)
    wait_for_line(first, "PATRIOT is up")
    drain(first)
    first.send_signal(signal.SIGINT)
    first.wait(60)
    second = start_up(env)
    try:
        lines = wait_for_line(second, "PATRIOT is up")
        drain(second)
        assert_schema_and_relay(env, lines)
        down = subprocess.run(
            [sys.executable, "-m", "cli.main", "down"], env=env, text=True, capture_output=True, timeout=90
        )
        assert down.returncode == 0, down.stderr
        second.wait(60)
    finally:
        if second.poll() is None:
            second.kill()
    assert leftovers(data_dir) == []


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop `up` as Ctrl-C does (so a failed test leaves no services behind), killing it only if that fails."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


SERVICES = ("relay", "simulator", "marketdata", "accounts", "orders", "lifecycle", "risk", "api", "dagster")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env=env, text=True, capture_output=True, timeout=120
    )


def answers(address: str) -> bool:
    """Whether ``host:port`` (or ``http://host:port``) accepts a connection right now."""
    host, _, port = address.removeprefix("http://").partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def test_up_is_printed_once_every_service_answers_and_status_and_down_tell_the_truth(tmp_path: Path) -> None:
    data_dir = tmp_path / "first-hour"
    env = platform_env(data_dir)
    proc = start_up(env)
    try:
        lines = wait_for_line(proc, "PATRIOT is up")
        later: list[str] = []
        drain(proc, later)
        # no retry: the moment "up" is printed, the API and Dagster answer their health checks
        with urllib.request.urlopen(f"http://127.0.0.1:{env['PATRIOT_API_PORT']}/ready", timeout=5) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{env['PATRIOT_DAGSTER_PORT']}/server_info", timeout=5) as info:
            assert info.status == 200
        assert "connection failed" not in "".join(lines)  # the simulator listened before market data started

        # a second shell with no port variables: the embedded ports are remembered in the data dir
        shell = {k: v for k, v in env.items() if not k.startswith("PATRIOT_EMBEDDED_")}
        status = cli(shell, "status")
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line.startswith("  ")}
        assert rows["postgres"][1] == rows["valkey"][1] == "running", status.stdout
        for name in SERVICES:
            row = rows[name]
            assert row[1] == "running" and row[2].isdigit() and psutil.pid_exists(int(row[2])), status.stdout
            assert re.fullmatch(r"(\d+h)?\d+m\d\ds", row[-1]), status.stdout  # uptime
        addresses = [row[3] for row in rows.values() if row[3] != "-"]
        assert f"127.0.0.1:{env['PATRIOT_EMBEDDED_PG_PORT']}" in addresses
        assert f"http://127.0.0.1:{env['PATRIOT_API_PORT']}" in addresses
        assert f"http://127.0.0.1:{env['PATRIOT_DAGSTER_PORT']}" in addresses
        assert all(answers(address) for address in addresses), status.stdout
        assert f"API:     http://127.0.0.1:{env['PATRIOT_API_PORT']}" in status.stdout

        down = cli(shell, "down")
        assert down.returncode == 0, down.stderr
        proc.wait(60)
    finally:
        stop(proc)
    stopped = down.stdout.removeprefix("stopped: ").strip().split(", ")
    assert stopped[0].startswith("supervisor (pid"), down.stdout
    assert set(stopped[1:]) == {*SERVICES, "postgres", "valkey"}, down.stdout
    assert leftovers(data_dir, timeout_s=5) == []
    assert "nothing was running" in cli(shell, "down").stdout  # and a second `down` has nothing left to stop


def test_prod_mode_without_master_key_refuses_to_start(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "prod")
    env.update(PATRIOT_ENV="prod")
    env.pop("PATRIOT_MASTER_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "up"], env=env, text=True, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert "PATRIOT_MASTER_KEY" in result.stderr
    assert processes_under(tmp_path / "prod") == []
