"""CandleBuilder against an independent Decimal aggregation of the capture's trades, and its closing rules."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from realtime.marketdata.binance import BinanceParser, is_depth_snapshot, iter_capture
from realtime.marketdata.candles import CandleBuilder
from realtime.marketdata.models import Candle, Trade

CAPTURE = Path(__file__).resolve().parents[3] / "data" / "binance-ws-capture" / "spot" / "btcusdt_20240808.gz"


@pytest.fixture(scope="module")
def capture_trades() -> tuple[list[Trade], list[dict[str, object]]]:
    parser = BinanceParser()
    trades: list[Trade] = []
    raw_trades: list[dict[str, object]] = []
    for received_ns, raw in iter_capture(CAPTURE):
        if is_depth_snapshot(raw):
            continue
        event = parser.parse(raw, received_ns)
        if isinstance(event, Trade):
            trades.append(event)
            raw_trades.append(json.loads(raw.decode())["data"])
    return trades, raw_trades


def test_candles_match_an_independent_decimal_aggregation(capture_trades) -> None:
    trades, raw_trades = capture_trades
    minutes: dict[int, list[dict[str, object]]] = defaultdict(list)
    for data in raw_trades:
        minutes[int(data["T"]) // 60_000 * 60_000].append(data)  # type: ignore[call-overload]

    builder = CandleBuilder()
    candles = [c for c in map(builder.add, trades) if c is not None]
    assert builder.flush(trades[-1].exchange_ts_ms) == []  # the last minute is still open
    candles += builder.flush(max(minutes) + 60_000)
    assert [c.open_time_ms for c in candles] == sorted(minutes)

    for candle in candles:
        rows = minutes[candle.open_time_ms]
        prices = [Decimal(str(r["p"])) for r in rows]
        quantities = [Decimal(str(r["q"])) for r in rows]
        assert candle.closed and candle.source == "trades" and candle.interval == "1m"
        assert Decimal(repr(candle.open)) == prices[0]
        assert Decimal(repr(candle.close)) == prices[-1]
        assert Decimal(repr(candle.high)) == max(prices)
        assert Decimal(repr(candle.low)) == min(prices)
        assert candle.trade_count == len(rows)
        volume = sum(quantities, Decimal(0))
        quote = sum((p * q for p, q in zip(prices, quantities, strict=True)), Decimal(0))
        assert abs(Decimal(repr(candle.volume)) - volume) <= volume * Decimal("1e-12")
        assert abs(Decimal(repr(candle.quote_volume)) - quote) <= quote * Decimal("1e-12")
    assert sum(c.trade_count or 0 for c in candles) == 9_757


def trade(ts_ms: int, price: float, symbol: str = "BTCUSDT", quantity: float = 1.0) -> Trade:
    return Trade("binance", symbol, ts_ms, price, quantity, False, ts_ms, 0)


def test_a_later_minute_closes_the_candle_and_trades_before_the_first_are_counted_late() -> None:
    builder = CandleBuilder()
    assert builder.add(trade(60_000, 10.0)) is None
    assert builder.add(trade(119_999, 12.0)) is None
    closed = builder.add(trade(180_500, 11.0))
    assert closed == Candle("binance", "BTCUSDT", "1m", 60_000, 10.0, 12.0, 10.0, 12.0, 2.0, True, "trades", 22.0, 2)
    assert builder.add(trade(30_000, 99.0)) is None  # before anything this builder saw: it cannot rebuild that
    assert builder.late_trades == 1
    current = builder.current("binance", "BTCUSDT")
    assert current is not None and not current.closed and current.open_time_ms == 180_000


def test_flush_closes_only_finished_minutes_per_symbol() -> None:
    builder = CandleBuilder()
    builder.add(trade(60_000, 10.0, "BTCUSDT"))
    builder.add(trade(125_000, 5.0, "ETHUSDT"))
    assert [c.symbol for c in builder.flush(120_000)] == ["BTCUSDT"]
    assert builder.current("binance", "BTCUSDT") is None
    assert [c.symbol for c in builder.flush(180_000)] == ["ETHUSDT"]
    assert builder.flush(10**12) == []


def test_a_late_trade_rebuilds_its_closed_minute_in_trade_id_order() -> None:
    builder = CandleBuilder()
    builder.add(Trade("binance", "BTCUSDT", 5, 10.0, 1.0, False, 60_500, 0))
    builder.add(Trade("binance", "BTCUSDT", 9, 12.0, 1.0, False, 119_000, 0))
    builder.add(Trade("binance", "BTCUSDT", 20, 11.0, 1.0, False, 180_500, 0))
    # a backfilled hole: ids 3 (before the minute's first trade) and 7, arriving after the minute closed
    first = builder.add(Trade("binance", "BTCUSDT", 3, 8.0, 2.0, False, 60_100, 0))
    rebuilt = builder.add(Trade("binance", "BTCUSDT", 7, 13.0, 1.0, False, 90_000, 0))
    assert first is not None and first.open == 8.0 and first.low == 8.0 and first.trade_count == 3
    assert rebuilt == Candle("binance", "BTCUSDT", "1m", 60_000, 8.0, 13.0, 8.0, 12.0, 5.0, True, "trades", 51.0, 4)
    # a minute that had no trade yet (between closed ones) gets its candle from the late trade
    quiet = builder.add(Trade("binance", "BTCUSDT", 15, 9.0, 1.0, False, 150_000, 0))
    assert quiet is not None and quiet.open_time_ms == 120_000 and quiet.trade_count == 1
    assert builder.late_trades == 0


def test_a_backfilled_trade_before_the_builder_held_its_minute_is_left_to_the_stored_trades() -> None:
    builder = CandleBuilder()
    assert builder.add_backfilled(Trade("binance", "BTCUSDT", 1, 10.0, 1.0, False, 60_500, 0)) == (None, False)
    builder.add(Trade("binance", "BTCUSDT", 9, 12.0, 1.0, False, 180_000, 0))
    # before the first live trade's minute: not opened as a bar of its own, reported as not held
    assert builder.add_backfilled(Trade("binance", "BTCUSDT", 5, 11.0, 1.0, False, 120_000, 0)) == (None, False)
    assert builder.add_backfilled(Trade("binance", "BTCUSDT", 8, 13.0, 1.0, False, 181_000, 0)) == (None, True)
    current = builder.current("binance", "BTCUSDT")
    assert current is not None and current.open_time_ms == 180_000 and current.trade_count == 2
    assert current.open == 13.0 and current.close == 12.0  # id 8 came before id 9
    assert builder.late_trades == 2
