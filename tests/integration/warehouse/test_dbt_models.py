"""The dbt project (dbt_project/) on a small generated fund written directly as raw tables in a DuckDB file.

Two users, three accounts (one on Bybit, marked with Binance candles), two strategies sharing one account 60/40,
deposits and a withdrawal, a few dozen fills over five days of real Binance BTCUSDT (1m candles) and ETHUSDT
(1m resampled to 1h) prices. One ``dbt build`` builds every model and runs every test; the marts are then checked
against independent Python calculations. A second build with planted bad fills must fail naming its tests.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from warehouse.metrics import PERFORMANCE_KEYS, performance, var_table
from warehouse.store import connect_working_file, marts_path_for

ROOT = Path(__file__).resolve().parents[3]
PROJECT_DIR = ROOT / "dbt_project"
CANDLES_DIR = ROOT / "data" / "binance-spot-1m" / "2025"
START = datetime(2025, 1, 2, tzinfo=UTC)
DAYS = 5
END = START + timedelta(days=DAYS)  # the close of the last candles: the end of the last hour of the calendar
TOLERANCE = 1e-9
INTERVAL_SECONDS = {"1m": 60, "1h": 3600}

RAW_DDL = """
CREATE SCHEMA raw;
CREATE TABLE raw.users (id VARCHAR, username VARCHAR, role VARCHAR, status VARCHAR, created_at TIMESTAMPTZ);
CREATE TABLE raw.user_accounts (id VARCHAR, user_id VARCHAR, exchange VARCHAR, label VARCHAR, active BOOLEAN,
    created_at TIMESTAMPTZ);
CREATE TABLE raw.strategies (id VARCHAR, name VARCHAR, kind VARCHAR, status VARCHAR, created_at TIMESTAMPTZ);
CREATE TABLE raw.strategy_assignments (strategy_id VARCHAR, account_id VARCHAR, allocation DECIMAL(38,18),
    active BOOLEAN);
CREATE TABLE raw.capital_flows (id VARCHAR, account_id VARCHAR, user_id VARCHAR, asset VARCHAR,
    amount DECIMAL(38,18), ts TIMESTAMPTZ, created_at TIMESTAMPTZ);
CREATE TABLE raw.orders (id VARCHAR, account_id VARCHAR, user_id VARCHAR, strategy_id VARCHAR,
    client_order_id VARCHAR, exchange VARCHAR, symbol VARCHAR, side VARCHAR, order_type VARCHAR,
    quantity DECIMAL(38,18), price DECIMAL(38,18), trigger_price DECIMAL(38,18), status VARCHAR,
    filled_quantity DECIMAL(38,18), avg_fill_price DECIMAL(38,18), fees DECIMAL(38,18), reason VARCHAR,
    created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ);
CREATE TABLE raw.fills (id VARCHAR, order_id VARCHAR, account_id VARCHAR, user_id VARCHAR, exchange VARCHAR,
    symbol VARCHAR, side VARCHAR, trade_id VARCHAR, quantity DECIMAL(38,18), price DECIMAL(38,18),
    fee DECIMAL(38,18), fee_asset VARCHAR, liquidity VARCHAR, filled_at TIMESTAMPTZ, created_at TIMESTAMPTZ);
CREATE TABLE raw.market_candles (exchange VARCHAR, symbol VARCHAR, interval VARCHAR, open_time TIMESTAMPTZ,
    open DECIMAL(38,18), high DECIMAL(38,18), low DECIMAL(38,18), close DECIMAL(38,18), volume DECIMAL(38,18));
"""


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"patriot-dbt-test/{name}"))


@dataclass(frozen=True)
class Account:
    name: str
    user: str
    exchange: str
    fills: int
    ends_flat: bool  # sells everything on the last day: its round trips then sum to its fill cash flows


ACCOUNTS = (
    Account("alice-main", "alice", "binance", 14, False),
    Account("alice-bybit", "alice", "bybit", 12, False),
    Account("bob-main", "bob", "binance", 12, True),
)
STRATEGIES = {"momentum": ("alice-main", "alice-bybit"), "reversion": ("alice-bybit", "bob-main")}
ALLOCATIONS = {
    ("momentum", "alice-main"): "1",
    ("momentum", "alice-bybit"): "0.6",
    ("reversion", "alice-bybit"): "0.4",
    ("reversion", "bob-main"): "1",
}
FLOWS = (
    ("alice-main", Decimal("100000"), START + timedelta(minutes=10)),
    ("alice-bybit", Decimal("50000"), START + timedelta(hours=2, minutes=30)),
    ("bob-main", Decimal("30000"), START + timedelta(hours=5)),
    ("alice-main", Decimal("20000"), START + timedelta(days=2, hours=12, minutes=34)),
    ("bob-main", Decimal("-5000"), START + timedelta(days=3, hours=15)),
)
# coins transferred in and out (never bought through a fill): their value is part of the NAV, at the mark
COIN_FLOWS = (
    ("alice-main", "BTC", Decimal("0.5"), START + timedelta(hours=1, minutes=5)),
    ("alice-bybit", "ETH", Decimal("4"), START + timedelta(days=1, hours=3, minutes=20)),
    ("alice-main", "BTC", Decimal("-0.2"), START + timedelta(days=3, hours=8, minutes=45)),
)
STEPS = {"BTCUSDT": Decimal("0.00001"), "ETHUSDT": Decimal("0.0001")}


@dataclass(frozen=True)
class Fund:
    raw_path: Path
    fills: list[dict[str, Any]]
    candles: list[tuple[str, str, datetime, Decimal]]  # symbol, interval, open_time, close


def _load_candles(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, datetime], Decimal]:
    """Write BTCUSDT 1m and ETHUSDT 1h (resampled) candles of the window; return every 1m close by minute."""
    for symbol in ("BTCUSDT", "ETHUSDT"):
        con.execute(
            f"CREATE TEMP TABLE m_{symbol} AS SELECT timestamp::TIMESTAMP AT TIME ZONE 'UTC' AS open_time,"
            " open::DECIMAL(38,18) AS open, high::DECIMAL(38,18) AS high, low::DECIMAL(38,18) AS low,"
            " close::DECIMAL(38,18) AS close, volume::DECIMAL(38,18) AS volume"
            f" FROM read_csv(?, types={{'timestamp': 'VARCHAR', 'open': 'VARCHAR', 'high': 'VARCHAR',"
            " 'low': 'VARCHAR', 'close': 'VARCHAR', 'volume': 'VARCHAR'})"
            " WHERE open_time >= ? AND open_time < ?",
            [str(CANDLES_DIR / f"{symbol}_1m.csv.gz"), START, END],
        )
    con.execute(
        "INSERT INTO raw.market_candles SELECT 'binance', 'BTCUSDT', '1m', open_time, open, high, low, close, volume"
        " FROM m_BTCUSDT"
    )
    con.execute(
        "INSERT INTO raw.market_candles SELECT 'binance', 'ETHUSDT', '1h', time_bucket(INTERVAL 1 HOUR, open_time),"
        " arg_min(open, open_time), max(high), min(low), arg_max(close, open_time), sum(volume) FROM m_ETHUSDT"
        " GROUP BY 4"
    )
    closes = {}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for open_time, close in con.execute(f"SELECT open_time, close FROM m_{symbol}").fetchall():
            closes[(symbol, open_time.astimezone(UTC))] = close
    return closes


def _generate_fills(closes: dict[tuple[str, datetime], Decimal]) -> list[dict[str, Any]]:
    """Spot trading of every account: buys within its cash, sells within its holdings, fees in base or USDT."""
    rng = random.Random(20250102)
    fills: list[dict[str, Any]] = []
    for account in ACCOUNTS:
        first_deposit = min(ts for name, _, ts in FLOWS if name == account.name)
        cash = sum((amount for name, amount, ts in FLOWS if name == account.name and amount > 0), Decimal(0))
        holdings = {symbol: Decimal(0) for symbol in STEPS}
        span = (END - timedelta(hours=6) - first_deposit).total_seconds()
        times = sorted(first_deposit + timedelta(seconds=rng.randrange(300, int(span))) for _ in range(account.fills))
        if account.ends_flat:
            times += [END - timedelta(hours=3, minutes=n) for n in (20, 10)]
        for n, filled_at in enumerate(times):
            closing_out = account.ends_flat and n >= account.fills
            symbol = sorted(STEPS)[n - account.fills] if closing_out else rng.choice(sorted(STEPS))
            price = closes[(symbol, filled_at.replace(second=0))]
            if closing_out or (holdings[symbol] > 0 and rng.random() < 0.45):
                fraction = Decimal(1) if closing_out else Decimal(rng.choice(["0.5", "1"]))
                side, quantity = "sell", (holdings[symbol] * fraction).quantize(STEPS[symbol], ROUND_DOWN)
            else:
                budget = cash * Decimal(str(round(rng.uniform(0.05, 0.2), 4)))
                side, quantity = "buy", (budget / price).quantize(STEPS[symbol], ROUND_DOWN)
            if quantity <= 0:
                continue
            in_base = rng.random() < 0.5
            fee = (quantity * Decimal("0.001") * (1 if in_base else price)).quantize(Decimal("1e-8"))
            fee_quote = fee * price if in_base else fee
            signed = quantity if side == "buy" else -quantity
            holdings[symbol] += signed
            cash -= signed * price + fee_quote
            order_id = _id(f"{account.name}/order/{n}")
            # about a third of the orders fill in two parts
            parts = [quantity] if rng.random() < 0.65 or quantity < 4 * STEPS[symbol] else _split(quantity, symbol)
            for part_index, part in enumerate(parts):
                part_fee = fee if len(parts) == 1 else (fee * part / quantity).quantize(Decimal("1e-8"))
                if part_index == len(parts) - 1 and len(parts) > 1:
                    part_fee = fee - sum(f["fee"] for f in fills if f["order_id"] == order_id)
                fills.append({
                    "id": _id(f"{account.name}/fill/{n}/{part_index}"), "order_id": order_id,
                    "account": account, "symbol": symbol, "side": side,
                    "trade_id": f"{account.name}-{n}-{part_index}", "quantity": part, "price": price,
                    "fee": part_fee, "fee_asset": symbol.removesuffix("USDT") if in_base else "USDT",
                    "filled_at": filled_at + timedelta(seconds=part_index),
                })  # fmt: skip
    return fills


def _split(quantity: Decimal, symbol: str) -> list[Decimal]:
    first = (quantity / 2).quantize(STEPS[symbol], ROUND_DOWN)
    return [first, quantity - first]


def _order_row(order_id: str, parts: list[dict[str, Any]]) -> tuple[Any, ...]:
    """A filled market order of its fills, run for one of its account's strategies."""
    account, first = parts[0]["account"], parts[0]
    strategy = next(s for (s, a) in ALLOCATIONS if a == account.name)
    quantity = sum(part["quantity"] for part in parts)
    fees = sum(part["fee"] for part in parts)
    return (order_id, _id(account.name), _id(account.user), _id(strategy), order_id, account.exchange,
            first["symbol"], first["side"], quantity, quantity, first["price"], fees, first["filled_at"],
            parts[-1]["filled_at"])  # fmt: skip


def _fill_row(fill: dict[str, Any]) -> tuple[Any, ...]:
    account = fill["account"]
    return (fill["id"], fill["order_id"], _id(account.name), _id(account.user), account.exchange, fill["symbol"],
            fill["side"], fill["trade_id"], fill["quantity"], fill["price"], fill["fee"], fill["fee_asset"],
            fill["filled_at"], fill["filled_at"])  # fmt: skip


def _write_fund(path: Path) -> Fund:
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(RAW_DDL)
        closes = _load_candles(con)
        fills = _generate_fills(closes)
        created = START - timedelta(days=30)
        users = {account.user for account in ACCOUNTS}
        con.executemany(
            "INSERT INTO raw.users VALUES (?, ?, 'user', 'active', ?)", [(_id(u), u, created) for u in sorted(users)]
        )
        con.executemany(
            "INSERT INTO raw.user_accounts VALUES (?, ?, ?, 'main', true, ?)",
            [(_id(a.name), _id(a.user), a.exchange, created) for a in ACCOUNTS],
        )
        con.executemany(
            "INSERT INTO raw.strategies VALUES (?, ?, ?, 'active', ?)",
            [(_id(s), s, s + "-kind", created) for s in STRATEGIES],
        )
        con.executemany(
            "INSERT INTO raw.strategy_assignments VALUES (?, ?, ?, true)",
            [(_id(s), _id(a), Decimal(share)) for (s, a), share in ALLOCATIONS.items()],
        )
        users_of = {a.name: a.user for a in ACCOUNTS}
        con.executemany(
            "INSERT INTO raw.capital_flows VALUES (?, ?, ?, 'USDT', ?, ?, ?)",
            [(_id(f"flow/{n}"), _id(a), _id(users_of[a]), amount, ts, ts) for n, (a, amount, ts) in enumerate(FLOWS)],
        )
        con.executemany(
            "INSERT INTO raw.capital_flows VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (_id(f"coin-flow/{n}"), _id(a), _id(users_of[a]), asset, amount, ts, ts)
                for n, (a, asset, amount, ts) in enumerate(COIN_FLOWS)
            ],
        )
        orders: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for fill in fills:
            orders[fill["order_id"]].append(fill)
        con.executemany(
            "INSERT INTO raw.orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'market', ?, NULL, NULL, 'filled', ?, ?, ?, NULL,"
            " ?, ?)",
            [_order_row(order_id, parts) for order_id, parts in orders.items()],
        )
        con.executemany(
            "INSERT INTO raw.fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'taker', ?, ?)",
            [_fill_row(fill) for fill in fills],
        )
        candles = [
            (symbol, interval, open_time.astimezone(UTC), close)
            for symbol, interval, open_time, close in con.execute(
                "SELECT symbol, interval, open_time, close FROM raw.market_candles"
            ).fetchall()
        ]
    finally:
        con.close()
    return Fund(path, fills, candles)


def _dbt(
    command: str, workdir: Path, warehouse: Path | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run one dbt command on the project as Dagster does, with its target and logs kept in ``workdir``."""
    dbt = Path(sys.executable).with_name("dbt")
    args = [str(dbt) if dbt.exists() else "dbt", command, "--project-dir", str(PROJECT_DIR), "--profiles-dir"]
    args += [str(PROJECT_DIR), "--target", "duckdb", "--target-path", str(workdir / "target")]
    args += ["--log-path", str(workdir / "logs")]
    environment = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "False", "DO_NOT_TRACK": "1"}
    environment |= {"PATRIOT_ROOT": str(ROOT), **(env or {})}
    environment.pop("PATRIOT_WAREHOUSE_PATH", None)
    environment.pop("PATRIOT_MARTS_PATH", None)
    if warehouse is not None:
        environment["PATRIOT_WAREHOUSE_PATH"] = str(warehouse)
        environment["PATRIOT_MARTS_PATH"] = str(marts_path_for(warehouse))
    started = time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=280)
    return result, time.perf_counter() - started


@pytest.fixture(scope="module")
def fund(tmp_path_factory: pytest.TempPathFactory) -> Fund:
    return _write_fund(tmp_path_factory.mktemp("fund") / "fund.duckdb")


@pytest.fixture(scope="module")
def built(fund: Fund, tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    """The generated fund after a successful ``dbt build`` (models and all their tests)."""
    workdir = tmp_path_factory.mktemp("dbt-build")
    path = workdir / "working.duckdb"
    shutil.copyfile(fund.raw_path, path)
    result, seconds = _dbt("build", workdir, path)
    assert result.returncode == 0, f"dbt build failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    print(f"dbt build on the generated fund: {seconds:.1f} s")
    con = connect_working_file(path, read_only=True)
    yield con
    con.close()


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _mart_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    sql = "SELECT table_name FROM duckdb_tables() WHERE database_name = 'marts'"
    return {name for (name,) in con.execute(sql).fetchall()}


def _allocation_share(strategy: str, account: str) -> float:
    """The strategy's share of the account: its allocation over the account's total allocation."""
    total = sum(Decimal(share) for (_, other), share in ALLOCATIONS.items() if other == account)
    return float(Decimal(ALLOCATIONS[(strategy, account)]) / total)


def _same(actual: float, expected: float) -> bool:
    if math.isnan(expected) or math.isnan(actual):
        return math.isnan(expected) and math.isnan(actual)
    return math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-12)


def _expected_account_navs(fund: Fund) -> dict[str, Decimal]:
    """NAV at END of every account from the raw fills, flows and candle closes, in exact decimals."""
    last_close: dict[str, tuple[datetime, Decimal]] = {}
    for symbol, interval, open_time, close in fund.candles:
        closed_at = open_time + timedelta(seconds=INTERVAL_SECONDS[interval])
        if closed_at <= END and (symbol not in last_close or closed_at > last_close[symbol][0]):
            last_close[symbol] = (closed_at, close)
    navs = {}
    for account in ACCOUNTS:
        cash = sum((amount for name, amount, ts in FLOWS if name == account.name and ts < END), Decimal(0))
        quantities: dict[str, Decimal] = defaultdict(Decimal)
        for fill in (f for f in fund.fills if f["account"] is account and f["filled_at"] < END):
            fee_quote = fill["fee"] if fill["fee_asset"] == "USDT" else fill["fee"] * fill["price"]
            signed = fill["quantity"] if fill["side"] == "buy" else -fill["quantity"]
            quantities[fill["symbol"]] += signed
            cash -= signed * fill["price"] + fee_quote
        for name, asset, amount, ts in COIN_FLOWS:
            if name == account.name and ts < END:
                quantities[f"{asset}USDT"] += amount
        navs[_id(account.name)] = cash + sum((q * last_close[s][1] for s, q in quantities.items()), Decimal(0))
    return navs


def test_dbt_build_on_generated_fund_builds_every_mart(built: duckdb.DuckDBPyConnection) -> None:
    assert _mart_tables(built) == {
        "fct_fills", "fct_orders", "dim_users", "dim_accounts", "dim_strategies", "positions_hourly", "nav_hourly",
        "nav_daily", "performance", "trade_stats", "risk_var", "exposures", "risk_summary",
    }  # fmt: skip
    last_hour = built.execute("SELECT max(hour) FROM marts.nav_hourly").fetchone()[0]
    assert last_hour.astimezone(UTC) == END - timedelta(hours=1)


def test_account_nav_at_last_hour_matches_independent_calculation(built: duckdb.DuckDBPyConnection, fund: Fund) -> None:
    expected = _expected_account_navs(fund)
    actual = dict(
        built.execute(
            "SELECT scope_id, nav FROM marts.nav_hourly WHERE scope = 'account' AND hour = ?",
            [END - timedelta(hours=1)],
        ).fetchall()
    )
    assert set(actual) == set(expected)
    for account_id, nav in expected.items():
        assert abs(actual[account_id] - nav) <= Decimal(str(TOLERANCE)), (account_id, actual[account_id], nav)
    assert all(nav > 10_000 for nav in actual.values())


def test_fund_and_strategy_navs_are_weighted_sums_of_account_navs(built: duckdb.DuckDBPyConnection) -> None:
    navs: dict[tuple[str, str], dict[datetime, Decimal]] = defaultdict(dict)
    for scope, scope_id, hour, nav in built.execute(
        "SELECT scope, scope_id, hour, nav FROM marts.nav_hourly"
    ).fetchall():
        navs[(scope, scope_id)][hour] = nav
    accounts = {scope_id: series for (scope, scope_id), series in navs.items() if scope == "account"}
    assert len(navs[("fund", "")]) == 24 * DAYS
    for hour, fund_nav in navs[("fund", "")].items():
        total = sum((series.get(hour, Decimal(0)) for series in accounts.values()), Decimal(0))
        assert abs(fund_nav - total) <= Decimal(str(TOLERANCE)), (hour, fund_nav, total)
    for strategy, members in STRATEGIES.items():
        for hour, strategy_nav in navs[("strategy", _id(strategy))].items():
            weighted = sum(_allocation_share(strategy, a) * float(accounts[_id(a)].get(hour, 0)) for a in members)
            assert math.isclose(float(strategy_nav), weighted, rel_tol=1e-12), (strategy, hour)


def test_performance_equals_warehouse_metrics_on_nav_returns_for_every_scope(
    built: duckdb.DuckDBPyConnection,
) -> None:
    scopes = built.execute("SELECT DISTINCT scope, scope_id FROM marts.nav_daily").fetchall()
    assert {scope for scope, _ in scopes} == {"account", "user", "strategy", "fund"}
    assert len(scopes) == len(ACCOUNTS) + 2 + len(STRATEGIES) + 1
    for frequency, table, time_column, periods_per_year in (
        ("daily", "nav_daily", "day", 365),
        ("hourly", "nav_hourly", "hour", 8760),
    ):
        for scope, scope_id in scopes:
            returns = [
                r
                for (r,) in built.execute(
                    f'SELECT "return" FROM marts.{table} WHERE scope = ? AND scope_id = ? ORDER BY {time_column}',
                    [scope, scope_id],
                ).fetchall()
                if r is not None
            ]
            expected = performance(returns, periods_per_year=periods_per_year)
            (row,) = _rows(
                built,
                "SELECT * FROM marts.performance WHERE scope = ? AND scope_id = ? AND frequency = ?",
                [scope, scope_id, frequency],
            )
            assert row["periods"] >= (DAYS - 1 if frequency == "daily" else 24 * (DAYS - 1))
            for key in PERFORMANCE_KEYS:
                assert _same(row[key], expected[key]), (scope, scope_id, frequency, key, row[key], expected[key])
            assert row["trades"] > 0 and row["fees"] > 0 and row["turnover"] > 0


def test_risk_var_has_six_rows_per_scope_equal_to_var_table(built: duckdb.DuckDBPyConnection) -> None:
    for scope, scope_id in built.execute("SELECT DISTINCT scope, scope_id FROM marts.nav_daily").fetchall():
        returns = [
            r
            for (r,) in built.execute(
                'SELECT "return" FROM marts.nav_daily WHERE scope = ? AND scope_id = ? ORDER BY day', [scope, scope_id]
            ).fetchall()
            if r is not None
        ]
        rows = _rows(
            built,
            "SELECT method, level, var, cvar FROM marts.risk_var WHERE scope = ? AND scope_id = ?",
            [scope, scope_id],
        )
        assert len(rows) == 6
        expected = {(line["method"], line["level"]): line for line in var_table(returns, (0.95, 0.99))}
        for row in rows:
            line = expected[(row["method"], row["level"])]
            assert _same(row["var"], line["var"]) and _same(row["cvar"], line["cvar"]), (scope, row, line)


def test_trade_stats_of_an_account_that_ends_flat_add_up_to_its_fill_cash_flows(
    built: duckdb.DuckDBPyConnection, fund: Fund
) -> None:
    (flat,) = (a for a in ACCOUNTS if a.ends_flat)
    cash_flows = sum(
        (f["quantity"] if f["side"] == "sell" else -f["quantity"]) * f["price"]
        - (f["fee"] if f["fee_asset"] == "USDT" else f["fee"] * f["price"])
        for f in fund.fills
        if f["account"] is flat
    )
    (row,) = _rows(built, "SELECT * FROM marts.trade_stats WHERE scope = 'account' AND scope_id = ?", [_id(flat.name)])
    assert row["trades"] >= 3
    assert math.isclose(row["expectancy"] * row["trades"], float(cash_flows), rel_tol=1e-9, abs_tol=1e-6)
    assert 0.0 <= row["win_rate"] <= 1.0
    assert not _rows(built, "SELECT * FROM marts.exposures WHERE scope = 'account' AND scope_id = ?", [_id(flat.name)])


def test_a_coin_deposit_is_valued_in_the_nav_and_in_its_hours_flows(
    built: duckdb.DuckDBPyConnection, fund: Fund
) -> None:
    account, asset, amount, at = COIN_FLOWS[0]
    hour = at.replace(minute=0, second=0, microsecond=0)
    closes = [
        (open_time + timedelta(seconds=INTERVAL_SECONDS[interval]), close)
        for symbol, interval, open_time, close in fund.candles
        if symbol == f"{asset}USDT"
        and open_time + timedelta(seconds=INTERVAL_SECONDS[interval]) <= hour + timedelta(hours=1)
    ]
    mark = max(closes)[1]
    (row,) = _rows(
        built,
        "SELECT * FROM marts.nav_hourly WHERE scope = 'account' AND scope_id = ? AND hour = ?",
        [_id(account), hour],
    )
    assert not any(
        name == account and start <= ts < hour + timedelta(hours=1) for name, _, ts in FLOWS for start in [hour]
    )
    assert row["net_flows"] == amount * mark  # the deposit is capital, at the hour's mark: not a return
    assert abs(row["return"]) < 0.05
    (coins,) = _rows(
        built,
        "SELECT * FROM intermediate.int_coins_hourly WHERE account_id = ? AND asset = ? AND hour = ?",
        [_id(account), asset, hour],
    )
    assert coins["quantity"] == amount and coins["mark_price"] == mark
    assert row["positions_value"] >= coins["market_value"] == amount * mark


def test_bad_fills_fail_dbt_build_naming_the_failing_tests(fund: Fund, tmp_path: Path) -> None:
    path = tmp_path / "working.duckdb"
    shutil.copyfile(fund.raw_path, path)
    with duckdb.connect(str(path)) as con:
        # a negative quantity, and a second id for a venue trade already recorded
        con.execute(
            "INSERT INTO raw.fills SELECT ?, order_id, account_id, user_id, exchange, symbol, side, 'negative-1',"
            " -quantity, price, fee, fee_asset, liquidity, filled_at, created_at FROM raw.fills WHERE id = ?",
            [_id("bad/negative"), fund.fills[0]["id"]],
        )
        con.execute(
            "INSERT INTO raw.fills SELECT ?, order_id, account_id, user_id, exchange, symbol, side, trade_id,"
            " quantity, price, fee, fee_asset, liquidity, filled_at, created_at FROM raw.fills WHERE id = ?",
            [_id("bad/duplicate"), fund.fills[1]["id"]],
        )
    result, _ = _dbt("build", tmp_path, path)
    assert result.returncode != 0
    assert "Failure in test stg_fills_quantity_positive" in result.stdout, result.stdout[-4000:]
    assert "Failure in test stg_fills_unique_account_exchange_trade" in result.stdout, result.stdout[-4000:]
    with connect_working_file(path, read_only=True) as con:
        marts = _mart_tables(con)
    assert "nav_hourly" not in marts  # the marts downstream of the failed tests were skipped


def test_a_coin_without_a_mark_fails_dbt_build_naming_its_test(fund: Fund, tmp_path: Path) -> None:
    path = tmp_path / "working.duckdb"
    shutil.copyfile(fund.raw_path, path)
    with duckdb.connect(str(path)) as con:  # a deposit of a coin no candle prices: reported, never valued at 0
        con.execute(
            "INSERT INTO raw.capital_flows SELECT ?, account_id, user_id, 'ZZZ', 3, ts, created_at"
            " FROM raw.capital_flows WHERE id = ?",
            [_id("bad/unpriced"), _id("flow/0")],
        )
    result, _ = _dbt("build", tmp_path, path)
    assert result.returncode != 0
    assert "Failure in test not_null_int_coins_hourly_mark_price" in result.stdout, result.stdout[-4000:]
    assert "ERROR=1 " in result.stdout, result.stdout[-4000:]  # the only failure: the priced coins pass
    with connect_working_file(path, read_only=True) as con:
        assert "nav_hourly" not in _mart_tables(con)  # no NAV published without the coin


def _append_fill(
    con: duckdb.DuckDBPyConnection, like: str, name: str, at: datetime, trade_id: str | None = None, sign: int = 1
) -> None:
    """A new raw fill copied from fill ``like`` (its trade id unless ``trade_id``), recorded at ``at`` and logged
    as an extract of that day, as the hourly extract would leave it."""
    con.execute(
        "INSERT INTO raw.fills SELECT ?, order_id, account_id, user_id, exchange, symbol, side,"
        " coalesce(?, trade_id), ? * quantity, price, fee, fee_asset, liquidity, ?, ? FROM raw.fills WHERE id = ?",
        [_id(name), trade_id, sign, at, at, like],
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS raw._extract_log"
        " (table_name VARCHAR, partition_day DATE, rows BIGINT, extracted_at TIMESTAMPTZ)"
    )
    con.execute("INSERT INTO raw._extract_log VALUES ('fills', ?, 1, now())", [at.date()])


def test_hourly_tests_read_the_changed_rows_and_still_catch_a_repeated_venue_trade(
    built: duckdb.DuckDBPyConnection, fund: Fund, tmp_path: Path
) -> None:
    path = tmp_path / "working.duckdb"
    (built_file,) = built.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    shutil.copyfile(built_file, path)
    shutil.copyfile(marts_path_for(Path(built_file)), marts_path_for(path))
    last = max(fund.fills, key=lambda fill: fill["filled_at"])
    changed_rows = {"PATRIOT_DBT_TESTS": "changed_rows"}

    with connect_working_file(path) as con:
        # an old row broken in place, which no build touches: only a test that reads every row sees it
        con.execute("UPDATE marts.fct_fills SET side = 'hold' WHERE fill_id = ?", [fund.fills[0]["id"]])
        _append_fill(con, last["id"], "hourly/clean", last["filled_at"] + timedelta(seconds=1), trade_id="hourly-1")
    hourly, _ = _dbt("build", tmp_path, path, env=changed_rows)
    assert hourly.returncode == 0, hourly.stdout[-4000:]
    with connect_working_file(path, read_only=True) as con:
        built_now = con.execute("SELECT count(*) FROM marts.fct_fills WHERE fill_id = ?", [_id("hourly/clean")])
        assert built_now.fetchone() == (1,)
    every_row, _ = _dbt("test", tmp_path, path)
    assert every_row.returncode != 0
    assert "Failure in test accepted_values_fct_fills_side__buy__sell" in every_row.stdout, every_row.stdout[-4000:]

    with duckdb.connect(str(path)) as con:
        at = last["filled_at"] + timedelta(seconds=2)
        # a second id for a venue trade recorded long ago, and a new fill with a negative quantity
        _append_fill(con, fund.fills[1]["id"], "hourly/repeat", at)
        _append_fill(con, last["id"], "hourly/negative", at, trade_id="hourly-2", sign=-1)
    hourly, _ = _dbt("build", tmp_path, path, env=changed_rows)
    assert hourly.returncode != 0
    assert "Failure in test stg_fills_unique_account_exchange_trade" in hourly.stdout, hourly.stdout[-4000:]
    assert "Failure in test stg_fills_quantity_positive" in hourly.stdout, hourly.stdout[-4000:]


def test_dbt_parse_without_a_warehouse_writes_the_manifest(tmp_path: Path) -> None:
    result, _ = _dbt("parse", tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    manifest = (tmp_path / "target" / "manifest.json").read_text()
    assert '"model.patriot.nav_hourly"' in manifest and '"model.patriot.performance"' in manifest
