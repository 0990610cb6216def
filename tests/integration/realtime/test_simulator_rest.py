"""The simulator's Binance spot REST API driven by real ccxt (async) on localhost, market fed by the shipped candles."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest
from aiohttp import web

from realtime.exchanges.simulator.app import SimAccount, SimulatorConfig, bound_port, serve
from realtime.exchanges.simulator.candles import SimTrade, load_candles
from realtime.exchanges.simulator.state import STATE_KEY, SimulatorState

D = Decimal
DATA = Path(__file__).resolve().parents[3] / "data" / "binance-spot-1m" / "2025"
ALICE = SimAccount("alice", "aliceKey01", "alice-secret", {"USDT": D(10_000), "BTC": D("0.5")})
BOB = SimAccount("bob", "bobKey01", "bob-secret", {"USDT": D(10)})
WARMUP = 200


@dataclass
class Sim:
    app: web.Application
    state: SimulatorState
    base: str
    files: dict[str, Path]


def candle_files(tmp_path: Path, rows: int = 260) -> dict[str, Path]:
    """The first ``rows`` shipped candles of each symbol, as the simulator's input files."""
    files = {}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        lines = gzip.decompress((DATA / f"{symbol}_1m.csv.gz").read_bytes()).decode().splitlines()[: rows + 1]
        files[symbol] = tmp_path / f"{symbol}_1m.csv"
        files[symbol].write_text("\n".join(lines) + "\n")
    return files


@asynccontextmanager
async def running(tmp_path: Path, clock_ms: Callable[[], int] | None = None, **options: Any) -> AsyncIterator[Sim]:
    files = candle_files(tmp_path)
    settings: dict[str, Any] = {"replay": False, "warmup_candles": WARMUP, "accounts": (ALICE, BOB), "ws_routes": False}
    runner = await serve(SimulatorConfig(port=0, candle_files=files, **(settings | options)), clock_ms)
    app = runner.app
    try:
        yield Sim(app, app[STATE_KEY], f"http://127.0.0.1:{bound_port(runner)}", files)
    finally:
        await runner.cleanup()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    async with running(tmp_path) as simulator:
        yield simulator


@asynccontextmanager
async def binance(sim: Sim, api_key: str = ALICE.api_key, secret: str = ALICE.secret) -> AsyncIterator[Any]:
    """Real ccxt binance, pointed at the simulator (spot only, no currency/margin endpoints)."""
    exchange = ccxt.binance(
        {
            "apiKey": api_key,
            "secret": secret,
            "enableRateLimit": False,
            "options": {"fetchMarkets": ["spot"], "fetchCurrencies": False, "fetchMargins": False},
        }
    )
    exchange.urls["api"] |= {
        "public": f"{sim.base}/api/v3",
        "private": f"{sim.base}/api/v3",
        "v1": f"{sim.base}/api/v1",
    }
    try:
        yield exchange
    finally:
        await exchange.close()


async def test_load_markets_takes_precision_and_limits_from_the_filters(sim: Sim) -> None:
    async with binance(sim) as exchange:
        markets = await exchange.load_markets()
    btc, eth = markets["BTC/USDT"], markets["ETH/USDT"]
    assert (btc["id"], btc["spot"], btc["active"]) == ("BTCUSDT", True, True)
    assert btc["precision"]["amount"] == 0.00001 and btc["precision"]["price"] == 0.01
    assert btc["limits"]["amount"]["min"] == 0.00001 and btc["limits"]["cost"]["min"] == 5.0
    assert eth["precision"]["amount"] == 0.0001


async def test_fetch_balance_reports_the_seeded_account(sim: Sim) -> None:
    async with binance(sim) as exchange:
        balance = await exchange.fetch_balance()
    assert balance["USDT"] == {"free": 10_000.0, "used": 0.0, "total": 10_000.0}
    assert balance["BTC"]["free"] == 0.5


async def test_market_buy_fills_at_the_best_ask_and_settles_with_the_fee(sim: Sim) -> None:
    async with binance(sim) as exchange:
        book = await exchange.fetch_order_book("BTC/USDT", 5)
        order = await exchange.create_order("BTC/USDT", "market", "buy", 0.01)
        balance = await exchange.fetch_balance()
    best_ask = book["asks"][0][0]
    assert book["bids"][0][0] < best_ask
    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.01, best_ask)
    assert order["fee"] == {"currency": "BTC", "cost": 0.00001}
    assert balance["BTC"]["free"] == pytest.approx(0.5 + 0.01 - 0.00001)
    assert balance["USDT"]["free"] == pytest.approx(10_000 - 0.01 * best_ask)


async def test_limit_order_rests_then_fills_when_a_trade_prints_through(sim: Sim) -> None:
    async with binance(sim) as exchange:
        ticker_price = float((await exchange.fetch_order_book("BTC/USDT"))["bids"][0][0])
        price = round(ticker_price - 100, 2)
        order = await exchange.create_order("BTC/USDT", "limit", "buy", 0.02, price)
        assert order["status"] == "open"
        assert [o["id"] for o in await exchange.fetch_open_orders("BTC/USDT")] == [order["id"]]
        assert (await exchange.fetch_balance())["USDT"]["used"] == pytest.approx(0.02 * price)
        sim.state.market.publish_trade("BTCUSDT", SimTrade(10**6, D(str(price)) - D("0.5"), D(1), 0, True))
        filled = await exchange.fetch_order(order["id"], "BTC/USDT")
        trades = await exchange.fetch_my_trades("BTC/USDT")
        balance = await exchange.fetch_balance()
    assert (filled["status"], filled["filled"], filled["average"]) == ("closed", 0.02, price)
    assert [(t["order"], t["takerOrMaker"], t["price"]) for t in trades] == [(order["id"], "maker", price)]
    assert balance["USDT"]["used"] == 0.0 and balance["BTC"]["total"] == pytest.approx(0.5 + 0.02 * 0.999)


async def test_replayed_candles_fill_a_resting_order_and_extend_the_klines(sim: Sim) -> None:
    candles = {s: load_candles(p) for s, p in sim.files.items()}["BTCUSDT"]
    future_low = min(c.low for c in candles[WARMUP : WARMUP + 30])
    async with binance(sim) as exchange:
        order = await exchange.create_order("BTC/USDT", "limit", "buy", 0.01, float(future_low + D("0.01")))
        assert sim.state.feed is not None
        sim.state.feed.advance(30)
        filled = await exchange.fetch_order(order["id"], "BTC/USDT")
        since = candles[WARMUP - 2].open_time_ms
        ohlcv = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=5)
    assert filled["status"] == "closed"
    expected = [[c.open_time_ms, *(float(x) for x in (c.open, c.high, c.low, c.close, c.volume))] for c in candles]
    assert ohlcv == expected[WARMUP - 2 : WARMUP + 3]


async def test_cancel_releases_funds_and_cancelling_again_is_order_not_found(sim: Sim) -> None:
    async with binance(sim) as exchange:
        order = await exchange.create_order("BTC/USDT", "limit", "sell", 0.1, 200_000)
        assert (await exchange.fetch_balance())["BTC"]["used"] == 0.1
        cancelled = await exchange.cancel_order(order["id"], "BTC/USDT")
        assert cancelled["status"] == "canceled"
        assert (await exchange.fetch_balance())["BTC"] == {"free": 0.5, "used": 0.0, "total": 0.5}
        with pytest.raises(ccxt.OrderNotFound, match="-2011"):
            await exchange.cancel_order(order["id"], "BTC/USDT")
        with pytest.raises(ccxt.OrderNotFound, match="-2013"):
            await exchange.fetch_order("424242", "BTC/USDT")
        for price in (210_000, 220_000):
            await exchange.create_order("BTC/USDT", "limit", "sell", 0.1, price)
        assert len(await exchange.cancel_all_orders("BTC/USDT")) == 2
        assert await exchange.fetch_open_orders("BTC/USDT") == []
        assert [o["status"] for o in await exchange.fetch_orders("BTC/USDT")] == ["canceled"] * 3
        assert (await exchange.fetch_balance())["BTC"]["used"] == 0.0


async def test_trades_endpoints_serve_the_derived_tape(sim: Sim) -> None:
    async with binance(sim) as exchange:
        recent = await exchange.fetch_trades("BTC/USDT", limit=3)
        page = await exchange.publicGetHistoricalTrades({"symbol": "BTCUSDT", "fromId": 25, "limit": 3})
    assert [int(t["id"]) for t in recent] == [WARMUP * 12 - 2, WARMUP * 12 - 1, WARMUP * 12]
    assert [row["id"] for row in page] == [25, 26, 27]
    assert D(page[0]["price"]) == load_candles(sim.files["BTCUSDT"])[2].open  # trade 25 opens the third candle


async def test_order_errors_map_to_ccxt_exceptions_as_binance_does(sim: Sim) -> None:
    async with binance(sim) as exchange, binance(sim, BOB.api_key, BOB.secret) as poor:
        await exchange.load_markets()
        with pytest.raises(ccxt.InsufficientFunds):
            await poor.create_order("BTC/USDT", "limit", "buy", 0.001, 50_000)
        order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
        with pytest.raises(ccxt.InvalidOrder, match="Filter failure: LOT_SIZE"):
            await exchange.privatePostOrder(order | {"quantity": "0.000015", "price": "50000"})
        with pytest.raises(ccxt.InvalidOrder, match="Filter failure: PRICE_FILTER"):
            await exchange.privatePostOrder(order | {"quantity": "0.001", "price": "50000.001"})
        with pytest.raises(ccxt.ExchangeError, match="Filter failure: NOTIONAL"):
            await exchange.create_order("BTC/USDT", "limit", "buy", 0.00001, 50_000)
        await exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 50_000, {"clientOrderId": "dup-1"})
        with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
            await exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 50_000, {"clientOrderId": "dup-1"})
        with pytest.raises(ccxt.BadSymbol):
            await exchange.publicGetDepth({"symbol": "DOGEUSDT"})


async def test_an_unknown_api_key_is_told_where_the_simulators_keys_come_from(sim: Sim) -> None:
    """Binance's bare -2015 leaves a new user guessing; the simulator's names the demo key and POST /admin/accounts."""
    async with aiohttp.ClientSession() as http:
        response = await http.get(
            f"{sim.base}/api/v3/account",
            params={"timestamp": str(int(time.time() * 1000)), "signature": "0" * 64},
            headers={"X-MBX-APIKEY": "madeUpKey123"},
        )
        body = await response.json()
    assert response.status == 401 and body["code"] == -2015
    assert body["msg"].startswith("Invalid API-key, IP, or permissions for action.")
    assert "patriot simulator --help" in body["msg"] and "POST /admin/accounts" in body["msg"]


async def test_bad_credentials_and_stale_timestamps_are_refused(sim: Sim) -> None:
    async with binance(sim, "unknownKey") as stranger, binance(sim, ALICE.api_key, "wrong-secret") as forger:
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            await stranger.fetch_balance()
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await forger.fetch_balance()
    async with binance(sim, "not a key!") as malformed:
        with pytest.raises(ccxt.AuthenticationError, match="-2014"):
            await malformed.fetch_balance()
    async with binance(sim) as late:
        late.options["timeDifference"] = 15_000  # the client's clock 15 s behind: outside ccxt's recvWindow of 10 s
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await late.fetch_balance()
        late.options |= {"timeDifference": 0, "recvWindow": 60_001}
        with pytest.raises(ccxt.ExchangeError, match="-1131"):
            await late.fetch_balance()


async def test_signature_covers_query_then_body_like_binance(sim: Sim) -> None:
    query = "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC"
    body = f"quantity=0.01&price=150000&newOrderRespType=ACK&timestamp={int(time.time() * 1000)}"
    signature = hmac.new(ALICE.secret.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": ALICE.api_key, "Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as http:
        url = f"{sim.base}/api/v3/order?{query}"
        async with http.post(url, data=f"{body}&signature={signature}", headers=headers) as resp:
            ack = await resp.json()
            assert resp.status == 200 and resp.headers["X-MBX-USED-WEIGHT-1M"] == "1"
        async with http.post(url, data=f"{body}&signature={'0' * 64}", headers=headers) as resp:
            assert (resp.status, await resp.json()) == (
                400,
                {"code": -1022, "msg": "Signature for this request is not valid."},
            )
    assert set(ack) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}


async def test_request_weight_budget_answers_429_then_bans_with_418(tmp_path: Path) -> None:
    frozen_minute = 1_700_000_010_000
    async with running(tmp_path, lambda: frozen_minute, weight_limit=30, refusals_before_ban=2) as sim:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(4):
                async with http.get(f"{sim.base}/api/v3/exchangeInfo") as resp:
                    statuses.append((resp.status, resp.headers.get("Retry-After"), (await resp.json()).get("code")))
                    used = resp.headers["X-MBX-USED-WEIGHT-1M"]
        assert statuses == [(200, None, None), (429, "30", -1003), (429, "30", -1003), (418, "120", -1003)]
        assert used == "20"
        async with binance(sim) as exchange:
            with pytest.raises(ccxt.DDoSProtection, match="418"):
                await exchange.fetch_time()


async def test_rate_limit_answer_raises_ccxt_ddos_protection(tmp_path: Path) -> None:
    async with running(tmp_path, lambda: 1_700_000_000_000, weight_limit=25) as sim, binance(sim) as exchange:
        await exchange.load_markets()  # weight 20
        with pytest.raises(ccxt.DDoSProtection, match="429"):
            await exchange.fetch_order_book("BTC/USDT", 1000)  # weight 50


async def test_injected_faults_answer_errors_and_delays(sim: Sim) -> None:
    async with binance(sim) as exchange, aiohttp.ClientSession() as http:
        async with http.post(f"{sim.base}/admin/faults", json={"status": 503, "count": 1}) as resp:
            assert (await resp.json())["status"] == 503
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await exchange.fetch_time()
        assert isinstance(await exchange.fetch_time(), int)  # the fault was for one request
        await http.post(f"{sim.base}/admin/faults", json={"status": 500, "count": 1})
        with pytest.raises(ccxt.OperationFailed, match="-1001"):
            await exchange.fetch_time()
        await http.post(f"{sim.base}/admin/faults", json={"status": 429, "count": 1})
        with pytest.raises(ccxt.DDoSProtection):
            await exchange.fetch_time()
        await http.post(f"{sim.base}/admin/faults", json={"delay_ms": 300})
        started = time.monotonic()
        await exchange.fetch_time()
        assert time.monotonic() - started >= 0.3
        await http.post(f"{sim.base}/admin/faults", json={"reset": True})


async def test_user_data_stream_pushes_reports_our_parser_reads(tmp_path: Path) -> None:
    pytest.importorskip("realtime.exchanges.simulator.binance_ws")
    from core.domain.accounts import ExchangeBalanceReported, ExchangeFillReported, ExchangeOrderReported
    from realtime.accounts.private_stream import LinkedAccount
    from realtime.accounts.user_stream import parse_user_event

    async with running(tmp_path, ws_routes=True) as sim, binance(sim) as exchange:
        listen_key = (await exchange.publicPostUserDataStream())["listenKey"]
        assert (await exchange.publicPostUserDataStream())["listenKey"] == listen_key  # one live key per account
        await exchange.publicPutUserDataStream({"listenKey": listen_key})
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{sim.base}/ws/{listen_key}") as ws:
            await asyncio.sleep(0.05)
            await exchange.create_order("BTC/USDT", "market", "buy", 0.01)
            messages = [await ws.receive_json(timeout=2) for _ in range(3)]
        await exchange.publicDeleteUserDataStream({"listenKey": listen_key})
        with pytest.raises(ccxt.ExchangeError, match="-1125"):
            await exchange.publicPutUserDataStream({"listenKey": listen_key})
    account = LinkedAccount("alice", "u1", ALICE.api_key)
    events = [e for m in messages for e in parse_user_event(account, m)]
    assert [type(e) for e in events] == [
        ExchangeOrderReported,
        ExchangeOrderReported,
        ExchangeFillReported,
        ExchangeBalanceReported,
        ExchangeBalanceReported,
    ]


async def test_paced_replay_feeds_the_engine_what_the_streams_print(tmp_path: Path) -> None:
    replay_module = pytest.importorskip("realtime.exchanges.simulator.replay")
    async with running(tmp_path, replay=True, speed=None, max_candles=20, ws_routes=True) as sim:
        await asyncio.wait_for(sim.app[replay_module.REPLAY].finished.wait(), 10)
        candles = load_candles(sim.files["BTCUSDT"])
        last = sim.state.market.last_trade("BTCUSDT")
        assert last is not None and (last.trade_id, last.price) == ((WARMUP + 20) * 12, candles[WARMUP + 19].close)
        async with binance(sim) as exchange:
            ohlcv = await exchange.fetch_ohlcv("BTC/USDT", "1m", limit=3)
            best_ask = (await exchange.fetch_order_book("BTC/USDT", 5))["asks"][0][0]
            snapshot = await exchange.publicGetDepth({"symbol": "BTCUSDT", "limit": 5})
            streamed_book = sim.app[replay_module.REPLAY].book("BTCUSDT")
            assert snapshot["lastUpdateId"] == streamed_book.last_update_id  # continues the depth diff stream
            order = await exchange.create_order("BTC/USDT", "market", "buy", 0.01)
    assert [row[0] for row in ohlcv] == [c.open_time_ms for c in candles[WARMUP + 17 : WARMUP + 20]]
    assert best_ask in (float(last.price), float(last.price + D("0.01")))
    assert (order["status"], order["average"]) == ("closed", best_ask)
