"""What the replay carries and keeps: replayed events, the rebuilt order book, recent trades, and 1-minute klines.

Everything here works on Binance's wire text (decimal strings), so what the REST side serves reads back exactly as
the WebSocket side sent it.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson

EventKind = Literal["trade", "bookTicker", "depth", "kline", "snapshot", "other"]
Levels = dict[float, tuple[str, str]]
"""price -> (price text, quantity text), keyed by float so the best levels can be found cheaply."""

_DATA_KEY = b'","data":'
_EIGHT_PLACES = Decimal("1e-8")


@dataclass(slots=True)
class ReplayEvent:
    """One message of the replay, in Binance's wire format; ``stream`` is empty for a REST depth snapshot."""

    at_ns: int  # the pacing clock: capture receive time, or the derived event time
    kind: EventKind
    symbol: str  # upper case, as venues write it in payloads
    stream: str  # Binance stream name, e.g. "btcusdt@depth@100ms"
    message: bytes  # combined-stream bytes {"stream":..,"data":..}, exactly as captured; the snapshot's JSON
    payload: bytes  # the data part alone, as a raw /ws/<stream> connection receives it
    _decoded: dict[str, Any] | None = field(default=None, repr=False)

    def data(self) -> dict[str, Any]:
        """The payload decoded once, shared by every consumer of the event."""
        if self._decoded is None:
            self._decoded = orjson.loads(self.payload)
        return self._decoded


def stream_kind(stream: str) -> EventKind:
    """What a Binance stream carries, from its name."""
    _, _, name = stream.partition("@")
    if name == "trade":
        return "trade"
    if name == "bookTicker":
        return "bookTicker"
    if name.startswith("depth"):
        return "depth"
    if name.startswith("kline_"):
        return "kline"
    return "other"


def stream_message(stream: str, payload: bytes) -> bytes:
    """The combined-stream envelope, written the way Binance writes it (no spaces, stream first)."""
    return b'{"stream":"' + stream.encode() + _DATA_KEY + payload + b"}"


def split_stream_message(message: bytes) -> tuple[str, bytes] | None:
    """(stream, payload bytes) of a combined-stream message without re-encoding the payload; None if not one."""
    if message.startswith(b'{"stream":"'):
        end = message.find(b'"', 11)
        if end > 11 and message.startswith(_DATA_KEY, end) and message.endswith(b"}"):
            return message[11:end].decode(), message[end + len(_DATA_KEY) : -1]
    try:
        decoded = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if isinstance(decoded, dict) and isinstance(decoded.get("stream"), str) and "data" in decoded:
        return decoded["stream"], orjson.dumps(decoded["data"])
    return None


def fixed8(value: Decimal) -> str:
    return format(value.quantize(_EIGHT_PLACES), "f")


class OrderBook:
    """A book rebuilt the way Binance tells clients to: buffer the diffs, take a REST snapshot, apply newer diffs.

    A capture that starts mid-stream has no snapshot: until one arrives, the venue's book is what the diffs built
    from the first one on (``_from_diffs``), so ``GET /depth`` still answers a book the diff stream continues, as
    the real venue's always does.
    """

    def __init__(self, max_buffered: int = 10_000) -> None:
        self.last_update_id: int | None = None
        self.bids: Levels = {}
        self.asks: Levels = {}
        self._buffered: list[dict[str, Any]] = []  # diffs that arrived before the snapshot
        self._max_buffered = max_buffered
        self._from_diffs: OrderBook | None = None

    def reset(self, snapshot: dict[str, Any]) -> None:
        self.last_update_id = int(snapshot["lastUpdateId"])
        self.bids = {float(p): (p, q) for p, q in snapshot["bids"]}
        self.asks = {float(p): (p, q) for p, q in snapshot["asks"]}
        buffered, self._buffered = self._buffered, []
        self._from_diffs = None
        for update in buffered:
            self.apply(update)

    def apply(self, update: dict[str, Any]) -> bool:
        """Apply a depthUpdate; False when it is buffered for a snapshot to come, or older than the book."""
        if self.last_update_id is None:
            if len(self._buffered) < self._max_buffered:
                self._buffered.append(update)
            if self._from_diffs is None:
                self._from_diffs = OrderBook()
                self._from_diffs.last_update_id = int(update["U"]) - 1
            self._from_diffs.apply(update)
            return False
        if int(update["u"]) <= self.last_update_id:
            return False
        for side, levels in ((self.bids, update["b"]), (self.asks, update["a"])):
            for price, qty in levels:
                if float(qty) == 0.0:
                    side.pop(float(price), None)
                else:
                    side[float(price)] = (price, qty)
        self.last_update_id = int(update["u"])
        return True

    def top(self, depth: int) -> tuple[Levels, Levels]:
        """The best ``depth`` levels of each side."""
        bids = {p: self.bids[p] for p in heapq.nlargest(depth, self.bids)}
        asks = {p: self.asks[p] for p in heapq.nsmallest(depth, self.asks)}
        return bids, asks

    def rest_depth(self, limit: int) -> dict[str, Any] | None:
        """``GET /api/v3/depth`` shape: best first on both sides; before any snapshot, the book the diffs built."""
        if self.last_update_id is None:
            return self._from_diffs.rest_depth(limit) if self._from_diffs is not None else None
        bids, asks = self.top(limit)
        return {
            "lastUpdateId": self.last_update_id,
            "bids": [list(bids[p]) for p in sorted(bids, reverse=True)],
            "asks": [list(asks[p]) for p in sorted(asks)],
        }


class TradeHistory:
    """The most recent trades of one symbol, looked up by id for ``historicalTrades`` gap backfill."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: list[int] = []
        self._rows: list[tuple[int, str, str, int, bool]] = []

    def add(self, trade: dict[str, Any]) -> None:
        trade_id = int(trade["t"])
        if self._ids and trade_id <= self._ids[-1]:
            return  # a replayed duplicate must not break the ordering bisect relies on
        self._ids.append(trade_id)
        self._rows.append((trade_id, trade["p"], trade["q"], int(trade["T"]), bool(trade["m"])))
        if len(self._ids) > self._capacity + max(1, self._capacity // 4):  # trim in steps, not on every trade
            del self._ids[: -self._capacity]
            del self._rows[: -self._capacity]

    def since(self, from_id: int | None, limit: int) -> list[dict[str, Any]]:
        """Trades with id >= ``from_id`` (oldest first), or the latest ``limit`` when no id is given."""
        start = max(0, len(self._ids) - limit) if from_id is None else bisect.bisect_left(self._ids, from_id)
        return [_rest_trade(row) for row in self._rows[start : start + limit]]

    def __len__(self) -> int:
        return len(self._ids)


def _rest_trade(row: tuple[int, str, str, int, bool]) -> dict[str, Any]:
    trade_id, price, qty, time_ms, buyer_maker = row
    return {
        "id": trade_id,
        "price": price,
        "qty": qty,
        "quoteQty": fixed8(Decimal(price) * Decimal(qty)),
        "time": time_ms,
        "isBuyerMaker": buyer_maker,
        "isBestMatch": True,
    }


@dataclass(slots=True)
class _OpenKline:
    open_time_ms: int
    first_id: int
    last_id: int
    open: str
    high: Decimal
    high_text: str
    low: Decimal
    low_text: str
    close: str
    volume: Decimal
    quote_volume: Decimal
    taker_buy_volume: Decimal
    taker_buy_quote: Decimal
    count: int


class KlineBuilder:
    """1-minute klines of one symbol built from its trades; pushed at most every ``push_ms`` and when closed.

    Real Binance also closes a kline when the minute ends without a trade; here the close goes out with the next
    minute's first trade (or at the end of the replay), which keeps the output a pure function of the trades.
    """

    def __init__(self, symbol: str, push_ms: int = 2000) -> None:
        self.symbol = symbol
        self._push_ms = push_ms
        self._open: _OpenKline | None = None
        self._last_push_ms: int | None = None

    def on_trade(self, trade: dict[str, Any]) -> list[bytes]:
        """Kline payloads to push after this trade: the closed previous minute first, then the current one."""
        out: list[bytes] = []
        time_ms, event_ms = int(trade["T"]), int(trade.get("E", trade["T"]))
        minute = time_ms - time_ms % 60_000
        if self._open is not None and minute > self._open.open_time_ms:
            out.append(self._payload(self._open, event_ms, closed=True))
            self._open = None
        price, qty, price_text = Decimal(trade["p"]), Decimal(trade["q"]), trade["p"]
        taker_buys = not trade["m"]
        k = self._open
        if k is None:
            zero = Decimal(0)
            k = self._open = _OpenKline(
                minute, int(trade["t"]), 0, price_text, price, price_text, price, price_text, price_text,
                zero, zero, zero, zero, 0,
            )  # fmt: skip
            self._last_push_ms = None
        k.last_id, k.close, k.count = int(trade["t"]), price_text, k.count + 1
        if price > k.high:
            k.high, k.high_text = price, price_text
        if price < k.low:
            k.low, k.low_text = price, price_text
        k.volume += qty
        k.quote_volume += price * qty
        if taker_buys:
            k.taker_buy_volume += qty
            k.taker_buy_quote += price * qty
        if self._last_push_ms is None or event_ms - self._last_push_ms >= self._push_ms:
            self._last_push_ms = event_ms
            out.append(self._payload(k, event_ms, closed=False))
        return out

    def close(self) -> bytes | None:
        """The last kline, closed: what the venue pushes when the final minute ends."""
        if self._open is None:
            return None
        k, self._open = self._open, None
        return self._payload(k, k.open_time_ms + 60_000, closed=True)

    def _payload(self, k: _OpenKline, event_ms: int, *, closed: bool) -> bytes:
        kline = {
            "t": k.open_time_ms,
            "T": k.open_time_ms + 59_999,
            "s": self.symbol,
            "i": "1m",
            "f": k.first_id,
            "L": k.last_id,
            "o": k.open,
            "c": k.close,
            "h": k.high_text,
            "l": k.low_text,
            "v": format(k.volume, "f"),
            "n": k.count,
            "x": closed,
            "q": fixed8(k.quote_volume),
            "V": format(k.taker_buy_volume, "f"),
            "Q": fixed8(k.taker_buy_quote),
            "B": "0",
        }
        return orjson.dumps({"e": "kline", "E": event_ms, "s": self.symbol, "k": kline})
