"""The /stream WebSocket over a real socket: a user's order, fill and portfolio updates arrive after an order
placed over HTTP (published by the real outbox relay), another user's never do, and a bad token is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from core.messaging.relay import OutboxRelay
from tests.integration.api.conftest import ApiHarness, market_buy

pytestmark = pytest.mark.integration


@pytest.fixture
async def relay(api: ApiHarness) -> AsyncIterator[None]:
    """The outbox relay, as ``patriot up`` runs it: order events reach the ``order.events`` stream."""
    kernel = api.platform.kernel
    relay = OutboxRelay(kernel.database_url, kernel.redis, kernel.names, kernel.metrics, poll_interval_s=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 10)


def ws_url(api: ApiHarness) -> str:
    return api.base_url.replace("http", "ws") + "/stream/ws"


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, done: Any, timeout_s: float = 15.0
) -> list[dict[str, Any]]:
    """Messages until ``done(messages)`` holds."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while not done(seen):
            seen.append(await ws.receive_json())
    return seen


async def test_own_order_fill_and_portfolio_updates_arrive_and_nobody_elses(api: ApiHarness, relay: None) -> None:
    user = await api.new_user(with_account=True)
    other = await api.new_user(with_account=True)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(api), params={"token": api.token(user)}) as ws:
        ready = await ws.receive_json(timeout=5)
        assert ready["type"] == "ready" and ready["user_id"] == user.user_id and ready["expires_at"] > 0
        assert "patriot_api_websocket_clients 1.0" in (await api.client.get("/metrics")).text
        theirs = await api.client.post("/orders", json=market_buy(other), headers=api.headers(other))
        mine = await api.client.post(
            "/orders", json=market_buy(user), headers=api.headers(user, **{"X-Correlation-ID": "ws-corr-1"})
        )
        assert mine.status_code == theirs.status_code == 201, mine.text
        order_id = mine.json()["id"]

        def filled_and_valued(seen: list[dict[str, Any]]) -> bool:
            fill = any(m["type"] == "fill" and m["aggregate_id"] == order_id for m in seen)
            return fill and any(m["type"] == "portfolio" and m["positions"] for m in seen)

        seen = await receive_until(ws, filled_and_valued)
        await ws.send_json({"type": "ping"})
        assert (await receive_until(ws, lambda s: bool(s) and s[-1]["type"] == "pong"))[-1] == {"type": "pong"}

    events = [m["event"] for m in seen if m["type"] in ("order", "fill") and m["aggregate_id"] == order_id]
    assert events[0] == "OrderInitialized" and "OrderAccepted" in events and events[-1] == "OrderFilled"
    assert all(m["correlation_id"] == "ws-corr-1" for m in seen if m.get("event") == "OrderInitialized")
    assert theirs.json()["id"] not in {m.get("aggregate_id") for m in seen}
    assert all(m["data"]["user_id"] == user.user_id for m in seen if "data" in m)
    position = next(m for m in reversed(seen) if m["type"] == "portfolio")["positions"][0]
    assert position["symbol"] == "BTCUSDT" and position["account_id"] == user.account_id
    for _ in range(100):  # the gauge drops once the server sees the close
        if "patriot_api_websocket_clients 0.0" in (await api.client.get("/metrics")).text:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the websocket_clients gauge did not drop back to 0")


async def test_token_in_the_first_message_is_accepted_and_a_bad_token_is_closed_with_4401(api: ApiHarness) -> None:
    user = await api.new_user()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(api)) as ws:
            await ws.send_json({"type": "auth", "token": api.token(user)})
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
        async with http.ws_connect(ws_url(api), params={"token": "not-a-token"}) as ws:
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 4401
        async with http.ws_connect(api.base_url.replace("http", "ws") + "/stream") as ws:
            await ws.send_json({"type": "auth", "token": api.state.tokens.service_token("bot")})
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 4401


async def _closed_with(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 15.0) -> tuple[int | None, str]:
    """Read until the server closes the socket: its close code and reason."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return ws.close_code, str(message.extra or "")


@pytest.mark.parametrize(
    "change", [{"status": "suspended"}, {"role": "fund_manager"}, {"password": "another correct horse battery"}]
)
async def test_open_socket_closes_with_4401_when_the_user_changes_and_the_old_token_opens_none(
    api: ApiHarness, change: dict[str, str]
) -> None:
    admin = await api.new_user("admin")
    user = await api.new_user("user")
    token = api.token(user)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(api), params={"token": token}) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
            changed = await api.client.patch(f"/users/{user.user_id}", json=change, headers=api.headers(admin))
            assert changed.status_code == 200, changed.text
            assert await _closed_with(ws) == (4401, "token_revoked")
        async with http.ws_connect(ws_url(api), params={"token": token}) as ws:
            assert await _closed_with(ws) == (4401, "token_revoked")


async def test_socket_closes_when_its_token_expires_unless_renewed_on_the_socket(api: ApiHarness) -> None:
    user = await api.new_user("user")
    other = await api.new_user("user")
    tokens = api.state.tokens
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            ws_url(api), params={"token": tokens.access_token(user.user_id, "user", ttl_s=2)}
        ) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "ready"
            assert await _closed_with(ws) == (4401, "token_expired")

        short = tokens.access_token(user.user_id, "user", ttl_s=2)
        async with http.ws_connect(ws_url(api), params={"token": short}) as ws:
            ready = await ws.receive_json(timeout=5)
            await ws.send_json({"type": "auth", "token": api.token(user)})
            renewed = await ws.receive_json(timeout=5)
            assert renewed["type"] == "authenticated" and renewed["expires_at"] > ready["expires_at"]
            # past the first token's expiry and the cut-off checks after it
            past_expiry = ready["expires_at"] + 2 * api.state.kernel.settings.api.stream_auth_check_s
            await asyncio.sleep(max(0.0, past_expiry - time.time()))
            await ws.send_json({"type": "ping"})
            assert (await ws.receive_json(timeout=5)) == {"type": "pong"}
            await ws.send_json({"type": "auth", "token": api.token(other)})  # another user's token
            assert await _closed_with(ws) == (4401, "invalid_token")
