"""The /stream WebSocket over a real socket: a user's order, fill and portfolio updates arrive after an order
placed over HTTP (published by the real outbox relay), another user's never do, and a bad token is refused."""

from __future__ import annotations

import asyncio
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
