"""Candles built from trades (``source="trades"``), for venues or gaps where no kline stream is available.

A candle closes when a trade of a later interval arrives, or on ``flush(now_ms)`` once its interval has ended, so a
quiet market still gets its candle. Intervals without a trade produce no candle (nothing is invented). A late trade
(a backfilled hole, a reconnect) of an interval already closed folds into that interval again and its corrected candle
is returned, so a candle always equals the aggregation of its interval's trades; open and close are the trades with
the lowest and highest id, whatever order they came in. Only trades older than the ``keep_closed`` intervals kept
(or than the first trade this builder saw) cannot be folded in; they are counted in ``late_trades``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from realtime.marketdata.models import Candle, Trade

_INTERVAL_NAMES = {60_000: "1m", 300_000: "5m", 900_000: "15m", 3_600_000: "1h", 86_400_000: "1d"}


@dataclass(slots=True)
class _OpenCandle:
    exchange: str
    symbol: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trade_count: int
    first_id: int
    last_id: int

    @classmethod
    def of(cls, trade: Trade, start: int) -> _OpenCandle:
        p, q = trade.price, trade.quantity
        return cls(trade.exchange, trade.symbol, start, p, p, p, p, q, p * q, 1, trade.trade_id, trade.trade_id)

    def fold(self, trade: Trade) -> None:
        price, quantity = trade.price, trade.quantity
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        if trade.trade_id > self.last_id:
            self.close, self.last_id = price, trade.trade_id
        elif trade.trade_id < self.first_id:
            self.open, self.first_id = price, trade.trade_id
        self.volume += quantity
        self.quote_volume += price * quantity
        self.trade_count += 1

    def to_candle(self, interval: str, closed: bool) -> Candle:
        return Candle(
            self.exchange,
            self.symbol,
            interval,
            self.open_time_ms,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            closed,
            "trades",
            self.quote_volume,
            self.trade_count,
        )


class CandleBuilder:
    """Aggregates trades of any number of symbols into candles of one interval (1 minute by default)."""

    def __init__(self, interval_ms: int = 60_000, keep_closed: int = 240) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.interval_ms = interval_ms
        self.interval = _INTERVAL_NAMES.get(interval_ms, f"{interval_ms}ms")
        self.late_trades = 0
        self._keep_closed = keep_closed
        self._open: dict[tuple[str, str], _OpenCandle] = {}
        self._closed: dict[tuple[str, str], OrderedDict[int, _OpenCandle]] = {}
        self._horizon: dict[tuple[str, str], int] = {}  # the oldest interval whose trades this builder holds

    def add(self, trade: Trade) -> Candle | None:
        """Fold a trade in; returns the candle it closed (a trade of a later interval) or, for a late trade, the
        corrected candle of its closed interval."""
        start = trade.exchange_ts_ms - trade.exchange_ts_ms % self.interval_ms
        key = (trade.exchange, trade.symbol)
        bar = self._open.get(key)
        if bar is not None and start == bar.open_time_ms:
            bar.fold(trade)
            return None
        if bar is not None and start < bar.open_time_ms:
            return self._late(key, trade, start)
        self._open[key] = _OpenCandle.of(trade, start)
        self._horizon.setdefault(key, start)
        if bar is None:
            return None
        self._keep(key, bar)
        return bar.to_candle(self.interval, True)

    def add_backfilled(self, trade: Trade) -> tuple[Candle | None, bool]:
        """Fold a backfilled trade into the interval it belongs to, never opening or closing one for it.

        Returns (the interval's corrected candle if it was closed, whether this builder holds the interval); an
        interval it does not hold (before its first live trade, e.g. after a restart) must be rebuilt from the
        stored trades instead, since only part of its trades ever passed through here.
        """
        start = trade.exchange_ts_ms - trade.exchange_ts_ms % self.interval_ms
        key = (trade.exchange, trade.symbol)
        bar, horizon = self._open.get(key), self._horizon.get(key)
        if bar is None or horizon is None or start < horizon:
            self.late_trades += 1
            return None, False
        if start == bar.open_time_ms:
            bar.fold(trade)
            return None, True
        if start > bar.open_time_ms:
            return self.add(trade), True
        return self._late(key, trade, start), True

    def flush(self, now_ms: int) -> list[Candle]:
        """Close every open candle whose interval ended at or before ``now_ms`` (call it on a timer)."""
        closed = [key for key, bar in self._open.items() if bar.open_time_ms + self.interval_ms <= now_ms]
        out = []
        for key in closed:
            bar = self._open.pop(key)
            self._keep(key, bar)
            out.append(bar.to_candle(self.interval, True))
        return out

    def current(self, exchange: str, symbol: str) -> Candle | None:
        """The still-open candle of a symbol (``closed=False``), e.g. to show the forming bar."""
        bar = self._open.get((exchange, symbol))
        return None if bar is None else bar.to_candle(self.interval, False)

    def _late(self, key: tuple[str, str], trade: Trade, start: int) -> Candle | None:
        """Fold a trade of a closed interval into it again; None if that interval is older than what is kept."""
        closed = self._closed.setdefault(key, OrderedDict())
        if start < self._horizon.get(key, start):
            self.late_trades += 1
            return None
        bar = closed.get(start)
        if bar is None:  # no trade of that interval had come yet: it gets its candle now
            bar = closed[start] = _OpenCandle.of(trade, start)
            self._trim(key, closed)
        else:
            bar.fold(trade)
        return bar.to_candle(self.interval, True)

    def _keep(self, key: tuple[str, str], bar: _OpenCandle) -> None:
        closed = self._closed.setdefault(key, OrderedDict())
        closed[bar.open_time_ms] = bar
        self._trim(key, closed)

    def _trim(self, key: tuple[str, str], closed: OrderedDict[int, _OpenCandle]) -> None:
        if len(closed) <= self._keep_closed:
            return
        for start in sorted(closed)[: len(closed) - self._keep_closed]:
            del closed[start]
        self._horizon[key] = min(closed)
