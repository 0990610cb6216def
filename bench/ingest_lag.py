"""Venue-to-bus lag of the market-data path while the simulator replays the real capture at 10x.

The simulator runs as its own process (``patriot simulator --capture ... --speed 10``) and paces each message
by the capture's receive clock: a message captured at ``at`` leaves at ``started + (at - first) / speed``, the
moment a live venue would have sent it. The collector and sink run here as in production; the lag of a trade is
the time its batch was on Redis Streams minus that send time.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
from redis.asyncio import Redis

from bench.common import Servers, percentile, scratch_database
from core.messaging.streams import StreamNames
from core.observability.metrics import build_metrics
from realtime.marketdata.binance import BinanceParser
from realtime.marketdata.collector import BinanceCollector, CollectorConfig
from realtime.marketdata.sink import MarketDataSink, _Buffers


class _TimedSink(MarketDataSink):
    """Records when each trade's batch was accepted by Redis."""

    def __init__(self, *args: object, published: dict[int, int], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._published_at = published

    async def _publish(self, b: _Buffers) -> None:
        await super()._publish(b)
        now = time.time_ns()
        for t in b.trades:
            self._published_at.setdefault(t.trade_id, now)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _capture_times(capture: Path) -> dict[int, int]:
    """trade id -> capture receive time (ns): each trade's place on the replay clock."""
    times = {}
    with gzip.open(capture, "rb") as fh:
        for line in fh:
            at, _, raw = line.partition(b" ")
            if b"@trade" in raw[:40]:
                times[int(orjson.loads(raw)["data"]["t"])] = int(at)
    return times


async def measure_lag(servers: Servers, capture: Path, speed: float = 10.0, seconds: float = 15.0) -> dict[str, float]:
    port = _free_port()
    env = {**os.environ, "PATRIOT_LOG_LEVEL": "WARNING"}
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "simulator",
            "--capture",
            str(capture),
            "--speed",
            str(speed),
            "--port",
            str(port),
        ],
        env=env,
    )
    published: dict[int, int] = {}
    prefix = f"bench-lag-{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(servers.redis_url)
    try:
        with scratch_database(servers) as database_url:
            metrics = build_metrics("bench")
            sink = _TimedSink(
                database_url,
                redis,
                StreamNames(prefix, 8),
                metrics,
                published=published,
                max_age_s=0.005,
                persist_tickers=True,
            )
            collector = BinanceCollector(
                CollectorConfig(ws_url=f"ws://127.0.0.1:{port}", rest_url=f"http://127.0.0.1:{port}"),
                BinanceParser(),
                sink.add,
                metrics,
            )
            for stream in ("btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms"):
                await collector.subscribe(stream)
            await collector.start()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(0.005)
                await sink.flush()
            async with aiohttp.ClientSession() as http:
                status = await (await http.get(f"http://127.0.0.1:{port}/admin/replay")).json()
            await collector.stop()
            await sink.close()
    finally:
        simulator.terminate()
        simulator.wait(10)
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    started, first = int(status["started_wall_ns"]), int(status["first_event_ns"])
    at = _capture_times(capture)
    lags = [(published[t] - (started + (at[t] - first) / speed)) / 1e6 for t in published if t in at]
    return {
        "lag_trades": len(lags),
        "lag_p50_ms": round(percentile(lags, 50), 2),
        "lag_p99_ms": round(percentile(lags, 99), 2),
        "lag_max_ms": round(max(lags), 2),
    }
