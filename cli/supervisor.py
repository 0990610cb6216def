"""Process supervisor behind ``patriot up``: starts each platform process, restarts it if it dies, stops all.

Children are ordinary OS processes (``python -m cli.main <service>``) so a crash of one never takes the others
down; on shutdown each gets SIGTERM, then SIGKILL after a grace period, so nothing is left behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psutil
import structlog

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ServiceSpec:
    name: str
    args: Sequence[str]
    listens: str = ""


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
    _children: dict[str, _Child] = field(default_factory=dict)
    _stopping: bool = False

    def start(self) -> None:
        for spec in self.specs:
            self._spawn(spec)

    def _spawn(self, spec: ServiceSpec, restarts: int = 0) -> None:
        process = subprocess.Popen([sys.executable, "-m", "cli.main", *spec.args], env=dict(self.env))
        self._children[spec.name] = _Child(spec, process, time.monotonic(), restarts)
        log.info("service started", process=spec.name, pid=process.pid)

    def watch(self, stop_requested: list[bool], poll_s: float = 0.5) -> None:
        """Restart children that exit unexpectedly (with backoff) until ``stop_requested[0]`` is set."""
        while not stop_requested[0]:
            for name, child in list(self._children.items()):
                code = child.process.poll()
                if code is None or self._stopping:
                    continue
                backoff = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                log.error("service exited; restarting", process=name, exit_code=code, backoff_s=backoff)
                time.sleep(backoff)
                self._spawn(child.spec, child.restarts + 1)
            time.sleep(poll_s)

    def stop(self) -> None:
        """SIGTERM every child, wait for the grace period, SIGKILL what is left."""
        self._stopping = True
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

    def pids(self) -> dict[str, int]:
        return {name: c.process.pid for name, c in self._children.items()}


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a process that exited but was not yet reaped by its parent counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
