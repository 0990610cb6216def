"""Simulator -> collector -> PostgreSQL with the real Binance capture, over real WebSocket and HTTP.

The stored trades must equal the file's trades exactly, the collector's order book must equal the book rebuilt
independently from the file's snapshot and diffs, and when the simulator drops the connection and skips
messages, the collector must reconnect and backfill so that no trade id is missing.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import psycopg
import pytest
from redis.asyncio import Redis

from core.messaging.streams import StreamNames
from core.observability.metrics import build_metrics
from realtime.exchanges.simulator.app import SimulatorConfig, bound_port, serve
from realtime.marketdata.binance import BinanceParser
from realtime.marketdata.collector import BinanceCollector, CollectorConfig
from realtime.marketdata.sink import MarketDataSink

pytestmark = pytest.mark.integration

CAPTURE = Path(__file__).parents[3] / "data" / "binance-ws-capture" / "spot" / "btcusdt_20240808.gz"
STREAMS = ["btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms"]


def file_contents() -> tuple[list[dict[str, object]], dict[str, object], list[dict[str, object]]]:
    """(trades, snapshot, depth updates) read with plain json, independently of the production parser."""
    trades, depth, snapshot = [], [], {}
    with gzip.open(CAPTURE, "rt") as fh:
        for line in fh:
            msg = json.loads(line.partition(" ")[2])
            if "lastUpdateId" in msg:
                snapshot = msg
            elif msg["stream"].endswith("@trade"):
                trades.append(msg["data"])
            elif "@depth" in msg["stream"]:
                depth.append(msg["data"])
    return trades, snapshot, depth


def rebuilt_book(snapshot: dict[str, object], depth: list[dict[str, object]]) -> tuple[dict[Decimal, Decimal], ...]:
    """Binance's documented procedure, written out plainly: snapshot, then every diff newer than it."""
    sides: tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]] = ({}, {})
    for side, key in zip(sides, ("bids", "asks"), strict=True):
        side.update({Decimal(p): Decimal(q) for p, q in snapshot[key]})  # type: ignore[attr-defined]
    last = int(snapshot["lastUpdateId"])  # type: ignore[call-overload]
    for d in depth:
        if int(d["u"]) <= last:  # type: ignore[call-overload]
            continue
        for side, key in zip(sides, ("b", "a"), strict=True):
            for p, q in d[key]:  # type: ignore[attr-defined]
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q)
    return sides


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    speed = getattr(request, "param", None)
    runner = await serve(
        SimulatorConfig(port=0, capture_files=(CAPTURE,), speed=speed, replay_start="manual", accounts=())
    )
    yield f"127.0.0.1:{bound_port(runner)}"
    await runner.cleanup()


async def run_collector(
    base: str, database_url: str, redis_url: str, key_prefix: str, during: object = None
) -> BinanceCollector:
    redis = Redis.from_url(redis_url)
    metrics = build_metrics("test")
    sink = MarketDataSink(database_url, redis, StreamNames(key_prefix, 4), metrics, persist_tickers=False)
    collector = BinanceCollector(
        CollectorConfig(ws_url=f"ws://{base}", rest_url=f"http://{base}", reconnect_initial_s=0.05),
        BinanceParser(),
        sink.add,
        metrics,
    )
    for stream in STREAMS:
        await collector.subscribe(stream)
    await collector.start()
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if collector.connections():
                break
            await asyncio.sleep(0.02)
        assert collector.connections() == 1
        await http.post(f"http://{base}/admin/replay/start")
        if callable(during):
            await during(http)
        for _ in range(600):
            status = await (await http.get(f"http://{base}/admin/replay")).json()
            if status.get("finished"):
                break
            await asyncio.sleep(0.05)
        assert status.get("finished"), status
    last_id = int(file_contents()[0][-1]["t"])  # type: ignore[call-overload]
    for _ in range(300):  # the simulator sent everything; let the collector work through what it received
        if collector.stats.last_trade_id.get("BTCUSDT") == last_id:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    await collector.stop()
    await sink.close()
    await redis.aclose()
    return collector


async def stored_trades(database_url: str) -> list[tuple[int, Decimal, Decimal]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT trade_id, price, quantity FROM market_trades ORDER BY trade_id")
        return await cur.fetchall()  # type: ignore[return-value]


async def test_replayed_capture_is_stored_exactly_and_book_matches_file(
    simulator: str, migrated_database_url: str, redis_url: str, key_prefix: str
) -> None:
    trades, snapshot, depth = file_contents()
    collector = await run_collector(simulator, migrated_database_url, redis_url, key_prefix)
    stored = await stored_trades(migrated_database_url)
    assert len(stored) == len(trades) == 9757
    assert [r[0] for r in stored] == [int(t["t"]) for t in trades]  # type: ignore[call-overload]
    assert [(r[1], r[2]) for r in stored] == [(Decimal(t["p"]), Decimal(t["q"])) for t in trades]  # type: ignore[arg-type]
    bids, asks = rebuilt_book(snapshot, depth)
    book = collector.book("BTCUSDT")
    assert book is not None and book.synced
    our_bids, our_asks = book.top(20)
    assert [(Decimal(repr(p)), Decimal(repr(q))) for p, q in our_bids] == sorted(bids.items(), reverse=True)[:20]
    assert [(Decimal(repr(p)), Decimal(repr(q))) for p, q in our_asks] == sorted(asks.items())[:20]
    assert collector.stats.malformed == 0


@pytest.mark.parametrize("simulator", [40.0], indirect=True)
async def test_dropped_connection_and_skipped_messages_leave_no_missing_trade(
    simulator: str, migrated_database_url: str, redis_url: str, key_prefix: str
) -> None:
    async def faults(http: aiohttp.ClientSession) -> None:
        await asyncio.sleep(1.5)
        await http.post(f"http://{simulator}/admin/ws-faults", json={"skip": {"count": 40, "stream": "btcusdt@trade"}})
        await http.post(f"http://{simulator}/admin/ws-faults", json={"inject": ["{not json", '{"stream":"x@y"}']})
        await asyncio.sleep(1.5)
        await http.post(f"http://{simulator}/admin/ws-faults", json={"drop_connections": True})
        await asyncio.sleep(1.5)
        await http.post(f"http://{simulator}/admin/ws-faults", json={"drop_connections": "close"})

    trades, _, _ = file_contents()
    collector = await run_collector(simulator, migrated_database_url, redis_url, key_prefix, during=faults)
    stored = await stored_trades(migrated_database_url)
    ids = [r[0] for r in stored]
    expected = [int(t["t"]) for t in trades]  # type: ignore[call-overload]
    assert collector.stats.connects >= 3, "reconnected after each drop"
    assert collector.stats.gaps >= 1 and collector.stats.backfilled >= 40
    assert collector.stats.malformed >= 1
    assert ids == expected, f"{len(set(expected) - set(ids))} trades missing"


async def test_silent_connection_is_replaced_by_the_watchdog(simulator: str, migrated_database_url: str) -> None:
    metrics = build_metrics("test")
    received: list[object] = []

    async def sink(event: object) -> None:
        received.append(event)

    collector = BinanceCollector(
        CollectorConfig(
            ws_url=f"ws://{simulator}",
            rest_url=f"http://{simulator}",
            watchdog_s=0.3,
            reconnect_initial_s=0.05,
            reconnect_max_s=0.1,
        ),
        BinanceParser(),
        sink,
        metrics,  # type: ignore[arg-type]
    )
    await collector.subscribe("btcusdt@trade")
    await collector.start()
    await asyncio.sleep(1.6)  # the replay was never started: the venue is connected but silent
    await collector.stop()
    assert collector.stats.connects >= 3
    assert received == []
