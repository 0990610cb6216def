"""The market-data sink against the real PostgreSQL and Redis, fed with the shipped Binance capture's trades."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from redis.asyncio import Redis

from core.messaging.streams import Stream, StreamNames
from core.observability.metrics import build_metrics
from realtime.marketdata.models import BookTicker, Candle, Trade
from realtime.marketdata.sink import MarketDataSink

pytestmark = pytest.mark.integration

CAPTURE = Path(__file__).parents[3] / "data" / "binance-ws-capture" / "spot" / "btcusdt_20240808.gz"


def capture_trades() -> list[Trade]:
    """The capture's trades, read independently of the production parser."""
    trades = []
    with gzip.open(CAPTURE, "rt") as fh:
        for line in fh:
            received, _, raw = line.partition(" ")
            msg = json.loads(raw)
            if msg.get("stream", "").endswith("@trade"):
                d = msg["data"]
                trades.append(
                    Trade("binance", d["s"], d["t"], float(d["p"]), float(d["q"]), d["m"], d["T"], int(received))
                )
    return trades


@pytest.fixture
async def sink(migrated_database_url: str, redis_url: str, key_prefix: str) -> AsyncIterator[MarketDataSink]:
    redis = Redis.from_url(redis_url)
    s = MarketDataSink(migrated_database_url, redis, StreamNames(key_prefix, 4), build_metrics("test"), max_batch=2000)
    yield s
    await s.close()
    await redis.aclose()


async def test_capture_trades_stored_once_each_even_when_sent_twice(
    sink: MarketDataSink, migrated_database_url: str, redis_url: str, key_prefix: str
) -> None:
    trades = capture_trades()
    assert len(trades) == 9757
    await sink.add_many(trades)
    await sink.add_many(trades[1000:1500])  # a backfill overlapping what the live stream delivered
    await sink.flush()
    with psycopg.connect(migrated_database_url) as conn:
        count, ids, vwap = conn.execute(
            "SELECT count(*), count(DISTINCT trade_id), sum(price * quantity) / sum(quantity) FROM market_trades"
        ).fetchone()  # type: ignore[misc]
        in_default = conn.execute("SELECT count(*) FROM market_trades_default").fetchone()
    expected_vwap = sum(Decimal(repr(t.price)) * Decimal(repr(t.quantity)) for t in trades) / sum(
        Decimal(repr(t.quantity)) for t in trades
    )
    assert count == ids == 9757
    assert abs(vwap - expected_vwap) < Decimal("1e-12")
    assert in_default == (0,), "partitions for the capture's days were created before the insert"
    redis = Redis.from_url(redis_url)
    names = StreamNames(key_prefix, 4)
    published = sum([await redis.xlen(k) for k in names.all_keys(Stream.MARKET_TRADES)])
    one = (await redis.xrange(names.key(Stream.MARKET_TRADES, "BTCUSDT"), count=1))[0][1][b"p"]
    await redis.aclose()
    assert published == 9757 + 500  # the bus is at-least-once; storage dedupes
    assert json.loads(one)["trade_id"] == trades[0].trade_id


async def test_candle_versions_keep_the_last_and_tickers_are_stored(
    sink: MarketDataSink, migrated_database_url: str
) -> None:
    open_ms = 1723161240000
    await sink.add(Candle("binance", "BTCUSDT", "1m", open_ms, 1.0, 2.0, 0.5, 1.5, 10.0, False, "kline"))
    await sink.add(Candle("binance", "BTCUSDT", "1m", open_ms, 1.0, 3.0, 0.5, 2.5, 12.0, True, "kline"))
    await sink.add(BookTicker("binance", "BTCUSDT", 5, 61837.63, 3.78826, 61837.64, 1.54698, None, 1723161254087891268))
    await sink.flush()
    with psycopg.connect(migrated_database_url) as conn:
        first = conn.execute("SELECT high, close, volume, closed FROM market_candles").fetchall()
    assert first == [(Decimal("3"), Decimal("2.5"), Decimal("12"), True)], "the closed version wins in a batch"
    await sink.add(Candle("binance", "BTCUSDT", "1m", open_ms, 1.0, 3.0, 0.5, 2.5, 12.0, True, "kline"))
    await sink.flush()
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute("SELECT high, close, volume, closed FROM market_candles").fetchall()
        ticker = conn.execute("SELECT bid_price, ask_qty FROM book_tickers").fetchall()
    assert rows == [(Decimal("3"), Decimal("2.5"), Decimal("12"), True)]
    assert ticker == [(Decimal("61837.63"), Decimal("1.54698"))]


async def test_concurrent_flushes_are_serialised_and_lose_nothing(
    sink: MarketDataSink, migrated_database_url: str
) -> None:
    import asyncio

    trades = capture_trades()[:3000]

    for t in trades[:1500]:
        await sink.add(t)  # below the batch size: buffered

    async def more_then_flush() -> None:
        await asyncio.sleep(0)
        for t in trades[1500:]:
            await sink.add(t)
        await sink.flush()

    # the service flushes on a timer while the collector's adds flush: two flushes overlap
    await asyncio.gather(sink.flush(), more_then_flush())
    await sink.flush()
    with psycopg.connect(migrated_database_url) as conn:
        assert conn.execute("SELECT count(DISTINCT trade_id) FROM market_trades").fetchone() == (3000,)
