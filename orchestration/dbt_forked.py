"""dbt run in a child forked from the Dagster run process instead of a ``dbt`` subprocess.

dagster-dbt starts ``dbt`` as a subprocess and reads its JSON log lines. A dbt process starts by importing dbt,
its adapter and (for the Python models) pandas, polars and numpy, although the Dagster run process has already
imported all of them (the definitions import dagster-dbt, which imports dbt): on this 2-core machine that start
took about 4 s of the hourly run's dbt step. Running dbt on a thread of the run process instead saved the
imports but shared one interpreter lock between dbt's two threads and Dagster's handling of the events they
produce. Here the run process forks: the child has everything imported already and a lock of its own, runs dbt
through its programmatic entry point (``dbtRunner``) and writes dbt's events, as the CLI's JSON log lines, to a
pipe. dagster-dbt's own code reads that pipe as it reads a subprocess's stdout: the selection, target path,
partial-parse seeding, event translation, error reporting and stdout echo are dagster-dbt's, only the process
start differs. A child can also be forked before its command is known (:class:`Prepared`): a run's dbt
resource forks it as the run starts, it parses the project while the extracts load, and the build skips its
parse. Figures in docs/benchmarks.md (bench.pipeline).

``ForkedDbtCliInvocation`` stands in for ``DbtCliInvocation`` while ``DbtCliResource.cli`` builds the invocation
(:func:`forked_invocations`); ``DbtChild`` offers what dagster-dbt reads of a ``subprocess.Popen``: ``args``,
``stdout`` (lines of bytes), ``wait()``, ``poll()``, ``returncode`` and ``send_signal``. Where the platform
cannot fork (``os.fork`` missing), the resource runs dagster-dbt's subprocess instead.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing.process
import multiprocessing.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from dagster_dbt.core import resource as dagster_dbt_resource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation, _get_dbt_target_path

__all__ = [
    "PARSE_STATES",
    "DbtChild",
    "ForkedDbtCliInvocation",
    "Prepared",
    "can_fork",
    "environment_parse_state",
    "forked_invocations",
    "parse_state_key",
    "scoped_environ",
    "shared_parse_state",
]

_SWAP = threading.Lock()
# dbt's command-line exit codes: 1 = a node failed (model error, failing test), 2 = dbt itself failed
_FAILED, _CRASHED = 1, 2
# the CLI's stdout format (here events go through `forward`) and two stdio switches: not for this process
_NOT_SET = ("DBT_LOG_FORMAT", "PYTHONLEGACYWINDOWSSTDIO", "PYTHONUNBUFFERED")
# what dagster-dbt sets for each invocation (its target and log paths among them): not part of how dbt parses
_PER_INVOCATION = frozenset(
    {
        *_NOT_SET,
        "DAGSTER_DBT_CLI",
        "DBT_SEND_ANONYMOUS_USAGE_STATS",
        "DBT_TARGET_PATH",
        "DBT_LOG_PATH",
        "DBT_PROFILES_DIR",
        "DBT_PROJECT_DIR",
        "DBT_INDIRECT_SELECTION",
    }
)
# what the CLI would read from the subprocess environment dagster-dbt builds, given as arguments instead
_ENV_FLAGS = {
    "DBT_TARGET_PATH": "--target-path",
    "DBT_LOG_PATH": "--log-path",
    "DBT_PROFILES_DIR": "--profiles-dir",
    "DBT_PROJECT_DIR": "--project-dir",
}


def can_fork() -> bool:
    return hasattr(os, "fork")


@dataclass(frozen=True, slots=True)
class Prepared:
    """The parse a child runs as soon as it is forked, before its build is asked for: the project, profile and
    target of the build, and the environment the build will have (its profile reads the warehouse paths)."""

    env: dict[str, str]
    profiles_dir: str
    target: str | None = None
    profile: str | None = None
    state: Path | None = None  # the partial-parse state to start from (the project's target/)

    def args(self, project_dir: Path, target_path: Path) -> list[str]:
        flags = ["parse", "--project-dir", str(project_dir), "--profiles-dir", self.profiles_dir]
        flags += ["--target-path", str(target_path), "--log-path", str(target_path), "--quiet"]
        flags += ["--target", self.target] if self.target else []
        return flags + (["--profile", self.profile] if self.profile else [])

    def serves(self, args: Sequence[str], env: Mapping[str, str]) -> bool:
        """True when the build parses as this did: the same environment (but for what dagster-dbt sets per
        invocation), target and profile, and no ``--vars``."""
        if "--vars" in args or _flag(args, "--target") != self.target or _flag(args, "--profile") != self.profile:
            return False
        return _parse_env(env) == _parse_env(self.env)


def _flag(args: Sequence[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args[:-1] else None


def _parse_env(env: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in _PER_INVOCATION}


class DbtChild:
    """One ``dbtRunner`` invocation in a forked child, read like the ``subprocess.Popen`` of a dbt CLI run.

    The child is forked first and told what to run after (:meth:`start`): forked with a :class:`Prepared`
    parse when the run starts, it parses the project while the run's extracts load, and the build it is given
    later skips the parse (when :meth:`Prepared.serves` it; otherwise the build parses as usual).
    """

    def __init__(self, project_dir: Path, prepare: Prepared | None = None) -> None:
        self.args = ["dbt"]
        self.returncode: int | None = None
        request_read, request_write = os.pipe()
        out_read, out_write = os.pipe()
        # the parent's objects move to the permanent generation: the child's collector never walks (and so never
        # copies) them, nor finalises one the parent still owns, such as a database connection's socket
        gc.freeze()
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()
            for fd in (request_read, request_write, out_read, out_write):
                os.close(fd)
            raise
        if pid == 0:  # the child: it never returns from here
            os.close(request_write)
            os.close(out_read)
            _child(project_dir, prepare, request_read, out_write)
        gc.unfreeze()
        os.close(request_read)
        os.close(out_write)
        self.pid = pid
        self._request: int | None = request_write
        self.stdout: IO[bytes] = os.fdopen(out_read, "rb")

    def start(self, args: Sequence[str], env: Mapping[str, str]) -> None:
        """Run ``dbt <args>`` with ``env`` as its environment; its events arrive on :attr:`stdout`."""
        if self._request is None:
            raise RuntimeError("this dbt child has been given its command already")
        self.args = ["dbt", *args]
        request, self._request = self._request, None
        try:
            with os.fdopen(request, "wb") as pipe:
                pipe.write(orjson.dumps({"args": list(args), "env": dict(env)}))
        except BrokenPipeError:  # the child ended before reading it: its exit code and error line say why
            pass

    def discard(self, timeout: float = 30.0) -> None:
        """End a child that was never given a command: it exits when its request pipe closes, once its parse is
        over and its parse directory removed (one still running after ``timeout`` seconds is terminated)."""
        if self._request is not None:
            os.close(self._request)
            self._request = None
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            self.wait()
        self.stdout.close()

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and timeout is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        deadline = time.monotonic() + (timeout or 0.0)
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        """dagster-dbt forwards an interrupt of the run as SIGINT, which dbt handles as the CLI does."""
        if self.returncode is None:
            os.kill(self.pid, signum)


def _child(project_dir: Path, prepare: Prepared | None, request: int, out: int) -> None:
    """The forked child: parse (when prepared), wait for the command, run dbt with its events written to
    ``out``, and end the process with dbt's exit code."""
    code = _CRASHED
    try:
        # as multiprocessing's own forked children start: the parent's child processes and exit finalisers
        # are not this process's (only what the child itself registers is finalised when it ends)
        multiprocessing.process._children = set()  # type: ignore[attr-defined]
        multiprocessing.util._finalizer_registry.clear()  # type: ignore[attr-defined]
        multiprocessing.util._run_after_forkers()  # type: ignore[attr-defined]
        # the run process's handlers (Dagster's interrupt capture) are not this process's: an interrupt ends dbt
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        lock = threading.Lock()

        def line(data: bytes) -> None:  # dbt's threads report at once; a line is never split by another
            with lock:
                os.write(out, data + b"\n")

        parsed = None
        try:
            parsed = _prepare(project_dir, prepare) if prepare is not None else None
            with os.fdopen(request, "rb") as pipe:
                asked = pipe.read()
            if not asked:  # discarded: no command ever came
                code = 0
                return
            command = orjson.loads(asked)
            args, env = list(command["args"]), dict(command["env"])
            manifest = None
            if parsed is not None and prepare is not None and prepare.serves(args, env):
                manifest = parsed[0]
                _hand_over_state(parsed[1], project_dir, env)
            code = _invoke(args, env, project_dir, line, manifest)
        except BaseException as exc:  # reported as dbt reports a crash: an error line and exit code 2
            line(_error(f"dbt failed: {type(exc).__name__}: {exc}"))
        finally:  # the parse's directory, whether its build ran on it, parsed for itself or never came
            if parsed is not None:
                shutil.rmtree(parsed[1], ignore_errors=True)
    finally:
        try:
            # as multiprocessing's own forked children end: dbt's locks and semaphores are released (unregistered
            # from the resource tracker the child shares with the parent), not left for the tracker to report
            multiprocessing.util._exit_function()  # type: ignore[attr-defined]
            sys.stdout.flush()
            sys.stderr.flush()
            os.close(out)
        finally:
            os._exit(code)  # not the parent's exit handlers, finalisers or buffered output


def _prepare(project_dir: Path, prepare: Prepared) -> tuple[Any, Path] | None:
    """``dbt parse`` of the project as the build will see it: its manifest and the directory of its parse state,
    or None if it failed (the build then parses, and reports what is wrong, itself)."""
    from dbt.cli.main import dbtRunner

    where = Path(tempfile.mkdtemp(prefix="patriot-dbt-parse-"))
    if prepare.state is not None and prepare.state.exists():
        shutil.copy(prepare.state, where / "partial_parse.msgpack")
    try:
        with _dbt_environ(prepare.env):
            result = dbtRunner().invoke(prepare.args(project_dir, where))
        if result.success and result.result is not None:
            return result.result, where
    except Exception:
        pass
    shutil.rmtree(where, ignore_errors=True)
    return None


def _hand_over_state(parsed: Path, project_dir: Path, env: Mapping[str, str]) -> None:
    """The build skips its parse: the state the prepared parse left becomes the build's (dagster-dbt seeded the
    build's target path with the older one), for the next build to start from, and the parse's log sits beside
    the build's as ``parse.log``."""
    if "DBT_TARGET_PATH" in env:
        target = project_dir / env["DBT_TARGET_PATH"]
        target.mkdir(parents=True, exist_ok=True)
        for name, kept in (("partial_parse.msgpack", "partial_parse.msgpack"), ("dbt.log", "parse.log")):
            if (parsed / name).exists():
                shutil.copy(parsed / name, target / kept)


def _invoke(
    args: list[str], env: dict[str, str], project_dir: Path, line: Callable[[bytes], None], manifest: Any = None
) -> int:
    from dbt.cli.main import dbtRunner
    from dbt_common.events.base_types import EventLevel
    from dbt_common.events.functions import msg_to_dict

    def forward(msg: Any) -> None:  # what the CLI prints at its default log level (info)
        if msg.info.level != EventLevel.DEBUG:
            line(orjson.dumps(msg_to_dict(msg)))

    # the subprocess ran in the project directory; this process stays where it is, so paths become absolute
    paths = {name: str(project_dir / env[name]) for name in _ENV_FLAGS if name in env}
    flags = [arg for name, flag in _ENV_FLAGS.items() if name in paths for arg in (flag, paths[name])]
    if "DBT_INDIRECT_SELECTION" in env:
        flags += ["--indirect-selection", env["DBT_INDIRECT_SELECTION"]]
    # the subprocess environment dagster-dbt built (os.environ plus its own variables), for env_var() in the
    # profile and models; dbt's log output goes through `forward` and its log file, not stdout
    try:
        with _dbt_environ(env):
            runner = dbtRunner(manifest=manifest, callbacks=[forward])
            result = runner.invoke([*args, *flags, "--quiet"])
    finally:
        _close_duckdb()
    if result.exception is not None:
        line(_error(f"dbt failed: {type(result.exception).__name__}: {result.exception}"))
        return _CRASHED
    return 0 if result.success else _FAILED


def _dbt_environ(env: Mapping[str, str]) -> AbstractContextManager[None]:
    """``env`` (an environment dagster-dbt built for a subprocess) as this process's while dbt runs, without
    the variables that are the CLI's stdout format or stdio switches."""
    return scoped_environ({key: value for key, value in env.items() if key not in _NOT_SET})


def _error(message: str) -> bytes:
    return orjson.dumps({"info": {"name": "MainEncounteredError", "level": "error", "msg": message}, "data": {}})


@contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set while inside; every variable changed is put back (or removed) after."""
    saved = {key: os.environ.get(key) for key, value in values.items() if os.environ.get(key) != value}
    os.environ.update({key: values[key] for key in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _close_duckdb() -> None:
    """Close dbt-duckdb's process-wide database (it keeps one open between invocations): the child checkpoints
    the warehouse file and releases it before it exits, for the publish step and for other processes."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    environment = DuckDBConnectionManager._ENV
    DuckDBConnectionManager._ENV = None
    if environment is not None:
        environment.close()


class ForkedDbtCliInvocation(DbtCliInvocation):
    """``DbtCliInvocation`` whose dbt runs in a child forked from this process (``DbtChild``)."""

    @classmethod
    def run(  # type: ignore[override]
        cls, args: Sequence[str], env: dict[str, str], project_dir: Path, target_path: Path, **kwargs: Any
    ) -> DbtCliInvocation:
        # as dagster-dbt does: seed the invocation's target path with the project's partial-parse state
        state = shared_parse_state(project_dir, env)
        seeded = target_path / "partial_parse.msgpack"
        if state.exists() and not seeded.exists():
            seeded.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(state, seeded)
        process = _PREPARED.pop() if _PREPARED else DbtChild(project_dir)
        process.start(list(args)[1:], env)  # args[0] is the dbt executable; the rest are dbtRunner's too
        project = kwargs.pop("dbt_project", None)  # run() names it dbt_project, the dataclass project
        return cls(process=process, project=project, project_dir=project_dir, target_path=target_path, **kwargs)  # type: ignore[arg-type]


PARSE_STATES = "parse_states"  # under the project's target path: the state of each environment's last build


def parse_state_key(env: Mapping[str, str]) -> str:
    """The environment a partial-parse state belongs to: the platform's variables (``PATRIOT_*``: the warehouse
    files the profile connects to, the test scope, the deployment). dbt refuses a state parsed with another
    profile and parses the whole project again (about 3 s of CPU)."""
    relevant = sorted((key, value) for key, value in env.items() if key.startswith("PATRIOT_"))
    return hashlib.sha256(orjson.dumps(relevant)).hexdigest()[:16]


def environment_parse_state(shared: Path, env: Mapping[str, str]) -> Path:
    """Where the state of the last build in ``env`` is kept, under the project's target path ``shared``."""
    return shared / PARSE_STATES / f"{parse_state_key(env)}.msgpack"


def shared_parse_state(project_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """The partial-parse state an invocation's target path starts from: the one the last build in the same
    environment left (``env``), else the last build's, whichever environment it had."""
    shared = _get_dbt_target_path()
    shared = shared if shared.is_absolute() else project_dir / shared
    if env is not None:
        own = environment_parse_state(shared, env)
        if own.exists():
            return own
    return shared / "partial_parse.msgpack"


_PREPARED: list[DbtChild] = []  # the child the next invocation runs in (set while _SWAP is held)


@contextmanager
def forked_invocations(prepared: DbtChild | None = None) -> Iterator[None]:
    """While inside, ``DbtCliResource.cli`` builds ``ForkedDbtCliInvocation``s; the first runs in ``prepared``
    (a child forked earlier, see :class:`Prepared`) when given, each other one in a child forked for it."""
    with _SWAP:
        original = getattr(dagster_dbt_resource, "DbtCliInvocation")  # noqa: B009 (not an exported name)
        setattr(dagster_dbt_resource, "DbtCliInvocation", ForkedDbtCliInvocation)  # noqa: B010
        _PREPARED[:] = [prepared] if prepared is not None else []
        try:
            yield
        finally:
            leftover = list(_PREPARED)
            _PREPARED.clear()
            setattr(dagster_dbt_resource, "DbtCliInvocation", original)  # noqa: B010
            for child in leftover:  # cli() failed before it ran dbt
                child.discard()
