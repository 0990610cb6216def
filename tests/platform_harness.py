"""The trading platform in one event loop for integration tests: the simulator on a real port, account streams
over real WebSockets, the order service and the lifecycle against the real PostgreSQL and Redis.

Users talk to it as the API will: commands on the ``order.commands`` stream through :class:`CommandClient`.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psycopg

from core.bootstrap import Kernel, bootstrap
from core.domain.orders import OrderSide, OrderType, PlaceOrder
from core.messaging.streams import Stream
from core.security.account_secrets import store_account
from core.security.crypto import KeyRing
from core.security.master_key import load_keyring
from core.settings import Settings
from realtime.accounts.private_stream import UserStreamConfig
from realtime.accounts.service import AccountStreams, active_accounts
from realtime.exchanges.simulator.app import SimulatorConfig, bound_port, serve
from realtime.exchanges.simulator.state import STATE_KEY, SimulatorState
from realtime.marketdata.models import Trade
from realtime.orders.commands import CommandClient
from realtime.orders.lifecycle_service import LifecycleConfig, LifecycleService
from realtime.orders.service import OrderService, OrderServiceConfig, warm_markets
from realtime.orders.venues import VenueEndpoints, VenueRegistry, adapter_factory

DATA = Path(__file__).resolve().parents[1] / "data" / "binance-spot-1m" / "2025"


def candle_files(tmp: Path, minutes: int = 400) -> dict[str, Path]:
    """The first ``minutes`` of the shipped real 2025 candles, as small files for a quick simulator start."""
    files = {}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        lines = gzip.decompress((DATA / f"{symbol}_1m.csv.gz").read_bytes()).decode().splitlines()[: minutes + 1]
        files[symbol] = tmp / f"{symbol}_1m.csv"
        files[symbol].write_text("\n".join(lines) + "\n")
    return files


@dataclass
class User:
    user_id: str
    account_id: str
    api_key: str
    secret: str


@dataclass
class Platform:
    kernel: Kernel
    base_url: str
    sim: SimulatorState
    keyring: KeyRing
    client: CommandClient
    orders: OrderService
    lifecycle: LifecycleService
    streams: AccountStreams
    users: list[User] = field(default_factory=list)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    stops: dict[str, asyncio.Event] = field(default_factory=dict)

    async def add_user(self, balances: dict[str, str] | None = None, exchange: str = "simulator") -> User:
        user = User(str(uuid.uuid4()), str(uuid.uuid4()), f"key{uuid.uuid4().hex}", f"secret{uuid.uuid4().hex}")
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                f"{self.base_url}/admin/accounts",
                json={
                    "account_id": user.account_id,
                    "api_key": user.api_key,
                    "secret": user.secret,
                    "balances": balances or {"USDT": "100000", "BTC": "1", "ETH": "10"},
                },
            )
            assert response.status == 200, await response.text()
        with psycopg.connect(self.kernel.database_url) as conn:
            conn.execute("INSERT INTO users (id, username) VALUES (%s, %s)", (user.user_id, f"u-{user.user_id[:8]}"))
            store_account(
                conn,
                self.keyring,
                account_id=user.account_id,
                user_id=user.user_id,
                exchange=exchange,
                label="main",
                api_key=user.api_key,
                api_secret=user.secret,
            )
            conn.commit()
        self.users.append(user)
        return user

    async def follow_accounts(self) -> None:
        """Open the private stream of every linked account and wait until each is connected."""
        await self.streams.reconcile(await asyncio.to_thread(active_accounts, self.kernel.database_url, self.keyring))
        for stream in self.streams.streams().values():
            await asyncio.wait_for(stream.connected.wait(), 10)

    async def place(self, user: User, wait_s: float = 10.0, **fields: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "account_id": user.account_id,
            "user_id": user.user_id,
            "client_order_id": uuid.uuid4().hex,
            "exchange": "simulator",
            "symbol": "BTCUSDT",
            "side": OrderSide.BUY,
            "order_type": OrderType.MARKET,
            "quantity": Decimal("0.01"),
        }
        values.update(fields)
        reply = await self.client.send(PlaceOrder(**values), user.user_id, wait_s=wait_s)
        assert reply is not None
        return reply

    async def send(self, command: Any, user: User) -> dict[str, Any]:
        reply = await self.client.send(command, user.user_id, wait_s=10.0)
        assert reply is not None
        return reply

    async def push_price(self, symbol: str, price: str, exchange: str = "binance") -> None:
        """A market trade on the ``market.trades`` stream, as the market-data service publishes it."""
        trade = Trade(exchange, symbol, 1, float(price), 0.001, False, 0, 0)
        await self.kernel.redis.xadd(
            self.kernel.names.key(Stream.MARKET_TRADES, symbol), {"p": msgspec.json.encode(trade)}
        )

    async def order_row(self, order_id: str) -> dict[str, Any] | None:
        async with self.kernel.pool.connection() as conn:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            await cur.execute("SELECT * FROM orders WHERE id = %s", (order_id,))
            return await cur.fetchone()

    async def wait_status(self, order_id: str, *statuses: str, timeout_s: float = 15.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        row: dict[str, Any] | None = None
        while asyncio.get_running_loop().time() < deadline:
            row = await self.order_row(order_id)
            if row is not None and row["status"] in statuses:
                return row
            await asyncio.sleep(0.05)
        raise AssertionError(f"order {order_id} did not reach {statuses}; it is {row and row['status']}")

    async def wait_for(self, query: str, params: tuple[Any, ...], expected: Any, timeout_s: float = 15.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout_s
        value = None
        while asyncio.get_running_loop().time() < deadline:
            async with self.kernel.pool.connection() as conn:
                value = (await (await conn.execute(query, params)).fetchone() or (None,))[0]
            if value == expected:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"{query} gave {value!r}, expected {expected!r}")

    def start(self, name: str, runner: Any) -> None:
        stop = self.stops[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(runner(stop), name=name)

    async def stop_service(self, name: str) -> None:
        self.stops[name].set()
        await asyncio.wait_for(asyncio.gather(self.tasks.pop(name), return_exceptions=True), 15)

    async def restart_orders(self) -> OrderService:
        """A new order service (an empty trigger book), as after a process restart."""
        await self.stop_service("orders")
        self.orders = OrderService(self.kernel, self.orders.venues, self.orders.config)
        await warm_markets(self.kernel, self.orders.venues)
        self.start("orders", self.orders.run)
        await asyncio.sleep(0.3)
        return self.orders


@asynccontextmanager
async def running_platform(
    settings: Settings, database_url: str, redis_url: str, tmp_path: Path, users: int = 1
) -> AsyncIterator[Platform]:
    runner = await serve(
        SimulatorConfig(
            port=0, candle_files=candle_files(tmp_path), replay=False, warmup_candles=300, weight_limit=1_000_000
        )
    )
    base = f"http://127.0.0.1:{bound_port(runner)}"
    kernel = await bootstrap(settings, database_url, redis_url, service="test")
    keyring = load_keyring(settings.security, settings.runtime)
    factory = adapter_factory(VenueEndpoints(binance_rest_url=base, simulator=True), None)
    venues_orders = VenueRegistry(kernel.pool, keyring, factory)
    venues_lifecycle = VenueRegistry(kernel.pool, keyring, factory)
    streams = AccountStreams(
        UserStreamConfig(rest_url=base, ws_url=base.replace("http", "ws"), reconnect_initial_s=0.05),
        kernel.redis,
        kernel.names,
        kernel.metrics,
    )
    platform = Platform(
        kernel=kernel,
        base_url=base,
        sim=runner.app[STATE_KEY],
        keyring=keyring,
        client=CommandClient(kernel.redis, kernel.names),
        orders=OrderService(kernel, venues_orders, OrderServiceConfig(sweep_interval_s=0.5, submit_timeout_s=3.0)),
        lifecycle=LifecycleService(
            kernel, venues_lifecycle, LifecycleConfig(reconcile_interval_s=2.0, fallback_poll_s=0.5)
        ),
        streams=streams,
    )
    try:
        for _ in range(users):
            await platform.add_user()
        await platform.follow_accounts()
        await warm_markets(kernel, venues_orders)
        for symbol in ("BTCUSDT", "ETHUSDT"):  # the market-data service's role: the venue's last trade price
            last = platform.sim.market.last_trade(symbol)
            assert last is not None
            await platform.push_price(symbol, str(last.price))
        platform.start("orders", platform.orders.run)
        platform.start("lifecycle", platform.lifecycle.run)
        await asyncio.sleep(0.2)
        yield platform
    finally:
        for name in list(platform.tasks):
            await platform.stop_service(name)
        await streams.close()
        await venues_orders.close()
        await venues_lifecycle.close()
        await kernel.close()
        await runner.cleanup()
