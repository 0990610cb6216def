"""Bybit v5 public WebSocket endpoints of the simulator, fed by the same replay as the Binance streams.

``/v5/public/spot`` and ``/v5/public/linear`` take ``{"op":"subscribe"|"unsubscribe","args":[..],"req_id":..}`` and
``{"op":"ping"}``. Topics: ``publicTrade.<SYM>`` (one message per replayed trade, same id, price, size, side and
time), ``orderbook.1.<SYM>`` (from bookTicker), ``orderbook.<N>.<SYM>`` (a snapshot on subscribe, then deltas of the
top N levels of the replayed book, ``u`` counting messages per topic) and ``kline.1.<SYM>``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

import orjson
from aiohttp import web

from realtime.exchanges.simulator.replay import REPLAY, market_bus
from realtime.exchanges.simulator.replay_state import Levels, ReplayEvent
from realtime.exchanges.simulator.ws_session import FAULTS, WS_LIMITS, WsLimits, WsSession, setup_ws_core
from realtime.marketdata.bybit import (
    TickDirection,
    tick_direction,
    to_bybit_book_ticker_message,
    to_bybit_kline_message,
    to_bybit_orderbook_message,
    to_bybit_trade_message,
)
from realtime.marketdata.models import BookDelta, BookTicker, Candle, Trade

Category = Literal["spot", "linear"]
_CATEGORIES: tuple[Category, ...] = ("spot", "linear")
_BOOK_DEPTHS: dict[Category, frozenset[int]] = {
    "spot": frozenset({1, 50, 200, 1000}),
    "linear": frozenset({1, 50, 200, 500}),
}
_MAX_ARGS = 10  # Bybit spot's limit of topics per subscribe request


def send_op_reply(session: WsSession, op: str, success: bool, ret_msg: str, req_id: Any) -> None:
    """Bybit's answer to an ``op`` request (subscribe, auth, ping...), echoing its ``req_id``."""
    reply: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": session.conn_id}
    if req_id is not None:
        reply["req_id"] = req_id
    reply["op"] = op
    session.send_json(reply)


def parse_op(text: str) -> tuple[str, list[Any], Any] | None:
    """(op, args, req_id) of a client request, or None when it is not a JSON object."""
    try:
        request = orjson.loads(text)
        return request.get("op", ""), request.get("args") or [], request.get("req_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


class _BookTopic:
    """One ``orderbook.<N>.<SYM>`` topic's view: the levels last sent, so the next message can be a delta."""

    def __init__(self, category: Category, symbol: str, depth: int) -> None:
        self.category, self.symbol, self.depth = category, symbol, depth
        self.topic = f"orderbook.{depth}.{symbol}"
        self.bids: Levels = {}
        self.asks: Levels = {}
        self.ready = False


class BybitConnection:
    def __init__(self, session: WsSession, hub: BybitHub, category: Category) -> None:
        self.session = session
        self.category = category
        self.topics: set[str] = set()
        self._hub = hub

    def reply(self, op: str, success: bool, ret_msg: str, req_id: Any) -> None:
        send_op_reply(self.session, op, success, ret_msg, req_id)

    async def on_text(self, text: str) -> None:
        request = parse_op(text)
        if request is None:
            self.reply("", False, "error:request not supported", None)
            return
        op, args, req_id = request
        if op == "ping":
            if self.session.request.app[FAULTS].answer_pings:
                self.reply("ping", True, "pong", req_id)
        elif op in ("subscribe", "unsubscribe"):
            bad = [a for a in args if not isinstance(a, str) or not _valid_topic(self.category, a)]
            if len(args) > _MAX_ARGS:
                self.reply(op, False, f"args size >{_MAX_ARGS}", req_id)
            elif bad or not args:
                self.reply(op, False, f"error:handler not found,topic:{bad[0] if bad else ''}", req_id)
            elif op == "subscribe":
                self.reply(op, True, "", req_id)  # the reply goes out before the first snapshot, as on Bybit
                for topic in args:
                    if topic not in self.topics:
                        self.topics.add(topic)
                        self._hub.add(self, topic)
            else:
                for topic in args:
                    if topic in self.topics:
                        self.topics.discard(topic)
                        self._hub.remove(self, topic)
                self.reply(op, True, "", req_id)
        else:
            self.reply(str(op), False, f"error:unsupported op {op}", req_id)

    def close(self) -> None:
        for topic in list(self.topics):
            self._hub.remove(self, topic)
        self.topics.clear()


def _valid_topic(category: Category, topic: str) -> bool:
    parts = topic.split(".")
    if len(parts) == 2 and parts[0] == "publicTrade":
        return bool(parts[1])
    if len(parts) == 3 and parts[0] == "orderbook" and parts[1].isdigit():
        return int(parts[1]) in _BOOK_DEPTHS[category] and bool(parts[2])
    return len(parts) == 3 and parts[0] == "kline" and parts[1] == "1" and bool(parts[2])


class BybitHub:
    """Turns replayed Binance events into Bybit messages for the topics someone is subscribed to."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._subscribers: dict[tuple[Category, str], set[BybitConnection]] = {}
        self._books: dict[tuple[Category, str], _BookTopic] = {}
        self._update_ids: dict[tuple[Category, str], int] = {}  # Bybit's u: one more per message of a topic
        self._ticks: dict[tuple[Category, str], tuple[float, TickDirection]] = {}
        self._market_ms: dict[str, int] = {}  # latest replayed exchange time per symbol: the clock of snapshots

    def add(self, connection: BybitConnection, topic: str) -> None:
        key = (connection.category, topic)
        self._subscribers.setdefault(key, set()).add(connection)
        market_bus(self._app).note_subscriber()
        kind, _, rest = topic.partition(".")
        depth_text, _, symbol = rest.partition(".")
        if kind != "orderbook" or depth_text == "1":
            return
        book = self._books.get(key)
        if book is None:
            book = self._books[key] = _BookTopic(connection.category, symbol, int(depth_text))
            self._refresh(book, snapshot=True)
        elif book.ready:
            connection.session.send(self._book_message(book, book.bids, book.asks, snapshot=True, ts_ms=None))

    def remove(self, connection: BybitConnection, topic: str) -> None:
        key = (connection.category, topic)
        subscribers = self._subscribers.get(key)
        if subscribers is None:
            return
        subscribers.discard(connection)
        if not subscribers:
            del self._subscribers[key]
            self._books.pop(key, None)

    def on_event(self, event: ReplayEvent) -> None:
        symbol = event.symbol
        if event.kind == "trade":
            for category, targets in self._targets(f"publicTrade.{symbol}"):
                self._send(targets, self._trade_message(category, event))
        elif event.kind == "bookTicker":
            for category, targets in self._targets(f"orderbook.1.{symbol}"):
                self._send(targets, self._ticker_message(category, event))
        elif event.kind == "kline" and event.stream.endswith("@kline_1m"):
            for _, targets in self._targets(f"kline.1.{symbol}"):
                self._send(targets, _kline_message(event))
        elif event.kind in ("depth", "snapshot"):
            ts_ms = event.data().get("E") if event.kind == "depth" else None
            if ts_ms is not None:
                self._market_ms[symbol] = ts_ms
            for book in list(self._books.values()):
                if book.symbol == symbol:
                    self._refresh(book, snapshot=not book.ready, ts_ms=ts_ms)

    def _targets(self, topic: str) -> Iterator[tuple[Category, set[BybitConnection]]]:
        for category in _CATEGORIES:
            if targets := self._subscribers.get((category, topic)):
                yield category, targets

    @staticmethod
    def _send(targets: set[BybitConnection], frame: bytes) -> None:
        for connection in targets:
            connection.session.send(frame)

    def _next_update_id(self, category: Category, topic: str) -> int:
        u = self._update_ids.get((category, topic), 0) + 1
        self._update_ids[(category, topic)] = u
        return u

    def _trade_message(self, category: Category, event: ReplayEvent) -> bytes:
        t = event.data()
        trade = Trade("bybit", t["s"], int(t["t"]), float(t["p"]), float(t["q"]), bool(t["m"]), int(t["T"]), 0)
        previous = self._ticks.get((category, trade.symbol))
        message = to_bybit_trade_message(
            [trade],
            ts_ms=int(t.get("E", t["T"])),
            category=category,
            previous_price=previous[0] if previous else None,
            previous_tick=previous[1] if previous else None,
        )
        if category != "spot":
            tick = tick_direction(trade.price, *previous) if previous else tick_direction(trade.price, None, None)
            self._ticks[(category, trade.symbol)] = (trade.price, tick)
        return message

    def _ticker_message(self, category: Category, event: ReplayEvent) -> bytes:
        b = event.data()
        prices = float(b["b"]), float(b["B"]), float(b["a"]), float(b["A"])
        ticker = BookTicker("bybit", b["s"], int(b["u"]), *prices, b.get("E"), event.at_ns)
        u = self._next_update_id(category, f"orderbook.1.{ticker.symbol}")
        return to_bybit_book_ticker_message(ticker, update_id=u)

    def _refresh(self, book: _BookTopic, *, snapshot: bool, ts_ms: int | None = None) -> None:
        """Send the topic's subscribers a snapshot, or the delta since the levels they last got."""
        replay = self._app.get(REPLAY)
        source = replay.book(book.symbol) if replay is not None else None
        if source is None or source.last_update_id is None:
            return
        bids, asks = source.top(book.depth)
        if snapshot:
            frame = self._book_message(book, bids, asks, snapshot=True, ts_ms=ts_ms, advance=True)
        else:
            bid_changes, ask_changes = _changes(book.bids, bids), _changes(book.asks, asks)
            if not bid_changes and not ask_changes:
                return
            frame = self._book_message(book, bid_changes, ask_changes, snapshot=False, ts_ms=ts_ms, advance=True)
        book.bids, book.asks, book.ready = bids, asks, True
        self._send(self._subscribers.get((book.category, book.topic), set()), frame)

    def _book_message(
        self, book: _BookTopic, bids: Levels, asks: Levels, *, snapshot: bool, ts_ms: int | None, advance: bool = False
    ) -> bytes:
        key = (book.category, book.topic)
        u = self._next_update_id(*key) if advance else self._update_ids.get(key, 0)
        levels = _floats(bids), _floats(asks)
        ts_ms = ts_ms if ts_ms is not None else self._market_ms.get(book.symbol)
        delta = BookDelta("bybit", book.symbol, u, u, *levels, ts_ms, time.time_ns(), None, snapshot)
        return to_bybit_orderbook_message(delta, depth=book.depth, update_id=u)


def _changes(old: Levels, new: Levels) -> Levels:
    changed = {p: level for p, level in new.items() if old.get(p) != level}
    changed.update({p: (text, "0") for p, (text, _) in old.items() if p not in new})
    return changed


def _floats(levels: Levels) -> list[tuple[float, float]]:
    return [(price, float(qty)) for price, (_, qty) in levels.items()]


def _kline_message(event: ReplayEvent) -> bytes:
    k = event.data()["k"]
    ohlcv = float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"])
    candle = Candle("bybit", k["s"], "1m", int(k["t"]), *ohlcv, bool(k["x"]), "kline", float(k["q"]), int(k["n"]))
    return to_bybit_kline_message(candle, ts_ms=int(event.data()["E"]))


BYBIT_HUB = web.AppKey("simulator_bybit_hub", BybitHub)


def add_routes(app: web.Application, limits: WsLimits | None = None) -> None:
    """Bybit's public endpoints ``/v5/public/spot`` and ``/v5/public/linear``."""
    setup_ws_core(app, limits)
    hub = app[BYBIT_HUB] = BybitHub(app)
    market_bus(app).add_client_listener(hub.on_event)
    app.router.add_get("/v5/public/spot", _spot)
    app.router.add_get("/v5/public/linear", _linear)


async def _spot(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "spot")


async def _linear(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "linear")


async def _serve(request: web.Request, category: Category) -> web.StreamResponse:
    # Bybit keeps connections alive with the client's {"op":"ping"}; it sends no ping frames and counts no rate here
    session = WsSession("bybit", request, request.app[WS_LIMITS], heartbeat=False, rate_limited=False)
    connection = BybitConnection(session, request.app[BYBIT_HUB], category)
    try:
        return await session.serve(connection.on_text)
    finally:
        connection.close()
