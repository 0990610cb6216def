"""Extract assets: PostgreSQL -> the warehouse's ``raw`` tables through Arrow, one asset per table
(docs/warehouse.md). The warehouse is the deployment's: a DuckDB file (local) or a PostgreSQL database (prod).

Tables that grow with time are partitioned by UTC day and incremental (a run moves one day's rows); the small
dimension tables and the balance/position snapshots are copied whole. Each extract validates what it wrote with
Great Expectations in a blocking check: a bad row stops the marts from being rebuilt on it.
"""

import os
import time
from datetime import date, timedelta

from dagster import (
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
)

from orchestration.quality import validate, validated_columns
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


def _days(context: AssetExecutionContext) -> list[date | None]:
    window = context.partition_time_window
    first, last = window.start.date(), window.end.date()
    return [first + timedelta(days=n) for n in range((last - first).days)]


def _rows_to_validate(warehouse: WarehouseResource, table: str, days: list[date | None]):  # type: ignore[no-untyped-def]
    """The rows this run wrote (only the columns the expectations read): the run's days, the latest snapshot,
    or the whole small table."""
    columns = ", ".join(validated_columns(table)) or "*"
    # SQL that DuckDB and PostgreSQL read alike: the warehouse runs it on the deployment's engine
    if days and days[0] is not None:
        column = _DAY_COLUMN[table]
        sql = f"SELECT {columns} FROM raw.{table} WHERE CAST({column} AT TIME ZONE 'UTC' AS DATE) BETWEEN ? AND ?"
        return warehouse.frame(sql, [days[0], days[-1]])
    if table in _SNAPSHOTS:
        return warehouse.frame(
            f"SELECT {columns} FROM raw.{table} WHERE snapshot_at = (SELECT max(snapshot_at) FROM raw.{table})"
        )
    return warehouse.frame(f"SELECT {columns} FROM raw.{table}")


def build_extract_asset(table: str) -> AssetsDefinition:
    partitioned = table in PARTITIONED
    check = AssetCheckSpec("great_expectations", asset=raw_key(table), blocking=True)

    @asset(
        key=raw_key(table),
        group_name="extract",
        partitions_def=DAILY if partitioned else None,
        backfill_policy=BackfillPolicy.single_run() if partitioned else None,
        check_specs=[check],
        kinds={"postgres", "duckdb"},
        description=f"PostgreSQL {table} -> warehouse raw.{table} through Arrow (DuckDB local, PostgreSQL prod)"
        + (" (one UTC day per partition)" if partitioned else " (whole table)"),
    )
    def extract(context: AssetExecutionContext, postgres: PostgresResource, warehouse: WarehouseResource):  # type: ignore[no-untyped-def]
        days = _days(context) if partitioned else [None]
        started = time.perf_counter()
        with warehouse.raw_sink() as sink:  # a backfill of a range is one run, one statement over its days
            rows = extract_table(postgres.url(), sink, table, days[0], last_day=days[-1])
        elapsed = time.perf_counter() - started
        context.log.info(f"raw.{table}: {rows} rows over {len(days)} partition(s) in {elapsed:.2f}s")
        yield MaterializeResult(
            metadata={"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": round(rows / max(elapsed, 1e-9))}
        )
        result = validate(table, _rows_to_validate(warehouse, table, days))
        yield AssetCheckResult(
            check_name="great_expectations",
            asset_key=raw_key(table),
            passed=result.success,
            severity=AssetCheckSeverity.ERROR,
            metadata={"rows": result.rows, "failures": "; ".join(result.failures) or "none"},
        )

    return extract


EXTRACT_ASSETS = [build_extract_asset(t) for t in (*PARTITIONED, *WHOLE)]
