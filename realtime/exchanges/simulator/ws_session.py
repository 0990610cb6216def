"""WebSocket connection mechanics shared by the simulated venues: ordered sends, heartbeats, limits, faults.

Each connection has one writer task draining an ordered queue (replayed data and replies alike), so a slow reader
never reorders messages; control frames (ping/pong) bypass the queue like a real server's. Fault injection lives here
because every fault acts on connections: drop them, stop answering pings, skip or delay messages, inject junk.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from realtime.exchanges.simulator.replay import market_bus
from realtime.exchanges.simulator.replay_state import ReplayEvent

Venue = Literal["binance", "bybit"]
TextHandler = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WsLimits:
    """Connection rules; defaults are Binance's documented ones (tests shorten the timers)."""

    ping_interval_s: float = 20.0
    pong_timeout_s: float = 60.0
    max_lifetime_s: float = 24 * 3600.0
    max_streams: int = 1024
    max_incoming_per_s: int = 5  # pings, pongs and JSON control messages all count
    max_queue: int = 100_000  # outbound messages a reader may fall behind before it is cut off as too slow
    high_water: int = 1_000  # with speed=max the replay waits until every queue is below this


class WsSession:
    """One accepted WebSocket: the queue and writer, the heartbeat and lifetime timer, the incoming-rate limit."""

    def __init__(
        self, venue: Venue, request: web.Request, limits: WsLimits, *, heartbeat: bool, rate_limited: bool
    ) -> None:
        self.venue = venue
        self.conn_id = str(uuid.uuid4())
        self.request = request
        self.ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
        self._limits = limits
        self._faults = request.app[FAULTS]
        self._heartbeat = heartbeat
        self._rate_limited = rate_limited
        self._queue: deque[tuple[bytes, float]] = deque()
        self._wakeup = asyncio.Event()
        self._below_high_water = asyncio.Event()
        self._below_high_water.set()
        self._incoming: deque[float] = deque()
        self._awaiting_pong_since: float | None = None
        self._closing: asyncio.Task[None] | None = None
        self.closed = False

    async def serve(self, on_text: TextHandler, on_open: Callable[[], None] | None = None) -> web.WebSocketResponse:
        """Run the connection until either side ends it; ``on_open`` runs once the handshake is done."""
        sessions = self.request.app[SESSIONS]
        await self.ws.prepare(self.request)
        sessions.add(self)
        tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._keep_alive())]
        try:
            if on_open is not None:
                on_open()
            await self._read(on_text)
        finally:
            self._mark_closed()
            sessions.discard(self)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._closing is not None:
                await asyncio.gather(self._closing, return_exceptions=True)  # keeps the close code it chose
            elif not self.ws.closed:
                await self.ws.close()
        return self.ws

    def send(self, frame: bytes) -> None:
        """Queue one text message; a reader too far behind is disconnected, as the venues do."""
        if self.closed:
            return
        if len(self._queue) >= self._limits.max_queue:
            self.close_soon(WSCloseCode.POLICY_VIOLATION, "too slow to keep up")
            return
        self._queue.append((frame, time.monotonic()))
        self._wakeup.set()
        if len(self._queue) > self._limits.high_water:
            self._below_high_water.clear()

    def send_json(self, payload: dict[str, Any]) -> None:
        self.send(orjson.dumps(payload))

    async def close(self, code: int, reason: str) -> None:
        self._mark_closed()
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode())

    def close_soon(self, code: int, reason: str) -> None:
        """Close with a close frame from outside the reader (timers, limits, faults)."""
        if not self.closed:
            self._closing = asyncio.get_running_loop().create_task(self.close(code, reason))

    def abort(self) -> None:
        """Cut the TCP connection without a close frame: what a network failure looks like to the client."""
        self._mark_closed()
        if self.request.transport is not None:
            self.request.transport.abort()

    async def wait_writable(self) -> None:
        await self._below_high_water.wait()

    def _mark_closed(self) -> None:
        self.closed = True
        self._queue.clear()
        self._wakeup.set()
        self._below_high_water.set()  # a dead connection must never hold the replay back

    async def _read(self, on_text: TextHandler) -> None:
        while not self.closed:
            msg = await self.ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if self._rate_limited and not self._admit():
                await self.close(WSCloseCode.POLICY_VIOLATION, "too many messages")
                return
            if msg.type == WSMsgType.TEXT:
                await on_text(msg.data)
            elif msg.type == WSMsgType.PING and self._faults.answer_pings:
                await self.ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                self._awaiting_pong_since = None

    def _admit(self) -> bool:
        now = time.monotonic()
        while self._incoming and now - self._incoming[0] >= 1.0:
            self._incoming.popleft()
        self._incoming.append(now)
        return len(self._incoming) <= self._limits.max_incoming_per_s

    async def _write(self) -> None:
        low_water = self._limits.high_water // 2
        try:
            while not self.closed:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                frame, queued_at = self._queue.popleft()
                if (delay := queued_at + self._faults.delay_s - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                await self.ws.send_frame(frame, WSMsgType.TEXT)
                if len(self._queue) <= low_water:
                    self._below_high_water.set()
        except (ConnectionError, RuntimeError):
            self._mark_closed()  # the peer went away mid-send; the reader sees the close

    async def _keep_alive(self) -> None:
        limits = self._limits
        deadline = time.monotonic() + limits.max_lifetime_s
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close_soon(WSCloseCode.GOING_AWAY, "connection lifetime reached")
                return
            await asyncio.sleep(min(limits.ping_interval_s, remaining) if self._heartbeat else remaining)
            if not self._heartbeat or self.closed:
                continue
            now = time.monotonic()
            if self._awaiting_pong_since is not None and now - self._awaiting_pong_since >= limits.pong_timeout_s:
                self.close_soon(WSCloseCode.POLICY_VIOLATION, "pong timeout")
                return
            if self._faults.send_pings:
                try:
                    await self.ws.ping(str(int(time.time() * 1000)).encode())
                except (ConnectionError, RuntimeError):
                    return
                if self._awaiting_pong_since is None:
                    self._awaiting_pong_since = now


class SessionSet:
    """Every open simulator connection of the app, for backpressure and connection-wide faults."""

    def __init__(self) -> None:
        self._sessions: set[WsSession] = set()

    def add(self, session: WsSession) -> None:
        self._sessions.add(session)

    def discard(self, session: WsSession) -> None:
        self._sessions.discard(session)

    def __iter__(self) -> Iterator[WsSession]:
        return iter(list(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)

    async def drained(self) -> None:
        for session in list(self._sessions):
            await session.wait_writable()


class WsFaults:
    """Fault switches for collector tests; see ``POST /admin/ws-faults`` for the HTTP form."""

    def __init__(self, sessions: SessionSet) -> None:
        self._sessions = sessions
        self.answer_pings = True  # answer client pings (frames, and Bybit's {"op":"ping"})
        self.send_pings = True  # send server heartbeat pings
        self.delay_s = 0.0  # extra latency for every outbound message
        self._skips: dict[str, int] = {}  # stream name (or "*") -> messages still to withhold

    def skip_next(self, count: int, stream: str = "*") -> None:
        """Withhold the next ``count`` replayed messages of ``stream`` (or of any stream) from every connection."""
        self._skips[stream] = self._skips.get(stream, 0) + count

    def keep(self, event: ReplayEvent) -> bool:
        for key in (event.stream, "*"):
            if self._skips.get(key, 0) > 0:
                self._skips[key] -= 1
                return False
        return True

    def drop_connections(self, venue: Venue | None = None, *, abort: bool = True) -> int:
        """Drop every connection now: cut (default) or closed with a 1001 close frame."""
        dropped = 0
        for session in self._sessions:
            if venue is None or session.venue == venue:
                if abort:
                    session.abort()
                else:
                    session.close_soon(WSCloseCode.GOING_AWAY, "dropped by fault")
                dropped += 1
        return dropped

    def inject(self, text: str | bytes, venue: Venue | None = None) -> int:
        """Send raw text (malformed JSON, unknown events) to every connection, in order with the data; returns
        the number of connections reached."""
        frame = text.encode() if isinstance(text, str) else text
        sent = 0
        for session in self._sessions:
            if venue is None or session.venue == venue:
                session.send(frame)
                sent += 1
        return sent

    def reset(self) -> None:
        self.answer_pings, self.send_pings, self.delay_s = True, True, 0.0
        self._skips.clear()

    def state(self) -> dict[str, Any]:
        return {
            "answer_pings": self.answer_pings,
            "send_pings": self.send_pings,
            "delay_ms": round(self.delay_s * 1000),
            "skip": {k: v for k, v in self._skips.items() if v > 0},
            "connections": len(self._sessions),
        }


SESSIONS = web.AppKey("simulator_ws_sessions", SessionSet)
FAULTS = web.AppKey("simulator_ws_faults", WsFaults)
WS_LIMITS = web.AppKey("simulator_ws_limits", WsLimits)


def setup_ws_core(app: web.Application, limits: WsLimits | None = None) -> None:
    """Sessions, faults and limits for the app, once, whichever venue's routes are added first."""
    if limits is not None:
        app[WS_LIMITS] = limits
    elif WS_LIMITS not in app:
        app[WS_LIMITS] = WsLimits()
    if SESSIONS in app:
        return
    sessions = app[SESSIONS] = SessionSet()
    faults = app[FAULTS] = WsFaults(sessions)
    bus = market_bus(app)
    bus.add_filter(faults.keep)
    bus.add_drain(sessions.drained)
    app.on_shutdown.append(_close_sessions)
    app.router.add_get("/admin/ws-faults", _faults_state)
    app.router.add_post("/admin/ws-faults", _set_faults)


async def _close_sessions(app: web.Application) -> None:
    """Close connections on shutdown; open WebSocket handlers would otherwise hold the server's shutdown."""
    closing = [session.close(WSCloseCode.GOING_AWAY, "server shutdown") for session in app[SESSIONS]]
    await asyncio.gather(*closing, return_exceptions=True)


async def _faults_state(request: web.Request) -> web.Response:
    return web.json_response(body=orjson.dumps(request.app[FAULTS].state()))


async def _set_faults(request: web.Request) -> web.Response:
    """Body, every key optional: ``{"reset", "answer_pings", "send_pings", "delay_ms", "skip": {"count", "stream"},
    "inject": [text, ...], "venue": "binance"|"bybit", "drop_connections": true|"close"}``; answers what was done
    (``injected`` counts messages times connections) and the faults now in force."""
    faults = request.app[FAULTS]
    try:
        body = orjson.loads(await request.read() or b"{}")
        venue = body.get("venue")
        if venue not in (None, "binance", "bybit"):
            raise ValueError(f"unknown venue {venue!r}")
        if body.get("reset"):
            faults.reset()
        if "answer_pings" in body:
            faults.answer_pings = bool(body["answer_pings"])
        if "send_pings" in body:
            faults.send_pings = bool(body["send_pings"])
        if "delay_ms" in body:
            faults.delay_s = max(0.0, float(body["delay_ms"]) / 1000)
        if skip := body.get("skip"):
            faults.skip_next(int(skip["count"]), str(skip.get("stream", "*")))
        injected = sum(faults.inject(text, venue) for text in body.get("inject", []))
        dropped = 0
        if drop := body.get("drop_connections"):
            dropped = faults.drop_connections(venue, abort=drop != "close")
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return web.json_response(body=orjson.dumps({"error": str(exc)}), status=400)
    result = {"dropped": dropped, "injected": injected, "faults": faults.state()}
    return web.json_response(body=orjson.dumps(result))
