"""Read-model queries over published marts: values, ordering, filters, and refusal of bad scopes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from warehouse.metrics import PERFORMANCE_KEYS, VAR_METHODS
from warehouse.queries import exposures, nav_series, performance_table, risk_summary, risk_table
from warehouse.store import NothingPublishedError, WarehouseStore

ACCOUNT = "0b6f7c2e-0000-4000-8000-000000000001"
OTHER_ACCOUNT = "0b6f7c2e-0000-4000-8000-000000000002"


def hour(h: int) -> datetime:
    return datetime(2026, 3, 1, h, tzinfo=UTC)


MARTS = f"""
CREATE TABLE marts.nav_daily (day DATE, scope VARCHAR, scope_id VARCHAR, nav DECIMAL(38,18),
    net_flows DECIMAL(38,18), "return" DOUBLE);
INSERT INTO marts.nav_daily VALUES
    ('2026-03-01', 'account', '{ACCOUNT}', 1000, 1000, NULL),
    ('2026-03-03', 'account', '{ACCOUNT}', 1050.5, 0, 0.02),
    ('2026-03-02', 'account', '{ACCOUNT}', 1030, 0, 0.03),
    ('2026-03-02', 'account', '{OTHER_ACCOUNT}', 5, 0, 0.5),
    ('2026-03-02', 'fund', '', 1035, 0, 0.025);
CREATE TABLE marts.nav_hourly (hour TIMESTAMPTZ, scope VARCHAR, scope_id VARCHAR, cash DECIMAL(38,18),
    positions_value DECIMAL(38,18), nav DECIMAL(38,18), net_flows DECIMAL(38,18), "return" DOUBLE);
INSERT INTO marts.nav_hourly VALUES
    ('2026-03-01 01:00:00+00', 'account', '{ACCOUNT}', 400, 600, 1000, 1000, NULL),
    ('2026-03-01 02:00:00+00', 'account', '{ACCOUNT}', 400, 610, 1010, 0, 0.01),
    ('2026-03-01 03:00:00+00', 'account', '{ACCOUNT}', 400, 605, 1005, 0, -0.00495);
CREATE TABLE marts.performance (scope VARCHAR, scope_id VARCHAR, frequency VARCHAR,
    {", ".join(f"{key} DOUBLE" for key in PERFORMANCE_KEYS)}, turnover DOUBLE, fees DECIMAL(38,18), trades BIGINT);
INSERT INTO marts.performance BY NAME SELECT 'account' AS scope, '{ACCOUNT}' AS scope_id, 'daily' AS frequency,
    1.5 AS sharpe, 0.05 AS total_return, 12 AS trades, 0.0351 AS fees;
INSERT INTO marts.performance BY NAME SELECT 'fund' AS scope, '' AS scope_id, 'daily' AS frequency,
    2.0 AS sharpe, 30 AS trades;
INSERT INTO marts.performance BY NAME SELECT 'account' AS scope, '{ACCOUNT}' AS scope_id, 'hourly' AS frequency,
    1.2 AS sharpe, 12 AS trades;
CREATE TABLE marts.risk_var (scope VARCHAR, scope_id VARCHAR, method VARCHAR, level DOUBLE, var DOUBLE,
    cvar DOUBLE);
INSERT INTO marts.risk_var
    SELECT 'fund', '', m.method, l.level, -0.01 * l.level * m.k, -0.02 * l.level * m.k
    FROM (VALUES ('cornish_fisher', 3), ('historical', 1), ('gaussian', 2)) m(method, k),
         (VALUES (0.99), (0.95)) l(level);
INSERT INTO marts.risk_var VALUES ('account', '{ACCOUNT}', 'historical', 0.95, -0.5, -0.6);
CREATE TABLE marts.exposures (scope VARCHAR, scope_id VARCHAR, exchange VARCHAR, symbol VARCHAR,
    gross DECIMAL(38,18), net DECIMAL(38,18), share_of_gross DOUBLE);
INSERT INTO marts.exposures VALUES
    ('fund', '', 'binance', 'ETHUSDT', 250, -250, 0.25),
    ('fund', '', 'bybit', 'BTCUSDT', 750, 750, 0.75),
    ('account', '{ACCOUNT}', 'bybit', 'BTCUSDT', 10, 10, 1.0);
CREATE TABLE marts.risk_summary (scope VARCHAR, scope_id VARCHAR, gross_exposure DECIMAL(38,18),
    net_exposure DECIMAL(38,18), nav DECIMAL(38,18), leverage DOUBLE, concentration_hhi DOUBLE,
    largest_position_share DOUBLE);
INSERT INTO marts.risk_summary VALUES
    ('fund', '', 1000, 500, 1035, 0.966, 0.625, 0.75),
    ('account', '{ACCOUNT}', 10, 10, 1050.5, 0.0095, 1.0, 1.0);
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> WarehouseStore:
    """Marts as dbt would leave them, published once for every test of this module."""
    store = WarehouseStore(tmp_path_factory.mktemp("warehouse"))
    with store.connect_working() as writer:
        writer.execute(MARTS)
        store.publish(writer)
    return store


def test_daily_nav_of_one_account_comes_oldest_first_with_exact_values(store: WarehouseStore) -> None:
    frame = nav_series(store, "account", ACCOUNT)

    assert frame.columns == ["day", "nav", "net_flows", "return"]
    assert frame["day"].to_list() == [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    assert frame["nav"].to_list() == [Decimal("1000"), Decimal("1030"), Decimal("1050.5")]
    assert frame["return"].to_list() == [None, 0.03, 0.02]


def test_daily_nav_window_includes_start_and_excludes_end(store: WarehouseStore) -> None:
    frame = nav_series(store, "account", ACCOUNT, start=date(2026, 3, 2), end=date(2026, 3, 3))

    assert frame["day"].to_list() == [date(2026, 3, 2)]


def test_hourly_nav_carries_cash_and_positions_in_utc(store: WarehouseStore) -> None:
    frame = nav_series(store, "account", ACCOUNT, frequency="hourly", start=hour(2))

    assert frame.columns == ["hour", "cash", "positions_value", "nav", "net_flows", "return"]
    assert frame["hour"].dt.convert_time_zone("UTC").to_list() == [hour(2), hour(3)]
    assert frame["positions_value"].to_list() == [Decimal("610"), Decimal("605")]


def test_fund_nav_uses_the_empty_scope_id(store: WarehouseStore) -> None:
    assert nav_series(store, "fund", "")["nav"].to_list() == [Decimal("1035")]


def test_scope_id_is_bound_as_a_value_never_spliced_into_sql(store: WarehouseStore) -> None:
    frame = nav_series(store, "account", "x' OR '1'='1")

    assert frame.height == 0


def test_performance_table_filters_by_scope_and_carries_every_metric(store: WarehouseStore) -> None:
    everything = performance_table(store)
    accounts = performance_table(store, "account")

    assert everything.height == 3
    assert accounts.select("frequency", "sharpe", "trades").rows() == [("daily", 1.5, 12), ("hourly", 1.2, 12)]
    assert set(PERFORMANCE_KEYS) | {"turnover", "fees", "trades"} <= set(accounts.columns)
    assert accounts["fees"].to_list()[0] == Decimal("0.0351")


def test_risk_table_lists_each_method_at_each_level_in_a_stable_order(store: WarehouseStore) -> None:
    frame = risk_table(store, "fund", "")

    assert frame.select("level", "method").rows() == [(level, m) for level in (0.95, 0.99) for m in VAR_METHODS]
    historical_99 = frame.filter((pl.col("method") == "historical") & (pl.col("level") == 0.99))
    assert historical_99.select("var", "cvar").rows() == [(pytest.approx(-0.0099), pytest.approx(-0.0198))]


def test_exposures_come_largest_gross_first(store: WarehouseStore) -> None:
    frame = exposures(store, "fund", "")

    assert frame.select("exchange", "symbol", "net").rows() == [
        ("bybit", "BTCUSDT", Decimal("750")),
        ("binance", "ETHUSDT", Decimal("-250")),
    ]


def test_risk_summary_of_all_scopes_or_one_level(store: WarehouseStore) -> None:
    assert risk_summary(store)["scope"].to_list() == ["account", "fund"]
    fund = risk_summary(store, "fund")
    assert fund.select("gross_exposure", "leverage", "largest_position_share").rows() == [
        (Decimal("1000"), 0.966, 0.75)
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: nav_series(s, "desk", "x"), "scope must be one of account, user, strategy, fund"),
        (lambda s: nav_series(s, "account", ACCOUNT, frequency="weekly"), "frequency must be one of daily, hourly"),
        (lambda s: risk_table(s, "fund", ACCOUNT), "the fund scope has scope_id ''"),
        (lambda s: exposures(s, "account", ""), "scope 'account' needs a scope_id"),
        (lambda s: performance_table(s, "funds"), "scope must be one of"),
        (lambda s: risk_summary(s, "'; DROP TABLE marts.nav_daily; --"), "scope must be one of"),
    ],
)
def test_bad_scope_or_frequency_is_refused_with_a_clear_message(
    store: WarehouseStore, call: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(store)  # type: ignore[operator]


def test_queries_before_any_publish_tell_to_run_the_pipeline(tmp_path: Path) -> None:
    with pytest.raises(NothingPublishedError, match="run the warehouse pipeline"):
        risk_summary(WarehouseStore(tmp_path))
