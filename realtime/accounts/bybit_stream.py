"""Bybit v5 private stream for one linked account: its orders, executions and wallet as account events.

The same contract as :class:`realtime.accounts.user_stream.BinanceUserStream`: ``run()`` until ``stop()``,
``connected`` while authenticated and subscribed, ``staleness`` kept under a second by ``{"op":"ping"}`` twice a
second, capped backoff with jitter between attempts, and on every reconnect a fresh auth (new ``expires`` and
signature) and the same subscription. Statuses are mapped to the Binance-like strings the rest of PATRIOT reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import structlog

from core.domain.accounts import (
    AccountEvent,
    ExchangeBalanceReported,
    ExchangeFillReported,
    ExchangeOrderReported,
    fill_report_id,
    report_id,
)
from core.observability.metrics import Metrics
from realtime.accounts.private_stream import (
    LinkedAccount,
    LoginRefused,
    MalformedReport,
    PrivateStream,
    Publish,
    UserStreamConfig,
    report_decimal,
)

log = structlog.get_logger(__name__)

TOPICS = ("order", "execution", "wallet")
PRIVATE_PATH = "/v5/private"
AUTH_TTL_MS = 10_000
_STATUS = {
    "Created": "NEW",
    "New": "NEW",
    "Untriggered": "NEW",
    "Triggered": "NEW",
    "PartiallyFilled": "PARTIALLY_FILLED",
    "Filled": "FILLED",
    "Cancelled": "CANCELED",
    "PartiallyFilledCanceled": "CANCELED",
    "Deactivated": "CANCELED",
    "Rejected": "REJECTED",
}


class BybitMalformedReport(MalformedReport):
    pass


class AuthRefused(LoginRefused):
    pass


def _dec(value: object) -> Decimal:
    return report_decimal(value, BybitMalformedReport)


def auth_args(api_key: str, api_secret: str, expires_ms: int) -> list[Any]:
    """``args`` of Bybit's ``auth`` op: key, expiry and hex HMAC-SHA256 of ``GET/realtime<expires>``."""
    signature = hmac.new(api_secret.encode(), f"GET/realtime{expires_ms}".encode(), hashlib.sha256).hexdigest()
    return [api_key, expires_ms, signature]


def parse_bybit_private(account: LinkedAccount, msg: dict[str, Any]) -> list[AccountEvent]:
    """Bybit v5 private ``order`` / ``execution`` / ``wallet`` messages -> account events; others -> []."""
    topic = str(msg.get("topic", "")).split(".", 1)[0]
    if topic not in TOPICS:
        return []
    base: dict[str, Any] = {
        "aggregate_id": account.account_id,
        "version": 0,
        "user_id": account.user_id,
        "exchange": account.exchange,
    }
    try:
        data = msg["data"]
        if not isinstance(data, list):
            raise BybitMalformedReport(f"{topic}: data is not a list")
        if topic == "order":
            return [_order(account, base, item) for item in data]
        if topic == "execution":
            return [_fill(account, base, item) for item in data if item.get("execType", "Trade") == "Trade"]
        ts = int(msg["creationTime"])
        return [
            ExchangeBalanceReported(
                **base,
                event_id=report_id(account.account_id, "balance", coin["coin"], msg.get("id"), ts),
                exchange_ts_ms=ts,
                asset=str(coin["coin"]),
                free=_dec(coin["walletBalance"]) - _dec(coin.get("locked") or 0),
                locked=_dec(coin.get("locked") or 0),
            )
            for wallet in data
            for coin in wallet["coin"]
        ]
    except BybitMalformedReport:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BybitMalformedReport(f"{topic}: {exc!r}") from exc


def _order(account: LinkedAccount, base: dict[str, Any], item: dict[str, Any]) -> ExchangeOrderReported:
    ts = int(item["updatedTime"])
    raw_status = str(item["orderStatus"])
    status = _STATUS.get(raw_status)
    if status is None:
        raise BybitMalformedReport(f"order: unknown status {raw_status!r}")
    reason = item.get("rejectReason")
    order_id = str(item["orderId"])
    return ExchangeOrderReported(
        **base,
        event_id=report_id(account.account_id, order_id, raw_status, item["cumExecQty"], ts),
        exchange_ts_ms=ts,
        symbol=str(item["symbol"]),
        client_order_id=str(item.get("orderLinkId") or ""),
        exchange_order_id=order_id,
        side=str(item["side"]).lower(),
        order_type=str(item["orderType"]).lower(),
        status=status,
        price=_dec(item.get("price") or 0),
        quantity=_dec(item["qty"]),
        filled_quantity=_dec(item["cumExecQty"]),
        reason=None if reason in (None, "", "EC_NoError") else str(reason),
    )


def _fill(account: LinkedAccount, base: dict[str, Any], item: dict[str, Any]) -> ExchangeFillReported:
    order_id, trade_id = str(item["orderId"]), str(item["execId"])
    is_maker = item.get("isMaker", False)
    return ExchangeFillReported(
        **base,
        event_id=fill_report_id(account.account_id, str(item["symbol"]), trade_id, order_id),
        exchange_ts_ms=int(item["execTime"]),
        symbol=str(item["symbol"]),
        client_order_id=str(item.get("orderLinkId") or ""),
        exchange_order_id=order_id,
        trade_id=trade_id,
        side=str(item["side"]).lower(),
        quantity=_dec(item["execQty"]),
        price=_dec(item["execPrice"]),
        fee=_dec(item.get("execFee") or 0),
        fee_asset=str(item["feeCurrency"]) if item.get("feeCurrency") else None,
        is_maker=is_maker is True or str(is_maker).lower() == "true",
    )


class BybitPrivateStream(PrivateStream):
    def __init__(
        self, account: LinkedAccount, api_secret: str, config: UserStreamConfig, publish: Publish, metrics: Metrics
    ) -> None:
        super().__init__(account, config, publish, metrics)
        self._secret = api_secret
        self._req = 0
        self.auth_failures = 0

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, AuthRefused):
            self.auth_failures += 1
            log.error("bybit private auth refused", account=self._account.account_id, error=str(exc))
        else:
            super()._failed(exc)

    async def _connect(self, session: aiohttp.ClientSession) -> bool:
        return await self._follow(session)

    async def _follow(self, session: aiohttp.ClientSession) -> bool:
        """One connection: auth, subscribe, read until it ends; True if it got as far as subscribed."""
        url = self._config.ws_url.rstrip("/") + PRIVATE_PATH
        async with session.ws_connect(url, autoping=True, heartbeat=None) as ws:
            expires = int(time.time() * 1000) + AUTH_TTL_MS
            await self._request(ws, "auth", auth_args(self._account.api_key, self._secret, expires))
            await self._request(ws, "subscribe", list(TOPICS))
            self._last_alive = time.monotonic()
            self.connected.set()
            log.info("bybit private stream connected", account=self._account.account_id)
            pinger = asyncio.create_task(self._ping(ws))
            try:
                await self._read(ws)
            finally:
                pinger.cancel()
                await asyncio.gather(pinger, return_exceptions=True)
            return True

    async def _request(self, ws: aiohttp.ClientWebSocketResponse, op: str, args: list[Any]) -> None:
        """Send ``op`` and wait for its reply (data frames before it are handled as usual)."""
        self._req += 1
        req_id = f"{op}-{self._req}"
        await ws.send_str(orjson.dumps({"req_id": req_id, "op": op, "args": args}).decode())
        deadline = time.monotonic() + max(5.0, self._config.ping_interval_s * 6)
        while True:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise aiohttp.ClientConnectionError(f"connection ended during {op}: {msg.type!r}")
            try:
                payload = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict) and payload.get("op") == op and "success" in payload:
                if payload["success"] is not True:
                    if op == "auth":
                        raise AuthRefused(str(payload.get("ret_msg")))
                    raise aiohttp.ClientConnectionError(f"{op} refused: {payload.get('ret_msg')}")
                return
            await self._handle(msg.data)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not self._stop.is_set():
            try:
                msg = await ws.receive(timeout=self._config.ping_interval_s * 6)
            except TimeoutError:
                log.warning("bybit private stream silent, not even pongs", account=self._account.account_id)
                return
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self._last_alive = time.monotonic()
                await self._handle(msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    async def _handle(self, data: str | bytes) -> None:
        try:
            payload = orjson.loads(data)
            if not isinstance(payload, dict):
                raise BybitMalformedReport("not an object")
            if "topic" not in payload:
                return  # pong and op replies
            events = parse_bybit_private(self._account, payload)
        except (orjson.JSONDecodeError, MalformedReport) as exc:
            self._bad.inc()
            log.warning("unreadable bybit account report", account=self._account.account_id, error=str(exc)[:200])
            return
        await self._deliver(events)

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            self._req += 1
            await ws.send_str(orjson.dumps({"req_id": f"ping-{self._req}", "op": "ping"}).decode())
            self.staleness  # noqa: B018  (refreshes the gauge)
            await asyncio.sleep(self._config.ping_interval_s)
