"""Binance market-data collector: one WebSocket per shard of streams, shared by every subscriber.

Keeps each connection alive the way Binance expects (pongs to its pings, fewer than 5 control messages a
second, a fresh connection before the 24 h cut-off), reconnects with capped exponential backoff and jitter,
and watches for silence. Trade ids are checked for gaps: a hole (after a reconnect, a skipped message, a
restart) is filled from REST ``historicalTrades`` before newer trades go on, so stored trades have no holes.
Malformed or unknown messages are counted and logged, never fatal.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
import structlog

from core.observability.metrics import Metrics
from realtime.marketdata.binance import BinanceParser
from realtime.marketdata.candles import CandleBuilder
from realtime.marketdata.models import BookDelta, MarketEvent, Trade
from realtime.marketdata.orderbook import BookStatus, OrderBook
from realtime.marketdata.subscriptions import ControlRateLimiter, SubscriptionRegistry

log = structlog.get_logger(__name__)

Sink = Callable[[MarketEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    ws_url: str  # e.g. wss://stream.binance.com:9443 or ws://127.0.0.1:PORT (the simulator)
    rest_url: str  # e.g. https://api.binance.com or http://127.0.0.1:PORT
    exchange: str = "binance"
    api_key: str | None = None  # historicalTrades needs one on the real venue
    max_streams_per_connection: int = 1024
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 30.0
    watchdog_s: float = 15.0
    max_connection_age_s: float = 23.5 * 3600  # Binance closes connections at 24 h
    backfill_page: int = 1000


@dataclass(slots=True)
class _Shard:
    index: int
    ws: aiohttp.ClientWebSocketResponse | None = None
    task: asyncio.Task[None] | None = None
    request_id: int = 0


@dataclass(slots=True)
class CollectorStats:
    connects: int = 0
    messages: int = 0
    malformed: int = 0
    duplicates: int = 0
    backfilled: int = 0
    gaps: int = 0
    last_trade_id: dict[str, int] = field(default_factory=dict)


class BinanceCollector:
    def __init__(self, config: CollectorConfig, parser: BinanceParser, sink: Sink, metrics: Metrics) -> None:
        self._config = config
        self._parser = parser
        self._sink = sink
        self._books: dict[str, OrderBook] = {}
        self._resyncing: set[str] = set()
        self._candles = CandleBuilder()
        self._last_data = time.monotonic()
        self._registry = SubscriptionRegistry(config.max_streams_per_connection)
        self._shards: dict[int, _Shard] = {}
        self._limiter = ControlRateLimiter()
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self._backfill_locks: dict[str, asyncio.Lock] = {}
        self.stats = CollectorStats()
        self._bad = metrics.counter(
            "patriot_marketdata_bad_messages_total", "Malformed or unknown messages", ("reason",)
        )
        self._gap_metric = metrics.counter("patriot_marketdata_trade_gaps_total", "Trade id gaps found", ("symbol",))
        self._reconnects = metrics.counter("patriot_marketdata_reconnects_total", "WebSocket reconnects", ("shard",))

    # --- subscriptions -------------------------------------------------------------------------------------

    async def subscribe(self, stream: str) -> None:
        """One more subscriber for ``stream`` (e.g. ``btcusdt@trade``); subscribes on the venue only once."""
        shard_index = self._registry.acquire(stream)
        if shard_index is None:
            return
        shard = self._shards.get(shard_index)
        if shard is None:
            shard = self._shards[shard_index] = _Shard(shard_index)
            if self._session is not None:
                shard.task = asyncio.create_task(self._run_shard(shard))
            return
        await self._control(shard, "SUBSCRIBE", [stream])

    async def unsubscribe(self, stream: str) -> None:
        shard_index = self._registry.release(stream)
        if shard_index is not None and (shard := self._shards.get(shard_index)) is not None:
            await self._control(shard, "UNSUBSCRIBE", [stream])

    def subscribers(self, stream: str) -> int:
        return self._registry.subscribers(stream)

    def connections(self) -> int:
        return sum(1 for s in self._shards.values() if s.ws is not None and not s.ws.closed)

    def seed_last_trade_ids(self, last: dict[str, int]) -> None:
        """Continue from what is stored (after a restart), so the first live trade's gap gets backfilled."""
        self.stats.last_trade_id.update({s.upper(): i for s, i in last.items()})

    async def _control(self, shard: _Shard, method: str, params: list[str]) -> None:
        if shard.ws is None or shard.ws.closed:
            return  # the next connection subscribes to the registry's current streams
        await self._limiter.wait()
        shard.request_id += 1
        await shard.ws.send_bytes(orjson.dumps({"method": method, "params": params, "id": shard.request_id}))

    # --- running -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        for shard in self._shards.values():
            shard.task = asyncio.create_task(self._run_shard(shard))

    async def stop(self) -> None:
        self._stop.set()
        for shard in self._shards.values():
            if shard.ws is not None:
                await shard.ws.close()
        tasks = [s.task for s in self._shards.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run_shard(self, shard: _Shard) -> None:
        attempt = 0
        while not self._stop.is_set():
            streams = self._registry.streams(shard.index)
            if not streams:
                await asyncio.sleep(0.1)
                continue
            url = f"{self._config.ws_url}/stream?streams={'/'.join(streams)}"
            try:
                assert self._session is not None
                async with self._session.ws_connect(url, autoping=True, max_msg_size=0) as ws:
                    shard.ws = ws
                    self.stats.connects += 1
                    if attempt:
                        self._reconnects.labels(shard=str(shard.index)).inc()
                    log.info("market data connected", shard=shard.index, streams=len(streams))
                    if await self._read(ws):
                        attempt = 0
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("market data connection failed", shard=shard.index, error=repr(exc))
            finally:
                shard.ws = None
            if self._stop.is_set():
                return
            delay = min(self._config.reconnect_max_s, self._config.reconnect_initial_s * 2**attempt)
            attempt += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Read until the connection ends, goes silent, or reaches its maximum age; True if data arrived."""
        self._last_data = time.monotonic()
        got_data = False
        watchdog = asyncio.create_task(self._watch(ws))
        try:
            while not self._stop.is_set():
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    got_data = True
                    self._last_data = time.monotonic()
                    data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                    await self.on_message(data, time.time_ns())
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return got_data
        finally:
            watchdog.cancel()
        return got_data

    async def _watch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Close a connection that went silent (pings alone do not count) or reached the venue's age limit.

        A separate task rather than a receive timeout: aiohttp restarts that timeout on every ping, and wrapping
        each receive in wait_for would cost a task per message.
        """
        opened = time.monotonic()
        while not ws.closed:
            await asyncio.sleep(min(1.0, self._config.watchdog_s / 4))
            now = time.monotonic()
            if now - self._last_data > self._config.watchdog_s:
                log.warning("no market data within the watchdog period; reconnecting", seconds=self._config.watchdog_s)
                await ws.close()
            elif now - opened > self._config.max_connection_age_s:
                log.info("refreshing connection before the venue's 24 h limit")
                await ws.close()

    async def on_message(self, raw: bytes, received_ns: int) -> None:
        """Parse, check, and hand one message on; bad input is counted and dropped."""
        self.stats.messages += 1
        try:
            event = self._parser.parse(raw, received_ns)
        except Exception as exc:  # the venue (or a fault) sent something we cannot read: count it, go on
            self.stats.malformed += 1
            self._bad.labels(reason=type(exc).__name__).inc()
            log.warning(
                "malformed market data message", error=str(exc)[:200], sample=raw[:120].decode(errors="replace")
            )
            return
        if event is None:
            return
        if isinstance(event, Trade):
            await self._on_trade(event)
        elif isinstance(event, BookDelta):
            await self._on_depth(event)
        else:
            await self._sink(event)

    def book(self, symbol: str) -> OrderBook | None:
        """The local order book of ``symbol`` (raises BookNotSynced on read while it resyncs)."""
        return self._books.get(symbol.upper())

    async def _on_depth(self, delta: BookDelta) -> None:
        book = self._books.get(delta.symbol)
        if book is None:
            book = self._books[delta.symbol] = OrderBook(delta.symbol, "binance_spot")
        status = book.apply(delta)
        if status in (BookStatus.RESYNC, BookStatus.BUFFERED) and not book.synced:
            await self._resync_book(book)

    async def _resync_book(self, book: OrderBook) -> None:
        """Start (or restart after a gap or a crossed book) from a REST snapshot; buffered diffs follow it."""
        if book.symbol in self._resyncing:
            return
        self._resyncing.add(book.symbol)
        try:
            assert self._session is not None
            params = {"symbol": book.symbol, "limit": "1000"}
            async with self._session.get(f"{self._config.rest_url}/api/v3/depth", params=params) as resp:
                if resp.status != 200:
                    log.warning("depth snapshot refused", symbol=book.symbol, status=resp.status)
                    return
                raw = await resp.read()
            status = book.apply_snapshot(self._parser.parse_depth_snapshot(raw, time.time_ns(), book.symbol))
            log.info("order book synced from snapshot", symbol=book.symbol, status=status.value)
        finally:
            self._resyncing.discard(book.symbol)

    async def _on_trade(self, trade: Trade) -> None:
        last = self.stats.last_trade_id.get(trade.symbol)
        if last is not None and trade.trade_id <= last:
            self.stats.duplicates += 1
            return
        if last is not None and trade.trade_id > last + 1:
            self.stats.gaps += 1
            self._gap_metric.labels(symbol=trade.symbol).inc()
            await self._backfill(trade.symbol, last + 1, trade.trade_id - 1)
        self.stats.last_trade_id[trade.symbol] = trade.trade_id
        await self._emit_trade(trade)

    async def _emit_trade(self, trade: Trade) -> None:
        await self._sink(trade)
        closed = self._candles.add(trade)
        if closed is not None:
            await self._sink(closed)

    async def _backfill(self, symbol: str, first_id: int, last_id: int) -> None:
        """Fetch the missing trades [first_id, last_id] from REST and send them on in order."""
        lock = self._backfill_locks.setdefault(symbol, asyncio.Lock())
        async with lock:
            assert self._session is not None
            next_id = first_id
            headers = {"X-MBX-APIKEY": self._config.api_key} if self._config.api_key else {}
            while next_id <= last_id:
                params = {"symbol": symbol, "fromId": str(next_id), "limit": str(self._config.backfill_page)}
                async with self._session.get(
                    f"{self._config.rest_url}/api/v3/historicalTrades", params=params, headers=headers
                ) as resp:
                    if resp.status != 200:
                        log.error("backfill failed", symbol=symbol, status=resp.status, from_id=next_id)
                        return
                    page = orjson.loads(await resp.read())
                if not page:
                    log.error("backfill found no trades", symbol=symbol, from_id=next_id, to_id=last_id)
                    return
                now = time.time_ns()
                progressed = next_id
                for row in page:
                    trade_id = int(row["id"])
                    if trade_id > last_id:
                        break
                    if trade_id < next_id:
                        continue
                    await self._sink(
                        Trade(
                            self._config.exchange,
                            symbol,
                            trade_id,
                            float(row["price"]),
                            float(row["qty"]),
                            bool(row["isBuyerMaker"]),
                            int(row["time"]),
                            now,
                        )
                    )
                    self.stats.backfilled += 1
                    next_id = trade_id + 1
                if next_id == progressed:
                    log.error("backfill incomplete", symbol=symbol, missing_from=next_id, to_id=last_id)
                    return
