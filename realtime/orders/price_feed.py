"""Last trade prices from the ``market.trades`` streams, for the trigger book and the pre-trade price band.

A plain ``XREAD`` from the newest entry (no consumer group): a stop cares about the price now, not about every
trade missed while the service was down. At start the newest trade of each shard gives the opening marks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal

import msgspec
import structlog
from redis.asyncio import Redis

from core.messaging.streams import Stream, StreamNames
from core.observability.metrics import Metrics
from realtime.marketdata.models import Trade

log = structlog.get_logger(__name__)

OnPrices = Callable[[list[tuple[str, Decimal]]], Awaitable[None]]


class PriceFeed:
    def __init__(self, redis: Redis, names: StreamNames, metrics: Metrics) -> None:
        self._redis = redis
        self._keys = names.all_keys(Stream.MARKET_TRADES)
        self._decoder = msgspec.json.Decoder(Trade)
        self.marks: dict[str, Decimal] = {}
        self.venue_marks: dict[tuple[str, str], tuple[Decimal, int]] = {}  # (exchange, symbol) -> (price, ts ms)
        self._bad = metrics.counter("patriot_price_feed_bad_messages_total", "Unreadable market trades")

    def _decode(self, fields: dict[bytes, bytes]) -> Trade | None:
        try:
            return self._decoder.decode(fields[b"p"])
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
            self._bad.inc()
            return None

    async def opening_marks(self) -> dict[str, str]:
        """Read the newest trade per shard into ``marks``; returns where to continue reading from."""
        positions: dict[str, str] = {}
        for key in self._keys:
            newest = await self._redis.xrevrange(key, count=64)
            positions[key] = newest[0][0].decode() if newest else "0-0"
            for _, fields in reversed(newest):
                trade = self._decode(fields)
                if trade is not None:
                    self.marks[trade.symbol] = Decimal(repr(trade.price))
                    self.venue_marks[(trade.exchange, trade.symbol)] = (self.marks[trade.symbol], trade.exchange_ts_ms)
        return positions

    async def run(self, stop: asyncio.Event, on_prices: OnPrices, positions: dict[str, str] | None = None) -> None:
        last = positions or await self.opening_marks()
        while not stop.is_set():
            try:
                reply = await self._redis.xread(last, count=2000, block=200)  # type: ignore[arg-type]
            except (ConnectionError, OSError) as exc:
                log.warning("price feed read failed; retrying", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            prices: list[tuple[str, Decimal]] = []
            for key, entries in reply or []:
                last[key.decode()] = entries[-1][0].decode()
                for _, fields in entries:
                    trade = self._decode(fields)
                    if trade is not None:
                        price = Decimal(repr(trade.price))
                        self.marks[trade.symbol] = price
                        self.venue_marks[(trade.exchange, trade.symbol)] = (price, trade.exchange_ts_ms)
                        prices.append((trade.symbol, price))
            if prices:
                await on_prices(prices)
