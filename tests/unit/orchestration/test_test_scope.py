"""Which dbt test scope each run gets: the refresh after an extract tests the rows it changed, the nightly run
and anything launched by hand test every row."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    build_run_status_sensor_context,
    build_schedule_context,
)

from orchestration.automation import full_tests, marts_after_extract, refresh_marts
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
