"""dbt run inside the Dagster run's own process instead of a ``dbt`` subprocess.

dagster-dbt starts ``dbt`` as a subprocess and reads its JSON log lines. A dbt process starts by importing dbt,
its adapter and (for the Python models) pandas, polars and numpy, although the Dagster run process has already
imported all of them (the definitions import dagster-dbt, which imports dbt): the dbt step of an hourly run took
9.8-11.0 s as a subprocess and takes 7.5-9.7 s in process on this 2-core machine. Here dbt runs through its
programmatic entry point (``dbtRunner``) on a thread of the run process, and its events, turned into the same
JSON log lines, go through dagster-dbt's own code: the selection, target path, partial-parse seeding, event
translation, error reporting and stdout echo are dagster-dbt's, only the process differs.

``InProcessDbtCliInvocation`` stands in for ``DbtCliInvocation`` while ``DbtCliResource.cli`` builds the
invocation (:func:`in_process_invocations`); ``_DbtThread`` offers what dagster-dbt reads of a
``subprocess.Popen``: ``args``, ``stdout`` (lines of bytes), ``wait()``, ``returncode`` and ``send_signal``.

dbt keeps process-wide state (flags, adapters, the DuckDB environment), so invocations in one process run one
at a time; after each, the DuckDB environment is closed, which releases the warehouse file for the publish step
and for other processes.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from dagster_dbt.core import resource as dagster_dbt_resource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation, _get_dbt_target_path

__all__ = ["InProcessDbtCliInvocation", "in_process_invocations", "scoped_environ"]

_ONE_AT_A_TIME = threading.Lock()
_SWAP = threading.Lock()
# dbt's command-line exit codes: 1 = a node failed (model error, failing test), 2 = dbt itself failed
_FAILED, _CRASHED = 1, 2
# the CLI's stdout format (here events go through `forward`) and two stdio switches: not for this process
_NOT_SET = ("DBT_LOG_FORMAT", "PYTHONLEGACYWINDOWSSTDIO", "PYTHONUNBUFFERED")
# what the CLI would read from the subprocess environment dagster-dbt builds, given as arguments instead
_ENV_FLAGS = {
    "DBT_TARGET_PATH": "--target-path",
    "DBT_LOG_PATH": "--log-path",
    "DBT_PROFILES_DIR": "--profiles-dir",
    "DBT_PROJECT_DIR": "--project-dir",
}


class _Lines:
    """The dbt thread's log lines as a subprocess's stdout: iterating blocks until the next line or the end."""

    def __init__(self, lines: queue.SimpleQueue[bytes | None]) -> None:
        self._lines = lines
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        while not self.closed:
            line = self._lines.get()
            if line is None:
                self.closed = True
                return
            yield line

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _DbtThread:
    """One ``dbtRunner`` invocation on a daemon thread, read like the ``subprocess.Popen`` of a dbt CLI run."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], project_dir: Path) -> None:
        self.args = ["dbt", *args]
        self._project_dir = project_dir
        self.returncode: int | None = None
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.stdout = _Lines(self._lines)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(list(args), dict(env)), name="dbt", daemon=True)
        self._thread.start()

    def _run(self, args: list[str], env: dict[str, str]) -> None:
        code = _CRASHED
        try:
            with _ONE_AT_A_TIME:
                code = self._invoke(args, env)
        except BaseException as exc:  # reported as dbt reports a crash: an error line and exit code 2
            self._error(f"dbt failed in process: {type(exc).__name__}: {exc}")
        finally:
            self.returncode = code
            self._done.set()
            self._lines.put(None)

    def _invoke(self, args: list[str], env: dict[str, str]) -> int:
        from dbt.cli.main import dbtRunner
        from dbt_common.events.base_types import EventLevel
        from dbt_common.events.functions import msg_to_dict

        def forward(msg: Any) -> None:  # what the CLI prints at its default log level (info)
            if msg.info.level != EventLevel.DEBUG:
                self._lines.put(orjson.dumps(msg_to_dict(msg)))

        # the subprocess ran in the project directory; this process stays where it is, so paths become absolute
        paths = {name: str(self._project_dir / env[name]) for name in _ENV_FLAGS if name in env}
        flags = [arg for name, flag in _ENV_FLAGS.items() if name in paths for arg in (flag, paths[name])]
        if "DBT_INDIRECT_SELECTION" in env:
            flags += ["--indirect-selection", env["DBT_INDIRECT_SELECTION"]]
        # the subprocess environment dagster-dbt built (os.environ plus its own variables), for env_var() in
        # the profile and models; dbt's log output goes through `forward` and its log file, not stdout
        # (DBT_TARGET_PATH left set would nest the next run's target path, so it is restored afterwards)
        try:
            with scoped_environ({k: v for k, v in env.items() if k not in _NOT_SET}):
                result = dbtRunner(callbacks=[forward]).invoke([*args, *flags, "--quiet"])
        finally:
            _close_duckdb()
        if result.exception is not None:
            self._error(f"dbt failed: {type(result.exception).__name__}: {result.exception}")
            return _CRASHED
        return 0 if result.success else _FAILED

    def _error(self, message: str) -> None:
        self._lines.put(
            orjson.dumps({"info": {"name": "MainEncounteredError", "level": "error", "msg": message}, "data": {}})
        )

    def wait(self, timeout: float | None = None) -> int:
        self._done.wait(timeout)
        return self.returncode if self.returncode is not None else _CRASHED

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """dbt in a thread cannot be interrupted; the run process ends with it (the thread is a daemon)."""


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
    """Close dbt-duckdb's process-wide database (it keeps one open between invocations): the warehouse file must
    be free once the build is over, for the publish step and for other processes."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    environment = DuckDBConnectionManager._ENV
    DuckDBConnectionManager._ENV = None
    if environment is not None:
        environment.close()


class InProcessDbtCliInvocation(DbtCliInvocation):
    """``DbtCliInvocation`` whose dbt runs in this process (``_DbtThread``) instead of a subprocess."""

    @classmethod
    def run(  # type: ignore[override]
        cls, args: Sequence[str], env: dict[str, str], project_dir: Path, target_path: Path, **kwargs: Any
    ) -> DbtCliInvocation:
        # as dagster-dbt does: seed the invocation's target path with the project's partial-parse state
        shared = _get_dbt_target_path()
        state = (shared if shared.is_absolute() else project_dir / shared) / "partial_parse.msgpack"
        seeded = target_path / "partial_parse.msgpack"
        if state.exists() and not seeded.exists():
            seeded.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(state, seeded)
        # args[0] is the dbt executable; the arguments after it are the same for dbtRunner
        process = _DbtThread(list(args)[1:], env, project_dir)
        project = kwargs.pop("dbt_project", None)  # run() names it dbt_project, the dataclass project
        return cls(process=process, project=project, project_dir=project_dir, target_path=target_path, **kwargs)  # type: ignore[arg-type]


@contextmanager
def in_process_invocations() -> Iterator[None]:
    """While inside, ``DbtCliResource.cli`` builds ``InProcessDbtCliInvocation``s."""
    with _SWAP:
        original = getattr(dagster_dbt_resource, "DbtCliInvocation")  # noqa: B009 (not an exported name)
        setattr(dagster_dbt_resource, "DbtCliInvocation", InProcessDbtCliInvocation)  # noqa: B010
        try:
            yield
        finally:
            setattr(dagster_dbt_resource, "DbtCliInvocation", original)  # noqa: B010
