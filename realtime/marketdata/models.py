"""Normalised market data: what every venue's messages become, whatever their wire format.

msgspec Structs (no per-message pydantic): cheap to build, to encode for the bus and to compare in tests.
Prices and quantities are floats on this hot path (conventions: converted to Decimal/NUMERIC at the boundary);
a float's ``repr`` gives back the exchange's decimal text exactly for the precisions venues publish.
Exchange timestamps are kept as received (milliseconds) beside the local receive time (nanoseconds).
"""

from __future__ import annotations

import msgspec

PriceLevel = tuple[float, float]
"""(price, quantity); quantity 0 removes the level."""


class Trade(msgspec.Struct, frozen=True, gc=False):
    exchange: str
    symbol: str
    trade_id: int
    price: float
    quantity: float
    is_buyer_maker: bool
    exchange_ts_ms: int
    received_ns: int


class BookTicker(msgspec.Struct, frozen=True, gc=False):
    exchange: str
    symbol: str
    update_id: int
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float
    exchange_ts_ms: int | None  # Binance spot bookTicker carries no event time
    received_ns: int


class BookDelta(msgspec.Struct, frozen=True, gc=False):
    """An incremental depth update (Binance diff depth, Bybit orderbook delta) or, with ``snapshot``, a full book."""

    exchange: str
    symbol: str
    first_update_id: int
    last_update_id: int
    bids: list[PriceLevel]
    asks: list[PriceLevel]
    exchange_ts_ms: int | None
    received_ns: int
    prev_last_update_id: int | None = None  # Binance USD-M futures' `pu`
    snapshot: bool = False


class Candle(msgspec.Struct, frozen=True, gc=False):
    exchange: str
    symbol: str
    interval: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool
    source: str  # "kline" (venue stream) or "trades" (built here from trades)
    quote_volume: float | None = None
    trade_count: int | None = None


MarketEvent = Trade | BookTicker | BookDelta | Candle
