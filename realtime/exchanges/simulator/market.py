"""What the simulator's REST side knows of the market: klines, recent trades, and the engine's book, fed by one source.

Every trade and book the feed publishes goes through :class:`Market`, which hands it to the matching engine and keeps
the 1-minute klines and the trade tape that ``/api/v3/klines``, ``/trades`` and ``/historicalTrades`` serve; klines are
folded from the same trades, so REST, WebSocket and the engine never disagree. :class:`CandleFeed` is the feed that
replays candle files directly (tests step it by hand; the server uses it when the WebSocket replay is absent).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from realtime.exchanges.simulator.candles import (
    CANDLE_MS,
    CandleRow,
    PriceLevel,
    SimTrade,
    book_around_trade,
    candle_trades,
)
from realtime.exchanges.simulator.engine import MatchingEngine

ZERO = Decimal(0)


@dataclass(slots=True)
class Kline:
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = ZERO
    quote_volume: Decimal = ZERO
    trades: int = 0
    taker_buy_volume: Decimal = ZERO
    taker_buy_quote: Decimal = ZERO

    def add(self, trade: SimTrade) -> None:
        self.high = max(self.high, trade.price)
        self.low = min(self.low, trade.price)
        self.close = trade.price
        self.volume += trade.qty
        self.quote_volume += trade.quote_qty
        self.trades += 1
        if not trade.is_buyer_maker:
            self.taker_buy_volume += trade.qty
            self.taker_buy_quote += trade.quote_qty

    def merged(self, other: Kline, open_time_ms: int) -> Kline:
        return Kline(
            open_time_ms,
            self.open,
            max(self.high, other.high),
            min(self.low, other.low),
            other.close,
            self.volume + other.volume,
            self.quote_volume + other.quote_volume,
            self.trades + other.trades,
            self.taker_buy_volume + other.taker_buy_volume,
            self.taker_buy_quote + other.taker_buy_quote,
        )


class SymbolTape:
    """One symbol's closed 1-minute klines, the kline still open, and its most recent trades."""

    def __init__(self, history_size: int) -> None:
        self.closed: list[Kline] = []
        self.open: Kline | None = None
        self.trades: deque[SimTrade] = deque(maxlen=history_size)

    def add(self, trade: SimTrade) -> None:
        minute = trade.ts_ms - trade.ts_ms % CANDLE_MS
        if self.open is not None and minute > self.open.open_time_ms:
            self.closed.append(self.open)
            self.open = None
        if self.open is None:
            self.open = Kline(minute, trade.price, trade.price, trade.price, trade.price)
        self.open.add(trade)
        if not self.trades or trade.trade_id > self.trades[-1].trade_id:
            self.trades.append(trade)

    def klines(self) -> Sequence[Kline]:
        return self.closed if self.open is None else [*self.closed, self.open]


class Market:
    """The single entry for market data: the engine matches on it and the REST endpoints read it."""

    def __init__(self, engine: MatchingEngine, history_size: int = 100_000) -> None:
        self.engine = engine
        self.tapes = {symbol: SymbolTape(history_size) for symbol in engine.rules}

    def load_history(self, symbol: str, candles: Sequence[CandleRow], level_qty: Decimal, levels: int = 20) -> None:
        """Candles before the replay starts: klines and trades to serve, and a book at the last close to trade on."""
        tape = self.tapes[symbol]
        for index in range(len(candles)):
            for trade in candle_trades(candles, index):
                tape.add(trade)
        if candles:
            last = tape.trades[-1]
            self.publish_book(symbol, *book_around_trade(last, self.engine.rules[symbol].tick_size, level_qty, levels))

    def publish_trade(self, symbol: str, trade: SimTrade) -> None:
        tape = self.tapes.get(symbol)
        if tape is None:
            return  # a symbol the engine does not trade: nothing to keep
        tape.add(trade)
        self.engine.on_trade(symbol, trade.price, trade.qty, trade.ts_ms)

    def publish_book(self, symbol: str, bids: Iterable[PriceLevel], asks: Iterable[PriceLevel]) -> None:
        if symbol in self.tapes:
            self.engine.on_depth(symbol, bids, asks)

    def klines(
        self, symbol: str, interval_ms: int, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[Kline]:
        """Binance's selection: from ``start_ms`` onwards, else the latest ``limit`` up to ``end_ms``."""
        rows = self.tapes[symbol].klines()
        per_bucket = max(1, interval_ms // CANDLE_MS)
        if start_ms is not None:
            first = bisect.bisect_left(rows, start_ms - start_ms % interval_ms, key=lambda k: k.open_time_ms)
        else:
            last = len(rows) if end_ms is None else bisect.bisect_right(rows, end_ms, key=lambda k: k.open_time_ms)
            first = max(0, last - (limit + 1) * per_bucket)
        buckets: list[Kline] = []
        for row in rows[first:]:
            if end_ms is not None and row.open_time_ms > end_ms:
                break
            bucket = row.open_time_ms - row.open_time_ms % interval_ms
            if buckets and buckets[-1].open_time_ms == bucket:
                buckets[-1] = buckets[-1].merged(row, bucket)
            else:
                buckets.append(replace(row, open_time_ms=bucket))
        if start_ms is not None:
            return [k for k in buckets if k.open_time_ms >= start_ms][:limit]
        return buckets[-limit:]

    def trades(self, symbol: str, from_id: int | None = None, limit: int = 500) -> list[SimTrade]:
        """Trades with id >= ``from_id`` (oldest first), or the latest ``limit``."""
        tape = self.tapes[symbol].trades
        if from_id is None:
            return list(itertools.islice(reversed(tape), limit))[::-1]
        start = bisect.bisect_left(tape, from_id, key=lambda t: t.trade_id)
        return [tape[i] for i in range(start, min(len(tape), start + limit))]

    def trades_between(self, symbol: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[SimTrade]:
        tape = self.tapes[symbol].trades
        start = 0 if start_ms is None else bisect.bisect_left(tape, start_ms, key=lambda t: t.ts_ms)
        found: list[SimTrade] = []
        for i in range(start, len(tape)):
            if (end_ms is not None and tape[i].ts_ms > end_ms) or len(found) >= limit:
                break
            found.append(tape[i])
        return found

    def last_trade(self, symbol: str) -> SimTrade | None:
        tape = self.tapes[symbol].trades
        return tape[-1] if tape else None


class CandleFeed:
    """Publishes candle files' derived trades and books into a :class:`Market`, merged across symbols in time order."""

    def __init__(
        self,
        market: Market,
        candles: Mapping[str, list[CandleRow]],
        start_index: Mapping[str, int] | None = None,
        level_qty: Decimal = Decimal("0.25"),
        levels: int = 20,
    ) -> None:
        self.market = market
        self.level_qty = level_qty
        self.levels = levels
        starts = start_index or {}
        streams = [self._symbol_trades(symbol, rows, starts.get(symbol, 0)) for symbol, rows in candles.items()]
        self._pending: Iterator[tuple[int, str, SimTrade]] = heapq.merge(*streams, key=lambda item: item[0])
        self._next: tuple[int, str, SimTrade] | None = next(self._pending, None)
        self.published = 0

    @staticmethod
    def _symbol_trades(symbol: str, rows: list[CandleRow], start: int) -> Iterator[tuple[int, str, SimTrade]]:
        for index in range(start, len(rows)):
            for trade in candle_trades(rows, index):
                yield trade.ts_ms, symbol, trade

    @property
    def next_ts_ms(self) -> int | None:
        return None if self._next is None else self._next[0]

    def publish_next(self) -> bool:
        """Publish the next trade, then the book it leaves (as the WebSocket replay does); False at the end."""
        if self._next is None:
            return False
        _, symbol, trade = self._next
        self.market.publish_trade(symbol, trade)
        tick = self.market.engine.rules[symbol].tick_size
        self.market.publish_book(symbol, *book_around_trade(trade, tick, self.level_qty, self.levels))
        self.published += 1
        self._next = next(self._pending, None)
        return True

    def advance(self, minutes: int = 1) -> int:
        """Publish every trade of the next ``minutes`` candle minutes; returns how many were published."""
        if self._next is None:
            return 0
        first_minute = self._next[0] - self._next[0] % CANDLE_MS
        until = first_minute + minutes * CANDLE_MS
        count = 0
        while self._next is not None and self._next[0] < until and self.publish_next():
            count += 1
        return count

    async def run(self, speed: float | None) -> None:
        """Publish at ``speed`` times the candles' own pace (None: as fast as the loop allows)."""
        loop = asyncio.get_running_loop()
        first = self.next_ts_ms
        started = loop.time()
        while (ts := self.next_ts_ms) is not None and first is not None:
            if speed is not None:
                delay = started + (ts - first) / 1000 / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif self.published % 256 == 0:
                await asyncio.sleep(0)
            self.publish_next()
