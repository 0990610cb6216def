"""Crash test of the money path: 1,000 orders from concurrent users through the simulator while the order service
and the lifecycle are SIGKILLed at random moments (and at their own crash points) and restarted.

Afterwards: every order the venue has is in PostgreSQL with the venue's status and filled quantity (and no order
in PostgreSQL claims to be on the venue without being there), each fill is stored once and matches the venue's
trades, positions equal the sum of fills, nothing is left in flight, and every armed stop is still armed: a final
price through all of them fires every one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import psycopg
import pytest
from redis.asyncio import Redis

from core.domain.orders import CancelOrder, OrderSide, OrderType, PlaceOrder
from core.messaging.streams import StreamNames
from core.security.account_secrets import store_account
from core.security.master_key import load_keyring
from core.settings import RuntimeSettings, SecuritySettings
from realtime.orders.commands import CommandClient, CommandTimeout
from tests.platform_harness import candle_files

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

ORDERS = int(os.environ.get("PATRIOT_CRASH_ORDERS", "1000"))
USERS = 25
SENDERS = 40
MIN_KILLS = 20
STOPS_EVERY = 25  # one armed stop per this many orders
ORDERS_PER_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: dict[str, int] = defaultdict(int)

    def start(self, name: str, *args: str, faults: str = "") -> None:
        env = {**self.env, "PATRIOT_FAULTS": faults}
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *(args or (name,))], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            self.kills[name] += 1

    def dead(self, name: str) -> bool:
        return self.procs[name].poll() is not None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def signed_get(base: str, key: str, secret: str, path: str, **params: Any) -> Any:
    params["timestamp"] = int(time.time() * 1000)
    query = urlencode(params)
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}{path}?{query}&signature={signature}", headers={"X-MBX-APIKEY": key}) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def test_orders_survive_sigkills_of_order_service_and_lifecycle(
    migrated_database_url: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "PATRIOT_REDIS_PREFIX": key_prefix,
        "PATRIOT_DATA_DIR": str(data_dir),
        "PATRIOT_ENV": "test",
        "PATRIOT_MD_SIMULATOR_PORT": str(port),
        "PATRIOT_MD_SIMULATOR_WEIGHT_LIMIT": "10000000",
        "PATRIOT_MD_SIMULATOR_SPEED": "1",
        "PATRIOT_LOG_LEVEL": "WARNING",
    }
    base = f"http://127.0.0.1:{port}"
    procs = Processes(env, tmp_path)
    files = candle_files(tmp_path, minutes=2000)
    procs.start("simulator", "simulator", "--candles", str(files["BTCUSDT"]), "--candles", str(files["ETHUSDT"]))
    redis = Redis.from_url(redis_url)
    names = StreamNames(key_prefix, 8)
    try:
        users = await _link_users(base, migrated_database_url, data_dir)
        procs.start("accounts")
        procs.start("orders", faults=_faults("orders"))
        procs.start("lifecycle", faults=_faults("lifecycle"))
        price = await _venue_price(base)
        await _push_price(redis, names, price)
        client = CommandClient(redis, names)
        done = asyncio.Event()
        killer = asyncio.create_task(_kill_and_restart(procs, done))
        started = time.monotonic()
        stops = await _send_orders(client, users, price)
        print(f"orders sent in {time.monotonic() - started:.1f}s, kills so far {dict(procs.kills)}")
        await asyncio.sleep(1.0)
        done.set()
        await killer
        procs.kill("orders")  # one last restart: the book below is the restored one
        procs.start("orders")
        for name in ("lifecycle",):
            if procs.dead(name):
                procs.start(name)
        kills = sum(procs.kills.values())
        assert kills >= MIN_KILLS, f"only {kills} kills: {dict(procs.kills)}"
        started = time.monotonic()
        await _settled(migrated_database_url)
        print(f"settled in {time.monotonic() - started:.1f}s")
        await _assert_consistent(base, migrated_database_url, users)
        await _assert_stops_armed_and_fire(redis, names, migrated_database_url, stops, price)
    finally:
        await redis.aclose()
        procs.stop_all()


async def _link_users(base: str, database_url: str, data_dir: Path) -> list[dict[str, str]]:
    keyring = load_keyring(SecuritySettings(), RuntimeSettings(env="test", data_dir=data_dir))
    users = []
    for _ in range(100):
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v3/ping") as r:
                if r.status == 200:
                    break
        except aiohttp.ClientError:
            await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http:
        for n in range(USERS):
            user = {"user_id": str(uuid.uuid4()), "account_id": str(uuid.uuid4()), "key": f"k{n}{uuid.uuid4().hex}"}
            user["secret"] = f"s{uuid.uuid4().hex}"
            body = {
                "account_id": user["account_id"],
                "api_key": user["key"],
                "secret": user["secret"],
                "balances": {"USDT": "1000000", "BTC": "10"},
            }
            async with http.post(f"{base}/admin/accounts", json=body) as r:
                assert r.status == 200
            users.append(user)
    with psycopg.connect(database_url) as conn:
        for user in users:
            conn.execute("INSERT INTO users (id, username) VALUES (%s, %s)", (user["user_id"], user["key"][:20]))
            store_account(
                conn,
                keyring,
                account_id=user["account_id"],
                user_id=user["user_id"],
                exchange="simulator",
                label="main",
                api_key=user["key"],
                api_secret=user["secret"],
            )
        conn.commit()
    return users


async def _venue_price(base: str) -> Decimal:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v3/ticker/price?symbol=BTCUSDT") as r:
        return Decimal((await r.json())["price"])


async def _push_price(redis: Redis, names: StreamNames, price: Decimal) -> None:
    import msgspec

    from core.messaging.streams import Stream
    from realtime.marketdata.models import Trade

    trade = Trade("binance", "BTCUSDT", 1, float(price), 0.001, False, 0, 0)
    await redis.xadd(names.key(Stream.MARKET_TRADES, "BTCUSDT"), {"p": msgspec.json.encode(trade)})


async def _send(client: CommandClient, command: Any, user_id: str) -> dict[str, Any]:
    """Send as a client would: no answer in time (the service is down) -> send the same command again."""
    while True:
        try:
            reply = await client.send(command, user_id, wait_s=2.0)
            assert reply is not None
            if reply.get("ok") is False and reply.get("error") in ("OperationalError", "PoolTimeout"):
                await asyncio.sleep(0.5)
                continue
            return reply
        except CommandTimeout:
            continue


async def _send_orders(client: CommandClient, users: list[dict[str, str]], price: Decimal) -> list[str]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(ORDERS):
        queue.put_nowait(n)
    stops: list[str] = []
    rng = random.Random(7)
    started = time.monotonic()

    async def sender() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            # spread the orders over about a minute so the kills land while they flow
            await asyncio.sleep(max(0.0, started + n / ORDERS_PER_S - time.monotonic()))
            user = users[n % len(users)]
            kind = rng.random()
            fields: dict[str, Any] = {"order_type": OrderType.MARKET, "side": OrderSide.BUY}
            if n % STOPS_EVERY == 0:
                fields = {"order_type": OrderType.STOP_MARKET, "side": OrderSide.BUY, "trigger_price": price + 5000}
            elif kind < 0.3:
                fields["side"] = OrderSide.SELL
            elif kind < 0.5:
                fields = {
                    "order_type": OrderType.LIMIT,
                    "side": OrderSide.BUY,
                    "price": (price * Decimal("0.5")).quantize(Decimal("0.01")),
                }
            command = PlaceOrder(
                account_id=user["account_id"],
                user_id=user["user_id"],
                client_order_id=f"crash-{n}",
                exchange="simulator",
                symbol="BTCUSDT",
                quantity=Decimal("0.001"),
                **fields,
            )
            reply = await _send(client, command, user["user_id"])
            assert reply.get("ok") and reply["status"] not in ("denied",), reply
            if n % STOPS_EVERY == 0:
                stops.append(reply["order_id"])
            elif fields["order_type"] is OrderType.LIMIT and n % 3 == 0:
                cancel = CancelOrder(order_id=reply["order_id"], user_id=user["user_id"])
                await _send(client, cancel, user["user_id"])

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return stops


async def _kill_and_restart(procs: Processes, done: asyncio.Event) -> None:
    """SIGKILL the order service or the lifecycle at random moments; restart whatever died (a crash point fired,
    or this loop killed it) as the supervisor of ``patriot up`` would."""
    rng = random.Random(11)
    next_kill = time.monotonic() + rng.uniform(1.0, 2.5)
    while not done.is_set() or sum(procs.kills.values()) < MIN_KILLS:
        for name in ("orders", "lifecycle"):
            if procs.dead(name):
                procs.kills[name] += 1
                procs.start(name, faults=_faults(name))
        if time.monotonic() >= next_kill:
            victim = rng.choice(["orders", "lifecycle"])
            procs.kill(victim)
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            procs.start(victim, faults=_faults(victim))
            next_kill = time.monotonic() + rng.uniform(2.0, 3.5)
        await asyncio.sleep(0.05)


def _faults(name: str) -> str:
    if name == "orders":
        return "orders.after_commit=0.002,orders.before_venue=0.002,orders.after_venue_ack=0.002"
    return "consumer.lifecycle.before_ack=0.005"


async def _settled(database_url: str, timeout_s: float = 90) -> None:
    """Wait until no order is in flight and no fill is waiting to be applied."""
    deadline = time.monotonic() + timeout_s
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = await (
                await conn.execute(
                    "SELECT count(*) FROM orders WHERE status IN ('submitted', 'pending_cancel', 'triggered')"
                    " OR (order_type = 'market' AND status = 'accepted')"
                )
            ).fetchone()
            if row == (0,):
                await asyncio.sleep(2.0)  # let the lifecycle finish applying the last reports
                return
            await asyncio.sleep(0.5)
    raise AssertionError(f"orders still in flight after {timeout_s}s")


async def _assert_consistent(base: str, database_url: str, users: list[dict[str, str]]) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        placed = await (await conn.execute("SELECT count(*) FROM orders")).fetchone()
        assert placed == (ORDERS,), f"{placed} orders recorded for {ORDERS} commands"
        for user in users:
            venue = await signed_get(base, user["key"], user["secret"], "/api/v3/allOrders", symbol="BTCUSDT")
            venue_trades = await signed_get(base, user["key"], user["secret"], "/api/v3/myTrades", symbol="BTCUSDT")
            ours = {
                str(r[0]): r
                for r in await (
                    await conn.execute(
                        "SELECT id, status, filled_quantity, exchange_order_id FROM orders "
                        "WHERE account_id = %s AND exchange_order_id IS NOT NULL",
                        (user["account_id"],),
                    )
                ).fetchall()
            }
            by_client = {o["clientOrderId"]: o for o in venue}
            if set(by_client) != set(ours):
                odd = sorted(set(by_client) ^ set(ours))
                rows = await (
                    await conn.execute(
                        "SELECT id, status, reason, version FROM orders WHERE id::text = ANY(%s)", (odd,)
                    )
                ).fetchall()
                events = await (
                    await conn.execute(
                        "SELECT aggregate_id, event_type, event_data->>'reason', recorded_at FROM event_store "
                        "WHERE aggregate_id = ANY(%s) ORDER BY global_position",
                        (odd,),
                    )
                ).fetchall()
                venue_odd = [by_client.get(o) for o in odd]
                raise AssertionError(f"venue and PostgreSQL differ: ours {rows} events {events} venue {venue_odd}")
            status_map = {"FILLED": "filled", "CANCELED": "canceled", "NEW": "accepted", "EXPIRED": "expired"}
            for client_id, o in by_client.items():
                _, status, filled, exchange_id = ours[client_id]
                assert (status_map[o["status"]], Decimal(o["executedQty"]), str(o["orderId"])) == (
                    status,
                    filled,
                    exchange_id,
                ), client_id
            fills = await (
                await conn.execute("SELECT trade_id, quantity FROM fills WHERE account_id = %s", (user["account_id"],))
            ).fetchall()
            assert sorted(str(t[0]) for t in fills) == sorted(str(t["id"]) for t in venue_trades)
            signed = await (
                await conn.execute(
                    "SELECT coalesce(sum(CASE WHEN side = 'buy' THEN quantity ELSE -quantity END), 0) FROM fills "
                    "WHERE account_id = %s AND symbol = 'BTCUSDT'",
                    (user["account_id"],),
                )
            ).fetchone()
            position = await (
                await conn.execute(
                    "SELECT coalesce(sum(quantity), 0) FROM positions WHERE account_id = %s AND symbol = 'BTCUSDT'",
                    (user["account_id"],),
                )
            ).fetchone()
            assert signed == position, f"position {position} != sum of fills {signed}"
        mismatched = await (
            await conn.execute(
                "SELECT count(*) FROM orders o WHERE filled_quantity <> "
                "(SELECT coalesce(sum(quantity), 0) FROM fills f WHERE f.order_id = o.id)"
            )
        ).fetchone()
        assert mismatched == (0,), "an order's filled quantity differs from its fills"


async def _assert_stops_armed_and_fire(
    redis: Redis, names: StreamNames, database_url: str, stops: list[str], price: Decimal
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        armed = await (
            await conn.execute("SELECT count(*) FROM orders WHERE id = ANY(%s) AND status = 'armed'", (stops,))
        ).fetchone()
        assert armed == (len(stops),), f"{armed} of {len(stops)} stops armed"
        await asyncio.sleep(2.0)  # the restarted order service restores its book
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await _push_price(redis, names, price + 5001)
            fired = await (
                await conn.execute(
                    "SELECT count(*) FROM orders WHERE id = ANY(%s) AND status NOT IN ('armed', 'triggered')",
                    (stops,),
                )
            ).fetchone()
            if fired == (len(stops),):
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"only {fired} of {len(stops)} armed stops fired after the restart")
