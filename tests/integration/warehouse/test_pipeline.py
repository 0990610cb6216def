"""The analytics pipeline as Dagster runs it: the Definitions load; every asset materializes end to end on a
generated fund (PostgreSQL -> extracts -> dbt marts -> published copy -> query layer) and the NAV matches an
independent calculation from the fills; a bad row fails its blocking check and the marts are not rebuilt."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, materialize

from orchestration.definitions import defs
from orchestration.extract_assets import EXTRACT_ASSETS, PARTITIONED, RAW_CHECKS
from orchestration.quality import QualityResource
from orchestration.resources import PostgresResource, WarehouseResource
from orchestration.transform_assets import (
    CHANGED_ROWS,
    DBT_DIR,
    TEST_SCOPE_TAG,
    dbt_env,
    dbt_executable,
    dbt_resource,
    dbt_target,
    failed_raw_checks,
    patriot_dbt_models,
    published_warehouse,
)
from warehouse import queries
from warehouse.demo import Fund, FundSpec, generate_fund
from warehouse.store import WarehouseStore, attach_marts, marts_path_for

pytestmark = pytest.mark.integration

ALL_ASSETS = [*EXTRACT_ASSETS, *RAW_CHECKS, patriot_dbt_models, published_warehouse]


@dataclass
class Pipeline:
    database_url: str
    root: Path
    fund: Fund

    def resources(self) -> dict[str, object]:
        warehouse = WarehouseResource(root=str(self.root))
        return {
            "postgres": PostgresResource(database_url=self.database_url),
            "warehouse": warehouse,
            "dbt": dbt_resource(warehouse=warehouse),
            "quality": QualityResource(),
        }

    def run(self, instance: DagsterInstance) -> tuple[bool, bool]:
        """Extract every day of the fund in one run, then dimensions + dbt + publish; (extract ok, marts ok)."""
        days = {"dagster/asset_partition_range_start": self.fund.start.date().isoformat()}
        days["dagster/asset_partition_range_end"] = self.fund.end.date().isoformat()
        partitioned = [a.key for a in EXTRACT_ASSETS if a.key.path[-1] in PARTITIONED]  # with their checks
        extract = materialize(
            ALL_ASSETS,
            selection=partitioned,
            resources=self.resources(),
            instance=instance,
            tags=days,
            raise_on_error=False,
        )
        marts = materialize(
            ALL_ASSETS,
            selection=[k for a in ALL_ASSETS for k in a.keys if k not in partitioned],
            resources=self.resources(),
            instance=instance,
            raise_on_error=False,
        )
        return extract.success, marts.success

    def run_day(self, instance: DagsterInstance, day: str) -> bool:
        """The hourly path, one run as the hourly_refresh job runs it: one day's extract partition, dimensions,
        dbt (incremental, its tests on the changed rows) and publishing."""
        selection = [k for a in ALL_ASSETS for k in a.keys]
        tags = {TEST_SCOPE_TAG: CHANGED_ROWS}
        run = materialize(
            ALL_ASSETS, selection=selection, resources=self.resources(), instance=instance, partition_key=day, tags=tags
        )
        return run.success


@pytest.fixture
def pipeline(migrated_database_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    fund = generate_fund(migrated_database_url, FundSpec(users=3, days=12, fills=400, strategies=2))
    yield Pipeline(migrated_database_url, tmp_path / "warehouse", fund)


def test_definitions_load_with_every_asset_job_schedule_and_sensor() -> None:
    repo = defs.get_repository_def()
    keys = repo.asset_graph.get_all_asset_keys()
    assert AssetKey(["raw", "fills"]) in keys and AssetKey(["warehouse", "published"]) in keys
    assert any(k.path[-1] == "nav_daily" for k in keys) and any(k.path[-1] == "risk_var" for k in keys)
    assert {"hourly_refresh", "extract_daily", "refresh_marts"} <= {j.name for j in repo.get_all_jobs()}
    # the hourly path is one run of every asset: the day's extract through to the published marts
    assert set(repo.get_job("hourly_refresh").asset_layer.selected_asset_keys) == keys
    assert {s.name for s in repo.schedule_defs} == {"hourly_incremental", "full_tests"}
    assert {"new_fills", "marts_after_extract"} <= {s.name for s in repo.sensor_defs}
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert "great_expectations" in checks


def independent_nav(database_url: str, account_id: str) -> Decimal:
    """NAV from the system of record alone: deposits + fill cash flows + holdings at the last hourly close."""
    with psycopg.connect(database_url) as conn:
        flows = conn.execute("SELECT sum(amount) FROM capital_flows WHERE account_id = %s", (account_id,)).fetchone()
        fills = conn.execute(
            "SELECT symbol, side, quantity, price, fee FROM fills WHERE account_id = %s", (account_id,)
        ).fetchall()
        closes = dict(
            conn.execute(
                "SELECT DISTINCT ON (symbol) symbol, close FROM market_candles ORDER BY symbol, open_time DESC"
            ).fetchall()
        )
    cash = Decimal(flows[0]) if flows and flows[0] is not None else Decimal(0)
    held: dict[str, Decimal] = {}
    for symbol, side, qty, price, fee in fills:
        cash += (qty * price if side == "sell" else -qty * price) - fee
        held[symbol] = held.get(symbol, Decimal(0)) + (qty if side == "buy" else -qty)
    return cash + sum((q * Decimal(closes[s]) for s, q in held.items()), Decimal(0))


def test_every_asset_materializes_and_nav_matches_the_fills(pipeline: Pipeline) -> None:
    with DagsterInstance.ephemeral() as instance:
        extracted, built = pipeline.run(instance)
    assert extracted and built
    store = WarehouseStore(pipeline.root)
    for account_id in pipeline.fund.accounts:
        nav = queries.nav_series(store, "account", account_id, frequency="hourly")
        assert nav.height > 0
        last = Decimal(str(nav.sort("hour")["nav"][-1]))
        assert abs(last - independent_nav(pipeline.database_url, account_id)) < Decimal("1e-6")
    fund_nav = queries.nav_series(store, "fund", "", frequency="daily")
    assert fund_nav.height >= 10
    performance = queries.performance_table(store, "account")
    assert set(performance["scope_id"]) >= set(pipeline.fund.accounts)
    assert queries.risk_table(store, "fund", "").height == 6


def test_bad_row_fails_its_check_and_blocks_the_marts(pipeline: Pipeline) -> None:
    with psycopg.connect(pipeline.database_url) as conn:  # a corrupted source: the constraint is not there
        conn.execute("ALTER TABLE fills DROP CONSTRAINT ck_fills_quantity_positive")
        conn.execute(
            "INSERT INTO fills (id, order_id, account_id, user_id, exchange, symbol, side, trade_id, quantity, price,"
            " fee, filled_at, created_at) SELECT gen_random_uuid(), order_id, account_id, user_id, exchange, symbol,"
            " side, 'planted', -1, price, 0, filled_at, created_at FROM fills LIMIT 1"
        )
        conn.commit()
    with DagsterInstance.ephemeral() as instance:
        extracted, built = pipeline.run(instance)
        record = instance.get_latest_asset_check_evaluation_record(
            AssetCheckKey(AssetKey(["raw", "fills"]), "great_expectations")
        )
        assert record is not None and record.event is not None and record.event.dagster_event is not None
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed is False  # type: ignore[union-attr]
        assert "quantity" in str(evaluation.metadata["failures"].value)  # type: ignore[union-attr]
        assert failed_raw_checks(instance) == ["raw.fills"]
    assert not extracted and not built  # the marts refused to build on the bad row
    assert WarehouseStore(pipeline.root).current_path() is None  # and nothing was published to readers


INCREMENTAL_MARTS = (
    "marts.fct_fills",
    "marts.fct_orders",
    "marts.positions_hourly",
    "marts.nav_hourly",
    "marts.nav_daily",
    "intermediate.int_account_calendar",
    "intermediate.int_cash_hourly",
    "intermediate.int_positions_hourly",
    "intermediate.int_coins_hourly",
    "intermediate.int_scope_activity",
    "intermediate.int_trade_books",
    "marts.trade_stats",
)


def _mart_differences(built: Path, rebuilt: Path) -> dict[str, int]:
    """Rows in either file's incremental models (and the whole-history tables built from them) that the other
    lacks."""
    with duckdb.connect(str(built), read_only=True) as con:
        attach_marts(con, marts_path_for(built), read_only=True)
        con.execute(f"ATTACH '{rebuilt}' AS rebuilt (READ_ONLY)")
        con.execute(f"ATTACH '{marts_path_for(rebuilt)}' AS rebuilt_marts (READ_ONLY)")
        out = {}
        for table in INCREMENTAL_MARTS:
            schema, name = table.split(".")
            a, b = table, (f"rebuilt_marts.{name}" if schema == "marts" else f"rebuilt.{table}")
            out[table] = sum(
                con.execute(f"SELECT count(*) FROM (SELECT * FROM {x} EXCEPT SELECT * FROM {y})").fetchone()[0]  # type: ignore[index]
                for x, y in ((a, b), (b, a))
            )
        return out


def test_incremental_run_with_new_and_late_fills_equals_a_full_rebuild(pipeline: Pipeline, tmp_path: Path) -> None:
    last_day = pipeline.fund.end.date().isoformat()
    with DagsterInstance.ephemeral() as instance:
        assert pipeline.run(instance) == (True, True)
        store = WarehouseStore(pipeline.root)
        working = store.working_path()
        with store.connect_working(read_only=True) as con:
            before = con.execute("SELECT sum(nav) FROM marts.nav_hourly").fetchone()
        with psycopg.connect(pipeline.database_url) as conn:
            # recorded on the last day: 5 late fills that happened three days earlier (a reconciliation that
            # found them), which must restate every hour since and restart their books' FIFO matching, and 50
            # fills after every fill so far, which the other books continue from their stored state
            conn.execute(
                "INSERT INTO fills (id, order_id, account_id, user_id, exchange, symbol, side, trade_id, quantity,"
                " price, fee, fee_asset, liquidity, filled_at, exchange_ts_ms, created_at)"
                " SELECT gen_random_uuid(), order_id, account_id, user_id, exchange, symbol, side,"
                " trade_id || '-again-' || n, quantity, price, fee, fee_asset, liquidity,"
                " CASE WHEN n <= 5 THEN filled_at - interval '3 days' ELSE latest + n * interval '1 second' END,"
                " exchange_ts_ms,"
                " created_at FROM (SELECT *, row_number() OVER (ORDER BY created_at DESC) AS n FROM fills"
                " WHERE created_at::date = %s) AS f, (SELECT max(filled_at) AS latest FROM fills) AS t WHERE n <= 55",
                (last_day,),
            )
            # and coins moved by capital flows, recorded on the last day: a late BTC deposit three days back (its
            # hours restated in int_coins_hourly and the NAV) and an ETH deposit after every fill so far
            conn.execute(
                "INSERT INTO capital_flows (id, account_id, user_id, asset, amount, ts, note, created_at)"
                " SELECT gen_random_uuid(), a.id, a.user_id, asset, amount, ts, 'coin deposit', %s"
                " FROM (SELECT id, user_id FROM user_accounts ORDER BY id LIMIT 1) AS a,"
                " (VALUES ('BTC', 0.25, %s::timestamptz), ('ETH', 2, %s::timestamptz)) AS c (asset, amount, ts)",
                (pipeline.fund.end, pipeline.fund.end - timedelta(days=3), pipeline.fund.end - timedelta(minutes=1)),
            )
            conn.commit()
        outside = {key: os.environ.get(key) for key in ("PATRIOT_DBT_TESTS", "PATRIOT_WAREHOUSE_PATH")}
        assert pipeline.run_day(instance, last_day)
        # the build's test scope and warehouse were its own: nothing run after it in this process inherits them
        assert {key: os.environ.get(key) for key in outside} == outside
    # the hourly build ran on the parse its dbt child made as the run started, and that parse started from the
    # state the first build left (dbt did not parse the whole project again)
    newest = max((DBT_DIR / "target").glob("patriot_dbt_models-*"), key=lambda p: p.stat().st_mtime)
    parse = (newest / "parse.log").read_text()
    assert "Partial parsing enabled" in parse and "Unable to do partial parsing" not in parse
    assert "partial pars" not in (newest / "dbt.log").read_text().lower()
    # the FIFO state continued from its stored rows (tests/unit/warehouse/test_trade_books.py: how it continues)
    (compiled,) = newest.glob("compiled/**/int_trade_books.py")
    assert "self.is_incremental = True" in compiled.read_text()
    with store.connect_working(read_only=True) as con:
        assert con.execute("SELECT sum(nav) FROM marts.nav_hourly").fetchone() != before
        coins = con.execute("SELECT count(DISTINCT asset), min(hour) FROM intermediate.int_coins_hourly").fetchone()
        assert coins is not None and coins[0] == 2 and coins[1] < pipeline.fund.end - timedelta(days=2)
        late = con.execute(
            "SELECT min(f.filled_at) FROM marts.fct_fills f JOIN raw.fills r ON r.id = f.fill_id"
            " WHERE r.trade_id LIKE '%-again-%'"
        ).fetchone()
        assert late is not None and late[0] < pipeline.fund.end - timedelta(days=2)
    rebuilt = tmp_path / "rebuilt.duckdb"
    shutil.copyfile(working, rebuilt)
    shutil.copyfile(store.marts_path(), marts_path_for(rebuilt))
    command = [dbt_executable(), "build", "--full-refresh", "--project-dir", str(DBT_DIR), "--profiles-dir"]
    command += [str(DBT_DIR), "--target", dbt_target()]
    done = subprocess.run(command, env=dbt_env(rebuilt), cwd=DBT_DIR, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert _mart_differences(working, rebuilt) == dict.fromkeys(INCREMENTAL_MARTS, 0)
