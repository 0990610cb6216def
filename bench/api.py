"""API benchmark: the cached portfolio read and order placement over HTTP, against the API served as in production.

    python -m bench.api [--workers 2] [--seconds 10] [--portfolio-rate 2000] [--connections 200]
                        [--orders-rate 100] [--users 100]

Processes, as deployed: the exchange simulator (replaying the shipped 2025 candles), the order service
(``patriot orders``), the API (``python -m api.serve``: granian with ``--workers`` processes, JSON access log on)
and the load generator, each its own process, on the real PostgreSQL (a scratch database) and Redis (a key prefix
of its own). ``--users`` users each get a funded simulator account linked with encrypted keys, and a bearer token
minted with the API's secret. Rate limits are raised for the run (every request comes from 127.0.0.1), but both
checks still run on every request.

The load generator (asyncio protocols on uvloop, keep-alive HTTP/1.1: it shares the two cores, so it is kept
lean) is open loop, like wrk2: request ``n`` is due at ``start + n / rate``, round-robin over ``--connections``
keep-alive connections, and its latency counts from when it was due, so a stall is never hidden by the load
backing off. ``GET /portfolio`` (summary, positions, balances from the Redis read models, warmed first) over
``--connections``; ``POST /orders`` (market orders of 0.0002 BTC, alternating sides, with an
``Idempotency-Key``, answered once the order service committed the order) with one connection per user.
Each phase has an unrecorded two-second warm-up. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiohttp
import msgspec
import redis

from bench.common import percentile, resolve_servers, scratch_database
from bench.orders import _free_port, link_users, start_simulator, wait_ready
from core.messaging.streams import Stream, StreamNames
from core.runtime.processes import run_service
from core.settings import ApiSettings, BusSettings
from realtime.marketdata.models import Trade

WARMUP_S = 2.0


# --- the load generator (its own process: ``python -m bench.api --loadgen spec.json``) ----------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight, on asyncio's protocol layer: the load
    generator shares the API's two cores, so every microsecond it spends per request is taken from the server
    (aiohttp's client costs several times this per request)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._fail(ConnectionError(f"no content-length in {head[:200]!r}"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop > 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status, body = int(head[9:12]), bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def _request_bytes(spec: dict[str, Any], address: str, token: str, cid: str, body: bytes | None) -> bytes:
    lines = [f"{spec['method']} {spec['path']} HTTP/1.1", f"Host: {address}", f"Authorization: Bearer {token}"]
    lines.append(f"X-Correlation-ID: {cid}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines.append(f"Idempotency-Key: {uuid.uuid4().hex}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _load(spec: dict[str, Any], seconds: float, record: bool) -> dict[str, Any]:
    """Offer ``rate`` requests a second for ``seconds`` over ``connections`` connections; latency from due time."""
    rate, connections = float(spec["rate"]), int(spec["connections"])
    tokens: list[str] = spec["tokens"]
    accounts: list[str] = spec.get("accounts", [])
    address = spec["base_url"].split("//", 1)[1]
    host, port = address.split(":")
    total = int(rate * seconds)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 0.2
    last_done = start

    async def connect() -> _Connection:
        _, protocol = await loop.create_connection(_Connection, host, int(port))
        return protocol

    async def worker(k: int) -> None:
        nonlocal last_done
        user = k % len(tokens)
        connection = await connect()
        for n in range(k, total, connections):
            due = start + n / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            body = None
            if spec["method"] == "POST":
                side = "buy" if (n // connections) % 2 == 0 else "sell"
                order = {"account_id": accounts[user], "symbol": "BTCUSDT", "side": side}
                body = json.dumps({**order, "order_type": "market", "quantity": "0.0002"}).encode()
            data = _request_bytes(spec, address, tokens[user], f"bench-{k}-{n}", body)
            try:
                if connection.transport is None:
                    connection = await connect()
                status, answer = await asyncio.wait_for(connection.request(data), 30)
                done = time.perf_counter()
                statuses[status] += 1
                if status >= 400 and len(errors) < 5:
                    errors.append(f"{status}: {answer[:200].decode(errors='replace')}")
            except (OSError, TimeoutError) as exc:
                done = time.perf_counter()
                statuses[0] += 1
                if len(errors) < 5:
                    errors.append(repr(exc))
                if connection.transport is not None:
                    connection.transport.close()
                connection = await connect()
            latencies.append(done - due)
            last_done = max(last_done, done)
        if connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(worker(k) for k in range(min(connections, total))))
    ok = sum(c for s, c in statuses.items() if 200 <= s < 300)
    if not record:
        return {}
    return {
        "offered_per_s": rate,
        "connections": connections,
        "requests": total,
        "ok": ok,
        "statuses": {str(s): c for s, c in sorted(statuses.items())},
        "first_errors": errors,
        "rps": round(ok / (last_done - start), 1),
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
        "max_ms": _ms(latencies, 100),
    }


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    await _load(spec, WARMUP_S, record=False)
    return await _load(spec, float(spec["seconds"]), record=True)


def _ms(values: Sequence[float], pct: float) -> float:
    return round(percentile(values, pct) * 1000, 2)


def run_loadgen(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run one phase in a separate load-generator process; its last stdout line is the phase's figures."""
    path = tmp / f"load-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "bench.api", "--loadgen", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


# --- the platform and the API under test -----------------------------------------------------------------------


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def _wait_http(url: str, timeout_s: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url} process exited: {_tail(log)}")
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s: {_tail(log)}")


def _drop_prefix(redis_url: str, prefix: str) -> None:
    """Remove every Redis key of this run (streams, caches, limits), as the scratch database is dropped."""
    client = redis.Redis.from_url(redis_url)
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def _push_mark(redis_url: str, prefix: str, price: str) -> None:
    """The market-data service's part: the venue's last BTCUSDT trade, the order service's opening mark."""
    client = redis.Redis.from_url(redis_url)
    try:
        trade = Trade("binance", "BTCUSDT", 1, float(price), 0.001, False, 0, 0)
        key = StreamNames(prefix=prefix, partitions=BusSettings().partitions).key(Stream.MARKET_TRADES, "BTCUSDT")
        client.xadd(key, {"p": msgspec.json.encode(trade)})
    finally:
        client.close()


def _mint_tokens(secret: str, user_ids: Sequence[str]) -> list[str]:
    """Access tokens signed like the API's own (the same secret), one per user."""
    from api.tokens import TokenService

    settings = ApiSettings(access_ttl_s=3600)
    service = TokenService(secret.encode(), settings, None, "")  # type: ignore[arg-type]  # minting needs no Redis
    return [service.access_token(user_id, "user", f"bench-{user_id[:8]}") for user_id in user_ids]


async def _first_order(base: str, token: str, account_id: str, timeout_s: float = 60) -> None:
    """Wait until an order goes through end to end (the order service is up and has warmed its markets)."""
    deadline = time.monotonic() + timeout_s
    body = {"account_id": account_id, "symbol": "BTCUSDT", "side": "buy", "order_type": "market", "quantity": "0.0002"}
    last = ""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        while time.monotonic() < deadline:
            async with http.post(f"{base}/orders", json=body) as response:
                if response.status == 201:
                    return
                last = f"{response.status} {await response.text()}"
            await asyncio.sleep(0.5)
    raise RuntimeError(f"no order went through within {timeout_s}s: {last}")


async def _warm_portfolios(base: str, tokens: Sequence[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for token in tokens:
            async with http.get(f"{base}/portfolio", headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200, await response.text()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    servers = resolve_servers()
    sim_port, api_port = _free_port(), _free_port()
    sim_base, api_base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
    prefix = f"bench-api:{uuid.uuid4().hex[:8]}:"
    secret = secrets.token_urlsafe(48)
    processes: list[subprocess.Popen[bytes]] = []
    with TemporaryDirectory() as tmp_dir, scratch_database(servers) as database_url:
        tmp = Path(tmp_dir)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": servers.redis_url,
            "PATRIOT_REDIS_PREFIX": prefix,
            "PATRIOT_ENV": "test",
            "PATRIOT_DATA_DIR": str(tmp),
            "PATRIOT_MD_SIMULATOR_PORT": str(sim_port),
            "PATRIOT_JWT_SECRET": secret,
        }
        try:
            sim = start_simulator(sim_port, tmp / "simulator.log")
            processes.append(sim)
            price = await wait_ready(sim_base)
            print(f"simulator up at {sim_base}; linking {args.users} users ...", file=sys.stderr)
            users = await link_users(sim_base, database_url, tmp, args.users)
            _push_mark(servers.redis_url, prefix, str(price))
            processes.append(
                _start(["-m", "cli.main", "orders"], {**env, "PATRIOT_LOG_LEVEL": "WARNING"}, tmp / "o.log")
            )
            api_env = {
                **env,
                "PATRIOT_API_HOST": "127.0.0.1",
                "PATRIOT_API_PORT": str(api_port),
                "PATRIOT_API_WORKERS": str(args.workers),
                "PATRIOT_API_RATE_LIMIT_USER_PER_MIN": "1000000000",
                "PATRIOT_API_RATE_LIMIT_IP_PER_MIN": "1000000000",
                "PATRIOT_LOG_LEVEL": "INFO",  # as in production: one JSON access-log line per request
                # as a production deployment samples traces (OpenTelemetry's own variables; --trace-sample 1.0
                # records every request): each access-log line still carries its trace id and correlation id
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(args.trace_sample),
            }
            api_log = tmp / "api.log"
            processes.append(_start(["-m", "api.serve"], api_env, api_log))
            await _wait_http(f"{api_base}/ready", 60, processes[-1], api_log)
            tokens = _mint_tokens(secret, [u for u, _ in users])
            accounts = [a for _, a in users]
            print(f"API up at {api_base} ({args.workers} workers); warming up ...", file=sys.stderr)
            await _first_order(api_base, tokens[0], accounts[0])
            await _warm_portfolios(api_base, tokens)
            common = {"base_url": api_base, "tokens": tokens, "seconds": args.seconds}
            print(
                f"GET /portfolio at {args.portfolio_rate:.0f}/s over {args.connections} connections ...",
                file=sys.stderr,
            )
            portfolio = run_loadgen(
                {
                    **common,
                    "method": "GET",
                    "path": "/portfolio",
                    "rate": args.portfolio_rate,
                    "connections": args.connections,
                },
                tmp,
            )
            print(f"POST /orders at {args.orders_rate:.0f}/s from {args.users} users ...", file=sys.stderr)
            orders = run_loadgen(
                {
                    **common,
                    "method": "POST",
                    "path": "/orders",
                    "rate": args.orders_rate,
                    "connections": args.users,
                    "accounts": accounts,
                },
                tmp,
            )
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
            _drop_prefix(servers.redis_url, prefix)
    return {
        "server": "granian",
        "trace_sample": args.trace_sample,
        "api_workers": args.workers,
        "cpus": os.cpu_count(),
        "portfolio": portfolio,
        "orders": orders,
        "portfolio_rps": portfolio["rps"],
        "portfolio_p50_ms": portfolio["p50_ms"],
        "portfolio_p99_ms": portfolio["p99_ms"],
        "orders_rps": orders["rps"],
        "orders_p50_ms": orders["p50_ms"],
        "orders_p99_ms": orders["p99_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="granian worker processes of the API")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--portfolio-rate", type=float, default=2000.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument(
        "--orders-rate", type=float, default=100.0, help="orders a second over --users users (100: one each a second)"
    )
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--trace-sample", type=float, default=0.01, help="share of requests whose spans are recorded")
    parser.add_argument("--loadgen", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        print(json.dumps(run_service(_loadgen(json.loads(args.loadgen.read_text())))))
        return
    print(json.dumps(run_service(run(args))))


if __name__ == "__main__":
    main()
