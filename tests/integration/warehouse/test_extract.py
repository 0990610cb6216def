"""PostgreSQL -> DuckDB raw extracts against the real PostgreSQL: values, partitions, idempotence, secrets."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from tests.conftest import Servers, scratch_database
from tests.support import seed_users
from warehouse.extract import RAW_TABLES, SECRET_COLUMNS, extract_all, extract_table

pytestmark = pytest.mark.integration

DAY1 = date(2026, 3, 1)
DAY2 = date(2026, 3, 2)


def at(day: date, hour: int, minute: int = 0, micro: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, 0, micro, tzinfo=UTC)


@dataclass(frozen=True)
class Seeded:
    url: str
    user_id: str
    account_id: str
    other_user_id: str
    strategy_id: str
    order_day1: str
    order_day2: str
    fill_ids_day1: tuple[str, str]
    fill_id_day2: str


@pytest.fixture(scope="module")
def seeded_database_url(servers: Servers) -> Iterator[str]:
    """A migrated database of this module's own: tests that change PostgreSQL roll their changes back."""
    with scratch_database(servers.database_url) as url:
        yield url


@pytest.fixture(scope="module")
async def seeded(seeded_database_url: str) -> Seeded:
    """Two users with an account each, and one account's activity spread over two UTC days."""
    migrated_database_url = seeded_database_url
    async with await psycopg.AsyncConnection.connect(migrated_database_url, autocommit=True) as aconn:
        (user_id, account_id), (other_user_id, _) = await seed_users(aconn, 2)
    order_day1, order_day2 = str(uuid.uuid4()), str(uuid.uuid4())
    fills_day1 = (str(uuid.uuid4()), str(uuid.uuid4()))
    fill_day2 = str(uuid.uuid4())
    strategy_id = str(uuid.uuid4())
    with psycopg.connect(migrated_database_url) as conn:
        conn.execute("UPDATE users SET password_hash = 'argon2id$secret-hash'")
        conn.execute(
            "INSERT INTO strategies (id, name, kind, status, created_at) VALUES (%s, 'grid-btc', 'grid', 'active', %s)",
            (strategy_id, at(DAY1, 0)),
        )
        conn.execute(
            "INSERT INTO strategy_assignments (id, strategy_id, account_id, allocation) VALUES (%s, %s, %s, %s)",
            (str(uuid.uuid4()), strategy_id, account_id, Decimal("0.250000000000000001")),
        )
        conn.cursor().executemany(
            "INSERT INTO capital_flows (id, account_id, user_id, asset, amount, ts, created_at)"
            " VALUES (%s, %s, %s, 'USDT', %s, %s, %s)",
            [
                (str(uuid.uuid4()), account_id, user_id, Decimal("10000.5"), at(DAY1, 1), at(DAY1, 1)),
                (str(uuid.uuid4()), account_id, user_id, Decimal("-2500.25"), at(DAY2, 9), at(DAY2, 9)),
            ],
        )
        conn.cursor().executemany(
            "INSERT INTO orders (id, account_id, user_id, strategy_id, client_order_id, exchange, symbol, side,"
            " order_type, quantity, price, status, filled_quantity, avg_fill_price, fees, reason, version, created_at,"
            " updated_at) VALUES (%s, %s, %s, %s, %s, 'simulator', 'BTCUSDT', %s, 'limit', %s, %s, %s, %s, %s, %s,"
            " %s, 1, %s, %s)",
            [
                (order_day1, account_id, user_id, strategy_id, "c-1", "buy", Decimal("0.5"), Decimal("50000.12"),
                 "partially_filled", Decimal("0.3"), Decimal("50000.12"), Decimal("0.03"), None, at(DAY1, 2),
                 at(DAY1, 3)),
                (order_day2, account_id, user_id, None, "c-2", "sell", Decimal("0.1"), Decimal("51000"),
                 "filled", Decimal("0.1"), Decimal("51000"), Decimal("0.0051"), "", at(DAY2, 10), at(DAY2, 10)),
            ],
        )  # fmt: skip
        conn.cursor().executemany(
            "INSERT INTO fills (id, order_id, account_id, user_id, exchange, symbol, side, trade_id, quantity, price,"
            " fee, fee_asset, liquidity, filled_at, created_at) VALUES (%s, %s, %s, %s, 'simulator', 'BTCUSDT', %s,"
            " %s, %s, %s, %s, 'USDT', %s, %s, %s)",
            [
                (fills_day1[0], order_day1, account_id, user_id, "buy", "t-1", Decimal("0.123456789012345678"),
                 Decimal("50000.12"), Decimal("0.000000000000000001"), "maker", at(DAY1, 3, 0, 123456),
                 at(DAY1, 3, 0, 123456)),
                (fills_day1[1], order_day1, account_id, user_id, "buy", "t-2", Decimal("0.176543210987654322"),
                 Decimal("50000.12"), Decimal("0.03"), None, at(DAY1, 23, 59), at(DAY1, 23, 59)),
                (fill_day2, order_day2, account_id, user_id, "sell", "t-3", Decimal("0.1"), Decimal("51000"),
                 Decimal("0.0051"), "taker", at(DAY2, 10), at(DAY2, 10)),
            ],
        )  # fmt: skip
        conn.execute(
            "INSERT INTO positions (account_id, symbol, user_id, exchange, quantity, avg_entry_price, realized_pnl,"
            " fees) VALUES (%s, 'BTCUSDT', %s, 'simulator', 0.2, 50000.12, 100.000000000000000001, 0.0351)",
            (account_id, user_id),
        )
        conn.execute(
            "INSERT INTO balances (account_id, asset, free, locked)"
            " VALUES (%s, 'USDT', 7480.2, 20), (%s, 'BTC', 0.2, 0)",
            (account_id, account_id),
        )
        conn.cursor().executemany(
            "INSERT INTO market_candles (exchange, symbol, interval, open_time, open, high, low, close, volume, source)"
            " VALUES ('binance', 'BTCUSDT', '1m', %s, %s, %s, %s, %s, %s, %s)",
            [
                (at(DAY1, 3), 50000, 50010, 49990, "50005.5", "12.5", "kline"),
                # the same minute rebuilt from trades: the venue's kline must win in the raw table
                (at(DAY1, 3), 50001, 50011, 49991, "50006.5", "12.4", "trades"),
                (at(DAY1, 3, 1), 50005.5, 50020, 50000, "50015", "3", "kline"),
                (at(DAY2, 0), 51000, 51000, 51000, "51000", "0.1", "kline"),
            ],
        )
        conn.cursor().executemany(
            "INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type, event_version, event_data,"
            " occurred_at, recorded_at) VALUES (%s, %s, 'order', %s, %s, %s, %s, %s)",
            [
                (str(uuid.uuid4()), order_day1, "OrderAccepted", 1, json.dumps({"qty": "0.5", "note": "a,\"b\"\nc"}),
                 at(DAY1, 2), at(DAY1, 2)),
                (str(uuid.uuid4()), order_day1, "OrderFilled", 2, json.dumps({"qty": "0.3"}), at(DAY1, 3), at(DAY1, 3)),
                # occurred late on day 1 but recorded on day 2: the day-2 partition carries it
                (str(uuid.uuid4()), order_day2, "OrderAccepted", 1, json.dumps({"qty": "0.1"}), at(DAY1, 23, 59),
                 at(DAY2, 0, 1)),
            ],
        )  # fmt: skip
        conn.commit()
    return Seeded(
        migrated_database_url,
        user_id,
        account_id,
        other_user_id,
        strategy_id,
        order_day1,
        order_day2,
        fills_day1,
        fill_day2,
    )


@pytest.fixture
def pg(seeded: Seeded) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A connection whose changes the extract sees (same transaction) and that are rolled back afterwards."""
    with psycopg.connect(seeded.url) as conn:
        yield conn
        conn.rollback()


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect(str(tmp_path / "working.duckdb")) as conn:
        yield conn


def rows(duck: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    return duck.execute(sql, params or []).fetchall()


def test_full_extract_copies_every_table_with_exact_decimals_and_utc_times(
    seeded: Seeded, duck: duckdb.DuckDBPyConnection
) -> None:
    counts = extract_all(seeded.url, duck)

    assert counts == {
        "users": 2,
        "user_accounts": 2,
        "strategies": 1,
        "strategy_assignments": 1,
        "capital_flows": 2,
        "orders": 2,
        "fills": 3,
        "balances": 2,
        "position_snapshots": 1,
        "market_candles": 3,
        "event_store": 3,
    }
    for table, n in counts.items():
        assert rows(duck, f"SELECT count(*) FROM raw.{table}") == [(n,)]
    fills = rows(duck, "SELECT trade_id, quantity, price, fee, liquidity, filled_at FROM raw.fills ORDER BY trade_id")
    assert fills == [
        ("t-1", Decimal("0.123456789012345678"), Decimal("50000.12"), Decimal("1E-18"), "maker",
         at(DAY1, 3, 0, 123456)),
        ("t-2", Decimal("0.176543210987654322"), Decimal("50000.12"), Decimal("0.03"), None, at(DAY1, 23, 59)),
        ("t-3", Decimal("0.1"), Decimal("51000"), Decimal("0.0051"), "taker", at(DAY2, 10)),
    ]  # fmt: skip
    assert rows(duck, "SELECT sum(amount) FROM raw.capital_flows") == [(Decimal("7500.25"),)]
    assert rows(duck, "SELECT allocation FROM raw.strategy_assignments") == [(Decimal("0.250000000000000001"),)]
    assert rows(duck, "SELECT strategy_id, price, trigger_price, reason FROM raw.orders ORDER BY created_at") == [
        (seeded.strategy_id, Decimal("50000.12"), None, None),
        (None, Decimal("51000"), None, ""),  # an empty reason stays empty, not NULL
    ]
    assert rows(duck, "SELECT quantity, realized_pnl, user_id FROM raw.position_snapshots") == [
        (Decimal("0.2"), Decimal("100.000000000000000001"), seeded.user_id)
    ]
    assert rows(duck, "SELECT asset, free, locked FROM raw.balances ORDER BY asset") == [
        ("BTC", Decimal("0.2"), Decimal("0")),
        ("USDT", Decimal("7480.2"), Decimal("20")),
    ]
    events = rows(duck, "SELECT event_version, event_data FROM raw.event_store ORDER BY global_position")
    assert json.loads(events[0][1]) == {"qty": "0.5", "note": 'a,"b"\nc'}
    types = dict(rows(duck, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'fills'"))
    assert types["quantity"] == "DECIMAL(38,18)" and types["filled_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["id"] == "VARCHAR"


def test_extract_never_copies_credentials_or_password_hashes(seeded: Seeded, duck: duckdb.DuckDBPyConnection) -> None:
    extract_all(seeded.url, duck)

    columns = {
        (t, c)
        for t, c in rows(
            duck, "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'raw'"
        )
    }
    assert {c for _, c in columns} & SECRET_COLUMNS == set()
    assert {c for t, c in columns if t == "user_accounts"} == {
        "id",
        "user_id",
        "exchange",
        "label",
        "active",
        "created_at",
    }
    assert {c for t, c in columns if t == "users"} == {"id", "username", "role", "status", "created_at"}


def test_rerunning_a_day_replaces_its_rows_without_duplicates(seeded: Seeded, duck: duckdb.DuckDBPyConnection) -> None:
    for _ in range(2):
        for table in ("fills", "capital_flows", "orders", "market_candles", "event_store"):
            extract_table(seeded.url, duck, table, DAY1)

    assert rows(duck, "SELECT count(*), count(DISTINCT id) FROM raw.fills") == [(2, 2)]
    assert rows(duck, "SELECT count(*) FROM raw.capital_flows") == [(1,)]
    assert rows(duck, "SELECT count(*) FROM raw.orders") == [(1,)]
    assert rows(duck, "SELECT count(*), max(close) FROM raw.market_candles") == [(2, Decimal("50015"))]
    assert rows(duck, "SELECT count(*) FROM raw.event_store") == [(2,)]
    assert rows(duck, "SELECT rows, partition_day FROM raw._extract_log WHERE table_name = 'fills'") == [
        (2, DAY1),
        (2, DAY1),
    ]


def test_day_extract_replaces_that_day_and_leaves_other_days_untouched(
    seeded: Seeded, pg: psycopg.Connection[tuple[Any, ...]], duck: duckdb.DuckDBPyConnection
) -> None:
    extract_table(pg, duck, "fills", None)
    pg.execute("UPDATE fills SET fee = 9 WHERE id = %s", (seeded.fill_id_day2,))
    pg.execute("DELETE FROM fills WHERE id = %s", (seeded.fill_ids_day1[1],))

    moved = extract_table(pg, duck, "fills", DAY1)

    assert moved == 1
    assert rows(duck, "SELECT id, fee FROM raw.fills ORDER BY created_at") == [
        (seeded.fill_ids_day1[0], Decimal("1E-18")),  # day 1 as PostgreSQL has it now: the deleted fill is gone
        (seeded.fill_id_day2, Decimal("0.0051")),  # day 2 still as extracted before: this run did not touch it
    ]


def test_order_updated_on_a_later_day_is_upserted_not_duplicated(
    seeded: Seeded, pg: psycopg.Connection[tuple[Any, ...]], duck: duckdb.DuckDBPyConnection
) -> None:
    extract_table(pg, duck, "orders", DAY1)
    pg.execute(
        "UPDATE orders SET status = 'filled', filled_quantity = 0.5, fees = 0.05, updated_at = %s WHERE id = %s",
        (at(DAY2, 12), seeded.order_day1),
    )
    extract_table(pg, duck, "orders", DAY2)
    after_day2 = rows(duck, "SELECT count(*), count(DISTINCT id) FROM raw.orders")
    extract_table(pg, duck, "orders", DAY1)  # a re-run of the earlier day must not bring the old version back

    assert after_day2 == [(2, 2)]
    assert rows(duck, "SELECT count(*) FROM raw.orders") == [(2,)]
    order = rows(
        duck, "SELECT status, filled_quantity, fees, updated_at FROM raw.orders WHERE id = ?", [seeded.order_day1]
    )
    assert order == [("filled", Decimal("0.5"), Decimal("0.05"), at(DAY2, 12))]


def test_event_store_day_partition_follows_recorded_time(seeded: Seeded, duck: duckdb.DuckDBPyConnection) -> None:
    day1 = extract_table(seeded.url, duck, "event_store", DAY1)
    day2 = extract_table(seeded.url, duck, "event_store", DAY2)

    assert (day1, day2) == (2, 1)
    assert rows(duck, "SELECT count(DISTINCT global_position), count(*) FROM raw.event_store") == [(3, 3)]


def test_candle_built_from_trades_loses_to_the_venue_kline(seeded: Seeded, duck: duckdb.DuckDBPyConnection) -> None:
    extract_table(seeded.url, duck, "market_candles", DAY1)

    assert rows(duck, "SELECT open, close, volume FROM raw.market_candles WHERE open_time = ?", [at(DAY1, 3)]) == [
        (Decimal("50000"), Decimal("50005.5"), Decimal("12.5"))
    ]


def test_snapshot_tables_append_one_snapshot_per_run(seeded: Seeded, duck: duckdb.DuckDBPyConnection) -> None:
    first = datetime(2026, 3, 2, 12, tzinfo=UTC)
    second = datetime(2026, 3, 2, 13, tzinfo=UTC)
    for stamp in (first, second):
        extract_table(seeded.url, duck, "balances", DAY2, snapshot_at=stamp)
        extract_table(seeded.url, duck, "position_snapshots", None, snapshot_at=stamp)

    assert rows(duck, "SELECT snapshot_at, count(*) FROM raw.balances GROUP BY ALL ORDER BY 1") == [
        (first, 2),
        (second, 2),
    ]
    assert rows(duck, "SELECT snapshot_at FROM raw.position_snapshots ORDER BY 1") == [(first,), (second,)]


def test_dimension_tables_are_full_copies_even_for_a_day(
    seeded: Seeded, pg: psycopg.Connection[tuple[Any, ...]], duck: duckdb.DuckDBPyConnection
) -> None:
    extract_table(pg, duck, "users", DAY1)
    pg.execute("UPDATE users SET status = 'suspended' WHERE id = %s", (seeded.other_user_id,))
    extract_table(pg, duck, "raw.users", DAY2)

    assert rows(duck, "SELECT id, status FROM raw.users ORDER BY status") == [
        (seeded.user_id, "active"),
        (seeded.other_user_id, "suspended"),
    ]


def test_extract_all_for_a_day_logs_every_table(seeded: Seeded, duck: duckdb.DuckDBPyConnection) -> None:
    counts = extract_all(seeded.url, duck, DAY2)

    assert (counts["fills"], counts["orders"], counts["capital_flows"], counts["event_store"]) == (1, 1, 1, 1)
    log = dict(rows(duck, "SELECT table_name, partition_day FROM raw._extract_log"))
    assert set(log) == set(RAW_TABLES)
    assert {t for t, d in log.items() if d == DAY2} == {
        "capital_flows",
        "orders",
        "fills",
        "market_candles",
        "event_store",
    }


def test_unknown_table_is_refused_before_touching_anything(seeded: Seeded, duck: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="unknown raw table 'outbox'"):
        extract_table(seeded.url, duck, "outbox", None)
    assert rows(duck, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw'") == [(0,)]
