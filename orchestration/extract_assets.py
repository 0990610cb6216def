"""Extract assets: PostgreSQL -> the warehouse's ``raw`` tables through Arrow, one asset per table
(docs/warehouse.md). The warehouse is the deployment's: a DuckDB file (local) or a PostgreSQL database (prod).

Tables that grow with time are partitioned by UTC day and incremental (a run moves one day's rows); the small
dimension tables and the balance/position snapshots are copied whole. What each extract wrote is validated with
Great Expectations in a blocking check (``raw_quality``, one step for the run's extracts, after them): a bad row
stops the marts from being rebuilt on it.
"""

import os
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
    multi_asset_check,
)

from orchestration.quality import QualityResource, validated_columns
from orchestration.resources import PostgresResource, WarehouseResource
from warehouse.extract import RAW_TABLES, extract_table

# The first day the extract partitions cover: the fund's first trading day in production (PATRIOT_PIPELINE_START);
# the default reaches back to the oldest year the shipped demo and benchmark data are priced on.
DAILY = DailyPartitionsDefinition(
    start_date=os.environ.get("PATRIOT_PIPELINE_START", "2019-01-01"), timezone="UTC", end_offset=1
)
# what is partitioned, copied whole or snapshotted is the extract's own table definition (warehouse/extract.py)
PARTITIONED = tuple(name for name, spec in RAW_TABLES.items() if spec.mode == "incremental")
WHOLE = tuple(name for name, spec in RAW_TABLES.items() if spec.mode != "incremental")
_SNAPSHOTS = {name for name, spec in RAW_TABLES.items() if spec.mode == "snapshot"}
# the raw column a day's rows are found by; raw keeps no recorded_at, so a run's events are found by occurred_at
_DAY_COLUMN = {name: RAW_TABLES[name].raw_day_column or "occurred_at" for name in PARTITIONED}


def raw_key(table: str) -> AssetKey:
    return AssetKey(["raw", table])


def _days_between(start: datetime, end: datetime) -> list[date | None]:
    """The UTC days of a window of daily partitions (``end`` exclusive)."""
    first, last = start.date(), end.date()
    return [first + timedelta(days=n) for n in range((last - first).days)]


def _days(context: AssetExecutionContext) -> list[date | None]:
    window = context.partition_time_window
    return _days_between(window.start, window.end)


def _run_days(context: AssetCheckExecutionContext) -> list[date | None]:
    """The days the run's partitioned extracts wrote: its partition, or its range (a single-run backfill)."""
    run = context.op_execution_context
    if not (run.has_partition_key or run.has_partition_key_range):
        raise ValueError("a partitioned extract is checked in a run without a partition: run its extract with it")
    keys = run.partition_key_range
    first, last = (DAILY.time_window_for_partition_key(key) for key in (keys.start, keys.end))
    return _days_between(first.start, last.end)


def _validation_query(table: str, days: list[date | None]) -> tuple[str, list[date]]:
    """The rows this run wrote (only the columns the expectations read): the run's days, the latest snapshot,
    or the whole small table. SQL that DuckDB and PostgreSQL read alike: the warehouse runs it on the
    deployment's engine."""
    columns = ", ".join(validated_columns(table)) or "*"
    if days and days[0] is not None:
        column = _DAY_COLUMN[table]
        sql = f"SELECT {columns} FROM raw.{table} WHERE CAST({column} AT TIME ZONE 'UTC' AS DATE) BETWEEN ? AND ?"
        return sql, [days[0], days[-1]]  # type: ignore[list-item]
    if table in _SNAPSHOTS:
        return f"SELECT {columns} FROM raw.{table} WHERE snapshot_at = (SELECT max(snapshot_at) FROM raw.{table})", []
    return f"SELECT {columns} FROM raw.{table}", []


def build_extract_asset(table: str) -> AssetsDefinition:
    partitioned = table in PARTITIONED

    @asset(
        key=raw_key(table),
        group_name="extract",
        partitions_def=DAILY if partitioned else None,
        backfill_policy=BackfillPolicy.single_run() if partitioned else None,
        kinds={"postgres", "duckdb"},
        description=f"PostgreSQL {table} -> warehouse raw.{table} through Arrow (DuckDB local, PostgreSQL prod)"
        + (" (one UTC day per partition)" if partitioned else " (whole table)"),
    )
    def extract(
        context: AssetExecutionContext, postgres: PostgresResource, warehouse: WarehouseResource
    ) -> MaterializeResult:
        days = _days(context) if partitioned else [None]
        started = time.perf_counter()
        with warehouse.raw_sink() as sink:  # a backfill of a range is one run, one statement over its days
            rows = extract_table(postgres.url(), sink, table, days[0], last_day=days[-1])
        elapsed = time.perf_counter() - started
        context.log.info(f"raw.{table}: {rows} rows over {len(days)} partition(s) in {elapsed:.2f}s")
        return MaterializeResult(
            metadata={"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": round(rows / max(elapsed, 1e-9))}
        )

    return extract


EXTRACT_ASSETS = [build_extract_asset(t) for t in (*PARTITIONED, *WHOLE)]


@multi_asset_check(
    specs=[AssetCheckSpec("great_expectations", asset=raw_key(t), blocking=True) for t in (*PARTITIONED, *WHOLE)],
    can_subset=True,
    description="Great Expectations on what each extract of the run wrote (orchestration/quality.py): the run's"
    " days of a partitioned table, the latest snapshot, or the whole small table. Blocking: a failed check stops"
    " every downstream asset of the run",
)
def raw_quality(
    context: AssetCheckExecutionContext, warehouse: WarehouseResource, quality: QualityResource
) -> Iterator[AssetCheckResult]:
    """One step after the run's extracts (where each extract's own step validated, the first one waited for the
    GX import): the validations run in the quality resource's process, which imported GX while they loaded."""
    tables = sorted(key.asset_key.path[-1] for key in context.selected_asset_check_keys)
    days = _run_days(context) if any(table in PARTITIONED for table in tables) else []
    frames = warehouse.frames([_validation_query(t, days if t in PARTITIONED else [None]) for t in tables])
    # every frame is sent before the first answer is awaited: they are read while GX may still be importing
    for table, result in zip(tables, quality.validate_all(list(zip(tables, frames, strict=True))), strict=True):
        yield AssetCheckResult(
            check_name="great_expectations",
            asset_key=raw_key(table),
            passed=result.success,
            severity=AssetCheckSeverity.ERROR,
            metadata={"rows": result.rows, "failures": "; ".join(result.failures) or "none"},
        )


RAW_CHECKS = [raw_quality]
