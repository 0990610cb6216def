"""Real market-data return series shipped with the project, shared by the metric tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[3] / "data"
BITSTAMP_DAILY = DATA / "daily" / "bitstamp_BTC_ETH_LTC_USD_daily.csv"
BINANCE_BTC_1M = DATA / "binance-spot-1m" / "2025" / "BTCUSDT_1m.csv.gz"


@pytest.fixture(scope="session")
def btc_daily_returns() -> pd.Series:
    """Bitstamp BTC/USD daily close-to-close returns, 2014-11-29 .. 2020-01-17 (one 13-day gap in April 2019)."""
    closes = pd.read_csv(BITSTAMP_DAILY, index_col=0, parse_dates=True)["BTC:close"]
    return closes.pct_change().dropna().rename("btc_daily")


@pytest.fixture(scope="session")
def btc_hourly_returns() -> pd.Series:
    """Binance BTCUSDT hourly returns from the last 1-minute close of each hour, 2025-01-01 .. 2025-02-04 (833)."""
    candles = pd.read_csv(BINANCE_BTC_1M, parse_dates=["timestamp"], index_col="timestamp")
    hourly_closes = candles["close"].resample("1h").last()
    return hourly_closes.pct_change().dropna().rename("btc_hourly")
