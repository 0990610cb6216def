"""Binance market-data collector: one WebSocket per shard of streams, shared by every subscriber.

Keeps each connection alive the way Binance expects (pongs to its pings, fewer than 5 control messages a
second, a fresh connection before the 24 h cut-off), reconnects with capped exponential backoff and jitter,
and watches for silence. Malformed or unknown messages are counted and logged, never fatal.

Order books follow Binance's procedure: diffs are buffered while a book is out of sync and one task per book asks
for the REST snapshot, retrying with exponential backoff and jitter until one bridges the buffered diffs. Trade ids
are checked for gaps: a hole (after a reconnect, a skipped message, a restart) is recorded as an open gap and
filled from REST ``historicalTrades`` in the background while live trades go on; it is closed only once its trades
are stored, retried with backoff until then, and picked up again after a restart. Every REST call draws on the
shared weight budget and stops while the venue says so (see ``venue_rest``). Backfilled trades go through the
trade-built candle builder too, which rebuilds the closed minutes they belong to.
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
from realtime.marketdata.gaps import MemoryGapStore, TradeGap, TradeGapStore
from realtime.marketdata.models import BookDelta, MarketEvent, Trade
from realtime.marketdata.orderbook import OrderBook
from realtime.marketdata.subscriptions import ControlRateLimiter, SubscriptionRegistry
from realtime.marketdata.venue_rest import (
    HISTORICAL_TRADES_WEIGHT,
    MarketDataRest,
    VenueError,
    VenueRefused,
    WeightBudget,
    depth_weight,
)

log = structlog.get_logger(__name__)

Sink = Callable[[MarketEvent], Awaitable[None]]
Flush = Callable[[], Awaitable[None]]
RebuildCandles = Callable[[str, str, int, int], Awaitable[int]]


class _NoBudget:
    """No shared weight budget (tools and tests that aim at something else); the venue's refusals still count."""

    async def acquire(self, weight: int = 1) -> float:
        return 0.0

    async def penalize(self, seconds: float) -> None:
        return None


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff with jitter for the ``attempt``-th retry (1, 2, ...): half to all of the capped step."""
    return min(max_s, initial_s * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.0)


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
    depth_limit: int = 1000
    snapshot_retry_initial_s: float = 0.5
    snapshot_retry_max_s: float = 30.0
    gap_retry_initial_s: float = 0.5
    gap_retry_max_s: float = 60.0


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
    gaps_closed: int = 0
    resyncs: int = 0
    snapshot_requests: int = 0
    last_trade_id: dict[str, int] = field(default_factory=dict)


class BinanceCollector:
    def __init__(
        self,
        config: CollectorConfig,
        parser: BinanceParser,
        sink: Sink,
        metrics: Metrics,
        *,
        budget: WeightBudget | None = None,
        gaps: TradeGapStore | None = None,
        flush: Flush | None = None,
        rebuild_candles: RebuildCandles | None = None,
    ) -> None:
        """``budget``: the venue's shared weight bucket; ``gaps``: where open gaps are kept; ``flush``: makes what
        the sink holds durable (a gap is closed only after it); ``rebuild_candles(exchange, symbol, from_ms,
        to_ms)``: recomputes trade-built candles from stored trades, for filled minutes the builder never held."""
        self._config = config
        self._parser = parser
        self._sink = sink
        self._flush = flush
        self._rebuild_candles = rebuild_candles
        self._gaps: TradeGapStore = gaps if gaps is not None else MemoryGapStore()
        self._rest = MarketDataRest(config.rest_url, budget or _NoBudget(), metrics, config.api_key)
        self._books: dict[str, OrderBook] = {}
        self._resync_tasks: dict[str, asyncio.Task[None]] = {}
        self._gap_tasks: dict[str, asyncio.Task[None]] = {}
        self._open_gaps: dict[str, list[TradeGap]] = {}
        self._candles = CandleBuilder()
        self._last_data = time.monotonic()
        self._registry = SubscriptionRegistry(config.max_streams_per_connection)
        self._shards: dict[int, _Shard] = {}
        self._limiter = ControlRateLimiter()
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self.stats = CollectorStats()
        self._bad = metrics.counter(
            "patriot_marketdata_bad_messages_total", "Malformed or unknown messages", ("reason",)
        )
        self._gap_metric = metrics.counter("patriot_marketdata_trade_gaps_total", "Trade id gaps found", ("symbol",))
        self._reconnects = metrics.counter("patriot_marketdata_reconnects_total", "WebSocket reconnects", ("shard",))
        self._open_gap_gauge = metrics.gauge("open_trade_gaps", "Trade id gaps not yet filled", ("symbol",))

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
        """Connect every shard and resume the gaps a previous run left open."""
        self._session = aiohttp.ClientSession()
        for gap in await self._gaps.open_gaps(self._config.exchange):
            self._track_gap(gap)
        for shard in self._shards.values():
            shard.task = asyncio.create_task(self._run_shard(shard))

    @property
    def rest(self) -> MarketDataRest:
        return self._rest

    def open_gaps(self) -> list[TradeGap]:
        """Gaps found and not yet filled (their trades are not all stored)."""
        return [gap for gaps in self._open_gaps.values() for gap in gaps]

    async def stop(self) -> None:
        self._stop.set()
        for shard in self._shards.values():
            if shard.ws is not None:
                await shard.ws.close()
        tasks = [s.task for s in self._shards.values() if s.task is not None]
        tasks += [*self._resync_tasks.values(), *self._gap_tasks.values()]
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
        book.apply(delta)
        if not book.synced:
            task = self._resync_tasks.get(book.symbol)
            if task is None or task.done():
                self.stats.resyncs += 1
                self._resync_tasks[book.symbol] = asyncio.create_task(self._resync_book(book))

    async def _resync_book(self, book: OrderBook) -> None:
        """Sync the book from a REST snapshot; the only request in flight for it, while its diffs are buffered.

        Retried with backoff until a snapshot bridges the buffered diffs (one older than them is asked for again).
        """
        attempt = 0
        limit = self._config.depth_limit
        while not self._stop.is_set() and not book.synced:
            if attempt:
                await asyncio.sleep(
                    backoff_s(attempt, self._config.snapshot_retry_initial_s, self._config.snapshot_retry_max_s)
                )
            attempt += 1
            try:
                self.stats.snapshot_requests += 1
                body = await self._get(
                    "/api/v3/depth", {"symbol": book.symbol, "limit": str(limit)}, depth_weight(limit)
                )
                status = book.apply_snapshot(self._parser.parse_depth_snapshot(body, time.time_ns(), book.symbol))
            except (VenueRefused, VenueError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.warning("depth snapshot failed", symbol=book.symbol, attempt=attempt, error=str(exc)[:200])
                continue
            log.info("order book snapshot applied", symbol=book.symbol, status=status.value, attempt=attempt)

    async def _get(self, path: str, params: dict[str, str], weight: int) -> bytes:
        assert self._session is not None
        return await self._rest.get_raw(self._session, path, params, weight)

    async def _on_trade(self, trade: Trade) -> None:
        last = self.stats.last_trade_id.get(trade.symbol)
        if last is not None and trade.trade_id <= last:
            self.stats.duplicates += 1
            return
        if last is not None and trade.trade_id > last + 1:
            self.stats.gaps += 1
            self._gap_metric.labels(symbol=trade.symbol).inc()
            gap = await self._gaps.open(TradeGap(self._config.exchange, trade.symbol, last + 1, trade.trade_id - 1))
            self._track_gap(gap)
        self.stats.last_trade_id[trade.symbol] = trade.trade_id
        await self._emit_trade(trade)

    async def _emit_trade(self, trade: Trade) -> None:
        await self._sink(trade)
        candle = self._candles.add(trade)  # a late (backfilled) trade returns its minute's rebuilt candle
        if candle is not None:
            await self._sink(candle)

    async def _emit_backfilled(self, trade: Trade, unheld: list[int]) -> None:
        """Send a backfilled trade on and into its candle; ``unheld`` collects the times the builder cannot fix."""
        await self._sink(trade)
        candle, held = self._candles.add_backfilled(trade)
        if candle is not None:
            await self._sink(candle)
        if not held:
            unheld.append(trade.exchange_ts_ms)

    def _track_gap(self, gap: TradeGap) -> None:
        """Keep the gap open and make sure its symbol's repair task runs."""
        gaps = self._open_gaps.setdefault(gap.symbol, [])
        if all(g.first_missing_id != gap.first_missing_id for g in gaps):
            gaps.append(gap)
        self._open_gap_gauge.labels(symbol=gap.symbol).set(len(gaps))
        task = self._gap_tasks.get(gap.symbol)
        if task is None or task.done():
            self._gap_tasks[gap.symbol] = asyncio.create_task(self._repair_gaps(gap.symbol))

    async def _repair_gaps(self, symbol: str) -> None:
        """Fill ``symbol``'s open gaps oldest first; a gap the venue refuses or cannot fill yet waits and is retried."""
        gaps = self._open_gaps[symbol]
        failures = 0
        while gaps and not self._stop.is_set():
            gap = min(gaps, key=lambda g: g.first_missing_id)
            unheld: list[int] = []
            try:
                await self._backfill(gap, unheld)
            except (VenueRefused, VenueError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                failures += 1
                await self._gaps.attempted(gap, str(exc))
                log.warning("trade gap backfill failed; will retry", symbol=symbol, gap=gap.first_missing_id,
                            attempts=gap.attempts, error=str(exc)[:200])  # fmt: skip
                await asyncio.sleep(backoff_s(failures, self._config.gap_retry_initial_s, self._config.gap_retry_max_s))
                continue
            failures = 0
            if self._flush is not None:
                await self._flush()  # the gap's trades are stored before it is closed
            if unheld and self._rebuild_candles is not None:
                await self._rebuild_candles(self._config.exchange, symbol, min(unheld), max(unheld))
            await self._gaps.close(gap)
            gaps.remove(gap)
            self.stats.gaps_closed += 1
            self._open_gap_gauge.labels(symbol=symbol).set(len(gaps))
            log.info("trade gap filled", symbol=symbol, first_id=gap.first_missing_id, last_id=gap.last_missing_id)

    async def _backfill(self, gap: TradeGap, unheld: list[int]) -> None:
        """Fetch the missing trades from REST and send them on in order; raises VenueError if the venue lacks some.

        ``gap.first_missing_id`` moves up as pages arrive, so a retry continues where the last one stopped.
        """
        while gap.first_missing_id <= gap.last_missing_id:
            params = {
                "symbol": gap.symbol,
                "fromId": str(gap.first_missing_id),
                "limit": str(self._config.backfill_page),
            }
            assert self._session is not None
            page = await self._rest.get_json(
                self._session, "/api/v3/historicalTrades", params, HISTORICAL_TRADES_WEIGHT
            )
            now = time.time_ns()
            progressed = gap.first_missing_id
            for row in page:
                trade_id = int(row["id"])
                if trade_id > gap.last_missing_id:
                    break
                if trade_id < gap.first_missing_id:
                    continue
                trade = Trade(
                    self._config.exchange,
                    gap.symbol,
                    trade_id,
                    float(row["price"]),
                    float(row["qty"]),
                    bool(row["isBuyerMaker"]),
                    int(row["time"]),
                    now,
                )
                await self._emit_backfilled(trade, unheld)
                self.stats.backfilled += 1
                gap.first_missing_id = trade_id + 1
            if gap.first_missing_id == progressed:
                raise VenueError(f"the venue has no trades from {progressed} to {gap.last_missing_id} (yet)")
