"""Real 1-minute candles and the trades (and book) the simulator derives from them, deterministically.

Trade ids are a pure function of the candle's position in its file (``index * count + 1`` onwards), so every part of
the simulator that replays the same file (the REST engine feed, the WebSocket streams) prints the same trades with
the same ids, and a trade id can be mapped back to its candle.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from pathlib import Path

TRADES_PER_CANDLE = 12
CANDLE_MS = 60_000
PriceLevel = tuple[Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class CandleRow:
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True, slots=True)
class SimTrade:
    trade_id: int
    price: Decimal
    qty: Decimal
    ts_ms: int
    is_buyer_maker: bool

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty


def _timestamp_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def load_candles(path: str | Path) -> list[CandleRow]:
    """Read a ``timestamp,open,high,low,close,volume`` CSV (optionally gzip); timestamps UTC text or epoch ms."""
    raw = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        raw = gzip.decompress(raw)
    reader = csv.reader(io.StringIO(raw.decode()))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:6]] != [
        "timestamp",
        "open",
        "high",
        "low",
        "close",
        "volume",
    ]:
        raise ValueError(f"{path}: expected header timestamp,open,high,low,close,volume, got {header!r}")
    rows: list[CandleRow] = []
    for ts, o, h, low, c, v, *_ in reader:
        rows.append(CandleRow(_timestamp_ms(ts), Decimal(o), Decimal(h), Decimal(low), Decimal(c), Decimal(v)))
    return rows


def symbol_of_file(path: str | Path) -> str:
    """``BTCUSDT_1m.csv.gz`` -> ``BTCUSDT`` (the shipped files' naming)."""
    return Path(path).name.split("_", 1)[0].split(".", 1)[0].upper()


def _waypoints(row: CandleRow, count: int) -> list[tuple[int, Decimal]]:
    # A rising candle is assumed to dip first and a falling one to spike first: the usual OHLC path heuristic,
    # and it makes both extremes print so limit orders resting at the candle's range are reachable.
    first, second = (row.low, row.high) if row.close >= row.open else (row.high, row.low)
    last = count - 1
    return [(0, row.open), (round(last / 3), first), (round(2 * last / 3), second), (last, row.close)]


def trades_from_candle(
    row: CandleRow,
    first_trade_id: int,
    count: int = TRADES_PER_CANDLE,
    price_step: Decimal = Decimal("0.01"),
    qty_step: Decimal = Decimal("0.00000001"),
) -> list[SimTrade]:
    """``count`` trades walking open -> low/high -> high/low -> close, splitting the volume; same input, same trades."""
    if count < 4:
        raise ValueError("count must be at least 4 (open, both extremes, close)")
    points = _waypoints(row, count)
    prices: list[Decimal] = []
    for (a, pa), (b, pb) in itertools.pairwise(points):
        for i in range(a, b):
            price = pa + (pb - pa) * Decimal(i - a) / Decimal(b - a)
            prices.append(price.quantize(price_step, ROUND_HALF_EVEN) if i != a else pa)
    prices.append(row.close)
    share = (row.volume / count).quantize(qty_step, ROUND_DOWN)
    step_ms = CANDLE_MS // count
    trades: list[SimTrade] = []
    buyer_maker = row.close < row.open
    previous = row.open
    for i, price in enumerate(prices):
        if price != previous:
            buyer_maker = price < previous  # a falling print hit the bid: the buyer was the resting side
        qty = share if i < count - 1 else row.volume - share * (count - 1)
        trades.append(SimTrade(first_trade_id + i, price, qty, row.open_time_ms + i * step_ms, buyer_maker))
        previous = price
    return trades


def candle_trades(candles: Sequence[CandleRow], index: int, count: int = TRADES_PER_CANDLE) -> list[SimTrade]:
    """The trades of ``candles[index]`` with their file-wide ids (see the module docstring)."""
    return trades_from_candle(candles[index], index * count + 1, count)


def candle_index_of_trade(trade_id: int, count: int = TRADES_PER_CANDLE) -> int:
    return (trade_id - 1) // count


def book_around_trade(
    trade: SimTrade, tick_size: Decimal, level_qty: Decimal, levels: int = 20
) -> tuple[list[PriceLevel], list[PriceLevel]]:
    """A synthetic ladder touching the trade's price: the side it printed on holds the price, the other is 1 tick away.

    Level ``k`` holds ``level_qty * (k + 1)``, so deeper levels are thicker, as on a real book.
    """
    if trade.is_buyer_maker:
        best_bid, best_ask = trade.price, trade.price + tick_size
    else:
        best_bid, best_ask = trade.price - tick_size, trade.price
    bids = [(best_bid - tick_size * k, level_qty * (k + 1)) for k in range(levels) if best_bid - tick_size * k > 0]
    asks = [(best_ask + tick_size * k, level_qty * (k + 1)) for k in range(levels)]
    return bids, asks
