"""Market-data sink: publishes normalised events to the bus's market streams and persists them with COPY.

Events are buffered and flushed in batches (by size or age). Persistence goes COPY -> temporary staging table
-> ``INSERT ... ON CONFLICT DO NOTHING``, so a trade that arrives twice (live, then again from a REST backfill
after a reconnect) is stored once. Partitions for the batch's days are created on first sight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
import psycopg
import structlog
from redis.asyncio import Redis

from core.db.timeseries import PsycopgExecutor, ensure_partitions
from core.messaging.streams import Stream, StreamNames
from core.observability.metrics import Metrics
from realtime.marketdata.models import BookTicker, Candle, MarketEvent, Trade

log = structlog.get_logger(__name__)

_TRADE_COLUMNS = "exchange, symbol, trade_id, price, quantity, is_buyer_maker, exchange_ts, exchange_ts_ms, received_at"
_TICKER_COLUMNS = "exchange, symbol, update_id, bid_price, bid_qty, ask_price, ask_qty, ts, exchange_ts_ms, received_at"
_CANDLE_COLUMNS = (
    "exchange, symbol, interval, open_time, open, high, low, close, volume, quote_volume, trade_count, source, closed"
)


@dataclass(slots=True)
class _Buffers:
    trades: list[Trade] = field(default_factory=list)
    tickers: list[BookTicker] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.trades) + len(self.tickers) + len(self.candles)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ns_ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


class MarketDataSink:
    def __init__(
        self,
        database_url: str,
        redis: Redis,
        names: StreamNames,
        metrics: Metrics,
        *,
        max_batch: int = 5_000,
        max_age_s: float = 0.05,
        stream_maxlen: int = 1_000_000,
        persist_tickers: bool = True,
    ) -> None:
        self._url = database_url
        self._redis = redis
        self._names = names
        self._maxlen = stream_maxlen
        self._max_batch = max_batch
        self._max_age_s = max_age_s
        self._persist_tickers = persist_tickers
        self._buffers = _Buffers()
        self._flushing = asyncio.Lock()
        self._oldest = 0.0
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._partitions: dict[str, set[str]] = {}
        self._encoder = msgspec.json.Encoder()
        self._persisted = metrics.counter("patriot_marketdata_persisted_total", "Market-data rows stored", ("kind",))
        self._published = metrics.counter(
            "patriot_marketdata_published_total", "Market-data messages published", ("stream",)
        )

    async def add(self, event: MarketEvent) -> None:
        """Buffer one event; flushes when the batch is full or old enough."""
        if not self._buffers:
            self._oldest = time.monotonic()
        if isinstance(event, Trade):
            self._buffers.trades.append(event)
        elif isinstance(event, BookTicker):
            self._buffers.tickers.append(event)
        elif isinstance(event, Candle):
            self._buffers.candles.append(event)
        else:
            return
        if len(self._buffers) >= self._max_batch or time.monotonic() - self._oldest >= self._max_age_s:
            await self.flush()

    async def add_many(self, events: Sequence[MarketEvent]) -> None:
        for event in events:
            await self.add(event)

    async def flush(self) -> None:
        """Publish, then persist, everything buffered; one flush at a time (they share a connection)."""
        async with self._flushing:
            buffers, self._buffers = self._buffers, _Buffers()
            if not buffers:
                return
            await self._publish(buffers)
            await self._persist(buffers)

    async def close(self) -> None:
        await self.flush()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _publish(self, b: _Buffers) -> None:
        pipe = self._redis.pipeline(transaction=False)
        counts: dict[str, int] = {}
        for stream, events in (
            (Stream.MARKET_TRADES, b.trades),
            (Stream.MARKET_BOOK_TICKER, b.tickers),
            (Stream.MARKET_CANDLES, b.candles),
        ):
            for e in events:
                pipe.xadd(
                    self._names.key(stream, e.symbol),
                    {"p": self._encoder.encode(e)},
                    maxlen=self._maxlen,
                    approximate=True,
                )
            if events:
                counts[stream.value] = len(events)
        await pipe.execute()
        for stream_name, n in counts.items():
            self._published.labels(stream=stream_name).inc(n)

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._url)
            await self._conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS stage_trades (LIKE market_trades) ON COMMIT DELETE ROWS"
            )
            await self._conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS stage_tickers (LIKE book_tickers) ON COMMIT DELETE ROWS"
            )
            await self._conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS stage_candles (LIKE market_candles) ON COMMIT DELETE ROWS"
            )
            await self._conn.commit()
        return self._conn

    async def _persist(self, b: _Buffers) -> None:
        conn = await self._connection()
        await self._ensure_partitions(b)
        async with conn.transaction():
            if b.trades:
                async with conn.cursor().copy(f"COPY stage_trades ({_TRADE_COLUMNS}) FROM STDIN") as copy:
                    for t in b.trades:
                        await copy.write_row(
                            (
                                t.exchange,
                                t.symbol,
                                t.trade_id,
                                repr(t.price),
                                repr(t.quantity),
                                t.is_buyer_maker,
                                _ts(t.exchange_ts_ms),
                                t.exchange_ts_ms,
                                _ns_ts(t.received_ns),
                            )
                        )
                await conn.execute(
                    f"INSERT INTO market_trades ({_TRADE_COLUMNS}) SELECT {_TRADE_COLUMNS} FROM stage_trades "
                    "ON CONFLICT DO NOTHING"
                )
                self._persisted.labels(kind="trade").inc(len(b.trades))
            if b.tickers and self._persist_tickers:
                async with conn.cursor().copy(f"COPY stage_tickers ({_TICKER_COLUMNS}) FROM STDIN") as copy:
                    for k in b.tickers:
                        ts = _ts(k.exchange_ts_ms) if k.exchange_ts_ms is not None else _ns_ts(k.received_ns)
                        await copy.write_row(
                            (
                                k.exchange,
                                k.symbol,
                                k.update_id,
                                repr(k.bid_price),
                                repr(k.bid_qty),
                                repr(k.ask_price),
                                repr(k.ask_qty),
                                ts,
                                k.exchange_ts_ms,
                                _ns_ts(k.received_ns),
                            )
                        )
                await conn.execute(
                    f"INSERT INTO book_tickers ({_TICKER_COLUMNS}) SELECT {_TICKER_COLUMNS} FROM stage_tickers "
                    "ON CONFLICT DO NOTHING"
                )
                self._persisted.labels(kind="book_ticker").inc(len(b.tickers))
            if b.candles:
                async with conn.cursor().copy(f"COPY stage_candles ({_CANDLE_COLUMNS}) FROM STDIN") as copy:
                    for c in b.candles:
                        await copy.write_row(
                            (
                                c.exchange,
                                c.symbol,
                                c.interval,
                                _ts(c.open_time_ms),
                                repr(c.open),
                                repr(c.high),
                                repr(c.low),
                                repr(c.close),
                                repr(c.volume),
                                None if c.quote_volume is None else repr(c.quote_volume),
                                c.trade_count,
                                c.source,
                                c.closed,
                            )
                        )
                # a kline is re-sent while its minute is open, a trade-built candle when late trades rebuild its
                # minute: the last version wins
                await conn.execute(
                    f"INSERT INTO market_candles ({_CANDLE_COLUMNS}) SELECT DISTINCT ON (exchange, symbol, interval,"
                    f" source, open_time) {_CANDLE_COLUMNS} FROM stage_candles ORDER BY exchange, symbol, interval,"
                    " source, open_time, closed DESC, volume DESC"
                    " ON CONFLICT (exchange, symbol, interval, source, open_time)"
                    " DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,"
                    " close = EXCLUDED.close,"
                    " volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume,"
                    " trade_count = EXCLUDED.trade_count, closed = EXCLUDED.closed"
                )
                self._persisted.labels(kind="candle").inc(len(b.candles))

    async def rebuild_trade_candles(self, exchange: str, symbol: str, from_ms: int, to_ms: int) -> int:
        """Recompute the 1-minute trade-built candles of the minutes in [from_ms, to_ms] from the stored trades.

        For minutes the collector's candle builder never held whole (a gap filled after a restart): the stored
        trades are the truth. Returns how many candles were written.
        """
        await self.flush()
        lo, hi = from_ms - from_ms % 60_000, to_ms - to_ms % 60_000 + 60_000
        await self._ensure_candle_partitions(lo, hi - 1)
        conn = await self._connection()
        async with conn.transaction():
            cur = await conn.execute(
                f"INSERT INTO market_candles ({_CANDLE_COLUMNS})"
                " SELECT exchange, symbol, '1m', date_trunc('minute', exchange_ts),"
                " (array_agg(price ORDER BY trade_id))[1], max(price), min(price),"
                " (array_agg(price ORDER BY trade_id DESC))[1], sum(quantity), sum(price * quantity), count(*),"
                " 'trades', true FROM market_trades"
                " WHERE exchange = %s AND symbol = %s AND exchange_ts >= %s AND exchange_ts < %s"
                " GROUP BY exchange, symbol, date_trunc('minute', exchange_ts)"
                " ON CONFLICT (exchange, symbol, interval, source, open_time)"
                " DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,"
                " close = EXCLUDED.close, volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume,"
                " trade_count = EXCLUDED.trade_count, closed = true",
                (exchange, symbol, _ts(lo), _ts(hi)),
            )
            rebuilt = cur.rowcount
        self._persisted.labels(kind="candle").inc(rebuilt)
        return rebuilt

    async def _ensure_candle_partitions(self, lo_ms: int, hi_ms: int) -> None:
        known = self._partitions.setdefault("market_candles", set())
        days = range(lo_ms // 86_400_000, hi_ms // 86_400_000 + 1)
        if not all(f"market_candles:{d}" in known for d in days):
            await asyncio.to_thread(self._create_partitions, "market_candles", lo_ms, hi_ms)
            known.update(f"market_candles:{d}" for d in days)

    def _create_partitions(self, table: str, lo_ms: int, hi_ms: int) -> None:
        with psycopg.connect(self._url) as sync_conn:
            ensure_partitions(PsycopgExecutor(sync_conn), table, _ts(lo_ms), _ts(hi_ms + 1))
            sync_conn.commit()

    async def _ensure_partitions(self, b: _Buffers) -> None:
        """Create the day/month partitions this batch needs (once per process per partition)."""
        needs: list[tuple[str, int, int]] = []
        if b.trades:
            ms = [t.exchange_ts_ms for t in b.trades]
            needs.append(("market_trades", min(ms), max(ms)))
        if b.tickers and self._persist_tickers:
            ns = [k.received_ns // 1_000_000 if k.exchange_ts_ms is None else k.exchange_ts_ms for k in b.tickers]
            needs.append(("book_tickers", min(ns), max(ns)))
        if b.candles:
            ms = [c.open_time_ms for c in b.candles]
            needs.append(("market_candles", min(ms), max(ms)))
        for table, lo, hi in needs:
            known = self._partitions.get(table)
            day_lo, day_hi = lo // 86_400_000, hi // 86_400_000
            if known is not None and all(f"{table}:{d}" in known for d in range(day_lo, day_hi + 1)):
                continue
            await asyncio.to_thread(self._create_partitions, table, lo, hi)
            self._partitions.setdefault(table, set()).update(f"{table}:{d}" for d in range(day_lo, day_hi + 1))
