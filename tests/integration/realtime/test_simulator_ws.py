"""The simulator's WebSocket side against real clients on localhost: Binance and Bybit wire formats from real data."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web

from realtime.exchanges.simulator import binance_ws, bybit_ws
from realtime.exchanges.simulator.candle_replay import CandleSource
from realtime.exchanges.simulator.candles import candle_trades, load_candles
from realtime.exchanges.simulator.replay import (
    CaptureSource,
    MarketReplay,
    ReplaySource,
    attach_replay,
    market_bus,
)
from realtime.exchanges.simulator.ws_session import FAULTS, WsLimits
from realtime.marketdata.bybit import BybitParser
from realtime.marketdata.models import Trade

DATA = Path(__file__).resolve().parents[3] / "data"
BTC_CAPTURE = DATA / "binance-ws-capture/spot/btcusdt_20240808.gz"
ETH_CAPTURE = DATA / "binance-ws-capture/spot/ethusdt_20240808.gz"
BTC_CANDLES = DATA / "binance-spot-1m/2025/BTCUSDT_1m.csv.gz"
FAST = WsLimits(ping_interval_s=0.25, pong_timeout_s=0.5)  # pongs count toward 5 messages/s: keep pings slower


@dataclass
class Simulator:
    url: str
    app: web.Application
    replay: MarketReplay
    http: aiohttp.ClientSession


@asynccontextmanager
async def simulator(
    source: ReplaySource, limits: WsLimits | None = None, speed: float | None = None
) -> AsyncIterator[Simulator]:
    """A simulator on a free localhost port, replaying (at full speed by default) once ``replay.start()`` is called."""
    app = web.Application()
    binance_ws.add_routes(app, limits or WsLimits())
    bybit_ws.add_routes(app)
    replay = attach_replay(app, source, speed=speed, start="manual")
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            yield Simulator(f"http://127.0.0.1:{port}", app, replay, http)
    finally:
        await runner.cleanup()


def capture_messages(path: Path) -> list[bytes]:
    """The capture's stream messages as received (the REST snapshot line is not one)."""
    with gzip.open(path, "rb") as f:
        messages = [line.rstrip(b"\n").partition(b" ")[2] for line in f]
    return [m for m in messages if m.startswith(b'{"stream":')]


async def receive_text(ws: aiohttp.ClientWebSocketResponse, count: int, wait_s: float = 5.0) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < count:
        msg = await ws.receive(timeout=wait_s)
        assert msg.type == WSMsgType.TEXT, msg
        out.append(msg.data.encode())
    return out


async def test_combined_streams_replay_capture_byte_for_byte_in_order() -> None:
    expected = capture_messages(BTC_CAPTURE)
    async with simulator(CaptureSource([BTC_CAPTURE])) as sim:
        streams = "btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@100ms"
        async with sim.http.ws_connect(f"{sim.url}/stream?streams={streams}") as ws:
            sim.replay.start()
            received = await receive_text(ws, len(expected))
        await asyncio.wait_for(sim.replay.finished.wait(), 5)
        depth = sim.replay.depth("BTCUSDT", 5)
    assert received == expected
    last_depth = next(orjson.loads(m) for m in reversed(expected) if m.startswith(b'{"stream":"btcusdt@depth'))
    assert depth is not None and depth["lastUpdateId"] == last_depth["data"]["u"]
    assert float(depth["bids"][0][0]) < float(depth["asks"][0][0])


async def test_paced_replay_never_runs_ahead_of_the_capture_clock() -> None:
    speed = 50.0
    with gzip.open(BTC_CAPTURE, "rb") as f:
        stamps = {m: int(ts) for ts, _, m in (line.rstrip(b"\n").partition(b" ") for line in f) if m.startswith(b"{")}
    first_ns = min(stamps.values())
    async with simulator(CaptureSource([BTC_CAPTURE]), speed=speed) as sim:
        async with sim.http.ws_connect(f"{sim.url}/stream?streams=btcusdt@trade") as ws:
            sim.replay.start()
            started = time.monotonic()
            early: list[float] = []
            while len(early) < 300:  # 0.37 s of wall time at 50x
                message = (await ws.receive(timeout=5)).data.encode()
                early.append((stamps[message] - first_ns) / 1e9 / speed - (time.monotonic() - started))
    # No upper bound on lateness (a loaded machine may stall any process); the guarantee is that a paced
    # replay never sends a message before its capture time divided by the speed (flat out, the 300th message,
    # due 0.37 s in, would come tens of milliseconds after the start).
    assert max(early) < 0.005  # the replay sleeps only delays over 1 ms


async def test_subscribe_unsubscribe_and_list_answer_like_binance_on_raw_stream() -> None:
    eth_trades = [m for m in capture_messages(ETH_CAPTURE) if m.startswith(b'{"stream":"ethusdt@trade"')]
    async with simulator(CaptureSource([BTC_CAPTURE, ETH_CAPTURE])) as sim:
        async with sim.http.ws_connect(f"{sim.url}/ws") as ws:
            await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ETHUSDT@trade"], "id": 1})
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
            await ws.send_json({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 3})
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 4})
            replies = [orjson.loads(m) for m in await receive_text(ws, 4)]
            sim.replay.start()
            received = await receive_text(ws, 200)
    assert replies == [
        {"result": None, "id": 1},
        {"result": ["btcusdt@trade", "ethusdt@trade"], "id": 2},
        {"result": None, "id": 3},
        {"result": ["ethusdt@trade"], "id": 4},
    ]
    # a raw /ws connection gets the bare payload: the captured bytes inside "data"
    assert received == [m[len(b'{"stream":"ethusdt@trade","data":') : -1] for m in eth_trades[:200]]


async def test_more_than_five_control_messages_a_second_disconnects() -> None:
    async with simulator(CaptureSource([BTC_CAPTURE])) as sim:
        async with sim.http.ws_connect(f"{sim.url}/ws") as within_limit:
            for request_id in range(5):
                await within_limit.send_json({"method": "LIST_SUBSCRIPTIONS", "id": request_id})
            replies = await receive_text(within_limit, 5)
            with pytest.raises(TimeoutError):
                await within_limit.receive(timeout=0.2)
        async with sim.http.ws_connect(f"{sim.url}/ws") as ws:
            for request_id in range(6):
                await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": request_id})
            while (closing := await ws.receive(timeout=2)).type == WSMsgType.TEXT:
                pass
    assert [orjson.loads(r) for r in replies] == [{"result": [], "id": i} for i in range(5)]
    assert closing.type == WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.POLICY_VIOLATION


async def still_open_after(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> bool:
    """Read (aiohttp answers pings only while reading) and report whether the connection survived."""
    try:
        await asyncio.wait_for(ws.receive(), seconds)  # receive(timeout=) restarts its clock at every ping
    except TimeoutError:
        return not ws.closed
    return False


async def test_server_pings_and_drops_a_client_that_never_pongs() -> None:
    async with simulator(CaptureSource([BTC_CAPTURE]), FAST) as sim:
        async with (
            sim.http.ws_connect(f"{sim.url}/ws/btcusdt@trade", autoping=False) as silent,
            sim.http.ws_connect(f"{sim.url}/ws/btcusdt@trade", autoping=True) as healthy,
        ):
            started = time.monotonic()
            stays_open = asyncio.create_task(still_open_after(healthy, 1.2))
            kinds = []
            while (msg := await silent.receive(timeout=2)).type == WSMsgType.PING:
                kinds.append(msg.type)
            elapsed = time.monotonic() - started
            healthy_open = await stays_open
    assert kinds and msg.type == WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert elapsed >= 0.5  # not dropped before its ping went unanswered
    assert healthy_open


async def test_connections_are_closed_at_their_maximum_lifetime() -> None:
    limits = WsLimits(ping_interval_s=0.1, pong_timeout_s=0.3, max_lifetime_s=0.3)
    async with simulator(CaptureSource([BTC_CAPTURE]), limits) as sim:
        async with sim.http.ws_connect(f"{sim.url}/ws/btcusdt@trade") as ws:
            msg = await ws.receive(timeout=2)
    assert msg.type == WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_bybit_subscribe_ping_and_trades_equal_the_binance_trades() -> None:
    trade_count = sum(1 for m in capture_messages(BTC_CAPTURE) if m.startswith(b'{"stream":"btcusdt@trade"'))
    topics = ["publicTrade.BTCUSDT", "orderbook.1.BTCUSDT", "orderbook.50.BTCUSDT", "kline.1.BTCUSDT"]
    async with simulator(CaptureSource([BTC_CAPTURE])) as sim:
        async with (
            sim.http.ws_connect(f"{sim.url}/v5/public/linear") as bybit,
            sim.http.ws_connect(f"{sim.url}/ws/btcusdt@trade") as binance,
        ):
            await bybit.send_json({"op": "subscribe", "args": topics, "req_id": "sub-1"})
            await bybit.send_json({"op": "subscribe", "args": ["orderbook.7.BTCUSDT"], "req_id": "bad"})
            await bybit.send_json({"op": "ping"})
            subscribed, refused, pong = [orjson.loads(m) for m in await receive_text(bybit, 3)]
            sim.replay.start()

            async def read_bybit() -> dict[str, list[dict[str, Any]]]:
                by_topic: dict[str, list[dict[str, Any]]] = {}
                while len(by_topic.get("publicTrade.BTCUSDT", [])) < trade_count:
                    message = orjson.loads((await bybit.receive(timeout=5)).data)
                    by_topic.setdefault(message["topic"], []).append(message)
                return by_topic

            # both read at once: at speed=max the replay waits for its slowest reader
            binance_raw, by_topic = await asyncio.gather(receive_text(binance, trade_count), read_bybit())
    binance_trades = [orjson.loads(m) for m in binance_raw]
    conn_id = subscribed["conn_id"]
    assert subscribed == {"success": True, "ret_msg": "", "conn_id": conn_id, "req_id": "sub-1", "op": "subscribe"}
    assert refused["success"] is False and refused["req_id"] == "bad"
    assert pong == {"success": True, "ret_msg": "pong", "conn_id": conn_id, "op": "ping"}

    parser = BybitParser()
    events = [e for m in by_topic["publicTrade.BTCUSDT"] for e in parser.parse(orjson.dumps(m), 0)]
    bybit_trades = [e for e in events if isinstance(e, Trade)]
    assert len(bybit_trades) == len(events)
    assert [(t.price, t.quantity, t.trade_id, t.is_buyer_maker, t.exchange_ts_ms) for t in bybit_trades] == [
        (float(b["p"]), float(b["q"]), b["t"], b["m"], b["T"]) for b in binance_trades
    ]
    books = by_topic["orderbook.50.BTCUSDT"]
    rebuilt: dict[str, dict[float, float]] = {"b": {}, "a": {}}
    for message in books:
        for side, levels in rebuilt.items():
            for price, qty in message["data"][side]:
                levels[float(price)] = float(qty)
            rebuilt[side] = {p: q for p, q in levels.items() if q}
    book = sim.replay.book("BTCUSDT")
    assert book is not None
    top_bids, top_asks = book.top(50)
    assert rebuilt == {
        "b": {p: float(q) for p, (_, q) in top_bids.items()},
        "a": {p: float(q) for p, (_, q) in top_asks.items()},
    }
    assert books[0]["type"] == "snapshot" and len(books[0]["data"]["b"]) == len(books[0]["data"]["a"]) == 50
    assert {m["type"] for m in books[1:]} == {"delta"}
    assert [m["data"]["u"] for m in books] == list(range(books[0]["data"]["u"], books[0]["data"]["u"] + len(books)))
    assert by_topic["orderbook.1.BTCUSDT"][0]["type"] == "snapshot"
    assert by_topic["kline.1.BTCUSDT"][0]["data"][0]["interval"] == "1"


async def test_fault_skip_leaves_a_trade_gap_that_history_fills() -> None:
    first_trades = [orjson.loads(m)["data"] for m in capture_messages(BTC_CAPTURE) if b"@trade" in m[:30]][:4]
    async with simulator(CaptureSource([BTC_CAPTURE])) as sim:
        async with sim.http.post(f"{sim.url}/admin/ws-faults", json={"skip": {"count": 3, "stream": "btcusdt@trade"}}):
            pass
        venue_side: list[int] = []
        market_bus(sim.app).add_listener(lambda e: venue_side.append(e.data()["t"]) if e.kind == "trade" else None)
        async with sim.http.ws_connect(f"{sim.url}/stream?streams=btcusdt@trade") as ws:
            sim.replay.start()
            first = orjson.loads((await receive_text(ws, 1))[0])["data"]
        backfill = sim.replay.trades_since("BTCUSDT", first_trades[0]["t"], 3)
    assert first["t"] == first_trades[3]["t"]
    assert venue_side[:4] == [t["t"] for t in first_trades]  # the gap is on the wire only, not in the venue
    assert [(row["id"], row["price"], row["qty"]) for row in backfill] == [
        (t["t"], t["p"], t["q"]) for t in first_trades[:3]
    ]


async def test_fault_inject_then_drop_reach_every_client() -> None:
    junk = ["{not json", '{"e":"mystery","E":1}']
    async with simulator(CaptureSource([BTC_CAPTURE])) as sim:
        async with sim.http.ws_connect(f"{sim.url}/stream?streams=btcusdt@trade") as ws:
            async with sim.http.post(f"{sim.url}/admin/ws-faults", json={"inject": junk}) as resp:
                injected = (await resp.json())["injected"]
            received = [m.decode() for m in await receive_text(ws, 2)]
            async with sim.http.post(f"{sim.url}/admin/ws-faults", json={"drop_connections": True}) as resp:
                dropped = (await resp.json())["dropped"]
            after_drop = await ws.receive(timeout=2)
    assert injected == len(junk) and received == junk
    assert dropped == 1 and after_drop.type in (WSMsgType.CLOSED, WSMsgType.ERROR, WSMsgType.CLOSE)


async def test_fault_silenced_pongs_and_delayed_messages() -> None:
    async with simulator(CaptureSource([BTC_CAPTURE])) as sim:
        faults = sim.app[FAULTS]
        faults.answer_pings = False
        faults.delay_s = 0.3
        async with (
            sim.http.ws_connect(f"{sim.url}/ws", autoping=False) as ws,
            sim.http.ws_connect(f"{sim.url}/v5/public/spot") as bybit,
        ):
            await ws.ping(b"hello")
            await bybit.send_json({"op": "ping"})
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.3)
            with pytest.raises(TimeoutError):
                await bybit.receive(timeout=0.1)
            faults.answer_pings = True
            await ws.ping(b"again")
            pong = await ws.receive(timeout=1)
            sent = time.monotonic()
            faults.inject('{"late":true}', "binance")
            late = await ws.receive(timeout=2)
            delay = time.monotonic() - sent
    assert pong.type == WSMsgType.PONG and pong.data == b"again"
    assert late.data == '{"late":true}' and delay >= 0.29


async def test_user_stream_forwards_events_for_a_known_listen_key_only() -> None:
    async with simulator(CaptureSource([BTC_CAPTURE])) as sim:
        binance_ws.register_listen_key(sim.app, "key-1")
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await sim.http.ws_connect(f"{sim.url}/ws/unknown-key")
        async with sim.http.ws_connect(f"{sim.url}/ws/key-1") as ws:
            await asyncio.sleep(0.05)  # the handshake returns before the server registers the follower
            reached = binance_ws.publish_user_event(sim.app, "key-1", {"e": "executionReport", "i": 7})
            event = orjson.loads((await receive_text(ws, 1))[0])
            binance_ws.expire_listen_key(sim.app, "key-1")
            expired = orjson.loads((await receive_text(ws, 1))[0])
            closing = await ws.receive(timeout=2)
    assert reached == 1 and event == {"e": "executionReport", "i": 7}
    assert expired["e"] == "listenKeyExpired" and closing.type == WSMsgType.CLOSE


async def test_candle_replay_prints_deterministic_trades_and_exact_klines() -> None:
    candles = load_candles(BTC_CANDLES)[:3]
    expected_ids = [t.trade_id for i in range(3) for t in candle_trades(candles, i)]
    source = CandleSource([BTC_CANDLES], max_candles=3)
    async with simulator(source) as sim:
        async with sim.http.ws_connect(f"{sim.url}/stream?streams=btcusdt@trade/btcusdt@kline_1m") as ws:
            sim.replay.start()
            messages = [orjson.loads(m) for m in await receive_text(ws, len(expected_ids) + 1)]
            while len([m for m in messages if m["stream"].endswith("kline_1m") and m["data"]["k"]["x"]]) < 3:
                messages.append(orjson.loads((await receive_text(ws, 1))[0]))
        depth = sim.replay.depth("BTCUSDT", 1)
    trades = [m["data"] for m in messages if m["stream"] == "btcusdt@trade"]
    closed = [m["data"]["k"] for m in messages if m["stream"] == "btcusdt@kline_1m" and m["data"]["k"]["x"]]
    assert [t["t"] for t in trades] == expected_ids == list(range(1, len(expected_ids) + 1))
    for kline, candle in zip(closed, candles, strict=True):
        assert kline["t"] == candle.open_time_ms
        ohlcv = [Decimal(kline[k]) for k in ("o", "h", "l", "c", "v")]
        assert ohlcv == [candle.open, candle.high, candle.low, candle.close, candle.volume]
    assert depth is not None and Decimal(depth["bids"][0][0]) < Decimal(depth["asks"][0][0])
