"""Binance WebSocket endpoints of the simulator: market streams and the user-data stream, on Binance's rules.

``/stream?streams=a/b`` sends combined messages (``{"stream":..,"data":..}``, the captured bytes unchanged);
``/ws/<stream>`` and ``/ws`` send the bare payloads. Live ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``/
``SET_PROPERTY``/``GET_PROPERTY`` requests get Binance's replies. Limits as documented: 1024 streams a connection,
5 incoming messages (pings, pongs, requests) a second or the connection is dropped, a ping every 20 s and a drop
when no pong comes within a minute, and a cut-off after 24 h. ``/ws/<listenKey>`` follows one account's events,
pushed with ``publish_user_event``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import WSCloseCode, web

from realtime.exchanges.simulator.replay import MarketBus, market_bus
from realtime.exchanges.simulator.replay_state import ReplayEvent
from realtime.exchanges.simulator.ws_session import WS_LIMITS, WsLimits, WsSession, setup_ws_core


class MarketConnection:
    """One market-stream connection: its streams, in subscription order, and whether messages are combined."""

    def __init__(self, session: WsSession, hub: BinanceMarketHub, bus: MarketBus, *, combined: bool) -> None:
        self.session = session
        self.combined = combined
        self.streams: dict[str, None] = {}  # an ordered set: LIST_SUBSCRIPTIONS answers in subscription order
        self._hub = hub
        self._bus = bus

    def subscribe(self, streams: list[str]) -> None:
        for stream in streams:
            if stream not in self.streams:
                self.streams[stream] = None
                self._hub.add(stream, self)
        if streams:
            self._bus.note_subscriber()

    def unsubscribe(self, streams: list[str]) -> None:
        for stream in streams:
            if stream in self.streams:
                del self.streams[stream]
                self._hub.remove(stream, self)

    def close(self) -> None:
        self.unsubscribe(list(self.streams))

    async def on_text(self, text: str) -> None:
        """Answer one JSON request the way Binance does."""
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self.session.send_json({"code": 3, "msg": f"Invalid JSON: {exc}", "id": None})
            return
        if not isinstance(request, dict):
            self.session.send_json({"code": 3, "msg": "Invalid JSON: expected an object", "id": None})
            return
        request_id = request.get("id")
        if not (request_id is None or isinstance(request_id, str) or _unsigned(request_id)):
            self.session.send_json({"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"})
            return
        result = self._answer(request.get("method"), request.get("params", []))
        if isinstance(result, _Error):
            self.session.send_json({"code": result.code, "msg": result.msg, "id": request_id})
        else:
            self.session.send_json({"result": result, "id": request_id})

    def _answer(self, method: Any, params: Any) -> Any:
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return _Error(2, "Invalid request: params must be a list of stream names")
            streams = [normal_stream(p) for p in params]
            if any(s is None for s in streams):
                return _Error(2, "Invalid request: invalid stream name")
            names = [s for s in streams if s is not None]
            if method == "UNSUBSCRIBE":
                self.unsubscribe(names)
                return None
            limit = self.session.request.app[WS_LIMITS].max_streams
            if len(self.streams.keys() | set(names)) > limit:
                return _Error(2, f"Invalid request: a connection can listen to at most {limit} streams")
            self.subscribe(names)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            return list(self.streams)
        if method == "SET_PROPERTY":
            if not isinstance(params, list) or len(params) != 2 or params[0] != "combined":
                return _Error(0, "Unknown property")
            if not isinstance(params[1], bool):
                return _Error(1, "Invalid value type: expected Boolean")
            self.combined = params[1]
            return None
        if method == "GET_PROPERTY":
            if params != ["combined"]:
                return _Error(0, "Unknown property")
            return self.combined
        return _Error(2, "Invalid request: unknown method")


class _Error:
    __slots__ = ("code", "msg")

    def __init__(self, code: int, msg: str) -> None:
        self.code, self.msg = code, msg


def _unsigned(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def normal_stream(name: str) -> str | None:
    """A stream name with its symbol in lower case (Binance's form); None if it is not a stream name."""
    symbol, at, rest = name.partition("@")
    if not symbol or not at or not rest:
        return None
    return f"{symbol.lower()}@{rest}"


class BinanceMarketHub:
    """Routes each replayed event to the connections subscribed to its stream."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[MarketConnection]] = {}

    def add(self, stream: str, connection: MarketConnection) -> None:
        self._subscribers.setdefault(stream, set()).add(connection)

    def remove(self, stream: str, connection: MarketConnection) -> None:
        subscribers = self._subscribers.get(stream)
        if subscribers is not None:
            subscribers.discard(connection)
            if not subscribers:
                del self._subscribers[stream]

    def on_event(self, event: ReplayEvent) -> None:
        for connection in self._subscribers.get(event.stream, ()):
            connection.session.send(event.message if connection.combined else event.payload)


class UserStreams:
    """listenKeys the REST side issued and the connections following each; ``accepts`` may be replaced."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._followers: dict[str, set[WsSession]] = {}

    def register(self, listen_key: str) -> None:
        self._keys.add(listen_key)

    def accepts(self, listen_key: str) -> bool:
        return listen_key in self._keys

    def expire(self, listen_key: str) -> None:
        """Tell followers the key expired, as Binance does, and close them."""
        self._keys.discard(listen_key)
        event = {"e": "listenKeyExpired", "E": str(int(time.time() * 1000)), "listenKey": listen_key}
        for session in self._followers.pop(listen_key, set()):
            session.send_json(event)
            session.close_soon(WSCloseCode.GOING_AWAY, "listenKey expired")

    def publish(self, listen_key: str, payload: dict[str, Any]) -> int:
        followers = self._followers.get(listen_key, set())
        frame = orjson.dumps(payload)
        for session in followers:
            session.send(frame)
        return len(followers)

    def follow(self, listen_key: str, session: WsSession) -> None:
        self._followers.setdefault(listen_key, set()).add(session)

    def unfollow(self, listen_key: str, session: WsSession) -> None:
        followers = self._followers.get(listen_key)
        if followers is not None:
            followers.discard(session)
            if not followers:
                del self._followers[listen_key]


BINANCE_HUB = web.AppKey("simulator_binance_hub", BinanceMarketHub)
USER_STREAMS = web.AppKey("simulator_user_streams", UserStreams)


def add_routes(app: web.Application, limits: WsLimits | None = None) -> None:
    """Binance's WebSocket endpoints: ``/stream``, ``/ws``, ``/ws/<stream>[/<stream>...]``, ``/ws/<listenKey>``."""
    setup_ws_core(app, limits)
    hub = app[BINANCE_HUB] = BinanceMarketHub()
    app[USER_STREAMS] = UserStreams()
    market_bus(app).add_client_listener(hub.on_event)
    app.router.add_get("/stream", _combined_streams)
    app.router.add_get("/ws", _raw_streams)
    app.router.add_get("/ws/{tail:.+}", _raw_streams)


def register_listen_key(app: web.Application, listen_key: str) -> None:
    """Make ``/ws/<listenKey>`` accept this key (the REST ``userDataStream`` endpoint calls this)."""
    app[USER_STREAMS].register(listen_key)


def expire_listen_key(app: web.Application, listen_key: str) -> None:
    app[USER_STREAMS].expire(listen_key)


def publish_user_event(app: web.Application, listen_key: str, payload: dict[str, Any]) -> int:
    """Push one user-data event (executionReport, outboundAccountPosition, ...); returns connections reached."""
    return app[USER_STREAMS].publish(listen_key, payload)


async def _combined_streams(request: web.Request) -> web.StreamResponse:
    streams = [s for s in request.query.get("streams", "").split("/") if s]
    return await _serve_market(request, streams, combined=True)


async def _raw_streams(request: web.Request) -> web.StreamResponse:
    tail = request.match_info.get("tail", "")
    if tail and "@" not in tail:
        return await _serve_user_stream(request, tail)
    return await _serve_market(request, [s for s in tail.split("/") if s], combined=False)


async def _serve_market(request: web.Request, names: list[str], *, combined: bool) -> web.StreamResponse:
    app = request.app
    streams = [normal_stream(name) for name in names]
    if any(s is None for s in streams):
        return _refuse(400, "Invalid stream name")
    if len(set(streams)) > app[WS_LIMITS].max_streams:
        return _refuse(400, f"A connection can listen to at most {app[WS_LIMITS].max_streams} streams")
    session = WsSession("binance", request, app[WS_LIMITS], heartbeat=True, rate_limited=True)
    connection = MarketConnection(session, app[BINANCE_HUB], market_bus(app), combined=combined)
    try:
        return await session.serve(connection.on_text, lambda: connection.subscribe([s for s in streams if s]))
    finally:
        connection.close()


async def _serve_user_stream(request: web.Request, listen_key: str) -> web.StreamResponse:
    users = request.app[USER_STREAMS]
    if not users.accepts(listen_key):
        return _refuse(400, "Invalid listenKey")
    session = WsSession("binance", request, request.app[WS_LIMITS], heartbeat=True, rate_limited=True)

    async def ignore_text(text: str) -> None:
        """The user-data stream takes no requests; Binance ignores what clients send on it."""

    try:
        return await session.serve(ignore_text, lambda: users.follow(listen_key, session))
    finally:
        users.unfollow(listen_key, session)


def _refuse(status: int, msg: str) -> web.Response:
    return web.json_response(body=orjson.dumps({"code": -1100, "msg": msg}), status=status)
