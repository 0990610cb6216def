"""Which dbt test scope each run gets: the hourly path and the refresh after an extract test the rows they
changed, the nightly run and anything launched by hand test every row."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    build_run_status_sensor_context,
    build_schedule_context,
)

from orchestration.automation import full_tests, hourly_incremental, hourly_refresh, marts_after_extract, refresh_marts
from orchestration.definitions import defs
from orchestration.transform_assets import CHANGED_ROWS, TEST_SCOPE_TAG, dbt_test_scope


def test_only_a_run_tagged_changed_rows_scopes_the_tests() -> None:
    assert dbt_test_scope({TEST_SCOPE_TAG: CHANGED_ROWS}) == "changed_rows"
    assert dbt_test_scope({}) == "all"  # a run launched from the UI
    assert dbt_test_scope({TEST_SCOPE_TAG: "anything else"}) == "all"


def test_the_refresh_after_an_extract_asks_for_changed_rows() -> None:
    with DagsterInstance.ephemeral() as instance:
        run = instance.create_run_for_job(defs.resolve_job_def("extract_daily"))
        context = build_run_status_sensor_context(
            sensor_name=marts_after_extract.name,
            dagster_event=DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name),
            dagster_instance=instance,
            dagster_run=run,
        )
        request = marts_after_extract(context)
    assert request.run_key == run.run_id
    assert dbt_test_scope(request.tags) == "changed_rows"


def test_the_nightly_refresh_tests_every_row() -> None:
    request = full_tests(build_schedule_context(scheduled_execution_time=datetime(2026, 12, 2, 2, 30, tzinfo=UTC)))
    assert full_tests.job_name == refresh_marts.name and full_tests.cron_schedule == "30 2 * * *"
    assert request.run_key == "full-tests@2026-12-02" and dbt_test_scope(request.tags) == "all"


def test_the_hourly_path_is_one_run_of_the_day_testing_changed_rows() -> None:
    at = datetime(2026, 12, 2, 5, 5, tzinfo=UTC)
    requests = hourly_incremental(build_schedule_context(scheduled_execution_time=at))
    assert hourly_incremental.job_name == hourly_refresh.name
    assert [(r.partition_key, r.run_key) for r in requests] == [("2026-12-02", "2026-12-02@2026-12-02T05")]
    assert dbt_test_scope(requests[0].tags) == "changed_rows"
    # the job runs the day's extract and the marts together
    job = defs.resolve_job_def(hourly_refresh.name)
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert {"raw/fills", "raw/users", "warehouse/published"} <= selected


def test_the_first_hour_of_a_day_also_runs_the_day_before() -> None:
    at = datetime(2026, 12, 2, 0, 5, tzinfo=UTC)
    requests = hourly_incremental(build_schedule_context(scheduled_execution_time=at))
    assert [r.partition_key for r in requests] == ["2026-12-01", "2026-12-02"]
    assert all(dbt_test_scope(r.tags) == "changed_rows" for r in requests)
