"""Binance combined-stream messages (spot and USD-M futures) parsed into normalised market events.

The hot path is one msgspec decode of a tagged union with one member per stream name seen so far (tag field
``stream``), so routing and decoding happen in C in a single pass, then one method call builds the model. A message
the union does not know (a new stream, a control message, garbage) takes a generic path that routes it by its stream
name, decodes it with that kind's own decoder (with a precise error when malformed) and teaches the union the stream.
Decoders run in lax mode so Binance's decimal strings become floats inside msgspec, never through ``float()``.
Only combined-stream messages are handled (``/stream?streams=``), not bare ``/ws`` payloads.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType, field

from realtime.marketdata.errors import MalformedMessage
from realtime.marketdata.models import BookDelta, BookTicker, Candle, MarketEvent, Trade
from realtime.marketdata.wire import DECODE_ERRORS, Price, Size, WireLevel

_MAX_STREAMS = 4096  # stream names come from our own subscriptions; the cap only guards against garbage


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


# One envelope type per stream kind, holding the conversion to our model. The parser derives one tagged subclass per
# stream name seen ("btcusdt@trade"...), so a single msgspec decode of a union both routes and decodes a message.
class _TradeMessage(Struct, gc=False):
    data: _TradeData

    def normalise(self, exchange: str, received_ns: int) -> Trade:
        d = self.data
        return Trade(
            exchange, d.symbol, d.trade_id, d.price, d.quantity, d.is_buyer_maker, d.trade_time_ms, received_ns
        )


class _AggTradeMessage(Struct, gc=False):
    data: _AggTradeData

    def normalise(self, exchange: str, received_ns: int) -> Trade:
        """An aggregate trade; its ``trade_id`` is the aggregate id (``a``), a different sequence from trade ids."""
        d = self.data
        return Trade(
            exchange, d.symbol, d.agg_trade_id, d.price, d.quantity, d.is_buyer_maker, d.trade_time_ms, received_ns
        )


class _BookTickerMessage(Struct, gc=False):
    data: _BookTickerData

    def normalise(self, exchange: str, received_ns: int) -> BookTicker:
        d = self.data
        # Matching-engine time when the venue sends one (futures); spot bookTicker has no timestamp at all
        ts = d.transaction_time_ms if d.transaction_time_ms is not None else d.event_time_ms
        return BookTicker(
            exchange, d.symbol, d.update_id, d.bid_price, d.bid_qty, d.ask_price, d.ask_qty, ts, received_ns
        )


class _DepthMessage(Struct, gc=False):
    data: _DepthData

    def normalise(self, exchange: str, received_ns: int) -> BookDelta:
        d = self.data
        ts = d.transaction_time_ms if d.transaction_time_ms is not None else d.event_time_ms
        return BookDelta(
            exchange,
            d.symbol,
            d.first_update_id,
            d.last_update_id,
            d.bids,
            d.asks,
            ts,
            received_ns,
            d.prev_last_update_id,
        )


class _KlineMessage(Struct, gc=False):
    data: _KlineData

    def normalise(self, exchange: str, received_ns: int) -> Candle:
        d, k = self.data, self.data.kline
        return Candle(
            exchange,
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


class _IgnoredMessage(Struct, gc=False):
    """A stream we subscribe to but do not normalise (e.g. markPrice): routed cheaply, then dropped."""

    def normalise(self, exchange: str, received_ns: int) -> None:
        return None


_MessageType = type[_TradeMessage | _AggTradeMessage | _BookTickerMessage | _DepthMessage | _KlineMessage]


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


def _message_type(stream: str) -> _MessageType | None:
    """The envelope type for a stream name such as ``btcusdt@depth@100ms``; None for streams we do not normalise."""
    _, _, channel = stream.partition("@")
    if channel == "trade":
        return _TradeMessage
    if channel == "bookTicker":
        return _BookTickerMessage
    if channel == "depth" or channel.startswith("depth@"):
        return _DepthMessage  # diff depth; "depth5"/"depth20" partial books are not handled
    if channel == "aggTrade":
        return _AggTradeMessage
    if channel.startswith("kline_"):
        return _KlineMessage
    return None


class BinanceParser:
    """Parses Binance combined-stream messages into Trade / BookTicker / BookDelta / Candle.

    ``exchange`` names the venue in the events (e.g. ``"binance"`` for spot, ``"binanceusdm"`` for USD-M futures);
    the message formats of the two differ only in optional fields, which one parser handles.
    """

    def __init__(self, exchange: str = "binance") -> None:
        self.exchange = exchange
        self._stream_types: dict[str, type[Struct]] = {}
        self._decoder: msgspec.json.Decoder[Any] | None = None  # union of every stream seen so far
        self._kind_decoders: dict[type[Struct], msgspec.json.Decoder[Any]] = {
            kind: msgspec.json.Decoder(kind, strict=False)
            for kind in (_TradeMessage, _AggTradeMessage, _BookTickerMessage, _DepthMessage, _KlineMessage)
        }
        self._probe_decoder = msgspec.json.Decoder(_Probe)
        self._snapshot_decoder = msgspec.json.Decoder(_DepthSnapshot, strict=False)

    def parse(self, raw: bytes, received_ns: int) -> MarketEvent | None:
        """One normalised event, or None for control messages and streams we do not normalise.

        Raises MalformedMessage for anything that is not a well-formed message of a stream we normalise.
        """
        decoder = self._decoder
        if decoder is not None:
            try:
                return decoder.decode(raw).normalise(self.exchange, received_ns)  # type: ignore[no-any-return]
            except DECODE_ERRORS:
                pass  # a new stream, a control message or a malformed one: the generic path tells them apart
        return self._parse_generic(raw, received_ns)

    def parse_depth_snapshot(self, raw: bytes, received_ns: int, symbol: str) -> BookDelta:
        """The REST depth snapshot as a ``BookDelta(snapshot=True)`` at ``lastUpdateId`` (it names no symbol)."""
        try:
            snap = self._snapshot_decoder.decode(raw)
        except DECODE_ERRORS as exc:
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
        except DECODE_ERRORS as exc:
            raise MalformedMessage(f"not a Binance stream message: {exc}") from exc
        if probe.stream is None:
            # Subscription acks and request errors ({"result":null,"id":1}, {"error":{...},"id":1}) carry no data
            if probe.id is not UNSET or probe.result is not UNSET or probe.error is not UNSET:
                return None
            raise MalformedMessage("message has neither a stream nor a request id")
        kind = _message_type(probe.stream)
        if kind is None:
            self._learn(probe.stream, _IgnoredMessage)
            return None
        try:
            message = self._kind_decoders[kind].decode(raw)
        except DECODE_ERRORS as exc:
            raise MalformedMessage(f"bad {probe.stream} message: {exc}") from exc
        self._learn(probe.stream, kind)
        event: MarketEvent | None = message.normalise(self.exchange, received_ns)
        return event

    def _learn(self, stream: str, kind: type[Struct]) -> None:
        """Add a stream to the routing union (rebuilt once per new stream: a subscription event, not per message)."""
        if stream in self._stream_types or len(self._stream_types) >= _MAX_STREAMS:
            return
        name = f"_Stream{len(self._stream_types)}"
        self._stream_types[stream] = msgspec.defstruct(name, [], bases=(kind,), tag_field="stream", tag=stream)
        self._decoder = msgspec.json.Decoder(Union[tuple(self._stream_types.values())], strict=False)  # noqa: UP007
