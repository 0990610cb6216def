"""/admin/system shows the market data's open trade gaps, written by the collector's real gap store."""

from __future__ import annotations

import pytest

from realtime.marketdata.gaps import PostgresGapStore, TradeGap
from tests.integration.api.conftest import ApiHarness

pytestmark = pytest.mark.integration


async def test_open_trade_gaps_are_counted_in_the_system_view_and_closed_ones_are_not(api: ApiHarness) -> None:
    admin = await api.new_user("admin")
    store = PostgresGapStore(api.database_url)
    before = (await api.client.get("/admin/system", headers=api.headers(admin))).json()["trade_gaps"]
    assert before == {"open": 0, "missing_trades": 0, "oldest": []}

    still_open = await store.open(TradeGap("binance", "BTCUSDT", 101, 140))
    await store.attempted(still_open, "418 banned")
    filled = await store.open(TradeGap("binance", "ETHUSDT", 7, 9))
    await store.close(filled)

    gaps = (await api.client.get("/admin/system", headers=api.headers(admin))).json()["trade_gaps"]
    assert gaps["open"] == 1 and gaps["missing_trades"] == 40
    [listed] = gaps["oldest"]
    assert (listed["venue"], listed["symbol"], listed["first_missing_id"], listed["last_missing_id"]) == (
        "binance",
        "BTCUSDT",
        101,
        140,
    )
    assert listed["attempts"] == 1
