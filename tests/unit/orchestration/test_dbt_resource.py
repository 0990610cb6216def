"""The dbt resource's shortcuts: no ``dbt --version`` subprocess and no adapter in the Dagster process before a
build, dbt run in a child forked from the Dagster process (read exactly as dagster-dbt reads the CLI), and the
parse state and run directories a build leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dagster_dbt.core.dbt_cli_invocation as dagster_dbt_invocation
import dagster_dbt.core.resource as dagster_dbt_resource
import pytest
from dagster import build_resources
from dagster_dbt.errors import DagsterDbtCliRuntimeError
from packaging.version import Version

from orchestration.dbt_forked import PARSE_STATES, DbtChild, parse_state_key, scoped_environ, shared_parse_state
from orchestration.resources import ROOT, WarehouseResource
from orchestration.transform_assets import (
    CHANGED_ROWS,
    KEPT_PARSE_STATES,
    TEST_SCOPE_TAG,
    build_env,
    dbt_env,
    dbt_resource,
    keep_parse_state,
)


def test_the_local_dbt_version_is_known_without_running_dbt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*args: object, **kwargs: object) -> bytes:
        raise AssertionError(f"dbt was run to learn its version: {args}")

    monkeypatch.setattr(dagster_dbt_resource, "check_output", no_subprocess)
    resource = dbt_resource()
    assert resource._cli_version == Version(version("dbt-core"))
    assert resource._initialize_dbt_core_adapter(["build"]) is None


def test_another_dbt_executable_is_still_asked_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []

    def fake_version(command: list[str]) -> bytes:
        asked.append(command)
        return b"Core:\n  - installed: 1.11.2\n"

    monkeypatch.setattr(dagster_dbt_resource, "check_output", fake_version)
    resource = dbt_resource().model_copy(update={"dbt_executable": "/opt/elsewhere/dbt"})
    assert resource._cli_version == Version("1.11.2")
    assert asked == [["/opt/elsewhere/dbt", "--version"]]


def test_a_build_leaves_its_parse_state_and_only_the_newest_run_directories(tmp_path: Path) -> None:
    shared = tmp_path / "target"
    shared.mkdir()
    (shared / "partial_parse.msgpack").write_bytes(b"parsed with the default profile")
    (shared / "manifest.json").write_text("{}")
    runs = []
    for n in range(5):
        run = shared / f"patriot_dbt_models-abc{n}def-{n:07d}"
        run.mkdir()
        (run / "run_results.json").write_text("{}")
        os.utime(run, (time.time() - 100 + n, time.time() - 100 + n))
        runs.append(run)
    (runs[-1] / "partial_parse.msgpack").write_bytes(b"parsed with this deployment's profile")
    other = shared / "postgres"
    other.mkdir()

    keep_parse_state(runs[-1], shared, keep=3)

    assert (shared / "partial_parse.msgpack").read_bytes() == b"parsed with this deployment's profile"
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == sorted([*(r.name for r in runs[-3:]), "postgres"])
    assert (shared / "manifest.json").exists()
    assert not list(shared.glob(".partial_parse.*"))


def test_each_environment_starts_from_the_state_its_own_last_build_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build with another warehouse (the tests, another deployment in the checkout) leaves its own state: the
    next build with this deployment's warehouse starts from this deployment's, not from one dbt would refuse."""
    shared = tmp_path / "target"
    monkeypatch.setenv("DBT_TARGET_PATH", str(shared))
    deployed = {"PATRIOT_WAREHOUSE_PATH": "/srv/patriot/working.duckdb", "PATRIOT_DBT_TESTS": "changed_rows"}
    tests = {"PATRIOT_WAREHOUSE_PATH": "/tmp/pytest-1/working.duckdb", "PATRIOT_DBT_TESTS": "all"}
    for name, env in (("deployed", deployed), ("tests", tests)):
        run = shared / f"patriot_dbt_models-{name}-0000001"
        run.mkdir(parents=True)
        (run / "partial_parse.msgpack").write_bytes(f"parsed for {name}".encode())
        keep_parse_state(run, shared, env=env)

    assert shared_parse_state(tmp_path, deployed).read_bytes() == b"parsed for deployed"
    assert shared_parse_state(tmp_path, tests).read_bytes() == b"parsed for tests"
    other = {"PATRIOT_WAREHOUSE_PATH": "/elsewhere/working.duckdb"}  # none of its own yet: the last build's
    assert shared_parse_state(tmp_path, other) == shared / "partial_parse.msgpack"
    assert (shared / "partial_parse.msgpack").read_bytes() == b"parsed for tests"
    assert parse_state_key({**deployed, "HOME": "/root"}) == parse_state_key(deployed)  # only PATRIOT_* count


def test_only_the_newest_environments_states_are_kept(tmp_path: Path) -> None:
    shared = tmp_path / "target"
    for n in range(KEPT_PARSE_STATES + 3):
        run = shared / f"patriot_dbt_models-env{n}-0000001"
        run.mkdir(parents=True)
        (run / "partial_parse.msgpack").write_bytes(b"state")
        keep_parse_state(run, shared, env={"PATRIOT_WAREHOUSE_PATH": f"/w{n}"})
        os.utime(shared / PARSE_STATES / f"{parse_state_key({'PATRIOT_WAREHOUSE_PATH': f'/w{n}'})}.msgpack", (n, n))
    kept = {p.name for p in (shared / PARSE_STATES).glob("*.msgpack")}
    assert len(kept) == KEPT_PARSE_STATES
    assert f"{parse_state_key({'PATRIOT_WAREHOUSE_PATH': f'/w{KEPT_PARSE_STATES + 2}'})}.msgpack" in kept


def test_a_build_without_parse_state_replaces_nothing(tmp_path: Path) -> None:
    shared = tmp_path / "target"
    run = shared / "patriot_dbt_models-abcdefg-1234567"
    run.mkdir(parents=True)
    (shared / "partial_parse.msgpack").write_bytes(b"earlier")
    keep_parse_state(run, shared)
    assert (shared / "partial_parse.msgpack").read_bytes() == b"earlier"


def _no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    popen = subprocess.Popen

    def refuse(args: Sequence[str], *rest: Any, **kwargs: Any) -> Any:
        if Path(str(args[0])).name == "dbt":
            raise AssertionError(f"dbt was started as a subprocess: {args}")
        return popen(args, *rest, **kwargs)  # anything else dbt itself runs (uname)

    monkeypatch.setattr(dagster_dbt_invocation.subprocess, "Popen", refuse)


def test_dbt_runs_in_a_forked_child_and_is_read_like_the_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_subprocess(monkeypatch)
    warehouse = tmp_path / "working.duckdb"
    for name in ("PATRIOT_WAREHOUSE_PATH", "PATRIOT_MARTS_PATH"):  # as the asset sets them for its build
        monkeypatch.setenv(name, dbt_env(warehouse)[name])
    before = dict(os.environ)

    invocation = dbt_resource().cli(["show", "--inline", "select 42 as answer"], target_path=tmp_path / "run")
    events = list(invocation.stream_raw_events())

    assert isinstance(invocation.process, DbtChild) and invocation.process.pid != os.getpid()
    assert invocation.is_successful() and invocation.get_error() is None
    assert invocation.process.returncode == 0
    names = [event.raw_event["info"]["name"] for event in events]
    assert "MainReportVersion" in names  # dbt's own structured events, as the CLI prints them
    shown = [event.raw_event["data"] for event in events if event.raw_event["info"]["name"] == "ShowNode"]
    assert len(shown) == 1 and "42" in shown[0]["preview"]  # the query ran on the warehouse file
    assert all(event.raw_event["info"]["level"] != "debug" for event in events)
    assert (tmp_path / "run" / "dbt.log").exists()  # its log file in the invocation's target path
    assert dict(os.environ) == before  # DBT_TARGET_PATH and the rest are not left behind for the next run
    # the warehouse file is free again: another process can open it for writing
    assert warehouse.exists()
    opened = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(warehouse)!r}).execute('select 1')"],
        capture_output=True,
        text=True,
    )
    assert opened.returncode == 0, opened.stderr


def test_a_failing_forked_dbt_is_reported_as_the_cli_reports_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_subprocess(monkeypatch)
    for name in ("PATRIOT_WAREHOUSE_PATH", "PATRIOT_MARTS_PATH"):
        monkeypatch.setenv(name, dbt_env(tmp_path / "working.duckdb")[name])

    invocation = dbt_resource().cli(
        ["run-operation", "no_such_macro"], target_path=tmp_path / "run", raise_on_error=False
    )

    assert not invocation.is_successful()
    assert invocation.process.returncode != 0
    error = invocation.get_error()
    assert error is not None and "no_such_macro" in str(error)
    with pytest.raises(DagsterDbtCliRuntimeError, match="no_such_macro"):
        dbt_resource().cli(["run-operation", "no_such_macro"], target_path=tmp_path / "again").wait()


def test_another_dbt_executable_still_runs_as_a_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []

    class Started(Exception):
        pass

    def popen(args: list[str], **kwargs: object) -> None:
        started.append(args[0])
        raise Started

    monkeypatch.setattr(dagster_dbt_invocation.subprocess, "Popen", popen)
    monkeypatch.setattr(dagster_dbt_resource, "check_output", lambda command: b"Core:\n  - installed: 1.11.2\n")
    resource = dbt_resource().model_copy(update={"dbt_executable": "/opt/elsewhere/dbt"})
    with pytest.raises(Started):
        resource.cli(["parse"])
    assert started == ["/opt/elsewhere/dbt"]


def test_an_interrupted_run_ends_the_forked_dbt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """dagster-dbt forwards a run's interrupt to dbt as SIGINT: the child stops (a query that would run for
    hours here) and reports the interruption as an error line and a failed exit code."""
    for name in ("PATRIOT_WAREHOUSE_PATH", "PATRIOT_MARTS_PATH"):
        monkeypatch.setenv(name, dbt_env(tmp_path / "working.duckdb")[name])
    endless = "select sum(hash(range)) as total from range(1000000000000)"
    invocation = dbt_resource().cli(["show", "--inline", endless], target_path=tmp_path / "run", raise_on_error=False)
    lines = iter(invocation.process.stdout)
    next(lines)  # dbt has started
    invocation.process.send_signal(signal.SIGINT)

    assert invocation.process.wait(timeout=60) != 0
    rest = [line.decode() for line in lines]
    assert any("KeyboardInterrupt" in line for line in rest)
    assert invocation.process.poll() == invocation.process.returncode


def _parse_dirs() -> set[Path]:
    """The directories of prepared parses that are still on disk."""
    return set(Path(tempfile.gettempdir()).glob("patriot-dbt-parse-*"))


def _parsed(run: Path) -> bool:
    """Whether the invocation's dbt parsed the project (its debug log says how it went about it)."""
    return "partial pars" in (run / "dbt.log").read_text().lower()


def test_a_run_parses_as_it_starts_and_its_build_skips_the_parse(tmp_path: Path) -> None:
    """The dbt resource of a run forks its dbt child when the run starts (the child parses while the extracts
    load); the run's build runs in that child, on that parse, when its environment is the one parsed for."""
    warehouse = WarehouseResource(root=str(tmp_path / "warehouse"))
    before = _parse_dirs()
    with build_resources({"dbt": dbt_resource(warehouse=warehouse)}) as resources:
        prepared = resources.dbt._prepared
        assert isinstance(prepared, DbtChild) and prepared.poll() is None  # waiting for the build
        with scoped_environ(build_env(warehouse, {})):
            invocation = resources.dbt.cli(["show", "--inline", "select 42 as answer"], target_path=tmp_path / "run")
            events = list(invocation.stream_raw_events())
        assert invocation.process is prepared and resources.dbt._prepared is None
    assert invocation.is_successful()
    assert any("42" in str(event.raw_event["data"].get("preview", "")) for event in events)
    assert not _parsed(tmp_path / "run")
    assert (tmp_path / "run" / "partial_parse.msgpack").exists()  # the parse's state, for the next build
    assert "partial pars" in (tmp_path / "run" / "parse.log").read_text().lower()  # and how it went
    assert _parse_dirs() <= before  # the parse's own directory is gone


def test_a_build_in_another_environment_parses_for_itself(tmp_path: Path) -> None:
    warehouse = WarehouseResource(root=str(tmp_path / "warehouse"))
    before = _parse_dirs()
    with build_resources({"dbt": dbt_resource(warehouse=warehouse)}) as resources:
        prepared = resources.dbt._prepared
        with scoped_environ(build_env(warehouse, {TEST_SCOPE_TAG: CHANGED_ROWS})):  # parsed for the "all" scope
            invocation = resources.dbt.cli(["show", "--inline", "select 42 as answer"], target_path=tmp_path / "run")
            invocation.wait()
    assert invocation.process is prepared and invocation.is_successful()
    assert _parsed(tmp_path / "run")
    assert _parse_dirs() <= before  # the unused parse is removed too


def test_a_run_that_never_builds_ends_its_dbt_child(tmp_path: Path) -> None:
    before = _parse_dirs()
    with build_resources({"dbt": dbt_resource(warehouse=WarehouseResource(root=str(tmp_path)))}) as resources:
        prepared = resources.dbt._prepared
        assert isinstance(prepared, DbtChild)
    assert prepared.returncode is not None  # ended and reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(prepared.pid, os.WNOHANG)
    assert prepared.returncode == 0  # it ended by itself when no build came, after its parse
    assert _parse_dirs() <= before


def test_a_forked_dbt_leaves_nothing_for_the_resource_tracker(tmp_path: Path) -> None:
    """The child ends as multiprocessing's own children do: dbt's semaphores are released, not reported as leaked
    when the run process exits."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from orchestration.transform_assets import dbt_env, dbt_resource\n"
        "tmp = Path(sys.argv[1])\n"
        "env = dbt_env(tmp / 'working.duckdb')\n"
        "os.environ.update({k: env[k] for k in ('PATRIOT_WAREHOUSE_PATH', 'PATRIOT_MARTS_PATH')})\n"
        "dbt_resource().cli(['show', '--inline', 'select 1 as one'], target_path=tmp / 'run').wait()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaked" not in done.stderr
