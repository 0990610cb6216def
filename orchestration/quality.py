"""Great Expectations validations of each extract, run as blocking Dagster asset checks.

GX validates a pandas frame of the rows the extract just wrote (GX cannot read DuckDB through SQLAlchemy
here); a failed expectation fails the check and, the check being blocking, stops every downstream asset.

Importing GX takes about 2.5 s of CPU (it imports its whole expectation catalogue, and scipy with it), a quarter
of an hourly run when the run process imports it at its first check. The :class:`QualityResource` forks a process
as the run starts (:class:`ValidationProcess`; one per run process, kept for its later runs): it imports GX on the
other core while the run extracts, and validates the frames the checks send it. Where the platform cannot fork,
the checks validate in the run process.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

_EXPECTATIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fills": [
        ("ExpectColumnValuesToNotBeNull", {"column": "trade_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "order_id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "quantity", "min_value": 0, "strict_min": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "price", "min_value": 0, "strict_min": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "fee", "min_value": 0}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["account_id", "exchange", "trade_id"]}),
        ("ExpectColumnValuesToBeInSet", {"column": "side", "value_set": ["buy", "sell"]}),
    ],
    "orders": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "quantity", "min_value": 0, "strict_min": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "filled_quantity", "min_value": 0}),
        (
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "quantity", "column_B": "filled_quantity", "or_equal": True},
        ),
        ("ExpectColumnValuesToBeInSet", {"column": "side", "value_set": ["buy", "sell"]}),
    ],
    "capital_flows": [
        ("ExpectColumnValuesToNotBeNull", {"column": "amount"}),
        ("ExpectColumnValuesToNotBeInSet", {"column": "amount", "value_set": [0]}),
    ],
    "market_candles": [
        ("ExpectColumnValuesToBeBetween", {"column": "close", "min_value": 0, "strict_min": True}),
        ("ExpectColumnPairValuesAToBeGreaterThanB", {"column_A": "high", "column_B": "low", "or_equal": True}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["exchange", "symbol", "interval", "open_time"]}),
    ],
    "event_store": [
        ("ExpectColumnValuesToBeUnique", {"column": "event_id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "event_version", "min_value": 1}),
    ],
    "balances": [
        ("ExpectColumnValuesToBeBetween", {"column": "free", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "locked", "min_value": 0}),
    ],
    "position_snapshots": [("ExpectColumnValuesToNotBeNull", {"column": "quantity"})],
    "users": [("ExpectColumnValuesToBeUnique", {"column": "id"})],
    "user_accounts": [("ExpectColumnValuesToBeUnique", {"column": "id"})],
    "strategies": [("ExpectColumnValuesToBeUnique", {"column": "id"})],
    "strategy_assignments": [("ExpectColumnValuesToBeBetween", {"column": "allocation", "min_value": 0})],
}
VALIDATED_TABLES = tuple(_EXPECTATIONS)


def validated_columns(table: str) -> list[str]:
    """The columns the table's expectations read (the rest need not be loaded into pandas)."""
    found: list[str] = []
    for _, kwargs in _EXPECTATIONS.get(table, []):
        for key in ("column", "column_A", "column_B"):
            if key in kwargs and kwargs[key] not in found:
                found.append(kwargs[key])
        for column in kwargs.get("column_list", []):
            if column not in found:
                found.append(column)
    return found


@dataclass(frozen=True, slots=True)
class Validation:
    success: bool
    rows: int
    failures: list[str]


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Decimals (object columns) as floats, so comparisons run vectorised; ids and text stay as they are."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        present = out[column].dropna()
        if len(present) and type(present.iloc[0]).__name__ == "Decimal":
            out[column] = out[column].astype(float)
    return out


def validate(table: str, frame: pd.DataFrame) -> Validation:
    """Run the table's expectations on ``frame`` in this process; each failure is described by its expectation
    and count."""
    return _validate_numeric(table, _numeric(frame))


def _validate_numeric(table: str, frame: pd.DataFrame) -> Validation:
    """:func:`validate` of a frame whose decimals are floats already."""
    import great_expectations as gx

    expectations = _EXPECTATIONS.get(table, [])
    if frame.empty or not expectations:
        return Validation(True, len(frame), [])
    context = gx.get_context(mode="ephemeral")
    try:  # no progress bars in the pipeline's logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    except (ImportError, AttributeError):
        pass
    batch = (
        context.data_sources.add_pandas(f"raw_{table}")
        .add_dataframe_asset(table)
        .add_batch_definition_whole_dataframe("extract")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name=f"raw_{table}")
    for name, kwargs in expectations:
        suite.add_expectation(getattr(gx.expectations, name)(**kwargs))
    result = batch.validate(suite)
    failures = [
        f"{r.expectation_config.type} {dict(r.expectation_config.kwargs)}: "
        f"{r.result.get('unexpected_count', '?')} unexpected"
        for r in result.results
        if not r.success
    ]
    return Validation(bool(result.success), len(frame), failures)


class ValidationProcess:
    """Great Expectations in a process forked from the run process: it imports GX as soon as it starts, then
    validates each frame it is sent (pickled through a pipe) and answers with the :class:`Validation`.

    The child releases every descriptor it inherited but its own pipe (another child's pipe end held here would
    keep that child from ever seeing the end of its input), ignores an interrupt (the run process ends it), and
    ends when told to, when its pipe closes, or when the run process is gone.
    """

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, theirs = context.Pipe()
        self._lock = threading.Lock()  # one exchange at a time: the answers come back in the order sent
        self._owner = os.getpid()
        self._used = False
        self._broken = False
        self.exitcode: int | None = None  # once closed: 0 when it ended as told, -SIGTERM when it was terminated
        self._process = context.Process(
            target=_serve, args=(theirs, self._conn, os.getpid()), name="patriot-great-expectations", daemon=True
        )
        # the parent's objects move to the permanent generation: the child's collector never walks (and so never
        # copies) them, nor finalises one the parent still owns
        gc.freeze()
        try:
            self._process.start()
        finally:
            gc.unfreeze()
        theirs.close()
        self.pid = self._process.pid

    @property
    def serves(self) -> bool:
        """True while this process (not a fork of it) can use it: alive, and its pipe in step."""
        return self.exitcode is None and not self._broken and self._owner == os.getpid() and self._process.is_alive()

    def validate_all(self, frames: Sequence[tuple[str, pd.DataFrame]]) -> list[Validation]:
        """Each table's frame validated, in order: all are sent before the first answer is read (the child may
        still be importing GX), and an answer is small enough never to fill the pipe while the next is sent."""
        tables = [table for table, _ in frames]
        answers: list[Validation | _Failed] = []
        with self._lock:
            self._used = True
            try:
                for table, frame in frames:
                    self._conn.send((table, _numeric(frame)))  # floats pickle far faster than Decimal objects
                while len(answers) < len(tables):
                    answers.append(self._conn.recv())
            except (EOFError, OSError) as exc:
                self._broken = True
                self._process.join(1.0)
                raise RuntimeError(
                    f"the Great Expectations process ended (exit code {self._process.exitcode}) before it validated"
                    f" raw.{tables[len(answers)]}: re-run the extracts; the run's compute logs hold its output"
                ) from exc
            except BaseException:  # interrupted between a send and its answer: the pipe is out of step
                self._broken = True
                raise
        for table, answer in zip(tables, answers, strict=True):
            if isinstance(answer, _Failed):
                raise RuntimeError(f"Great Expectations could not validate raw.{table}: {answer.error}")
        return answers  # type: ignore[return-value]

    def close(self, timeout: float = 10.0) -> None:
        """End the process: told to end once it answered what it was sent; one that validated nothing (it may
        still be importing GX) or whose pipe is out of step is terminated at once."""
        if self._used and not self._broken:
            try:
                self._conn.send(None)
            except OSError:
                pass
        self._conn.close()
        self._process.join(timeout if self._used else 0.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self.exitcode = self._process.exitcode
        self._process.close()


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str


def _serve(conn: Any, parent_end: Any, parent: int) -> None:
    """The forked child: import GX, then validate what comes through ``conn`` until told to end."""
    parent_end.close()
    _release_inherited_descriptors(keep={conn.fileno()})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import great_expectations  # noqa: F401  (the point of this process: GX imported while the run extracts)

    while True:
        while not conn.poll(1.0):
            if os.getppid() != parent:  # the run process is gone
                return
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        table, frame = message
        try:
            answer: Validation | _Failed = _validate_numeric(table, frame)  # made numeric before it was sent
        except Exception as exc:  # reported to the check, which fails the step with it
            answer = _Failed(f"{type(exc).__name__}: {exc}")
        conn.send(answer)


def _release_inherited_descriptors(keep: set[int]) -> None:
    """Point every descriptor this forked child inherited (but stdio and ``keep``) at /dev/null: the open files,
    sockets and pipe ends of the parent are released, their numbers stay taken (an object of the parent's that
    still names one never reaches a file this process opens later)."""
    if not sys.platform.startswith("linux"):
        return
    inherited = [int(name) for name in os.listdir("/proc/self/fd")]
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in inherited:
            if fd > 2 and fd not in keep and fd != null:
                try:
                    os.fstat(fd)
                except OSError:  # the directory listing's own descriptor, closed since
                    continue
                os.dup2(null, fd)
    finally:
        os.close(null)


def can_fork_validation() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


_SHARED: list[ValidationProcess] = []  # this process's validation process, once a run has forked it
_SHARED_LOCK = threading.Lock()


def shared_validation_process() -> ValidationProcess:
    """This process's validation process: forked as the first run that checks starts, serving every later run of
    the same process. A deployment starts a new process for each run, which forks its own; a process that runs
    many (a notebook, the tests, the benchmark's warm run) imports GX once. One that died, or whose pipe fell out
    of step (an interrupted check), is replaced."""
    with _SHARED_LOCK:
        if _SHARED and _SHARED[0].serves:
            return _SHARED[0]
        if _SHARED:
            stale = _SHARED.pop()
            if stale._owner == os.getpid():
                stale.close(timeout=0.0)
        else:
            atexit.register(_close_shared)
        _SHARED.append(ValidationProcess())
        return _SHARED[0]


def _close_shared() -> None:
    with _SHARED_LOCK:
        if _SHARED and _SHARED[0]._owner == os.getpid() and _SHARED[0].exitcode is None:
            _SHARED.pop().close()


class QualityResource(ConfigurableResource):  # type: ignore[type-arg]
    """Great Expectations for the extracts' blocking checks. A run that checks uses its process's
    :class:`ValidationProcess` (:func:`shared_validation_process`), forked as the process's first such run starts,
    so GX is imported on the other core while the extracts load; where the platform cannot fork (or
    ``in_process`` is set), the checks validate in the run process."""

    in_process: bool = False

    _validator: ValidationProcess | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if not self.in_process and can_fork_validation():
            self._validator = shared_validation_process()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self._validator = None  # the process stays for this process's next run; it ends with this process

    def validate_all(self, frames: Sequence[tuple[str, pd.DataFrame]]) -> list[Validation]:
        """Each table's frame validated with its expectations, in order."""
        if self._validator is None:
            return [validate(table, frame) for table, frame in frames]
        return self._validator.validate_all(frames)
