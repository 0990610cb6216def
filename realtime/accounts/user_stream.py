"""Binance user-data stream for one linked account: its order updates, fills and balances as account events.

One private connection per account (listenKey from REST, kept alive every 30 minutes, renewed when Binance
says it expired), reconnecting with capped backoff. The client pings twice a second and records every frame
it receives, so ``staleness`` (seconds since the stream last proved alive) stays under a second while the
connection is healthy, even when the account is quiet.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

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
from realtime.accounts.private_stream import LinkedAccount, MalformedReport, PrivateStream, report_decimal

log = structlog.get_logger(__name__)


def _dec(value: object) -> Decimal:
    return report_decimal(value)


def parse_user_event(account: LinkedAccount, msg: dict[str, object]) -> list[AccountEvent]:
    """Binance user-data payloads -> account events (an executionReport with a trade gives an order and a fill)."""
    kind = msg.get("e")
    base = {"aggregate_id": account.account_id, "version": 0, "user_id": account.user_id, "exchange": account.exchange}
    try:
        if kind == "executionReport":
            ts = int(msg["T"])  # type: ignore[call-overload]
            client_id = str(msg["C"] or msg["c"]) if msg.get("X") == "CANCELED" else str(msg["c"])
            order_id = str(msg["i"])
            events: list[AccountEvent] = [
                ExchangeOrderReported(
                    **base,
                    event_id=report_id(account.account_id, order_id, msg["x"], msg["z"], ts),
                    exchange_ts_ms=ts,
                    symbol=str(msg["s"]),
                    client_order_id=client_id,
                    exchange_order_id=order_id,
                    side=str(msg["S"]).lower(),
                    order_type=str(msg["o"]).lower(),
                    status=str(msg["X"]),
                    price=_dec(msg["p"]),
                    quantity=_dec(msg["q"]),
                    filled_quantity=_dec(msg["z"]),
                    reason=None if msg.get("r") in (None, "NONE") else str(msg["r"]),
                )
            ]
            if msg.get("x") == "TRADE":
                trade_id = str(msg["t"])
                events.append(
                    ExchangeFillReported(
                        **base,
                        event_id=fill_report_id(account.account_id, str(msg["s"]), trade_id, order_id),
                        exchange_ts_ms=ts,
                        symbol=str(msg["s"]),
                        client_order_id=client_id,
                        exchange_order_id=order_id,
                        trade_id=trade_id,
                        side=str(msg["S"]).lower(),
                        quantity=_dec(msg["l"]),
                        price=_dec(msg["L"]),
                        fee=_dec(msg["n"]),
                        fee_asset=None if msg.get("N") is None else str(msg["N"]),
                        is_maker=bool(msg.get("m")),
                    )
                )
            return events
        if kind == "outboundAccountPosition":
            ts = int(msg["E"])  # type: ignore[call-overload]
            balances = msg["B"]
            assert isinstance(balances, list)
            return [
                ExchangeBalanceReported(
                    **base,
                    event_id=report_id(account.account_id, "balance", b["a"], msg.get("u"), ts),
                    exchange_ts_ms=ts,
                    asset=str(b["a"]),
                    free=_dec(b["f"]),
                    locked=_dec(b["l"]),
                )
                for b in balances
            ]
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise MalformedReport(f"{kind}: {exc!r}") from exc
    return []


class BinanceUserStream(PrivateStream):
    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(headers={"X-MBX-APIKEY": self._account.api_key})

    async def _connect(self, session: aiohttp.ClientSession) -> bool:
        await self._follow(session, await self._listen_key(session))
        return True

    async def _listen_key(self, session: aiohttp.ClientSession) -> str:
        async with session.post(f"{self._config.rest_url}/api/v3/userDataStream") as resp:
            resp.raise_for_status()
            return str(orjson.loads(await resp.read())["listenKey"])

    async def _follow(self, session: aiohttp.ClientSession, listen_key: str) -> None:
        url = f"{self._config.ws_url}/ws/{listen_key}"
        async with session.ws_connect(url, autoping=False) as ws:
            self._last_alive = time.monotonic()
            self.connected.set()
            log.info("account stream connected", account=self._account.account_id)
            pinger = asyncio.create_task(self._ping(ws))
            keeper = asyncio.create_task(self._keepalive(session, listen_key))
            try:
                await self._read(ws)
            finally:
                pinger.cancel()
                keeper.cancel()
                await asyncio.gather(pinger, keeper, return_exceptions=True)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not self._stop.is_set():
            try:
                msg = await ws.receive(timeout=self._config.ping_interval_s * 6)
            except TimeoutError:
                log.warning("account stream silent, not even pongs; reconnecting", account=self._account.account_id)
                return
            self._last_alive = time.monotonic()
            if msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                if await self._handle(msg.data) == "expired":
                    return
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    async def _handle(self, data: str | bytes) -> str | None:
        try:
            payload = orjson.loads(data)
            if not isinstance(payload, dict):
                raise MalformedReport("not an object")
            if payload.get("e") == "listenKeyExpired":
                log.info("listen key expired; renewing", account=self._account.account_id)
                return "expired"
            events = parse_user_event(self._account, payload)
        except (orjson.JSONDecodeError, MalformedReport) as exc:
            self._bad.inc()
            log.warning("unreadable account report", account=self._account.account_id, error=str(exc)[:200])
            return None
        await self._deliver(events)
        return None

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await ws.ping()
            self.staleness  # noqa: B018  (refreshes the gauge)
            await asyncio.sleep(self._config.ping_interval_s)

    async def _keepalive(self, session: aiohttp.ClientSession, listen_key: str) -> None:
        while True:
            await asyncio.sleep(self._config.keepalive_s)
            async with session.put(
                f"{self._config.rest_url}/api/v3/userDataStream", params={"listenKey": listen_key}
            ) as resp:
                if resp.status != 200:
                    log.warning("listen key keepalive refused", account=self._account.account_id, status=resp.status)
