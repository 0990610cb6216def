"""Account data service against the simulator: an order placed with real ccxt comes back over the account's
private stream as account events on Redis, and the stream survives being dropped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import ccxt.async_support as ccxt
import psycopg
import pytest
from redis.asyncio import Redis

from core.domain.accounts import ExchangeBalanceReported, ExchangeFillReported, ExchangeOrderReported
from core.messaging.codec import Codec
from core.messaging.streams import Stream, StreamNames
from core.observability.metrics import build_metrics
from core.security.account_secrets import store_account
from core.security.master_key import load_keyring
from core.settings import Environment, RuntimeSettings, SecuritySettings
from realtime.accounts.private_stream import UserStreamConfig
from realtime.accounts.service import AccountStreams, active_accounts
from realtime.exchanges.simulator.app import SimulatorConfig, bound_port, default_candle_files, demo_accounts, serve

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[3] / "data"


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    runner = await serve(
        SimulatorConfig(port=0, candle_files=default_candle_files(DATA, "2025"), replay=False, warmup_candles=60)
    )
    yield f"127.0.0.1:{bound_port(runner)}"
    await runner.cleanup()


@pytest.mark.parametrize("exchange", ["simulator", "bybit"])  # Binance user-data stream, Bybit private stream
async def test_order_fill_and_balances_arrive_as_account_events(
    exchange: str, simulator: str, migrated_database_url: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    demo = demo_accounts()[0]
    keyring = load_keyring(SecuritySettings(), RuntimeSettings(env=Environment.TEST, data_dir=tmp_path))
    user_id, account_id = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(migrated_database_url) as conn:
        conn.execute("INSERT INTO users (id, username) VALUES (%s, 'trader')", (user_id,))
        store_account(
            conn,
            keyring,
            account_id=account_id,
            user_id=user_id,
            exchange=exchange,
            label="main",
            api_key=demo.api_key,
            api_secret=demo.secret,
        )
        conn.commit()
    redis = Redis.from_url(redis_url)
    names = StreamNames(key_prefix, 4)
    streams = AccountStreams(
        UserStreamConfig(rest_url=f"http://{simulator}", ws_url=f"ws://{simulator}", reconnect_initial_s=0.05),
        redis,
        names,
        build_metrics("test"),
    )
    exchange = ccxt.binance(
        {
            "apiKey": demo.api_key,
            "secret": demo.secret,
            "enableRateLimit": False,
            "options": {"fetchMarkets": ["spot"], "fetchCurrencies": False, "fetchMargins": False},
        }
    )
    base = f"http://{simulator}"
    exchange.urls["api"] |= {"public": f"{base}/api/v3", "private": f"{base}/api/v3", "v1": f"{base}/api/v1"}
    try:
        await streams.reconcile(active_accounts(migrated_database_url, keyring))
        stream = streams.streams()[account_id]
        await asyncio.wait_for(stream.connected.wait(), 10)
        await exchange.load_markets()
        order = await exchange.create_order("BTC/USDT", "market", "buy", 0.01)
        events = await read_events(redis, names.key(Stream.ACCOUNT_EVENTS, user_id), want=3)
        fills = [e for e in events if isinstance(e, ExchangeFillReported)]
        reports = [e for e in events if isinstance(e, ExchangeOrderReported)]
        balances = [e for e in events if isinstance(e, ExchangeBalanceReported)]
        assert fills and sum(f.quantity for f in fills) == Decimal(str(order["filled"])) > 0
        assert all(f.user_id == user_id and f.aggregate_id == account_id for f in fills)
        assert reports[-1].status == "FILLED" and reports[-1].exchange_order_id == order["id"]
        assert {b.asset for b in balances} >= {"BTC", "USDT"}
        await asyncio.sleep(1.2)
        assert stream.staleness < 1.0, "pongs keep the stream proven alive while the account is quiet"

        async with aiohttp.ClientSession() as http:
            await http.post(f"{base}/admin/ws-faults", json={"drop_connections": True})
        await asyncio.sleep(0.3)
        await asyncio.wait_for(stream.connected.wait(), 10)
        await exchange.create_order("BTC/USDT", "market", "sell", 0.005)
        after = await read_events(redis, names.key(Stream.ACCOUNT_EVENTS, user_id), want=len(events) + 2)
        assert any(isinstance(e, ExchangeFillReported) and e.side == "sell" for e in after)
    finally:
        await exchange.close()
        await streams.close()
        await redis.aclose()


async def read_events(redis: Redis, key: str, want: int) -> list[object]:
    codec = Codec.create()
    for _ in range(100):
        entries = await redis.xrange(key)
        if len(entries) >= want:
            break
        await asyncio.sleep(0.05)
    return [codec.decode_envelope(fields[b"p"]) for _, fields in entries]
