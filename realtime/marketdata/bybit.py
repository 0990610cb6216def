"""Bybit v5 public WebSocket topics: parsed into normalised events, and encoded from them (for the simulator).

Topics: ``publicTrade.<SYMBOL>``, ``orderbook.<depth>.<SYMBOL>`` (snapshot + delta, ``u`` and ``seq``) and
``kline.<interval>.<SYMBOL>``, in the documented v5 shape ``{"topic","type","ts","data"[,"cts"]}``.

Trade ids: Bybit's ``i`` is a string (numeric on spot, a UUID on derivatives) while ``Trade.trade_id`` is an int.
Numeric ids are read as that number, so a trade encoded here from a Binance trade (``i`` = its numeric id) parses back
to the same ``trade_id``; a UUID becomes its top 63 bits (stable and fits BIGINT, but not ordered).
``orderbook.1`` snapshots are Bybit's top of book and become ``BookTicker`` (0.0 for an empty side); other book
messages become ``BookDelta`` with ``first_update_id = last_update_id = u`` (``seq`` has no place in the model).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType, field

from realtime.marketdata.errors import MalformedMessage
from realtime.marketdata.models import BookDelta, BookTicker, Candle, MarketEvent, PriceLevel, Trade
from realtime.marketdata.wire import DECODE_ERRORS, Price, Size, WireLevel, decimal_text

# Bybit kline intervals (minutes, or D/W/M) and our names for them
_INTERVALS = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
    "W": "1w",
    "M": "1M",
}
_BYBIT_INTERVALS = {ours: theirs for theirs, ours in _INTERVALS.items()}
_INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000}
_INTERVAL_MS |= {"2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "12h": 43_200_000, "1d": 86_400_000}
_INTERVAL_MS |= {"1w": 604_800_000}

TickDirection = Literal["PlusTick", "ZeroPlusTick", "MinusTick", "ZeroMinusTick"]


class _Envelope(Struct, gc=False):
    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    cts: int | None = None
    data: Raw | UnsetType = UNSET
    op: str | None = None  # subscription replies and pongs carry "op" and no topic


class _TradeIn(Struct, gc=False):
    time_ms: int = field(name="T")
    symbol: str = field(name="s")
    side: Literal["Buy", "Sell"] = field(name="S")
    size: Size = field(name="v")
    price: Price = field(name="p")
    trade_id: str = field(name="i")


class _BookIn(Struct, gc=False):
    symbol: str = field(name="s")
    bids: list[WireLevel] = field(name="b")
    asks: list[WireLevel] = field(name="a")
    update_id: int = field(name="u")
    seq: int | None = None


class _KlineIn(Struct, gc=False):
    start: int
    interval: str
    open: Price
    close: Price
    high: Price
    low: Price
    volume: Size
    turnover: Size
    confirm: bool


class _TradeOut(Struct, kw_only=True, omit_defaults=True):
    T: int
    s: str
    S: str
    v: str
    p: str
    L: str | None = None  # tick direction: derivatives only, absent on spot
    i: str
    BT: bool


class _TradeMessageOut(Struct):
    topic: str
    type: str
    ts: int
    data: list[_TradeOut]


class _BookOut(Struct):
    s: str
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    u: int
    seq: int


class _BookMessageOut(Struct):
    topic: str
    type: str
    ts: int
    data: _BookOut
    cts: int


class _KlineOut(Struct):
    start: int
    end: int
    interval: str
    open: str
    close: str
    high: str
    low: str
    volume: str
    turnover: str
    confirm: bool
    timestamp: int


class _KlineMessageOut(Struct):
    topic: str
    data: list[_KlineOut]
    ts: int
    type: str


def trade_id_from_bybit(text: str) -> int:
    """``Trade.trade_id`` for Bybit's string id: the number itself, or a UUID's top 63 bits."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return uuid.UUID(text).int >> 65
    except ValueError as exc:
        raise MalformedMessage(f"Bybit trade id is neither numeric nor a UUID: {text!r}") from exc


class BybitParser:
    """Parses Bybit v5 public messages; one message may carry several events (trades, klines), hence a list."""

    def __init__(self, exchange: str = "bybit") -> None:
        self.exchange = exchange
        self._envelope = msgspec.json.Decoder(_Envelope)
        self._trades = msgspec.json.Decoder(list[_TradeIn], strict=False)
        self._book = msgspec.json.Decoder(_BookIn, strict=False)
        self._klines = msgspec.json.Decoder(list[_KlineIn], strict=False)
        self._topics: dict[str, Callable[[str, _Envelope, Raw, int], list[MarketEvent]]] = {
            "publicTrade": self._parse_trades,
            "orderbook": self._parse_book,
            "kline": self._parse_klines,
        }

    def parse(self, raw: bytes, received_ns: int) -> list[MarketEvent]:
        """The events of one message; empty for control messages and topics we do not normalise.

        Raises MalformedMessage for anything that is not a well-formed message of a topic we normalise.
        """
        try:
            envelope = self._envelope.decode(raw)
        except DECODE_ERRORS as exc:
            raise MalformedMessage(f"not a Bybit message: {exc}") from exc
        if envelope.topic is None:
            if envelope.op is not None:
                return []
            raise MalformedMessage("message has neither a topic nor an op")
        kind, _, rest = envelope.topic.partition(".")
        handler = self._topics.get(kind)
        if handler is None:
            return []
        if isinstance(envelope.data, UnsetType):
            raise MalformedMessage(f"{envelope.topic} message without data")
        try:
            return handler(rest, envelope, envelope.data, received_ns)
        except DECODE_ERRORS as exc:
            raise MalformedMessage(f"bad {envelope.topic} message: {exc}") from exc

    def _parse_trades(self, rest: str, envelope: _Envelope, data: Raw, received_ns: int) -> list[MarketEvent]:
        return [
            Trade(
                self.exchange,
                t.symbol,
                trade_id_from_bybit(t.trade_id),
                t.price,
                t.size,
                t.side == "Sell",  # the taker sold, so the buyer was the maker
                t.time_ms,
                received_ns,
            )
            for t in self._trades.decode(data)
        ]

    def _parse_book(self, rest: str, envelope: _Envelope, data: Raw, received_ns: int) -> list[MarketEvent]:
        depth, _, _ = rest.partition(".")
        if envelope.type not in ("snapshot", "delta"):
            raise MalformedMessage(f"orderbook message of type {envelope.type!r}")
        book = self._book.decode(data)
        ts = envelope.cts if envelope.cts is not None else envelope.ts
        snapshot = envelope.type == "snapshot"
        if depth == "1" and snapshot:
            bid = book.bids[0] if book.bids else (0.0, 0.0)
            ask = book.asks[0] if book.asks else (0.0, 0.0)
            return [BookTicker(self.exchange, book.symbol, book.update_id, *bid, *ask, ts, received_ns)]
        return [
            BookDelta(
                self.exchange,
                book.symbol,
                book.update_id,
                book.update_id,
                book.bids,
                book.asks,
                ts,
                received_ns,
                None,
                snapshot,
            )
        ]

    def _parse_klines(self, rest: str, envelope: _Envelope, data: Raw, received_ns: int) -> list[MarketEvent]:
        _, _, symbol = rest.partition(".")
        if not symbol:
            raise MalformedMessage(f"kline topic without a symbol: {envelope.topic!r}")
        return [
            Candle(
                self.exchange,
                symbol,
                _INTERVALS.get(k.interval, k.interval),
                k.start,
                k.open,
                k.high,
                k.low,
                k.close,
                k.volume,
                k.confirm,
                "kline",
                k.turnover,
                None,
            )
            for k in self._klines.decode(data)
        ]


def tick_direction(price: float, previous_price: float | None, previous: TickDirection | None) -> TickDirection:
    """Bybit's ``L``: up/down versus the previous trade, or Zero+/Zero- (keeping the last move) when unchanged."""
    if previous_price is not None and price > previous_price:
        return "PlusTick"
    if previous_price is not None and price < previous_price:
        return "MinusTick"
    return "ZeroMinusTick" if previous in ("MinusTick", "ZeroMinusTick") else "ZeroPlusTick"


def to_bybit_trade_message(
    trades: Sequence[Trade],
    *,
    ts_ms: int | None = None,
    category: Literal["spot", "linear", "inverse"] = "linear",
    previous_price: float | None = None,
    previous_tick: TickDirection | None = None,
) -> bytes:
    """A ``publicTrade.<SYMBOL>`` message for trades of one symbol; ``i`` is the numeric trade id as text.

    ``previous_price``/``previous_tick`` carry the tick direction across messages (derivatives only; spot has no L).
    """
    if not trades:
        raise ValueError("a publicTrade message needs at least one trade")
    symbol = trades[0].symbol
    data: list[_TradeOut] = []
    last_price, last_tick = previous_price, previous_tick
    for trade in trades:
        if trade.symbol != symbol:
            raise ValueError(f"one publicTrade message is for one symbol, got {symbol} and {trade.symbol}")
        tick: TickDirection | None = None
        if category != "spot":
            tick = last_tick = tick_direction(trade.price, last_price, last_tick)
            last_price = trade.price
        data.append(
            _TradeOut(
                T=trade.exchange_ts_ms,
                s=symbol,
                S="Sell" if trade.is_buyer_maker else "Buy",
                v=decimal_text(trade.quantity),
                p=decimal_text(trade.price),
                L=tick,
                i=str(trade.trade_id),
                BT=False,
            )
        )
    ts = ts_ms if ts_ms is not None else max(trade.exchange_ts_ms for trade in trades)
    return msgspec.json.encode(_TradeMessageOut(f"publicTrade.{symbol}", "snapshot", ts, data))


def to_bybit_orderbook_message(
    book: BookDelta,
    *,
    depth: int = 50,
    update_id: int | None = None,
    seq: int | None = None,
    ts_ms: int | None = None,
) -> bytes:
    """An ``orderbook.<depth>.<SYMBOL>`` snapshot (``book.snapshot``) or delta message.

    Bybit's ``u`` goes up by one per message of a topic: callers replaying another venue pass their own counter as
    ``update_id`` (default: ``book.last_update_id``); ``seq`` defaults to the same. Snapshots are sorted and cut to
    ``depth``; a delta is sent as given, so it must already be limited to the levels a ``depth`` book holds.
    """
    bids, asks = book.bids, book.asks
    if book.snapshot:
        bids = sorted(bids, key=lambda level: -level[0])[:depth]
        asks = sorted(asks, key=lambda level: level[0])[:depth]
    u = update_id if update_id is not None else book.last_update_id
    ts = ts_ms if ts_ms is not None else _ms(book.exchange_ts_ms, book.received_ns)
    data = _BookOut(book.symbol, _levels_text(bids), _levels_text(asks), u, seq if seq is not None else u)
    kind = "snapshot" if book.snapshot else "delta"
    cts = book.exchange_ts_ms if book.exchange_ts_ms is not None else ts
    return msgspec.json.encode(_BookMessageOut(f"orderbook.{depth}.{book.symbol}", kind, ts, data, cts))


def to_bybit_book_ticker_message(
    ticker: BookTicker, *, update_id: int | None = None, seq: int | None = None, ts_ms: int | None = None
) -> bytes:
    """Top of book as an ``orderbook.1.<SYMBOL>`` snapshot (Bybit pushes level 1 as snapshots)."""
    bids = [(ticker.bid_price, ticker.bid_qty)] if ticker.bid_qty > 0 else []
    asks = [(ticker.ask_price, ticker.ask_qty)] if ticker.ask_qty > 0 else []
    u = update_id if update_id is not None else ticker.update_id
    ts = ts_ms if ts_ms is not None else _ms(ticker.exchange_ts_ms, ticker.received_ns)
    data = _BookOut(ticker.symbol, _levels_text(bids), _levels_text(asks), u, seq if seq is not None else u)
    cts = ticker.exchange_ts_ms if ticker.exchange_ts_ms is not None else ts
    return msgspec.json.encode(_BookMessageOut(f"orderbook.1.{ticker.symbol}", "snapshot", ts, data, cts))


def to_bybit_kline_message(candle: Candle, *, ts_ms: int | None = None) -> bytes:
    """A ``kline.<interval>.<SYMBOL>`` message (``confirm`` = closed; turnover = quote volume, 0 when unknown)."""
    interval = _BYBIT_INTERVALS.get(candle.interval)
    length = _INTERVAL_MS.get(candle.interval)
    if interval is None or length is None:
        raise ValueError(f"Bybit has no {candle.interval!r} kline")
    end = candle.open_time_ms + length - 1
    ts = ts_ms if ts_ms is not None else end
    kline = _KlineOut(
        candle.open_time_ms,
        end,
        interval,
        decimal_text(candle.open),
        decimal_text(candle.close),
        decimal_text(candle.high),
        decimal_text(candle.low),
        decimal_text(candle.volume),
        decimal_text(candle.quote_volume or 0.0),
        candle.closed,
        ts,
    )
    return msgspec.json.encode(_KlineMessageOut(f"kline.{interval}.{candle.symbol}", [kline], ts, "snapshot"))


def _levels_text(levels: Sequence[PriceLevel]) -> list[tuple[str, str]]:
    return [(decimal_text(price), decimal_text(size)) for price, size in levels]


def _ms(exchange_ts_ms: int | None, received_ns: int) -> int:
    return exchange_ts_ms if exchange_ts_ms is not None else received_ns // 1_000_000
