"""Process plumbing shared by the embedded PostgreSQL and Valkey servers: locks, ports, process sweeps."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started or stopped; the message says what to do next."""


@contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` so concurrent starts of one data dir run one at a time."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (SO_REUSEADDR so TIME_WAIT sockets do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def require_free_port(port: int, service: str, env_var: str) -> None:
    """Fail with a clear message when another program already holds the port an embedded server needs."""
    if not port_is_free(port):
        raise EmbeddedServiceError(
            f"cannot start embedded {service}: port 127.0.0.1:{port} is already in use by another program. "
            f"Set {env_var} to a free port, or stop the program using it."
        )


def processes_in(directory: Path) -> list[psutil.Process]:
    """Live processes working in ``directory``: PostgreSQL and Valkey chdir into their data dir."""
    target = str(directory)
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.cwd() == target and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def process_alive_in(pid: int, directory: Path, name_part: str) -> bool:
    """True when ``pid`` is a live ``name_part`` process working in ``directory`` (guards reused pids)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and name_part in proc.name() and proc.cwd() == str(directory)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def process_gone(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited; a zombie counts as gone, since reaping it is its parent's business."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True


def signal_and_wait(proc: psutil.Process, signum: int, timeout_s: float) -> bool:
    """Send ``signum`` to ``proc`` and wait until it has exited; returns whether it did in time."""
    try:
        proc.send_signal(signum)
    except psutil.NoSuchProcess:
        return True
    return wait_for(lambda: process_gone(proc), timeout_s, interval_s=0.02)


def kill_processes(procs: list[psutil.Process], timeout_s: float) -> None:
    """SIGKILL ``procs`` and wait for them to go, so nothing of the server survives a failed shutdown."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    if not wait_for(lambda: all(process_gone(p) for p in procs), timeout_s):
        pids = ", ".join(str(p.pid) for p in procs if not process_gone(p))
        raise EmbeddedServiceError(f"processes {pids} survived SIGKILL; check them with `ps -p {pids}`")


def wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def log_tail(log_path: Path, lines: int = 20) -> str:
    """The last lines of a server log, for error messages."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
