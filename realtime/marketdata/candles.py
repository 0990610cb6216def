"""Candles built from trades (``source="trades"``), for venues or gaps where no kline stream is available.

A candle closes when a trade of a later interval arrives, or on ``flush(now_ms)`` once its interval has ended, so a
quiet market still gets its candle. Intervals without a trade produce no candle (nothing is invented); trades older
than the open candle arrive too late to change a published one and are counted in ``late_trades``.
"""

from __future__ import annotations

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

    def __init__(self, interval_ms: int = 60_000) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.interval_ms = interval_ms
        self.interval = _INTERVAL_NAMES.get(interval_ms, f"{interval_ms}ms")
        self.late_trades = 0
        self._open: dict[tuple[str, str], _OpenCandle] = {}

    def add(self, trade: Trade) -> Candle | None:
        """Fold a trade in; returns the candle it closed (a trade of a later interval), if any."""
        start = trade.exchange_ts_ms - trade.exchange_ts_ms % self.interval_ms
        key = (trade.exchange, trade.symbol)
        bar = self._open.get(key)
        if bar is not None and start == bar.open_time_ms:
            price, quantity = trade.price, trade.quantity
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            bar.close = price
            bar.volume += quantity
            bar.quote_volume += price * quantity
            bar.trade_count += 1
            return None
        if bar is not None and start < bar.open_time_ms:
            self.late_trades += 1
            return None
        self._open[key] = _OpenCandle(
            trade.exchange,
            trade.symbol,
            start,
            trade.price,
            trade.price,
            trade.price,
            trade.price,
            trade.quantity,
            trade.price * trade.quantity,
            1,
        )
        return None if bar is None else bar.to_candle(self.interval, True)

    def flush(self, now_ms: int) -> list[Candle]:
        """Close every open candle whose interval ended at or before ``now_ms`` (call it on a timer)."""
        closed = [key for key, bar in self._open.items() if bar.open_time_ms + self.interval_ms <= now_ms]
        return [self._open.pop(key).to_candle(self.interval, True) for key in closed]

    def current(self, exchange: str, symbol: str) -> Candle | None:
        """The still-open candle of a symbol (``closed=False``), e.g. to show the forming bar."""
        bar = self._open.get((exchange, symbol))
        return None if bar is None else bar.to_candle(self.interval, False)
