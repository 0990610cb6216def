"""The live equity (GET /portfolio, from the balances) and the warehouse NAV (the marts, from capital flows and
fills) of one account agree: funded with USDT, BTC and ETH deposits on the simulator, it trades through the
platform, and the analytics pipeline (PostgreSQL -> extracts -> dbt -> marts) runs on the same database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dagster import DagsterInstance

from core.domain.orders import OrderSide
from tests.integration.api.conftest import ApiHarness
from tests.integration.api.test_portfolio import portfolio_when, set_marks
from tests.integration.warehouse.test_pipeline import Pipeline
from warehouse import queries
from warehouse.demo import Fund
from warehouse.store import WarehouseStore

pytestmark = pytest.mark.integration

FUNDING = {"USDT": Decimal("20000"), "BTC": Decimal("0.5"), "ETH": Decimal("3")}
ETH_MARK = Decimal("3300")


def record_deposits(database_url: str, user_id: str, account_id: str, at: datetime) -> None:
    """The funding as the capital flows it was: one deposit per asset."""
    with psycopg.connect(database_url) as conn:
        for asset, amount in FUNDING.items():
            conn.execute(
                "INSERT INTO capital_flows (id, account_id, user_id, asset, amount, ts, note)"
                " VALUES (gen_random_uuid(), %s, %s, %s, %s, %s, 'deposit')",
                (account_id, user_id, asset, amount, at),
            )
        conn.commit()


def write_hourly_candles(database_url: str, marks: dict[str, Decimal], first_hour: datetime, now: datetime) -> None:
    """1h Binance candles closing at ``marks`` from ``first_hour`` through the hour of ``now`` (the last one still
    open): the warehouse marks every hour of the account, and its last hour at the live marks."""
    hours = int((now - first_hour) / timedelta(hours=1)) + 1
    with psycopg.connect(database_url) as conn:
        for symbol, close in marks.items():
            for n in range(hours):
                conn.execute(
                    "INSERT INTO market_candles (exchange, symbol, interval, open_time, open, high, low, close,"
                    " volume) VALUES ('binance', %s, '1h', %s, %s, %s, %s, %s, 1)",
                    (symbol, first_hour + timedelta(hours=n), close, close, close, close),
                )
        conn.commit()


def base_fee_difference(database_url: str, account_id: str, marks: dict[str, Decimal]) -> Decimal:
    """What the two sides may differ by, exactly: a fee the venue takes in the coin bought leaves the balance (the
    live side values it at the mark), the warehouse books it as quote cash at the fill price."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT symbol, price, fee FROM fills WHERE account_id = %s AND side = 'buy'"
            " AND fee_asset || 'USDT' = symbol",
            (account_id,),
        ).fetchall()
    return sum((fee * (price - marks[symbol]) for symbol, price, fee in rows), Decimal(0))


async def test_live_equity_of_an_account_funded_with_coins_equals_the_warehouse_nav(
    api: ApiHarness, tmp_path: Path
) -> None:
    alice = await api.new_user("user", with_account=True, balances={k: str(v) for k, v in FUNDING.items()})
    trader = api.platform.users[-1]
    assert alice.account_id is not None
    deposited_at = datetime.now(UTC) - timedelta(hours=2)
    record_deposits(api.database_url, alice.user_id, alice.account_id, deposited_at)
    bought = await api.platform.place(trader, quantity=Decimal("0.01"))
    await api.platform.wait_status(bought["order_id"], "filled")
    # in BTCUSDT too: the store keys a fill by (account, exchange, trade id), and the simulator numbers trades
    # per symbol, so a first ETHUSDT trade would repeat the BTCUSDT trade id 1 (see the report of this change)
    sold = await api.platform.place(trader, side=OrderSide.SELL, quantity=Decimal("0.1"))
    await api.platform.wait_status(sold["order_id"], "filled")
    with psycopg.connect(api.database_url) as conn:
        (btc_price,) = conn.execute(
            "SELECT max(price) FROM fills WHERE account_id = %s AND side = 'buy'", (alice.account_id,)
        ).fetchone() or (None,)
    marks = {"BTCUSDT": btc_price, "ETHUSDT": ETH_MARK}
    await set_marks(api, {symbol: str(price) for symbol, price in marks.items()})
    await api.state.read_models.invalidate([alice.user_id])  # new marks: read the summary again

    def settled(body: dict[str, Any]) -> bool:
        held = {b["asset"]: Decimal(b["free"]) + Decimal(b["locked"]) for b in body["balances"]}
        return bool(body["positions"]) and held.get("USDT", 0) > FUNDING["USDT"] and held.get("BTC", 1) < 0.5

    live = (await portfolio_when(api, alice, settled))["summary"]
    assert live["unpriced_assets"] == []
    equity = Decimal(live["equity"])
    assert equity > FUNDING["USDT"] + FUNDING["BTC"] * btc_price  # the deposited coins are in the equity

    now = datetime.now(UTC)
    write_hourly_candles(api.database_url, marks, deposited_at.replace(minute=0, second=0, microsecond=0), now)
    fund = Fund([alice.user_id], [alice.account_id], [], deposited_at, now, fills=2)
    pipeline = Pipeline(api.database_url, tmp_path / "warehouse", fund)
    with DagsterInstance.ephemeral() as instance:
        assert await asyncio.to_thread(pipeline.run, instance) == (True, True)
    store = WarehouseStore(pipeline.root)
    for scope, scope_id in (("account", alice.account_id), ("user", alice.user_id)):
        navs = queries.nav_series(store, scope, scope_id, frequency="hourly").sort("hour")
        assert navs["hour"][-1] == now.replace(minute=0, second=0, microsecond=0)
        nav = Decimal(str(navs["nav"][-1]))
        assert abs(nav - equity - base_fee_difference(api.database_url, alice.account_id, marks)) < Decimal("1e-9")
