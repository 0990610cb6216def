"""/stream (WebSocket): the logged-in user's order, fill, balance, risk and portfolio updates, pushed as JSON.

Authenticate with an access token: ``/stream/ws?token=<access token>``, an ``Authorization: Bearer`` header, or
a first message ``{"type": "auth", "token": "..."}`` within 10 s. The token is checked as on REST: signature,
type, expiry and the user's token cut-off (moved by a suspension, a role change or a password change); a bad one
closes with 4401 (4403 for a role that may not read orders or the portfolio, 1011 when Redis is unavailable and
the cut-off cannot be read).

The socket lives only as long as its token: it closes with 4401 (reason ``token_expired``) when the token
expires, and with 4401 (``token_revoked``) within ``stream_auth_check_s`` (1 s by default) of the user's cut-off
moving past it. To stay connected, send ``{"type": "auth", "token": "<a newer access token>"}`` on the socket
before then (after a refresh, say): it is answered ``{"type": "authenticated", "expires_at"}`` and replaces the
socket's credential; a token that fails, or is another user's, closes the socket as above. Messages:

- ``{"type": "ready", "user_id", "expires_at"}`` once subscribed (nothing published after it is missed;
  ``expires_at``: the token's expiry, Unix seconds);
- ``{"type": "order" | "fill" | "balance" | "risk", "event", "aggregate_id", "occurred_at", "correlation_id",
  "data": {...event fields}}`` for each event of the user on ``order.events``, ``account.events`` (balances)
  and ``risk.alerts``;
- ``{"type": "portfolio", "positions", "summary"}`` after fills and balance changes.

Send ``{"type": "ping"}`` for a ``{"type": "pong"}``. One :class:`UpdateHub` per process reads every partition
of those streams on a connection of its own and fans events out to the connected users they concern, so open
sockets do not hold the API's Redis connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, cast

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.deps import AuthPrincipal
from api.errors import ApiError, DependencyUnavailable
from api.metrics import ApiMetrics
from api.permissions import Permission
from api.state import ApiState
from api.tokens import ACCESS
from core.messaging.streams import Stream, StreamNames
from core.observability.logging import get_logger

router = APIRouter(prefix="/stream", tags=["stream"])
log = get_logger("api.stream")

AUTH_TIMEOUT_S = 10.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 1013
CLOSE_UNAVAILABLE = 1011
STREAMS = (Stream.ORDER_EVENTS, Stream.ACCOUNT_EVENTS, Stream.RISK_ALERTS)
_ACCOUNT_TYPES = {"ExchangeBalanceReported": "balance"}  # venue order/fill reports arrive as order events too
_PORTFOLIO_AFTER = frozenset({"fill", "balance"})
Update = dict[str, Any] | None  # None: the client fell behind and must reconnect


def to_update(stream: str, envelope: dict[str, Any]) -> dict[str, Any] | None:
    """The client message for one published event, or None for events clients do not get."""
    event_type = str(envelope.get("type", ""))
    if stream == Stream.ORDER_EVENTS:
        kind = "fill" if event_type == "OrderFilled" else "order"
    elif stream == Stream.ACCOUNT_EVENTS:
        kind = _ACCOUNT_TYPES.get(event_type, "")
    else:
        kind = "risk"
    if not kind:
        return None
    event = envelope.get("event") or {}
    return {
        "type": kind,
        "event": event_type,
        "aggregate_id": event.get("aggregate_id"),
        "occurred_at": event.get("occurred_at"),
        "correlation_id": event.get("correlation_id"),
        "data": event,
    }


class UpdateHub:
    """One XREAD loop over every partition of the user-facing streams, started by the first subscriber and
    stopped with the last; each user's updates go to that user's queues only."""

    def __init__(self, redis_url: str, names: StreamNames, queue_size: int = 1000) -> None:
        self._url = redis_url
        self._names = names
        self._queue_size = queue_size
        self._subscribers: dict[str, set[asyncio.Queue[Update]]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._redis: Redis | None = None
        self._stream_of = {key: str(s) for s in STREAMS for key in names.all_keys(s)}

    async def subscribe(self, user_id: str) -> asyncio.Queue[Update]:
        """A queue of the user's updates published from now on (the read position is fixed before returning)."""
        queue: asyncio.Queue[Update] = asyncio.Queue(self._queue_size)
        async with self._lock:
            if self._task is None or self._task.done():
                self._redis = Redis.from_url(self._url)
                positions = await self._tails(self._redis)
                self._task = asyncio.create_task(self._run(self._redis, positions), name="api-stream-hub")
            self._subscribers.setdefault(user_id, set()).add(queue)
        return queue

    async def unsubscribe(self, user_id: str, queue: asyncio.Queue[Update]) -> None:
        async with self._lock:
            queues = self._subscribers.get(user_id, set())
            queues.discard(queue)
            if not queues:
                self._subscribers.pop(user_id, None)
            if not self._subscribers and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None
                if self._redis is not None:
                    await self._redis.aclose()
                    self._redis = None

    async def _tails(self, redis: Redis) -> dict[str, str]:
        """The last id of every key now ("0-0" for a stream not created yet): reading from here misses nothing."""
        pipe = redis.pipeline(transaction=False)
        for key in self._stream_of:
            pipe.xrevrange(key, count=1)
        found: list[list[tuple[bytes, Any]]] = await pipe.execute()
        return {key: (_s(last[0][0]) if last else "0-0") for key, last in zip(self._stream_of, found, strict=True)}

    async def _run(self, redis: Redis, positions: dict[str, str]) -> None:
        while True:
            try:
                reply = cast(
                    "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
                    await redis.xread(positions, count=500, block=1000),  # type: ignore[arg-type]
                )
            except (RedisError, OSError) as error:
                log.warning("stream.read_failed", error=repr(error))
                await asyncio.sleep(0.5)
                continue
            for raw_key, messages in reply or []:
                key = _s(raw_key)
                for message_id, fields in messages:
                    positions[key] = _s(message_id)
                    self._dispatch(self._stream_of[key], fields)

    def _dispatch(self, stream: str, fields: dict[bytes, bytes]) -> None:
        try:
            envelope = orjson.loads(fields[b"p"])
            user_id = str(envelope["event"].get("user_id") or "")
        except (KeyError, TypeError, AttributeError, orjson.JSONDecodeError):
            return  # malformed: the consumers that own the stream dead-letter it
        queues = self._subscribers.get(user_id)
        update = to_update(stream, envelope) if queues else None
        if update is None:
            return
        for queue in list(queues or ()):
            try:
                queue.put_nowait(update)
            except asyncio.QueueFull:  # a client that cannot keep up is told to reconnect, not silently skipped
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)


def _hub(state: ApiState) -> UpdateHub:
    hub = state.extras.get("stream_hub")
    if hub is None:
        hub = state.extras["stream_hub"] = UpdateHub(state.kernel.redis_url, state.kernel.names)
    assert isinstance(hub, UpdateHub)
    return hub


@dataclass(slots=True)
class _Session:
    """The socket's current credential; a re-authentication on the socket replaces it."""

    principal: AuthPrincipal
    expires_at: int
    issued_at_ms: int


async def _verify(state: ApiState, token: str, user_id: str | None = None) -> _Session:
    """The session a token opens, checked as REST checks it (and, on re-authentication, of the same user)."""
    claims = state.tokens.decode(token, ACCESS)
    if user_id is not None and claims.subject != user_id:
        raise ApiError(401, "invalid_token", "the token is another user's: open a socket of its own")
    cutoff = await state.tokens.user_cutoff(claims.subject)
    if cutoff and claims.issued_at_ms <= cutoff:
        raise ApiError(401, "token_revoked", "your role, status or password changed: log in again")
    principal = AuthPrincipal(claims.subject, claims.role, claims.token_id, claims.username)
    if not (principal.can(Permission.ORDERS_READ) or principal.can(Permission.PORTFOLIO_READ)):
        raise ApiError(403, "forbidden", "this role may not read orders or the portfolio")
    return _Session(principal, claims.expires_at, claims.issued_at_ms)


async def _refuse(websocket: WebSocket, refused: ApiError) -> None:
    """Close the socket with the code for ``refused`` (4401, 4403, or 1011 for an unavailable dependency)."""
    if isinstance(refused, DependencyUnavailable):
        code = CLOSE_UNAVAILABLE
    else:
        code = CLOSE_FORBIDDEN if refused.status == 403 else CLOSE_UNAUTHORIZED
    with contextlib.suppress(RuntimeError):  # already closed
        await websocket.close(code, refused.code)


async def _authenticate(websocket: WebSocket, state: ApiState) -> _Session | None:
    """The access token from the query, the Authorization header or the first message; closes on failure."""
    token = websocket.query_params.get("token")
    header = websocket.headers.get("authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:].strip()
    if token is None:
        try:
            first = await asyncio.wait_for(websocket.receive_json(), AUTH_TIMEOUT_S)
            token = str(first.get("token", "")) if isinstance(first, dict) and first.get("type") == "auth" else ""
        except (TimeoutError, ValueError, WebSocketDisconnect):
            token = ""
    try:
        return await _verify(state, token)
    except ApiError as refused:
        await _refuse(websocket, refused)
        return None


async def _guard(websocket: WebSocket, state: ApiState, session: _Session) -> None:
    """Close the socket when its token expires or its user's cut-off passes it (read every few seconds)."""
    interval = state.kernel.settings.api.stream_auth_check_s
    while True:
        left = session.expires_at - time.time()
        if left > 0:
            await asyncio.sleep(min(interval, left))
        if session.expires_at <= time.time():
            await _refuse(websocket, ApiError(401, "token_expired", "the token expired"))
            return
        try:
            cutoff = await state.tokens.user_cutoff(session.principal.user_id)
        except DependencyUnavailable as unavailable:
            await _refuse(websocket, unavailable)
            return
        if cutoff and session.issued_at_ms <= cutoff:
            await _refuse(websocket, ApiError(401, "token_revoked", "your role, status or password changed"))
            return


async def _portfolio(state: ApiState, user_id: str) -> dict[str, Any]:
    await state.read_models.invalidate([user_id])  # the event was published after its commit: read it fresh
    positions = await state.read_models.positions(user_id)
    return {"type": "portfolio", "positions": positions, "summary": await state.read_models.summary(user_id)}


async def _push(websocket: WebSocket, state: ApiState, user_id: str, queue: asyncio.Queue[Update]) -> None:
    while True:
        batch = [await queue.get()]
        while not queue.empty():
            batch.append(queue.get_nowait())
        for update in batch:
            if update is None:
                await websocket.close(CLOSE_TOO_SLOW, "updates fell behind: reconnect")
                return
            await websocket.send_text(orjson.dumps(update).decode())
        if any(update["type"] in _PORTFOLIO_AFTER for update in batch if update):
            await websocket.send_text(orjson.dumps(await _portfolio(state, user_id), default=str).decode())


async def _listen(websocket: WebSocket, state: ApiState, session: _Session) -> None:
    """Answer pings and take re-authentications until the client goes away (or a re-authentication fails)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            received = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
        except orjson.JSONDecodeError:
            continue
        kind = received.get("type") if isinstance(received, dict) else None
        if kind == "ping":
            await websocket.send_text('{"type":"pong"}')
        elif kind == "auth":
            try:
                renewed = await _verify(state, str(received.get("token", "")), session.principal.user_id)
            except ApiError as refused:
                await _refuse(websocket, refused)
                return
            session.principal, session.expires_at, session.issued_at_ms = (
                renewed.principal,
                renewed.expires_at,
                renewed.issued_at_ms,
            )
            await websocket.send_text(
                orjson.dumps({"type": "authenticated", "expires_at": renewed.expires_at}).decode()
            )


@router.websocket("")
@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    """The user's live updates; the token is checked on open and for as long as the socket lives, and the
    client renews it with ``{"type": "auth", "token": ...}`` (the protocol is in this module's docstring)."""
    state: ApiState = websocket.app.state.api
    metrics: ApiMetrics = websocket.app.state.api_metrics
    await websocket.accept()
    session = await _authenticate(websocket, state)
    if session is None:
        return
    principal = session.principal
    hub = _hub(state)
    queue = await hub.subscribe(principal.user_id)
    metrics.websocket_clients.inc()
    tasks: list[asyncio.Task[None]] = []
    try:
        ready = {"type": "ready", "user_id": principal.user_id, "expires_at": session.expires_at}
        await websocket.send_text(orjson.dumps(ready).decode())
        tasks = [
            asyncio.create_task(_push(websocket, state, principal.user_id, queue)),
            asyncio.create_task(_listen(websocket, state, session)),
            asyncio.create_task(_guard(websocket, state, session)),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                error = task.exception()
                if not isinstance(error, WebSocketDisconnect | RuntimeError):
                    log.warning("stream.client_failed", error=repr(error))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        metrics.websocket_clients.dec()
        await hub.unsubscribe(principal.user_id, queue)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
