"""Binance combined-stream messages (spot and USD-M futures) parsed into normalised market events.

The hot path reads the stream name straight from the message's first bytes (Binance always writes
``{"stream":"<name>","data":...}``), picks the typed msgspec decoder for that stream kind and decodes the whole
message in one pass; anything else (other key order, whitespace, control messages) takes a generic path that gives
the same result. Decoders run in lax mode so Binance's decimal strings become floats inside msgspec, never through a
Python ``float()`` call. Only combined-stream messages are handled (``/stream?streams=``), not bare ``/ws`` payloads.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType, field

from realtime.marketdata.errors import MalformedMessage
from realtime.marketdata.models import BookDelta, BookTicker, Candle, MarketEvent, Trade
from realtime.marketdata.wire import Price, Size, WireLevel

_STREAM_PREFIX = b'{"stream":"'
_STREAM_START = len(_STREAM_PREFIX)
_MAX_CACHED_STREAMS = 4096  # stream names come from our own subscriptions; the cap only guards against garbage

Handler = Callable[[bytes, int], MarketEvent | None]


class _TradeData(Struct, gc=False):
    symbol: str = field(name="s")
    trade_id: int = field(name="t")
    price: Price = field(name="p")
    quantity: Size = field(name="q")
    trade_time_ms: int = field(name="T")
    is_buyer_maker: bool = field(name="m")


class _AggTradeData(Struct, gc=False):
    symbol: str = field(name="s")
    agg_trade_id: int = field(name="a")
    price: Price = field(name="p")
    quantity: Size = field(name="q")
    trade_time_ms: int = field(name="T")
    is_buyer_maker: bool = field(name="m")


class _BookTickerData(Struct, gc=False):
    symbol: str = field(name="s")
    update_id: int = field(name="u")
    bid_price: Size = field(name="b")  # 0 when a side is empty
    bid_qty: Size = field(name="B")
    ask_price: Size = field(name="a")
    ask_qty: Size = field(name="A")
    transaction_time_ms: int | None = field(default=None, name="T")  # futures only
    event_time_ms: int | None = field(default=None, name="E")  # futures only


class _DepthData(Struct, gc=False):
    symbol: str = field(name="s")
    event_time_ms: int = field(name="E")
    first_update_id: int = field(name="U")
    last_update_id: int = field(name="u")
    bids: list[WireLevel] = field(name="b")
    asks: list[WireLevel] = field(name="a")
    transaction_time_ms: int | None = field(default=None, name="T")  # futures only
    prev_last_update_id: int | None = field(default=None, name="pu")  # futures only


class _Kline(Struct, gc=False):
    open_time_ms: int = field(name="t")
    interval: str = field(name="i")
    open: Price = field(name="o")
    high: Price = field(name="h")
    low: Price = field(name="l")
    close: Price = field(name="c")
    volume: Size = field(name="v")
    quote_volume: Size = field(name="q")
    trade_count: int = field(name="n")
    closed: bool = field(name="x")


class _KlineData(Struct, gc=False):
    symbol: str = field(name="s")
    kline: _Kline = field(name="k")


class _DepthSnapshot(Struct, gc=False):
    last_update_id: int = field(name="lastUpdateId")
    bids: list[WireLevel]
    asks: list[WireLevel]
    transaction_time_ms: int | None = field(default=None, name="T")  # futures only
    event_time_ms: int | None = field(default=None, name="E")  # futures only


# One envelope type per stream kind: decoding the whole message with it costs a single pass ("stream" is skipped).
class _TradeMessage(Struct, gc=False):
    data: _TradeData


class _AggTradeMessage(Struct, gc=False):
    data: _AggTradeData


class _BookTickerMessage(Struct, gc=False):
    data: _BookTickerData


class _DepthMessage(Struct, gc=False):
    data: _DepthData


class _KlineMessage(Struct, gc=False):
    data: _KlineData


class _Probe(Struct, gc=False):
    """What the generic path needs to route a message: its stream, or the marks of a control message."""

    stream: str | None = None
    id: int | str | UnsetType | None = UNSET
    result: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET


def is_depth_snapshot(raw: bytes) -> bool:
    """Whether a captured line is the REST depth snapshot (``/api/v3/depth``), not a stream message."""
    return b'"lastUpdateId"' in raw[:40]


def iter_capture(path: Path) -> Iterator[tuple[int, bytes]]:
    """(local receive ns, raw message) for each line of a ``<ns> <json>`` capture file, gzip or plain."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as lines:
        for line in lines:
            received, _, raw = line.rstrip(b"\n").partition(b" ")
            yield int(received), raw


class BinanceParser:
    """Parses Binance combined-stream messages into Trade / BookTicker / BookDelta / Candle.

    ``exchange`` names the venue in the events (e.g. ``"binance"`` for spot, ``"binanceusdm"`` for USD-M futures);
    the message formats of the two differ only in optional fields, which one parser handles.
    """

    def __init__(self, exchange: str = "binance") -> None:
        self.exchange = exchange
        self._handlers: dict[bytes, Handler] = {}
        self._trade_decoder = msgspec.json.Decoder(_TradeMessage, strict=False)
        self._agg_trade_decoder = msgspec.json.Decoder(_AggTradeMessage, strict=False)
        self._book_ticker_decoder = msgspec.json.Decoder(_BookTickerMessage, strict=False)
        self._depth_decoder = msgspec.json.Decoder(_DepthMessage, strict=False)
        self._kline_decoder = msgspec.json.Decoder(_KlineMessage, strict=False)
        self._probe_decoder = msgspec.json.Decoder(_Probe)
        self._snapshot_decoder = msgspec.json.Decoder(_DepthSnapshot, strict=False)

    def parse(self, raw: bytes, received_ns: int) -> MarketEvent | None:
        """One normalised event, or None for control messages and streams we do not normalise.

        Raises MalformedMessage for anything that is not a well-formed message of a stream we normalise.
        """
        if raw.startswith(_STREAM_PREFIX):
            end = raw.find(b'"', _STREAM_START)
            if end > 0:
                stream = raw[_STREAM_START:end]
                handler = self._handlers.get(stream)
                if handler is None and b"\\" not in stream:
                    handler = self._handler_for(stream.decode("ascii", "replace"), stream)
                if handler is not None:
                    return handler(raw, received_ns)
        return self._parse_generic(raw, received_ns)

    def parse_depth_snapshot(self, raw: bytes, received_ns: int, symbol: str) -> BookDelta:
        """The REST depth snapshot as a ``BookDelta(snapshot=True)`` at ``lastUpdateId`` (it names no symbol)."""
        try:
            snap = self._snapshot_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"not a Binance depth snapshot: {exc}") from exc
        ts = snap.transaction_time_ms if snap.transaction_time_ms is not None else snap.event_time_ms
        return BookDelta(
            self.exchange,
            symbol,
            snap.last_update_id,
            snap.last_update_id,
            snap.bids,
            snap.asks,
            ts,
            received_ns,
            None,
            True,
        )

    def _parse_generic(self, raw: bytes, received_ns: int) -> MarketEvent | None:
        try:
            probe = self._probe_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"not a Binance stream message: {exc}") from exc
        if probe.stream is None:
            # Subscription acks and request errors ({"result":null,"id":1}, {"error":{...},"id":1}) carry no data
            if probe.id is not UNSET or probe.result is not UNSET or probe.error is not UNSET:
                return None
            raise MalformedMessage("message has neither a stream nor a request id")
        handler = self._handler_for(probe.stream, None)
        return None if handler is None else handler(raw, received_ns)

    def _handler_for(self, stream: str, cache_key: bytes | None) -> Handler | None:
        """The decoder for a stream name such as ``btcusdt@depth@100ms``; None for streams we do not normalise."""
        _, _, channel = stream.partition("@")
        handler: Handler
        if channel == "trade":
            handler = self._trade
        elif channel == "bookTicker":
            handler = self._book_ticker
        elif channel == "depth" or channel.startswith("depth@"):
            handler = self._depth  # diff depth; "depth5"/"depth20" partial books are not handled
        elif channel == "aggTrade":
            handler = self._agg_trade
        elif channel.startswith("kline_"):
            handler = self._kline
        else:
            handler = self._ignore
        if cache_key is not None and len(self._handlers) < _MAX_CACHED_STREAMS:
            self._handlers[cache_key] = handler
        return handler

    def _ignore(self, raw: bytes, received_ns: int) -> None:
        return None

    def _trade(self, raw: bytes, received_ns: int) -> Trade:
        try:
            d = self._trade_decoder.decode(raw).data
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"bad trade message: {exc}") from exc
        return Trade(
            self.exchange, d.symbol, d.trade_id, d.price, d.quantity, d.is_buyer_maker, d.trade_time_ms, received_ns
        )

    def _agg_trade(self, raw: bytes, received_ns: int) -> Trade:
        """An aggregate trade; its ``trade_id`` is the aggregate id (``a``), a different sequence from trade ids."""
        try:
            d = self._agg_trade_decoder.decode(raw).data
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"bad aggTrade message: {exc}") from exc
        return Trade(
            self.exchange, d.symbol, d.agg_trade_id, d.price, d.quantity, d.is_buyer_maker, d.trade_time_ms, received_ns
        )

    def _book_ticker(self, raw: bytes, received_ns: int) -> BookTicker:
        try:
            d = self._book_ticker_decoder.decode(raw).data
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"bad bookTicker message: {exc}") from exc
        # Matching-engine time when the venue sends one (futures); spot bookTicker has no timestamp at all
        ts = d.transaction_time_ms if d.transaction_time_ms is not None else d.event_time_ms
        return BookTicker(
            self.exchange, d.symbol, d.update_id, d.bid_price, d.bid_qty, d.ask_price, d.ask_qty, ts, received_ns
        )

    def _depth(self, raw: bytes, received_ns: int) -> BookDelta:
        try:
            d = self._depth_decoder.decode(raw).data
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"bad depthUpdate message: {exc}") from exc
        ts = d.transaction_time_ms if d.transaction_time_ms is not None else d.event_time_ms
        return BookDelta(
            self.exchange,
            d.symbol,
            d.first_update_id,
            d.last_update_id,
            d.bids,
            d.asks,
            ts,
            received_ns,
            d.prev_last_update_id,
        )

    def _kline(self, raw: bytes, received_ns: int) -> Candle:
        try:
            d = self._kline_decoder.decode(raw).data
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"bad kline message: {exc}") from exc
        k = d.kline
        return Candle(
            self.exchange,
            d.symbol,
            k.interval,
            k.open_time_ms,
            k.open,
            k.high,
            k.low,
            k.close,
            k.volume,
            k.closed,
            "kline",
            k.quote_volume,
            k.trade_count,
        )
