"""The one Dagster ``Definitions`` of the platform (``workspace.yaml`` points here): extract assets grouped by
layer, the dbt models, the publish step, their checks, jobs, schedules and sensors, and the resources of this
deployment (``PATRIOT_DEPLOYMENT``: local DuckDB + dbt ``duckdb`` target, or prod's warehouse PostgreSQL +
``postgres`` target, where the ``python_marts`` asset builds the Python marts dbt-postgres cannot)."""

from __future__ import annotations

from dagster import AssetsDefinition, Definitions, in_process_executor

from orchestration.automation import FRESHNESS_CHECKS, JOBS, SCHEDULES, SENSORS
from orchestration.extract_assets import EXTRACT_ASSETS, RAW_CHECKS
from orchestration.quality import QualityResource
from orchestration.resources import PostgresResource, WarehouseResource, deployment
from orchestration.transform_assets import dbt_resource, patriot_dbt_models, published_warehouse


def _deployment_assets() -> list[AssetsDefinition]:
    """prod: the Python marts, which the local dbt-duckdb build makes itself (same asset keys)."""
    if deployment() != "prod":
        return []
    from orchestration.prod_marts import python_marts

    return [python_marts]


WAREHOUSE = WarehouseResource()  # one resource: the dbt resource parses for the run's warehouse (its start)

defs = Definitions(
    assets=[*EXTRACT_ASSETS, patriot_dbt_models, published_warehouse, *_deployment_assets()],
    asset_checks=[*FRESHNESS_CHECKS, *RAW_CHECKS],
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources={
        "postgres": PostgresResource(),
        "warehouse": WAREHOUSE,
        "dbt": dbt_resource(warehouse=WAREHOUSE),
        "quality": QualityResource(),
    },
    # DuckDB has one writing process per file: a run's steps share this process, and runs queue one at a time
    # (``max_concurrent_runs: 1`` in the instance's dagster.yaml, written by ``patriot analytics``)
    executor=in_process_executor,
)
