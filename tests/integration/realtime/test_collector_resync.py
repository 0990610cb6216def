"""The collector against a venue that refuses and forgets: a capture that starts mid-stream, replayed at 40x with
dropped connections, skipped trades and junk, REST refusals with Retry-After, and a gap left open by a restart.

Everything is real: the simulator (WebSocket + REST, with Binance's weight limits and bans), PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import psycopg
import pytest
from redis.asyncio import Redis

from core.messaging.streams import StreamNames
from core.observability.metrics import build_metrics
from realtime.exchanges.ratelimit import RedisTokenBucket
from realtime.exchanges.simulator.app import SimulatorConfig, bound_port, serve
from realtime.exchanges.simulator.state import STATE_KEY, SimulatorState
from realtime.marketdata.binance import BinanceParser
from realtime.marketdata.collector import BinanceCollector, CollectorConfig
from realtime.marketdata.gaps import PostgresGapStore
from realtime.marketdata.service import last_stored_trade_ids
from realtime.marketdata.sink import MarketDataSink

pytestmark = pytest.mark.integration

CAPTURE = Path(__file__).parents[3] / "data" / "binance-ws-capture" / "spot" / "btcusdt_20240808.gz"
STREAMS = ["btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms"]
SKIPPED_LINES = 2_000  # the capture's first messages, with its snapshot line among them: a mid-stream start


@dataclass
class Venue:
    base: str
    state: SimulatorState
    trade_ids: list[int]


def mid_stream_capture(directory: Path) -> tuple[Path, list[int]]:
    """The shipped capture without its REST snapshot and first messages; returns it and its trade ids."""
    path = directory / CAPTURE.name  # the replay takes the symbol from the file name
    trade_ids = []
    with gzip.open(CAPTURE, "rt") as src, gzip.open(path, "wt") as out:
        for number, line in enumerate(src):
            if number < SKIPPED_LINES or '"lastUpdateId"' in line:
                continue
            out.write(line)
            msg = json.loads(line.partition(" ")[2])
            if msg["stream"].endswith("@trade"):
                trade_ids.append(int(msg["data"]["t"]))
    return path, trade_ids


@pytest.fixture
async def venue(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Venue]:
    capture, trade_ids = mid_stream_capture(tmp_path)
    speed = getattr(request, "param", 40.0)
    runner = await serve(
        SimulatorConfig(
            port=0, capture_files=(capture,), speed=speed, replay_start="manual", accounts=(), weight_limit=1200
        )
    )
    yield Venue(f"127.0.0.1:{bound_port(runner)}", runner.app[STATE_KEY], trade_ids)
    await runner.cleanup()


@dataclass
class Running:
    collector: BinanceCollector
    sink: MarketDataSink
    redis: Redis


async def start_collector(
    venue: Venue, database_url: str, redis_url: str, key_prefix: str, streams: list[str] = STREAMS
) -> Running:
    """A collector as the service builds it: the shared Redis weight bucket (half the venue's limit, refilled at half
    its rate), gaps in PostgreSQL, the sink's flush before a gap closes."""
    redis = Redis.from_url(redis_url)
    metrics = build_metrics("test")
    sink = MarketDataSink(database_url, redis, StreamNames(key_prefix, 4), metrics, persist_tickers=False)
    limit = venue.state.limiter.limit
    budget = RedisTokenBucket(redis, "binance", "market-data", limit // 2, limit / 120, f"{key_prefix}ratelimit")
    collector = BinanceCollector(
        CollectorConfig(
            ws_url=f"ws://{venue.base}",
            rest_url=f"http://{venue.base}",
            reconnect_initial_s=0.05,
            snapshot_retry_initial_s=0.2,
            gap_retry_initial_s=0.2,
            gap_retry_max_s=1.0,
        ),
        BinanceParser(),
        sink.add,
        metrics,
        budget=budget,
        gaps=PostgresGapStore(database_url),
        flush=sink.flush,
        rebuild_candles=sink.rebuild_trade_candles,
    )
    collector.seed_last_trade_ids(await last_stored_trade_ids(database_url, "binance"))
    for stream in streams:
        await collector.subscribe(stream)
    await collector.start()
    return Running(collector, sink, redis)


async def stop_collector(running: Running) -> None:
    await running.collector.stop()
    await running.sink.close()
    await running.redis.aclose()


async def replay(venue: Venue, running: Running, during: object = None) -> None:
    """Start the replay once the collector is connected, run ``during`` alongside, wait for the end."""
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if running.collector.connections():
                break
            await asyncio.sleep(0.02)
        assert running.collector.connections() == 1
        await http.post(f"http://{venue.base}/admin/replay/start")
        if callable(during):
            await during(http)
        for _ in range(1200):
            status = await (await http.get(f"http://{venue.base}/admin/replay")).json()
            if status.get("finished"):
                break
            await asyncio.sleep(0.05)
        assert status.get("finished"), status


async def settled(running: Running, last_id: int, rounds: int = 600) -> None:
    """Wait until the collector saw the last trade and filled every gap (or give up: the assertions say why)."""
    for _ in range(rounds):
        collector = running.collector
        if collector.stats.last_trade_id.get("BTCUSDT") == last_id and not collector.open_gaps():
            return
        await asyncio.sleep(0.05)


async def stored_ids(database_url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT trade_id FROM market_trades ORDER BY trade_id")
        return [int(r[0]) for r in await cur.fetchall()]  # type: ignore[call-overload]


async def open_gap_rows(database_url: str) -> list[tuple[int, int, int]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT first_missing_id, last_missing_id, attempts FROM trade_gaps WHERE closed_at IS NULL"
        )
        return [tuple(int(v) for v in r) for r in await cur.fetchall()]  # type: ignore[misc]


async def candles_against_trades(database_url: str) -> list[tuple[object, ...]]:
    """Each stored trade-built candle next to the aggregation of the stored trades of its minute."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            """
            WITH t AS (
                SELECT date_trunc('minute', exchange_ts) AS minute, count(*) AS n, min(price) AS low,
                       max(price) AS high, sum(quantity) AS volume,
                       (array_agg(price ORDER BY trade_id))[1] AS open,
                       (array_agg(price ORDER BY trade_id DESC))[1] AS close
                FROM market_trades GROUP BY 1
            )
            SELECT c.open_time, c.trade_count, t.n, c.open, t.open, c.high, t.high, c.low, t.low,
                   c.close, t.close, c.volume, t.volume
            FROM market_candles c LEFT JOIN t ON t.minute = c.open_time
            WHERE c.source = 'trades' AND c.closed ORDER BY c.open_time
            """
        )
        return list(await cur.fetchall())


def assert_candles_match(rows: list[tuple[object, ...]]) -> None:
    """Every trade-built candle equals the aggregation of its minute's stored trades (volume to float precision)."""
    assert len(rows) >= 4
    for open_time, count, n, c_open, t_open, c_high, t_high, c_low, t_low, c_close, t_close, c_vol, t_vol in rows:
        assert (count, c_open, c_high, c_low, c_close) == (n, t_open, t_high, t_low, t_close), open_time
        assert abs(Decimal(c_vol) - Decimal(t_vol)) <= Decimal(t_vol) * Decimal("1e-9"), open_time  # type: ignore[arg-type]


async def test_mid_stream_capture_with_faults_at_40x_loses_no_trade_and_candles_match_stored_trades(
    venue: Venue, migrated_database_url: str, redis_url: str, key_prefix: str
) -> None:
    async def reconnected(connects: int) -> None:
        for _ in range(200):  # the next drop must find a connection to drop, however loaded the machine is
            if running.collector.stats.connects >= connects and running.collector.connections():
                return
            await asyncio.sleep(0.02)

    async def faults(http: aiohttp.ClientSession) -> None:
        await asyncio.sleep(1.5)
        await http.post(f"http://{venue.base}/admin/ws-faults", json={"skip": {"count": 40, "stream": "btcusdt@trade"}})
        await http.post(f"http://{venue.base}/admin/ws-faults", json={"inject": ["{not json", '{"stream":"x@y"}']})
        await asyncio.sleep(1.5)
        await http.post(f"http://{venue.base}/admin/ws-faults", json={"drop_connections": True})
        await reconnected(2)
        await asyncio.sleep(1.0)
        await http.post(f"http://{venue.base}/admin/ws-faults", json={"drop_connections": "close"})
        await reconnected(3)

    running = await start_collector(venue, migrated_database_url, redis_url, key_prefix)
    try:
        await replay(venue, running, faults)
        await settled(running, venue.trade_ids[-1])
    finally:
        await stop_collector(running)
    collector, limiter = running.collector, venue.state.limiter

    ids = await stored_ids(migrated_database_url)
    assert collector.stats.connects >= 3 and collector.stats.malformed >= 1
    assert collector.stats.gaps >= 1 and collector.stats.backfilled >= 40
    assert set(venue.trade_ids) - set(ids) == set(), "no trade id is missing"
    assert ids == venue.trade_ids
    assert await open_gap_rows(migrated_database_url) == []

    assert limiter.bans_total == 0, "never a 418"
    assert collector.rest.refusals.get(418, 0) == 0
    depth_requests = venue.state.faults.requests.get("/api/v3/depth", 0)
    assert collector.stats.resyncs >= 1
    assert depth_requests <= 3 * collector.stats.resyncs, (depth_requests, collector.stats.resyncs)

    assert_candles_match(await candles_against_trades(migrated_database_url))


async def test_a_refused_snapshot_waits_out_retry_after_with_one_request_in_flight(
    venue: Venue, migrated_database_url: str, redis_url: str, key_prefix: str
) -> None:
    async def refuse_depth_until_one_was_refused(http: aiohttp.ClientSession) -> None:
        """429 with Retry-After 2 s on every depth request, lifted a little after the first one was refused."""
        for _ in range(200):
            state = await (await http.get(f"http://{venue.base}/admin/faults")).json()
            if state["served"].get("429"):
                break
            await asyncio.sleep(0.1)
        await http.post(f"http://{venue.base}/admin/faults", json={"reset": True})

    async with aiohttp.ClientSession() as http:
        await http.post(
            f"http://{venue.base}/admin/faults",
            json={"status": 429, "retry_after_s": 2, "path_prefix": "/api/v3/depth"},
        )
    running = await start_collector(venue, migrated_database_url, redis_url, key_prefix, ["btcusdt@depth@100ms"])
    try:
        await replay(venue, running, refuse_depth_until_one_was_refused)
        for _ in range(200):
            book = running.collector.book("BTCUSDT")
            if book is not None and book.synced:
                break
            await asyncio.sleep(0.05)
    finally:
        await stop_collector(running)
    faults = venue.state.faults
    book = running.collector.book("BTCUSDT")
    assert book is not None and book.synced
    # diffs kept arriving while the book waited: the one refused request was followed by none until Retry-After
    # had passed (the fault was lifted well before that), and the next one synced the book
    assert faults.served == {429: 1}
    assert faults.requests["/api/v3/depth"] == 2
    assert running.collector.rest.refusals == {429: 1}
    assert venue.state.limiter.bans_total == 0


async def test_an_open_gap_survives_a_restart_and_is_filled_after_it(
    venue: Venue, migrated_database_url: str, redis_url: str, key_prefix: str
) -> None:
    async def skip_with_backfill_down(http: aiohttp.ClientSession) -> None:
        await http.post(
            f"http://{venue.base}/admin/faults", json={"status": 503, "path_prefix": "/api/v3/historicalTrades"}
        )
        for _ in range(200):  # a hole needs a trade before it
            if first.collector.stats.last_trade_id:
                break
            await asyncio.sleep(0.02)
        await http.post(f"http://{venue.base}/admin/ws-faults", json={"skip": {"count": 25, "stream": "btcusdt@trade"}})

    first = await start_collector(venue, migrated_database_url, redis_url, key_prefix, ["btcusdt@trade"])
    try:
        await replay(venue, first, skip_with_backfill_down)
        for _ in range(200):
            if first.collector.stats.last_trade_id.get("BTCUSDT") == venue.trade_ids[-1]:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a few backfill attempts, all refused
    finally:
        await stop_collector(first)
    left_open = await open_gap_rows(migrated_database_url)
    assert len(left_open) == 1 and left_open[0][1] - left_open[0][0] + 1 == 25 and left_open[0][2] >= 1
    assert len(set(venue.trade_ids) - set(await stored_ids(migrated_database_url))) == 25

    async with aiohttp.ClientSession() as http:
        await http.post(f"http://{venue.base}/admin/faults", json={"reset": True})
    second = await start_collector(venue, migrated_database_url, redis_url, key_prefix, [])  # no stream: REST only
    try:
        for _ in range(200):
            if not second.collector.open_gaps():
                break
            await asyncio.sleep(0.05)
    finally:
        await stop_collector(second)
    assert second.collector.stats.gaps_closed == 1
    assert await open_gap_rows(migrated_database_url) == []
    assert await stored_ids(migrated_database_url) == venue.trade_ids
    assert_candles_match(await candles_against_trades(migrated_database_url))  # the filled minute was rebuilt
