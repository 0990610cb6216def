"""Bybit v5 private WebSocket of the simulator: ``/v5/private`` pushes an account's orders, executions and wallet.

The client authenticates with ``{"op":"auth","args":[api_key, expires_ms, signature]}`` where ``signature`` is the
hex HMAC-SHA256 of ``"GET/realtime" + expires`` under the API secret (Bybit's documented scheme), then subscribes to
``order``, ``execution`` and/or ``wallet`` (``order.spot`` etc. are accepted too) and keeps the connection alive with
``{"op":"ping"}``. The matching engine's events for the authenticated account come out in Bybit v5's shapes.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from realtime.exchanges.simulator.binance_guard import Credential
from realtime.exchanges.simulator.bybit_ws import parse_op, send_op_reply
from realtime.exchanges.simulator.engine import MatchingEngine, wall_clock_ms
from realtime.exchanges.simulator.engine_types import (
    CANCELED,
    EXPIRED,
    FILLED,
    MARKET,
    NEW,
    PARTIALLY_FILLED,
    BalancesUpdated,
    EngineEvent,
    OrderUpdated,
)
from realtime.exchanges.simulator.ws_session import FAULTS, WS_LIMITS, WsSession, setup_ws_core

CredentialLookup = Callable[[str], Credential | None]
TOPICS = ("order", "execution", "wallet")
_STATUS = {NEW: "New", PARTIALLY_FILLED: "PartiallyFilled", FILLED: "Filled", CANCELED: "Cancelled"}


def fmt(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def auth_signature(secret: str, expires_ms: int) -> str:
    """Bybit's private WebSocket signature: hex HMAC-SHA256 of ``GET/realtime<expires>``."""
    return hmac.new(secret.encode(), f"GET/realtime{expires_ms}".encode(), hashlib.sha256).hexdigest()


def _order_status(event: OrderUpdated) -> str:
    order = event.order
    if order.status == EXPIRED:
        return "PartiallyFilledCanceled" if order.executed_qty > 0 else "Cancelled"
    return _STATUS.get(order.status, order.status)


def order_message(event: OrderUpdated) -> dict[str, Any]:
    o = event.order
    avg = o.cumulative_quote_qty / o.executed_qty if o.executed_qty else Decimal(0)
    item = {
        "category": "spot",
        "symbol": o.symbol,
        "orderId": str(o.order_id),
        "orderLinkId": o.client_order_id,
        "side": "Buy" if o.side == "BUY" else "Sell",
        "orderType": "Market" if o.type == MARKET else "Limit",
        "price": fmt(o.price),
        "qty": fmt(o.orig_qty),
        "timeInForce": o.time_in_force or "GTC",
        "orderStatus": _order_status(event),
        "avgPrice": fmt(avg),
        "leavesQty": fmt(o.remaining_qty if o.is_open else Decimal(0)),
        "cumExecQty": fmt(o.executed_qty),
        "cumExecValue": fmt(o.cumulative_quote_qty),
        "rejectReason": "EC_NoError",
        "createdTime": str(o.time_ms),
        "updatedTime": str(event.event_time_ms),
    }
    return _envelope("order", event.event_time_ms, [item])


def execution_message(event: OrderUpdated) -> dict[str, Any] | None:
    fill, o = event.fill, event.order
    if fill is None:
        return None
    item = {
        "category": "spot",
        "symbol": fill.symbol,
        "orderId": str(fill.order_id),
        "orderLinkId": fill.client_order_id,
        "side": "Buy" if fill.side == "BUY" else "Sell",
        "orderType": "Market" if o.type == MARKET else "Limit",
        "orderPrice": fmt(o.price),
        "orderQty": fmt(o.orig_qty),
        "execId": str(fill.trade_id),
        "execType": "Trade",
        "execPrice": fmt(fill.price),
        "execQty": fmt(fill.qty),
        "execValue": fmt(fill.quote_qty),
        "execFee": fmt(fill.commission),
        "feeCurrency": fill.commission_asset,
        "isMaker": fill.is_maker,
        "leavesQty": fmt(o.remaining_qty if o.is_open else Decimal(0)),
        "execTime": str(fill.time_ms),
    }
    return _envelope("execution", event.event_time_ms, [item])


def wallet_message(event: BalancesUpdated) -> dict[str, Any]:
    coins = [
        {"coin": asset, "walletBalance": fmt(free + locked), "locked": fmt(locked), "free": fmt(free)}
        for asset, free, locked in event.balances
    ]
    data = [{"accountType": "UNIFIED", "coin": coins}]
    return _envelope("wallet", event.event_time_ms, data)


def _envelope(topic: str, ts_ms: int, data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "topic": topic, "creationTime": ts_ms, "data": data}


class PrivateConnection:
    def __init__(self, session: WsSession, hub: PrivateHub) -> None:
        self.session = session
        self.account_id: str | None = None
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
                now = self._hub.clock_ms()
                pong = {"op": "pong", "args": [str(now)], "conn_id": self.session.conn_id}
                self.session.send_json(pong | ({"req_id": req_id} if req_id is not None else {}))
        elif op == "auth":
            error = self._hub.authenticate(args)
            if isinstance(error, str):
                self.reply("auth", False, error, req_id)
            else:
                self.account_id = error.account_id
                self.reply("auth", True, "", req_id)
        elif op in ("subscribe", "unsubscribe"):
            topics = [a.split(".", 1)[0] if isinstance(a, str) else "" for a in args]
            if self.account_id is None:
                self.reply(op, False, "Request not authorized", req_id)
            elif not topics or any(t not in TOPICS for t in topics):
                self.reply(op, False, f"error:handler not found,topics:{args}", req_id)
            else:
                self.topics = self.topics | set(topics) if op == "subscribe" else self.topics - set(topics)
                self._hub.track(self)
                self.reply(op, True, "", req_id)
        else:
            self.reply(str(op), False, f"error:unsupported op {op}", req_id)

    def close(self) -> None:
        self._hub.forget(self)


class PrivateHub:
    """Authenticated connections by account, fed by the engine's listener."""

    def __init__(self, credentials: CredentialLookup, clock_ms: Callable[[], int]) -> None:
        self._credentials = credentials
        self.clock_ms = clock_ms
        self._by_account: dict[str, set[PrivateConnection]] = {}

    def authenticate(self, args: list[Any]) -> Credential | str:
        if len(args) != 3:
            return "Params Error"
        api_key, expires, signature = args
        credential = self._credentials(str(api_key))
        if credential is None:
            return "Invalid apikey"
        try:
            expires_ms = int(expires)
        except (TypeError, ValueError):
            return "Params Error"
        if expires_ms <= self.clock_ms():
            return "Request expired"
        if not hmac.compare_digest(str(signature), auth_signature(credential.secret, expires_ms)):
            return "Signature verification failed"
        return credential

    def track(self, connection: PrivateConnection) -> None:
        if connection.account_id is not None:
            self._by_account.setdefault(connection.account_id, set()).add(connection)

    def forget(self, connection: PrivateConnection) -> None:
        if connection.account_id is not None:
            self._by_account.get(connection.account_id, set()).discard(connection)

    def on_engine_event(self, event: EngineEvent) -> None:
        connections = self._by_account.get(event.account_id)
        if not connections:
            return
        messages: list[dict[str, Any]] = []
        if isinstance(event, OrderUpdated):
            execution = execution_message(event)
            if execution is not None:
                messages.append(execution)
            messages.append(order_message(event))
        else:
            messages.append(wallet_message(event))
        for message in messages:
            frame = orjson.dumps(message)
            for connection in list(connections):
                if message["topic"] in connection.topics:
                    connection.session.send(frame)


PRIVATE_HUB = web.AppKey("simulator_bybit_private_hub", PrivateHub)


def attach_bybit_private(
    app: web.Application,
    engine: MatchingEngine,
    credentials: CredentialLookup,
    clock_ms: Callable[[], int] | None = None,
) -> PrivateHub:
    """Add ``/v5/private`` and push ``engine``'s events to its authenticated connections (before the app starts).

    Idempotent: a second call returns the hub the first one attached."""
    if PRIVATE_HUB in app:
        return app[PRIVATE_HUB]
    setup_ws_core(app)
    hub = app[PRIVATE_HUB] = PrivateHub(credentials, clock_ms or wall_clock_ms)
    unsubscribe = engine.subscribe(hub.on_engine_event)

    async def _detach(_: web.Application) -> None:
        unsubscribe()

    app.on_cleanup.append(_detach)
    app.router.add_get("/v5/private", _serve)
    return hub


async def _serve(request: web.Request) -> web.StreamResponse:
    session = WsSession("bybit", request, request.app[WS_LIMITS], heartbeat=False, rate_limited=False)
    connection = PrivateConnection(session, request.app[PRIVATE_HUB])
    try:
        return await session.serve(connection.on_text)
    finally:
        connection.close()
