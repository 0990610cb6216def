"""The market-data service process: one collector per venue feeding the sink (bus + PostgreSQL)."""

from __future__ import annotations

import asyncio

import psycopg
import structlog
from redis.asyncio import Redis

from core.messaging.streams import StreamNames
from core.observability.metrics import build_metrics, serve_metrics
from core.settings import Settings
from realtime.exchanges.binance.capabilities import BINANCE_SPOT
from realtime.exchanges.ratelimit import RedisTokenBucket
from realtime.marketdata.collector import BinanceCollector, CollectorConfig
from realtime.marketdata.gaps import PostgresGapStore
from realtime.marketdata.sink import MarketDataSink

log = structlog.get_logger(__name__)


def venue_urls(settings: Settings) -> tuple[str, str]:
    """(WebSocket base, REST base): the configured venue, or the local simulator."""
    md = settings.market_data
    if md.binance_ws_url and md.binance_rest_url:
        return md.binance_ws_url, md.binance_rest_url
    base = f"{md.simulator_host}:{md.simulator_port}"
    return f"ws://{base}", f"http://{base}"


def weight_budget(settings: Settings, redis: Redis) -> RedisTokenBucket:
    """The venue's request-weight bucket the service's REST calls draw on, shared in Redis by every process.

    Binance counts weight in fixed minute windows; a bucket of half the limit refilled at half the rate never spends
    more than the limit within any one of them, whatever the phase.
    """
    md = settings.market_data
    limit = md.simulator_weight_limit if md.uses_simulator else BINANCE_SPOT.bucket_capacity
    return RedisTokenBucket(
        redis,
        "binance",
        md.binance_api_key or "market-data",
        max(1, limit // 2),
        limit / 120,
        key_prefix=f"{settings.redis.key_prefix}ratelimit",
    )


async def last_stored_trade_ids(database_url: str, exchange: str) -> dict[str, int]:
    """Where each symbol's stored trades end, so a restart backfills from there."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT symbol, max(trade_id) FROM market_trades WHERE exchange = %s GROUP BY symbol", (exchange,)
        )
        return {str(s): int(i) for s, i in await cur.fetchall()}  # type: ignore[call-overload]


async def run_market_data(settings: Settings, database_url: str, redis_url: str, stop: asyncio.Event) -> None:
    """Subscribe to the configured symbols' streams until ``stop`` is set."""
    from realtime.marketdata.binance import BinanceParser

    metrics = build_metrics("marketdata")
    if settings.observability.metrics_port:
        serve_metrics(metrics, settings.observability.metrics_port)
    redis = Redis.from_url(redis_url)
    sink = MarketDataSink(database_url, redis, StreamNames(settings.redis.key_prefix, settings.bus.partitions), metrics)
    ws_url, rest_url = venue_urls(settings)
    parser = BinanceParser()
    collector = BinanceCollector(
        CollectorConfig(ws_url=ws_url, rest_url=rest_url, api_key=settings.market_data.binance_api_key),
        parser,
        sink.add,
        metrics,
        budget=weight_budget(settings, redis),
        gaps=PostgresGapStore(database_url),
        flush=sink.flush,
        rebuild_candles=sink.rebuild_trade_candles,
    )
    collector.seed_last_trade_ids(await last_stored_trade_ids(database_url, "binance"))
    for symbol in settings.market_data.symbols:
        for stream in settings.market_data.streams:
            await collector.subscribe(f"{symbol.lower()}@{stream}")
    await collector.start()
    log.info("market data service running", venue=ws_url, symbols=settings.market_data.symbols)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except TimeoutError:
                await sink.flush()  # bounded staleness for quiet symbols
    finally:
        await collector.stop()
        await sink.close()
        await redis.aclose()
