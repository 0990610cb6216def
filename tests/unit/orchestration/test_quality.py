"""The extracts' Great Expectations checks: what a table's expectations find, and the process a run forks to
import GX while it extracts (its answers are the run process's own, it holds none of the run's descriptors, it
serves the process's later runs, and it ends with the run process, whichever way that ends)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal

import pandas as pd
import pytest
from dagster import build_resources

from orchestration import quality
from orchestration.quality import (
    QualityResource,
    ValidationProcess,
    can_fork_validation,
    shared_validation_process,
    validate,
)

forks = pytest.mark.skipif(not can_fork_validation(), reason="the validation process is forked (Linux)")

GOOD_FILLS = pd.DataFrame(
    {
        "trade_id": ["t1", "t2"],
        "order_id": ["o1", "o2"],
        "quantity": [Decimal("0.5"), Decimal("1.25")],  # PostgreSQL (prod) reads NUMERIC as Decimal objects
        "price": [Decimal("100"), Decimal("101.5")],
        "fee": [Decimal("0"), Decimal("0.01")],
        "account_id": ["a", "a"],
        "exchange": ["binance", "binance"],
        "side": ["buy", "sell"],
    }
)


def _bad_fills() -> pd.DataFrame:
    bad = pd.concat([GOOD_FILLS, GOOD_FILLS.iloc[[0]]], ignore_index=True)  # a duplicate trade
    bad.loc[1, "quantity"] = Decimal("-1")
    return bad


def test_expectations_pass_good_rows_and_name_what_bad_rows_break() -> None:
    assert validate("fills", GOOD_FILLS).success
    found = validate("fills", _bad_fills())
    assert not found.success and found.rows == 3
    described = " ".join(found.failures)
    assert "quantity" in described and "expect_compound_columns_to_be_unique" in described


@forks
def test_the_forked_process_answers_as_the_run_process_would() -> None:
    process = ValidationProcess()
    try:
        assert process.pid != os.getpid()
        frames = [("fills", GOOD_FILLS), ("fills", _bad_fills()), ("users", pd.DataFrame({"id": [1, 1]}))]
        assert process.validate_all(frames) == [validate(table, frame) for table, frame in frames]
    finally:
        process.close()


@forks
def test_the_forked_process_holds_none_of_the_run_process_descriptors() -> None:
    """A pipe end the run process holds (the dbt child's input, say) is not kept open by the validation process:
    when the run process closes it, the reader sees the end of its input."""
    read_end, write_end = os.pipe()
    process = ValidationProcess()
    try:
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], 20.0)
        assert ready and os.read(read_end, 1) == b""  # end of input: no copy of the write end left anywhere
    finally:
        os.close(read_end)
        process.close()


@forks
def test_a_process_that_validated_nothing_is_ended_and_one_that_did_ends_when_told() -> None:
    unused = ValidationProcess()
    unused.close()
    # terminated while it imports GX; ended by itself if this process had GX imported already (fast to fork)
    assert unused.exitcode in (0, -signal.SIGTERM)

    used = ValidationProcess()
    used.validate_all([("users", pd.DataFrame({"id": [1, 2]}))])
    used.close()
    assert used.exitcode == 0


@forks
def test_a_validation_process_that_died_is_reported_not_waited_for() -> None:
    process = ValidationProcess()
    try:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"Great Expectations process ended .* raw\.users"):
            process.validate_all([("users", pd.DataFrame({"id": [1]}))])
    finally:
        process.close()


@forks
def test_the_validation_process_ends_when_the_run_process_is_killed() -> None:
    script = textwrap.dedent(
        """
        import os
        from orchestration.quality import ValidationProcess
        process = ValidationProcess()
        print(process.pid, flush=True)
        os._exit(0)  # as a killed run process ends: no teardown, no exit handlers
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + 60
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the validation process outlived the run process"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended (its parent, init, reaps it)
    except FileNotFoundError:
        return False


@forks
def test_the_resource_forks_once_per_process_and_its_process_serves_the_next_run() -> None:
    with build_resources({"quality": QualityResource()}) as resources:
        validator = resources.quality._validator
        assert validator is not None and validator.serves
        [found] = resources.quality.validate_all([("users", pd.DataFrame({"id": [7, 7]}))])
        assert not found.success
    with build_resources({"quality": QualityResource()}) as resources:
        assert resources.quality._validator is validator and validator.serves  # GX imported once per process
        assert resources.quality.validate_all([("users", pd.DataFrame({"id": [1, 2]}))])[0].success


@forks
def test_a_dead_validation_process_is_replaced_at_the_next_run() -> None:
    dead = shared_validation_process()
    dead_pid = dead.pid
    assert dead_pid is not None
    os.kill(dead_pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="ended"):
        dead.validate_all([("users", pd.DataFrame({"id": [1]}))])
    with build_resources({"quality": QualityResource()}) as resources:
        fresh = resources.quality._validator
        assert fresh is not None and fresh is not dead and fresh.pid != dead_pid
        assert resources.quality.validate_all([("users", pd.DataFrame({"id": [1, 2]}))])[0].success


@forks
def test_a_failed_validation_keeps_the_pipe_in_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame the child cannot validate is reported for its table, and the answers to the frames sent with it are
    read, not left for the next run to take as its own."""
    # an expectation GX does not have: the forked child (a copy of this process) raises on this table's frame
    monkeypatch.setitem(quality._EXPECTATIONS, "broken", [("ExpectNoSuchThing", {"column": "id"})])
    process = ValidationProcess()
    try:
        frames = [("broken", pd.DataFrame({"id": [1]})), ("strategies", pd.DataFrame({"id": [1, 2]}))]
        with pytest.raises(RuntimeError, match=r"could not validate raw\.broken: AttributeError"):
            process.validate_all(frames)
        assert process.serves
        [later] = process.validate_all([("users", pd.DataFrame({"id": [3, 3]}))])
        assert not later.success and later.rows == 2  # this frame's answer, not one left over
    finally:
        process.close()


def test_the_resource_validates_in_the_run_process_when_asked() -> None:
    with build_resources({"quality": QualityResource(in_process=True)}) as resources:
        assert resources.quality._validator is None
        assert resources.quality.validate_all([("fills", GOOD_FILLS)]) == [validate("fills", GOOD_FILLS)]
