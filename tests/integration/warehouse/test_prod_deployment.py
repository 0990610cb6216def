"""The production deployment end to end, as Dagster runs it with prod resources: the extracts fill ``raw`` in a
scratch warehouse PostgreSQL database, dbt builds the SQL marts there (``postgres`` target), and the
``python_marts`` asset builds performance / trade_stats / risk_var from them. The same generated fund goes
through the local pipeline (DuckDB extract + dbt-duckdb, run concurrently); the two must agree.

The resources are passed explicitly (``WarehouseResource(deployment="prod", ...)``, dbt's ``postgres`` target);
only the prod definitions load is checked in a separate process with ``PATRIOT_DEPLOYMENT=prod``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from orchestration.extract_assets import EXTRACT_ASSETS, PARTITIONED, RAW_CHECKS
from orchestration.prod_marts import PYTHON_MARTS, python_marts
from orchestration.quality import QualityResource
from orchestration.resources import ROOT, PostgresResource, WarehouseResource
from orchestration.transform_assets import DBT_DIR, dbt_env, dbt_executable, dbt_resource, patriot_dbt_models
from orchestration.transform_assets import published_warehouse as published
from tests.conftest import Servers, scratch_database
from warehouse.demo import Fund, FundSpec, generate_fund
from warehouse.extract import RAW_TABLES, extract_all
from warehouse.store import WarehouseStore, connect_working_file

pytestmark = pytest.mark.integration

TOLERANCE = 1e-9
# what the platform holds for each raw table (a snapshot table: one snapshot per run, and the test runs one)
_DISTINCT_CANDLES = "SELECT DISTINCT exchange, symbol, interval, open_time FROM market_candles"
SOURCE_COUNTS = {name: f"SELECT count(*) FROM {spec.source}" for name, spec in RAW_TABLES.items()}
# one raw row per candle key: the venue's kline wins over a candle built from trades
SOURCE_COUNTS["market_candles"] = f"SELECT count(*) FROM ({_DISTINCT_CANDLES}) AS candles"
MART_KEYS = {
    "performance": ("scope", "scope_id", "frequency"),
    "trade_stats": ("scope", "scope_id"),
    "risk_var": ("scope", "scope_id", "method", "level"),
}


@dataclass(frozen=True)
class Deployments:
    """One fund through both deployments, plus the warehouse row counts after the first and a repeated run."""

    platform_url: str
    warehouse_url: str
    fund: Fund
    local_path: Path
    local_build: subprocess.CompletedProcess[str]
    store_root: Path
    first_counts: dict[str, int]
    second_counts: dict[str, int]
    log_rows: tuple[int, int, int]  # extract log lines after the first run and after the re-run; rows re-moved
    runs_ok: dict[str, bool]


def _days(platform_url: str) -> tuple[date, date]:
    """The first and last UTC day any partitioned row falls in (deposits are recorded before the fund starts)."""
    bounds = " UNION ALL ".join(
        f"SELECT min({s.source_day_column}), max({s.source_day_column}) FROM {s.source}"
        for s in RAW_TABLES.values()
        if s.mode == "incremental"
    )
    with psycopg.connect(platform_url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = [r for r in conn.execute(bounds).fetchall() if r[0] is not None]
    return min(r[0] for r in rows).date(), max(r[1] for r in rows).date()


def _raw_counts(warehouse_url: str) -> dict[str, int]:
    with psycopg.connect(warehouse_url) as conn:
        return {name: conn.execute(f"SELECT count(*) FROM raw.{name}").fetchone()[0] for name in RAW_TABLES}  # type: ignore[index]


@pytest.fixture(scope="module")
def deployments(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployments]:
    warehouse_name = f"patriot_test_{uuid.uuid4().hex[:12]}_dw"
    workdir = tmp_path_factory.mktemp("prod-deployment")
    environ = dict(os.environ)  # the dbt asset exports its profile's variables: put them back afterwards
    with (
        scratch_database(servers.database_url) as platform_url,
        scratch_database(servers.database_url, migrated=False, name=warehouse_name) as warehouse_url,
    ):
        try:
            fund = generate_fund(platform_url, FundSpec(users=3, days=12, fills=400))
            with psycopg.connect(servers.database_url, autocommit=True) as conn:  # UTC days must not be local days
                conn.execute(f"ALTER DATABASE \"{warehouse_name}\" SET timezone TO 'Asia/Kolkata'")

            # local: the DuckDB extract and dbt-duckdb build, run while the prod pipeline runs
            local_path = workdir / "working.duckdb"
            with duckdb.connect(str(local_path)) as duck:
                extract_all(platform_url, duck)
            command = [dbt_executable(), "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
            command += ["--target", "duckdb", "--target-path", str(workdir / "target"), "--log-path", str(workdir)]
            local = subprocess.Popen(
                command, cwd=ROOT, env=dbt_env(local_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )

            store_root = workdir / "prod-store"  # prod never writes a DuckDB file: this must stay empty
            warehouse = WarehouseResource(root=str(store_root), deployment="prod", database_url=warehouse_url)
            resources: dict[str, Any] = {
                "postgres": PostgresResource(database_url=platform_url),
                "warehouse": warehouse,
                "dbt": dbt_resource("postgres", warehouse),
                "quality": QualityResource(),
            }
            first, last = _days(platform_url)
            partitioned = [a for a in EXTRACT_ASSETS if a.key.path[-1] in PARTITIONED]
            rest = [a for a in EXTRACT_ASSETS if a not in partitioned] + [patriot_dbt_models, published]
            everything = [*partitioned, *rest, *RAW_CHECKS]
            extracts = [a.key for a in partitioned]  # with their checks
            runs_ok = {}
            with DagsterInstance.ephemeral() as instance:
                tags = {
                    "dagster/asset_partition_range_start": first.isoformat(),
                    "dagster/asset_partition_range_end": last.isoformat(),
                }

                def run(assets: list[Any], **options: Any) -> bool:
                    done = materialize(assets, resources=resources, instance=instance, raise_on_error=False, **options)
                    return done.success

                runs_ok["extract"] = run(everything, selection=extracts, tags=tags)
                runs_ok["dbt"] = run(everything, selection=[k for a in rest for k in a.keys])
                runs_ok["python_marts"] = run([python_marts])
                first_counts = _raw_counts(warehouse_url)
                with psycopg.connect(warehouse_url) as conn:
                    logged = conn.execute("SELECT count(*) FROM raw._extract_log").fetchone()[0]  # type: ignore[index]
                middle = first + timedelta(days=(last - first).days // 2)
                runs_ok["again"] = run(everything, selection=extracts, partition_key=middle.isoformat())
                second_counts = _raw_counts(warehouse_url)
                with psycopg.connect(warehouse_url) as conn:
                    relogged = conn.execute("SELECT count(*) FROM raw._extract_log").fetchone()[0]  # type: ignore[index]
                    moved = conn.execute(
                        "SELECT sum(rows) FROM raw._extract_log WHERE partition_day = %s", (middle,)
                    ).fetchone()[0]  # type: ignore[index]

            try:
                stdout, stderr = local.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                local.kill()
                raise
            local_build = subprocess.CompletedProcess(command, local.returncode, stdout, stderr)
            yield Deployments(
                platform_url,
                warehouse_url,
                fund,
                local_path,
                local_build,
                store_root,
                first_counts,
                second_counts,
                (logged, relogged, int(moved or 0)),
                runs_ok,
            )
        finally:
            os.environ.clear()
            os.environ.update(environ)


@pytest.fixture(scope="module")
def built(deployments: Deployments) -> Deployments:
    assert deployments.runs_ok == dict.fromkeys(("extract", "dbt", "python_marts", "again"), True)
    assert deployments.local_build.returncode == 0, deployments.local_build.stdout[-4000:]
    return deployments


def test_prod_extract_fills_raw_with_every_platform_row(built: Deployments) -> None:
    with psycopg.connect(built.platform_url) as conn:
        expected = {name: conn.execute(sql).fetchone()[0] for name, sql in SOURCE_COUNTS.items()}  # type: ignore[index]
    assert built.first_counts == expected
    assert expected["fills"] > 0 and expected["orders"] > 0 and expected["capital_flows"] > 0
    with psycopg.connect(built.warehouse_url) as conn:  # the contract's types, as in DuckDB
        types = dict(
            conn.execute(
                "SELECT column_name, data_type || coalesce('(' || numeric_precision || ',' || numeric_scale || ')', '')"
                " FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = 'fills'"
            ).fetchall()
        )
    assert types["price"] == "numeric(38,18)" and types["filled_at"] == "timestamp with time zone"


def test_prod_extract_rerun_of_a_partition_replaces_its_rows_without_duplicates(built: Deployments) -> None:
    assert built.second_counts == built.first_counts
    logged, relogged, moved = built.log_rows
    assert relogged == logged + len(PARTITIONED)  # the re-run was logged, one line per table
    assert moved > 0  # and it moved the day's rows again: they replaced, not joined, the first run's


def test_prod_publish_writes_no_duckdb_copy(built: Deployments) -> None:
    assert WarehouseStore(built.store_root).current_path() is None
    assert not built.store_root.exists() or not any(built.store_root.rglob("*.duckdb"))


def test_prod_fund_nav_daily_equals_the_local_pipeline(built: Deployments) -> None:
    with psycopg.connect(built.warehouse_url) as conn:
        prod = dict(conn.execute("SELECT day, nav FROM marts.nav_daily WHERE scope = 'fund' ORDER BY day").fetchall())
    with connect_working_file(built.local_path, read_only=True) as con:
        local = dict(con.execute("SELECT day, nav FROM marts.nav_daily WHERE scope = 'fund' ORDER BY day").fetchall())
    assert len(prod) >= 12 and prod.keys() == local.keys()
    assert all(abs(prod[d] - local[d]) <= Decimal("1e-12") for d in local), "fund NAV differs between deployments"


def _rows(
    columns: list[str], rows: list[tuple[Any, ...]], key: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    out = {}
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        out[tuple(record[k] for k in key)] = record
    assert len(out) == len(rows), "duplicate keys"
    return out


def _close(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        if actual is None or expected is None:
            return actual is None and expected is None
        if math.isnan(expected) or math.isinf(expected):
            return (math.isnan(expected) and math.isnan(actual)) or actual == expected
        return math.isclose(actual, expected, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    return bool(actual == expected)


@pytest.mark.parametrize("mart", PYTHON_MARTS)
def test_prod_python_mart_covers_every_scope_and_equals_the_local_one(built: Deployments, mart: str) -> None:
    key = MART_KEYS[mart]
    with psycopg.connect(built.warehouse_url) as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT * FROM marts.{mart}")
        prod = _rows([d.name for d in cursor.description or []], cursor.fetchall(), key)
        scopes = set(conn.execute("SELECT DISTINCT scope, scope_id FROM marts.nav_daily").fetchall())
    with connect_working_file(built.local_path, read_only=True) as con:
        relation = con.sql(f"SELECT * FROM marts.{mart}")
        local = _rows(list(relation.columns), relation.fetchall(), key)
    assert {(k[0], k[1]) for k in prod} == scopes and len(scopes) > 4  # fund, users, accounts, strategies
    assert prod.keys() == local.keys()
    columns = next(iter(local.values())).keys()
    assert next(iter(prod.values())).keys() == columns
    differences = [
        (k, c, prod[k][c], local[k][c]) for k in local for c in columns if not _close(prod[k][c], local[k][c])
    ]
    assert not differences, f"{len(differences)} values differ, first: {differences[:5]}"


def test_prod_definitions_load_with_the_python_marts_asset() -> None:
    script = (
        "from orchestration.definitions import defs\n"
        "keys = defs.get_repository_def().asset_graph.get_all_asset_keys()\n"
        "names = {k.to_user_string() for k in keys}\n"
        "assert {'marts/performance', 'marts/trade_stats', 'marts/risk_var', 'marts/nav_daily'} <= names, names\n"
        "print('ok')\n"
    )
    env = {**dbt_env(), "PATRIOT_DEPLOYMENT": "prod"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    assert AssetKey(["marts", "performance"]) in python_marts.keys
