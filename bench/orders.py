"""Order path benchmark: 100 users placing orders through the order service against the exchange simulator.

    python -m bench.orders [--users 100] [--rate 500] [--seconds 10]

The simulator runs as its own process (Binance REST over real HTTP, replaying the shipped 2025 candles), as a
venue would; the order service (risk checks, unit of work with group commit, event store and outbox, ccxt
adapters with the shared Redis weight budget) runs in this process and the users' commands go to its bus.
Open loop (like wrk2): orders are due at a fixed rate, round-robin over the users, and each latency counts from
when the order was due, so a stall is never hidden by the load backing off. Market orders of 0.0002 BTC,
alternating buy and sell. ``commit_*``: due -> order committed with its events and outbox rows (what the caller
is answered after); ``ack_*``: due -> the venue's acknowledgement received. Both are also given as ratios to the
physical floor measured first in the same run (``bench.floor``: single-row durable transactions at the same rate
over the same number of connections): ``commit_p99_vs_floor`` and ``ack_p99_vs_floor``. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory

import aiohttp
import psycopg

from bench.common import percentile, resolve_servers, scratch_database
from bench.floor import measure_floor
from core.bootstrap import bootstrap
from core.domain.orders import Order, OrderSide, OrderType, PlaceOrder
from core.runtime.processes import run_service, tune_gc
from core.security.account_secrets import store_account
from core.security.master_key import load_keyring
from core.settings import RuntimeSettings, SecuritySettings, load_settings
from realtime.exchanges.base import OrderAck
from realtime.orders.service import OrderService, warm_markets
from realtime.orders.venues import VenueEndpoints, VenueRegistry, adapter_factory

QTY = Decimal("0.0002")
POOL_SIZE = 24  # the order service's connections here, and the floor's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PATRIOT_MD_SIMULATOR_PORT": str(port),
        "PATRIOT_MD_SIMULATOR_WEIGHT_LIMIT": "1000000000",
        "PATRIOT_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "simulator"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


async def wait_ready(base: str, timeout_s: float = 60) -> Decimal:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{base}/api/v3/ticker/price?symbol=BTCUSDT") as r:
                    if r.status == 200:
                        return Decimal((await r.json())["price"])
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the simulator at {base} did not answer within {timeout_s}s")


async def link_users(base: str, database_url: str, data_dir: Path, count: int) -> list[tuple[str, str]]:
    """``count`` users, each with a simulator account of its own, linked with encrypted keys."""
    keyring = load_keyring(SecuritySettings(), RuntimeSettings(env="test", data_dir=data_dir))
    users = []
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            user_id, account_id, key, secret = (
                str(uuid.uuid4()),
                str(uuid.uuid4()),
                f"bk{n}{uuid.uuid4().hex}",
                uuid.uuid4().hex,
            )
            body = {
                "account_id": account_id,
                "api_key": key,
                "secret": secret,
                "balances": {"USDT": "10000000", "BTC": "100"},
            }
            async with http.post(f"{base}/admin/accounts", json=body) as r:
                assert r.status == 200, await r.text()
            users.append((user_id, account_id, key, secret))
    with psycopg.connect(database_url) as conn:
        for user_id, account_id, key, secret in users:
            conn.execute("INSERT INTO users (id, username) VALUES (%s, %s)", (user_id, f"bench-{user_id[:8]}"))
            store_account(
                conn,
                keyring,
                account_id=account_id,
                user_id=user_id,
                exchange="simulator",
                label="main",
                api_key=key,
                api_secret=secret,
            )
        conn.commit()
    return [(u, a) for u, a, _, _ in users]


def command(user: tuple[str, str], n: int) -> PlaceOrder:
    return PlaceOrder(
        account_id=user[1],
        user_id=user[0],
        client_order_id=f"bench-{n}",
        exchange="simulator",
        symbol="BTCUSDT",
        side=OrderSide.BUY if n % 2 == 0 else OrderSide.SELL,
        order_type=OrderType.MARKET,
        quantity=QTY,
    )


async def run(users_n: int, rate: float, seconds: float) -> dict[str, object]:
    servers = resolve_servers()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with TemporaryDirectory() as tmp, scratch_database(servers) as database_url:
        print(f"measuring the commit floor at {rate:.0f}/s over {POOL_SIZE} connections ...", file=sys.stderr)
        floor = await measure_floor(database_url, rate, seconds, POOL_SIZE)
        sim = start_simulator(port, Path(tmp) / "simulator.log")
        try:
            price = await wait_ready(base)
            print(f"simulator up at {base}; linking {users_n} users ...", file=sys.stderr)
            users = await link_users(base, database_url, Path(tmp), users_n)
            settings = load_settings()
            settings.redis.key_prefix = f"bench-orders:{uuid.uuid4().hex[:8]}:"
            settings.database.pool_max_size = POOL_SIZE
            kernel = await bootstrap(settings, database_url, servers.redis_url, service="bench-orders")
            keyring = load_keyring(SecuritySettings(), RuntimeSettings(env="test", data_dir=Path(tmp)))
            venues = VenueRegistry(
                kernel.pool,
                keyring,
                adapter_factory(VenueEndpoints(binance_rest_url=base), kernel.redis, settings.redis.key_prefix),
            )
            service = OrderService(kernel, venues)
            service.feed.marks["BTCUSDT"] = price
            await warm_markets(kernel, venues)
            acks: dict[str, float] = {}
            due_at: dict[str, float] = {}

            async def on_ack(order: Order, ack: OrderAck, elapsed: float) -> None:
                acks[order.client_order_id] = time.perf_counter()

            service.execution.on_ack = on_ack
            print("warming up (one order per user) ...", file=sys.stderr)
            await asyncio.gather(*(service.handle(command(u, -1 - i)) for i, u in enumerate(users)))
            await service.execution.drain()
            acks.clear()
            tune_gc()
            commits: list[float] = []
            errors: list[str] = []
            total = int(rate * seconds)
            start = time.perf_counter() + 0.1

            async def one(n: int) -> None:
                due = start + n / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                cmd = command(users[n % len(users)], n)
                due_at[cmd.client_order_id] = due
                result = await service.handle(cmd)
                commits.append(time.perf_counter() - due)
                if result.status != "submitted":
                    errors.append(f"{result.status}: {result.reason}")

            print(f"offering {total} orders at {rate:.0f}/s ...", file=sys.stderr)
            await asyncio.gather(*(one(n) for n in range(total)))
            await asyncio.wait_for(service.execution.drain(), 60)
            finished = max(acks.values(), default=time.perf_counter())
            ack_latency = [acks[c] - due_at[c] for c in acks if c in due_at]
            await service.execution.drain()
            await venues.close()
            await kernel.close()
        finally:
            sim.terminate()
            sim.wait(10)
    return {
        "users": users_n,
        "offered_per_s": rate,
        "orders": total,
        "acknowledged": len(ack_latency),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "orders_per_s": round(len(ack_latency) / (finished - start), 1),
        "commit_p50_ms": _ms(commits, 50),
        "commit_p99_ms": _ms(commits, 99),
        "ack_p50_ms": _ms(ack_latency, 50),
        "ack_p99_ms": _ms(ack_latency, 99),
        **floor.figures(),
        "commit_p99_vs_floor": floor.ratio(_ms(commits, 99)),
        "ack_p99_vs_floor": floor.ratio(_ms(ack_latency, 99)),
    }


def _ms(values: Sequence[float], pct: float) -> float:
    return round(percentile(values, pct) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    figures = run_service(run(args.users, args.rate, args.seconds))  # on uvloop, as the order service runs
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
