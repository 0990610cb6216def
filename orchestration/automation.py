"""Jobs, schedules and sensors: the hourly incremental path (``hourly_refresh``: the day's extract partition,
the dimensions, the marts with their dbt tests on the rows they changed, publishing, all in one run), a sensor
that runs the same path for new fills, the refresh of the marts after any other extract run, and a nightly
refresh whose tests read every row. Backfills run the ``extract_daily`` job over a range of partitions
(from the UI, or ``dagster job backfill -j extract_daily --from 2025-01-01 --to 2025-03-31``).
"""

import warnings
from datetime import UTC, datetime, timedelta

import psycopg
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
    define_asset_job,
    run_status_sensor,
    schedule,
    sensor,
)

from orchestration.extract_assets import PARTITIONED, WHOLE, raw_key
from orchestration.prod_marts import PYTHON_MODELS
from orchestration.resources import PostgresResource, deployment
from orchestration.transform_assets import CHANGED_ROWS, TEST_SCOPE_TAG, patriot_dbt_models, published_warehouse

extract_daily = define_asset_job(
    "extract_daily",
    selection=AssetSelection.assets(*[raw_key(t) for t in PARTITIONED]),
    description="Move one UTC day of orders, fills, flows, candles and events into the warehouse",
)
# in prod the Python models are built after dbt by the python_marts asset (dbt-postgres cannot run them)
_PROD_PYTHON_MODELS = [AssetKey([s, name]) for name, s in PYTHON_MODELS.items()] if deployment() == "prod" else []
MARTS_SELECTION = (
    AssetSelection.assets(*[raw_key(t) for t in WHOLE])
    | AssetSelection.assets(patriot_dbt_models)
    | AssetSelection.assets(*_PROD_PYTHON_MODELS)
    | AssetSelection.assets(published_warehouse)
)
refresh_marts = define_asset_job(
    "refresh_marts",
    selection=MARTS_SELECTION,
    description="Copy the dimensions and snapshots, rebuild and test the marts, publish them to readers",
)
# One run, not an extract run and then a marts run: a run is a new process that loads the code location and
# imports Great Expectations and the rest of dbt again, and the marts are fresh without waiting for a sensor tick.
hourly_refresh = define_asset_job(
    "hourly_refresh",
    selection=AssetSelection.assets(*[raw_key(t) for t in PARTITIONED]) | MARTS_SELECTION,
    description="The hourly path in one run: one UTC day's extract, the dimensions and snapshots, the marts "
    "(dbt tests on the rows the build changed), publishing",
)


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


HOURLY_TAGS = {TEST_SCOPE_TAG: CHANGED_ROWS}


@schedule(
    cron_schedule="5 * * * *",
    job=hourly_refresh,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
def hourly_incremental(context: ScheduleEvaluationContext) -> list[RunRequest]:
    """Every hour: today's partition through to the published marts (and yesterday's during the first hour, so
    its last rows are not missed), the dbt tests reading the rows the build changed."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    days = {now.date().isoformat()}
    if now.hour == 0:
        days.add((now - timedelta(days=1)).date().isoformat())
    return [RunRequest(partition_key=d, run_key=f"{d}@{now:%Y-%m-%dT%H}", tags=HOURLY_TAGS) for d in sorted(days)]


@sensor(job=hourly_refresh, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def new_fills(context: SensorEvaluationContext, postgres: PostgresResource) -> RunRequest | SkipReason:
    """A new fill since the last look: run the hourly path for its day now rather than at the next hour."""
    with psycopg.connect(postgres.url()) as conn:
        row = conn.execute("SELECT max(created_at) FROM fills").fetchone()
    newest = row[0] if row else None
    if newest is None:
        return SkipReason("no fills yet")
    cursor = newest.isoformat()
    if context.cursor == cursor:
        return SkipReason("no new fills")
    context.update_cursor(cursor)
    return RunRequest(partition_key=newest.astimezone(UTC).date().isoformat(), run_key=cursor, tags=HOURLY_TAGS)


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[extract_daily],
    request_job=refresh_marts,
    default_status=DefaultSensorStatus.RUNNING,
)
def marts_after_extract(context: SensorEvaluationContext) -> RunRequest:
    """Every successful extract run (a backfill, a run by hand; the hourly path builds its own marts) rebuilds
    the marts on what it moved, testing the rows the build changed (the nightly ``full_tests`` run tests every
    row)."""
    return RunRequest(run_key=context.dagster_run.run_id, tags=HOURLY_TAGS)  # type: ignore[attr-defined]


@schedule(
    cron_schedule="30 2 * * *",
    job=refresh_marts,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
def full_tests(context: ScheduleEvaluationContext) -> RunRequest:
    """Every night: the marts refreshed with every dbt test reading every row, not only the rows changed since
    the last build (what the hourly refreshes test)."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    return RunRequest(run_key=f"full-tests@{now:%Y-%m-%d}")


FRESHNESS_CHECKS = build_last_update_freshness_checks(
    assets=[raw_key("fills"), raw_key("market_candles")], lower_bound_delta=timedelta(hours=2)
)
with warnings.catch_warnings():  # superseded by FreshnessPolicy, which this Dagster's UI does not evaluate yet
    warnings.simplefilter("ignore")
    freshness_sensor = build_sensor_for_freshness_checks(freshness_checks=FRESHNESS_CHECKS)

JOBS = [hourly_refresh, extract_daily, refresh_marts]
SCHEDULES = [hourly_incremental, full_tests]
SENSORS = [new_fills, marts_after_extract, freshness_sensor]
