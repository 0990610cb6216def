"""The analytics pipeline as Dagster runs it: the Definitions load; every asset materializes end to end on a
generated fund (PostgreSQL -> extracts -> dbt marts -> published copy -> query layer) and the NAV matches an
independent calculation from the fills; a bad row fails its blocking check and the marts are not rebuilt."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, materialize

from orchestration.definitions import defs
from orchestration.extract_assets import EXTRACT_ASSETS, PARTITIONED
from orchestration.resources import PostgresResource, WarehouseResource
from orchestration.transform_assets import dbt_resource, failed_raw_checks, patriot_dbt_models, published_warehouse
from warehouse import queries
from warehouse.demo import Fund, FundSpec, generate_fund
from warehouse.store import WarehouseStore

pytestmark = pytest.mark.integration

ALL_ASSETS = [*EXTRACT_ASSETS, patriot_dbt_models, published_warehouse]


@dataclass
class Pipeline:
    database_url: str
    root: Path
    fund: Fund

    def resources(self) -> dict[str, object]:
        return {
            "postgres": PostgresResource(database_url=self.database_url),
            "warehouse": WarehouseResource(root=str(self.root)),
            "dbt": dbt_resource(),
        }

    def run(self, instance: DagsterInstance) -> tuple[bool, bool]:
        """Extract every day of the fund in one run, then dimensions + dbt + publish; (extract ok, marts ok)."""
        days = {"dagster/asset_partition_range_start": self.fund.start.date().isoformat()}
        days["dagster/asset_partition_range_end"] = self.fund.end.date().isoformat()
        partitioned = [a for a in EXTRACT_ASSETS if a.key.path[-1] in PARTITIONED]
        extract = materialize(
            partitioned, resources=self.resources(), instance=instance, tags=days, raise_on_error=False
        )
        rest = [a for a in ALL_ASSETS if a not in partitioned]
        marts = materialize(
            ALL_ASSETS,
            selection=[k for a in rest for k in a.keys],
            resources=self.resources(),
            instance=instance,
            raise_on_error=False,
        )
        return extract.success, marts.success


@pytest.fixture
def pipeline(migrated_database_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    fund = generate_fund(migrated_database_url, FundSpec(users=3, days=12, fills=400, strategies=2))
    yield Pipeline(migrated_database_url, tmp_path / "warehouse", fund)


def test_definitions_load_with_every_asset_job_schedule_and_sensor() -> None:
    repo = defs.get_repository_def()
    keys = repo.asset_graph.get_all_asset_keys()
    assert AssetKey(["raw", "fills"]) in keys and AssetKey(["warehouse", "published"]) in keys
    assert any(k.path[-1] == "nav_daily" for k in keys) and any(k.path[-1] == "risk_var" for k in keys)
    assert {"extract_daily", "refresh_marts"} <= {j.name for j in repo.get_all_jobs()}
    assert {s.name for s in repo.schedule_defs} == {"hourly_incremental"}
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
