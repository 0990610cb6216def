"""Bybit v5 private stream against the simulator: auth, orders/executions/wallet as account events, reconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from core.domain.accounts import AccountEvent, ExchangeBalanceReported, ExchangeFillReported, ExchangeOrderReported
from core.observability.metrics import build_metrics
from realtime.accounts.bybit_stream import BybitPrivateStream, auth_args
from realtime.accounts.private_stream import LinkedAccount, UserStreamConfig
from realtime.exchanges.simulator.app import SimulatorConfig, bound_port, build_app, default_candle_files, demo_accounts
from realtime.exchanges.simulator.bybit_private import attach_bybit_private
from realtime.exchanges.simulator.engine_types import OrderRequest
from realtime.exchanges.simulator.state import STATE_KEY, SimulatorState

DATA = Path(__file__).parents[3] / "data"


@dataclass
class Sim:
    base: str
    state: SimulatorState


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    app = build_app(
        SimulatorConfig(port=0, candle_files=default_candle_files(DATA, "2025"), replay=False, warmup_candles=60)
    )
    state = app[STATE_KEY]
    attach_bybit_private(app, state.engine, state.credentials.get)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Sim(f"127.0.0.1:{bound_port(runner)}", state)
    finally:
        await runner.cleanup()


class Collector:
    def __init__(self) -> None:
        self.events: list[AccountEvent] = []

    async def __call__(self, events: Sequence[AccountEvent]) -> None:
        self.events.extend(events)

    async def wait(self, predicate: Callable[[list[AccountEvent]], object]) -> None:
        deadline = time.monotonic() + 5.0
        while not predicate(self.events):
            assert time.monotonic() < deadline, f"timed out; got {self.events!r}"
            await asyncio.sleep(0.02)


def demo_stream(sim: Sim, publish: Collector, secret: str | None = None) -> BybitPrivateStream:
    demo = demo_accounts()[0]
    account = LinkedAccount(account_id="acc-bybit", user_id="user-1", api_key=demo.api_key, exchange="bybit")
    config = UserStreamConfig(rest_url="", ws_url=f"ws://{sim.base}", reconnect_initial_s=0.05, reconnect_max_s=0.2)
    return BybitPrivateStream(account, secret or demo.secret, config, publish, build_metrics("test"))


def assets(events: list[AccountEvent]) -> set[str]:
    return {e.asset for e in events if isinstance(e, ExchangeBalanceReported)}


def fills_of(events: list[AccountEvent], side: str) -> list[ExchangeFillReported]:
    return [e for e in events if isinstance(e, ExchangeFillReported) and e.side == side]


async def test_orders_executions_and_wallet_arrive_and_survive_a_drop(sim: Sim) -> None:
    publish = Collector()
    stream = demo_stream(sim, publish)
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(stream.connected.wait(), 5)
        order = sim.state.engine.place_order("demo", OrderRequest("BTCUSDT", "BUY", "MARKET", quantity=Decimal("0.01")))
        await publish.wait(lambda ev: any(isinstance(e, ExchangeOrderReported) and e.status == "FILLED" for e in ev))
        await publish.wait(lambda ev: {"BTC", "USDT"} <= assets(ev))
        reports = [e for e in publish.events if isinstance(e, ExchangeOrderReported)]
        assert reports[-1].exchange_order_id == str(order.order_id) and reports[-1].side == "buy"
        fills = fills_of(publish.events, "buy")
        assert fills and sum(f.quantity for f in fills) == order.executed_qty == Decimal("0.01")
        assert all(f.fee_asset == "BTC" and f.fee > 0 for f in fills)
        assert all(e.aggregate_id == "acc-bybit" and e.exchange == "bybit" for e in publish.events)
        await asyncio.sleep(1.2)
        assert stream.staleness < 1.0, "pongs keep the stream proven alive while the account is quiet"

        async with aiohttp.ClientSession() as http:
            answer = await http.post(f"http://{sim.base}/admin/ws-faults", json={"drop_connections": True})
            assert (await answer.json())["dropped"] == 1
        await asyncio.sleep(0.1)
        await asyncio.wait_for(stream.connected.wait(), 5)
        sim.state.engine.place_order("demo", OrderRequest("BTCUSDT", "SELL", "MARKET", quantity=Decimal("0.005")))
        await publish.wait(lambda ev: fills_of(ev, "sell"))
        assert len({e.event_id for e in publish.events}) == len(publish.events), "ids are unique per report"
        assert stream.auth_failures == 0
    finally:
        stream.stop()
        await asyncio.wait_for(task, 5)


async def test_a_bad_signature_is_refused_and_never_connects(sim: Sim) -> None:
    publish = Collector()
    stream = demo_stream(sim, publish, secret="not-the-secret")
    task = asyncio.create_task(stream.run())
    try:
        deadline = time.monotonic() + 5
        while stream.auth_failures < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert not stream.connected.is_set()
    finally:
        stream.stop()
        await asyncio.wait_for(task, 5)


async def test_raw_protocol_auth_subscribe_ping(sim: Sim) -> None:
    demo = demo_accounts()[0]
    now = int(time.time() * 1000)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{sim.base}/v5/private") as ws:

        async def ask(op: str, args: list[object] | None = None) -> dict[str, object]:
            await ws.send_str(orjson.dumps({"op": op, "args": args or []}).decode())
            return orjson.loads((await ws.receive(timeout=5)).data)  # type: ignore[no-any-return]

        assert (await ask("subscribe", ["order"]))["success"] is False, "not before auth"
        assert (await ask("auth", ["unknown-key", now + 5000, "00"]))["success"] is False
        assert (await ask("auth", auth_args(demo.api_key, demo.secret, now - 1)))["success"] is False, "expired"
        assert (await ask("auth", [demo.api_key, now + 5000, "deadbeef"]))["success"] is False
        reply = await ask("auth", auth_args(demo.api_key, demo.secret, now + 5000))
        assert reply["success"] is True and reply["op"] == "auth" and reply["conn_id"]
        assert (await ask("subscribe", ["order", "execution", "wallet"]))["success"] is True
        assert (await ask("subscribe", ["position.linear"]))["success"] is False
        assert (await ask("ping"))["op"] == "pong"
