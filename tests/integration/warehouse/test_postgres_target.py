"""The dbt project's production target: ``dbt build --target postgres`` (dbt-postgres) on a generated fund.

One generated fund is extracted once by the real extract (PostgreSQL -> DuckDB ``raw``); the same raw tables are
then copied into the ``raw`` schema of a scratch PostgreSQL warehouse database, so both engines read identical
rows. dbt builds the project on both targets at once; every SQL mart on PostgreSQL must equal its DuckDB twin.
The warehouse database runs in Asia/Kolkata (UTC+05:30): SQL that cut hours or days in the session time zone
instead of UTC would shift rows by half an hour and fail the comparison.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow.csv as pacsv
import pytest
from psycopg.conninfo import conninfo_to_dict

from orchestration.transform_assets import DBT_DIR, dbt_env, dbt_executable
from tests.conftest import Servers, scratch_database
from warehouse.demo import FundSpec, generate_fund
from warehouse.extract import extract_all
from warehouse.store import connect_working_file

pytestmark = pytest.mark.integration

# Every SQL mart and its key (docs/warehouse.md); the Python marts are disabled on the postgres target.
MART_KEYS: dict[str, tuple[str, ...]] = {
    "fct_fills": ("fill_id",),
    "fct_orders": ("order_id",),
    "dim_users": ("user_id",),
    "dim_accounts": ("account_id",),
    "dim_strategies": ("strategy_id",),
    "positions_hourly": ("hour", "account_id", "symbol"),
    "nav_hourly": ("hour", "scope", "scope_id"),
    "nav_daily": ("day", "scope", "scope_id"),
    "exposures": ("scope", "scope_id", "exchange", "symbol"),
    "risk_summary": ("scope", "scope_id"),
}
PYTHON_MARTS = {"performance", "trade_stats", "risk_var", "int_trade_books"}
MONEY_TOLERANCE = Decimal("1e-12")  # NUMERIC(38,18) on both engines: only a different computation differs
FLOAT_REL_TOLERANCE = 1e-12
DBT_TIMEOUT_S = 280


@dataclass(frozen=True)
class Builds:
    """The outcome of ``dbt build`` on both targets from the same raw rows."""

    postgres_url: str
    postgres_run: subprocess.CompletedProcess[str]
    postgres_results: list[dict[str, Any]]
    duckdb_path: Path
    duckdb_run: subprocess.CompletedProcess[str]
    seconds: float


def _postgres_profile_env(database_url: str) -> dict[str, str]:
    """The PATRIOT_DBT_PG_* variables of dbt_project/profiles.yml pointing at ``database_url``."""
    params = conninfo_to_dict(database_url)
    return {
        "PATRIOT_DBT_PG_HOST": str(params.get("host") or "localhost"),
        "PATRIOT_DBT_PG_PORT": str(params.get("port") or 5432),
        "PATRIOT_DBT_PG_USER": str(params.get("user") or "postgres"),
        "PATRIOT_DBT_PG_DBNAME": str(params["dbname"]),
        "PATRIOT_DBT_PG_SSLMODE": "disable",
        "DBT_ENV_SECRET_PATRIOT_DBT_PG_PASSWORD": str(params.get("password") or ""),
    }


def _copy_raw_to_postgres(duck: duckdb.DuckDBPyConnection, database_url: str) -> dict[str, int]:
    """Recreate every DuckDB ``raw`` table in PostgreSQL schema ``raw`` with the same columns and types, and copy
    its rows through Arrow and ``COPY ... (FORMAT csv)``; returns the rows copied per table."""
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in duck.sql(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'raw' ORDER BY table_name, ordinal_position"
    ).fetchall():
        columns.setdefault(table, []).append((column, data_type))  # DuckDB's type names are PostgreSQL's too
    copied = {}
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE SCHEMA raw")
        for table, spec in columns.items():
            conn.execute(f"CREATE TABLE raw.{table} ({', '.join(f'{c} {t}' for c, t in spec)})")
            batch = duck.sql(f"SELECT * FROM raw.{table}").to_arrow_table()
            csv = io.BytesIO()
            # strings are always quoted and NULL is an empty unquoted field: PostgreSQL's CSV keeps them apart
            pacsv.write_csv(batch, csv, pacsv.WriteOptions(include_header=False))
            with conn.cursor().copy(f"COPY raw.{table} FROM STDIN (FORMAT csv)") as copy:
                copy.write(csv.getvalue())
            copied[table] = batch.num_rows
    return copied


def _start_dbt(target: str, workdir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``dbt build`` on one target, with its compiled files and logs kept in ``workdir`` (never the project's)."""
    command = [dbt_executable(), "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    command += ["--target", target, "--target-path", str(workdir / "target"), "--log-path", str(workdir / "logs")]
    return subprocess.Popen(
        command, cwd=DBT_DIR.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=DBT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def builds(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builds]:
    """A generated fund extracted once, then built by dbt on a scratch PostgreSQL database and on DuckDB."""
    workdir = tmp_path_factory.mktemp("postgres-target")
    warehouse_name = f"patriot_test_{uuid.uuid4().hex[:12]}_dw"
    with (
        scratch_database(servers.database_url) as platform_url,
        scratch_database(servers.database_url, migrated=False, name=warehouse_name) as warehouse_url,
    ):
        generate_fund(platform_url, FundSpec(users=3, days=12, fills=400))
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{warehouse_name}\" SET timezone TO 'Asia/Kolkata'")

        raw_path = workdir / "extract.duckdb"  # not raw.duckdb: its catalog would be named like the schema
        with duckdb.connect(str(raw_path)) as duck:
            extract_all(platform_url, duck)
            copied = _copy_raw_to_postgres(duck, warehouse_url)
        assert copied["fills"] > 0 and copied["market_candles"] > 0
        duckdb_path = workdir / "working.duckdb"
        shutil.copyfile(raw_path, duckdb_path)

        started = time.perf_counter()
        postgres = _start_dbt("postgres", workdir / "pg", {**dbt_env(), **_postgres_profile_env(warehouse_url)})
        duck_build = _start_dbt("duckdb", workdir / "duck", dbt_env(duckdb_path))
        postgres_run, duckdb_run = _finish(postgres), _finish(duck_build)
        seconds = time.perf_counter() - started
        results_file = workdir / "pg" / "target" / "run_results.json"
        results = json.loads(results_file.read_text())["results"] if results_file.exists() else []
        yield Builds(warehouse_url, postgres_run, results, duckdb_path, duckdb_run, seconds)


def _failure(run: subprocess.CompletedProcess[str]) -> str:
    return f"dbt build failed:\n{run.stdout[-8000:]}\n{run.stderr[-2000:]}"


@pytest.fixture(scope="module")
def built(builds: Builds) -> Builds:
    """Both builds, which must have succeeded."""
    assert builds.duckdb_run.returncode == 0, "duckdb target: " + _failure(builds.duckdb_run)
    assert builds.postgres_run.returncode == 0, "postgres target: " + _failure(builds.postgres_run)
    print(f"dbt build on postgres and duckdb (concurrently): {builds.seconds:.1f} s")
    return builds


def test_dbt_build_on_postgres_target_builds_every_sql_model_and_passes_every_test(built: Builds) -> None:
    statuses = {r["unique_id"]: r["status"] for r in built.postgres_results}
    assert statuses and set(statuses.values()) == {"success", "pass"}, statuses
    models = {uid.rsplit(".", 1)[-1] for uid in statuses if uid.startswith("model.")}
    assert set(MART_KEYS) <= models
    assert not models & PYTHON_MARTS
    assert sum(uid.startswith("test.") for uid in statuses) >= 50  # the data tests ran, not only the models
    with psycopg.connect(built.postgres_url) as conn:
        marts = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts'")
        assert {name for (name,) in marts} == set(MART_KEYS)
        # the guard of the comparisons below: dbt's sessions ran in a zone where UTC hours and days are not local
        assert conn.execute("SHOW timezone").fetchone() == ("Asia/Kolkata",)


def _postgres_rows(database_url: str, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM marts.{table}")
        return [d.name for d in cur.description or []], cur.fetchall()


def _duckdb_rows(path: Path, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with connect_working_file(path, read_only=True) as con:
        relation = con.sql(f"SELECT * FROM marts.{table}")
        return list(relation.columns), relation.fetchall()


def _keyed(
    columns: list[str], rows: list[tuple[Any, ...]], key: tuple[str, ...]
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    positions = [columns.index(k) for k in key]
    keyed = {tuple(_normal(row[i]) for i in positions): tuple(_normal(v) for v in row) for row in rows}
    assert len(keyed) == len(rows), "duplicate keys"
    return keyed


def _normal(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, Decimal) and isinstance(actual, Decimal):
        return abs(actual - expected) <= MONEY_TOLERANCE
    if isinstance(expected, float) and isinstance(actual, float):
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        return math.isclose(actual, expected, rel_tol=FLOAT_REL_TOLERANCE, abs_tol=1e-15)
    return bool(actual == expected) and type(actual) is type(expected)


@pytest.mark.parametrize("mart", sorted(MART_KEYS))
def test_postgres_mart_equals_duckdb_mart_built_from_the_same_raw_rows(built: Builds, mart: str) -> None:
    pg_columns, pg_rows = _postgres_rows(built.postgres_url, mart)
    duck_columns, duck_rows = _duckdb_rows(built.duckdb_path, mart)
    assert pg_columns == duck_columns
    assert duck_rows, f"marts.{mart} is empty: the comparison would prove nothing"
    postgres, duck = _keyed(pg_columns, pg_rows, MART_KEYS[mart]), _keyed(duck_columns, duck_rows, MART_KEYS[mart])
    assert set(postgres) == set(duck)
    mismatches = [
        (key, column, postgres[key][i], duck[key][i])
        for key in duck
        for i, column in enumerate(duck_columns)
        if not _same(postgres[key][i], duck[key][i])
    ]
    assert not mismatches, f"{len(mismatches)} values differ, first: {mismatches[:5]}"


def test_fund_nav_daily_on_postgres_covers_every_day_of_the_fund(built: Builds) -> None:
    with psycopg.connect(built.postgres_url) as conn:
        days = conn.execute("SELECT day, nav FROM marts.nav_daily WHERE scope = 'fund' ORDER BY day").fetchall()
    assert len(days) >= 12
    assert all(nav > 0 for _, nav in days)
