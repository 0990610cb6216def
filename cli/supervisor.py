"""Process supervisor behind ``patriot up``: starts each platform process, restarts it if it dies, stops all.

Children are ordinary OS processes (``python -m cli.main <service>``) so a crash of one never takes the others
down; on shutdown each gets SIGTERM, then SIGKILL after a grace period, so nothing is left behind.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import structlog

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ServiceSpec:
    """One platform process: its CLI arguments, what it serves, and how to tell it is ready.

    ``health_url`` answers 200 when ready; else ``port`` accepts connections; else (no port) the process is
    confirmed running once alive for ``settle_s``. ``gate`` holds back the services after it until it is ready
    (the simulator before market data, orders and accounts, which connect to it at start).
    """

    name: str
    args: Sequence[str]
    listens: str = ""
    port: int | None = None
    health_url: str = ""
    gate: bool = False
    settle_s: float = 1.0


def address_of(spec: ServiceSpec) -> str:
    """Where a service answers: the base of its health URL, else its TCP port; empty for one with no port."""
    if spec.health_url:
        scheme, _, rest = spec.health_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"
    return f"127.0.0.1:{spec.port}" if spec.port is not None else ""


def is_healthy(spec: ServiceSpec, alive_for_s: float) -> bool:
    """Whether ``spec``'s process (alive for ``alive_for_s``) answers its health check."""
    if spec.health_url:
        try:
            with urllib.request.urlopen(spec.health_url, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError, ValueError):
            return False
    if spec.port is not None:
        try:
            with socket.create_connection(("127.0.0.1", spec.port), timeout=1):
                return True
        except OSError:
            return False
    return alive_for_s >= spec.settle_s


@dataclass(slots=True)
class _Child:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    started_at: float
    restarts: int = 0


@dataclass(slots=True)
class Supervisor:
    env: Mapping[str, str]
    specs: list[ServiceSpec] = field(default_factory=list)
    grace_s: float = 10.0
    state_path: Path | None = None
    _children: dict[str, _Child] = field(default_factory=dict)
    _started_wall: dict[str, float] = field(default_factory=dict)
    _stopping: bool = False

    def start(self, ready_timeout_s: float = 300.0, stop_requested: list[bool] | None = None) -> list[str]:
        """Start the services in order, each gate waiting until ready; return those not ready in time."""
        stop_requested = stop_requested if stop_requested is not None else [False]
        for spec in self.specs:
            if stop_requested[0]:
                return [s.name for s in self.specs if s.name not in self._children]
            self._spawn(spec)
            if spec.gate:
                self.wait_ready([spec.name], ready_timeout_s, stop_requested)
        return self.wait_ready(list(self._children), ready_timeout_s, stop_requested)

    def wait_ready(self, names: list[str], timeout_s: float, stop_requested: list[bool]) -> list[str]:
        """Poll the health of ``names`` until all pass (or one exits, or time runs out); return the failing."""
        deadline = time.monotonic() + timeout_s
        pending = list(names)
        while pending and time.monotonic() < deadline and not stop_requested[0]:
            self._restart_exited(stop_requested)  # a service that dies while starting is restarted, then awaited
            for name in list(pending):
                child = self._children[name]
                if child.process.poll() is None and is_healthy(child.spec, time.monotonic() - child.started_at):
                    pending.remove(name)
            if pending:
                time.sleep(0.2)
        for name in pending:
            log.warning("service not ready in time", process=name, timeout_s=timeout_s)
        return pending

    def _spawn(self, spec: ServiceSpec, restarts: int = 0) -> None:
        process = subprocess.Popen([sys.executable, "-m", "cli.main", *spec.args], env=dict(self.env))
        self._children[spec.name] = _Child(spec, process, time.monotonic(), restarts)
        self._started_wall[spec.name] = time.time()
        self._write_state()
        log.info("service started", process=spec.name, pid=process.pid)

    def _write_state(self) -> None:
        """Record each service's pid, address and start time for ``patriot status`` and ``patriot down``."""
        if self.state_path is None:
            return
        state = {
            name: {
                "pid": child.process.pid,
                "address": address_of(child.spec),
                "what": child.spec.listens,
                "port": child.spec.port,
                "started_at": self._started_wall[name],
                "restarts": child.restarts,
            }
            for name, child in self._children.items()
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    def watch(self, stop_requested: list[bool], poll_s: float = 0.5) -> None:
        """Restart children that exit unexpectedly (with backoff) until ``stop_requested[0]`` is set."""
        while not stop_requested[0]:
            self._restart_exited(stop_requested)
            time.sleep(poll_s)

    def _restart_exited(self, stop_requested: list[bool]) -> None:
        for name, child in list(self._children.items()):
            code = child.process.poll()
            if code is None or self._stopping:
                continue
            backoff = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
            log.error("service exited; restarting", process=name, exit_code=code, backoff_s=backoff)
            time.sleep(backoff)
            if not stop_requested[0]:
                self._spawn(child.spec, child.restarts + 1)

    def stop(self) -> list[str]:
        """SIGTERM every child, wait for the grace period, SIGKILL what is left; return those that were running."""
        self._stopping = True
        stopped = [name for name, child in self._children.items() if child.process.poll() is None]
        for child in self._children.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in self._children.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                log.warning("service did not stop in time; killing", process=child.spec.name)
                child.process.kill()
                child.process.wait()
        self._children.clear()
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)
        return stopped

    def pids(self) -> dict[str, int]:
        return {name: c.process.pid for name, c in self._children.items()}


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a process that exited but was not yet reaped by its parent counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def read_state(state_path: Path) -> dict[str, dict[str, object]]:
    """The services ``patriot up`` recorded; an absent or unreadable file means none."""
    try:
        raw = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}
