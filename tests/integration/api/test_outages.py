"""Outages for real: the API reaches PostgreSQL and Redis through a TCP forwarder that the test cuts (its
connections dropped, its port closed, as when a server goes away). Every request that needs the missing server
gets a 503 ``dependency_unavailable`` naming it, with the correlation id in body and header; no token is honoured
while Redis (and with it every user's token cut-off) is away; an unexpected failure is a 500 that carries the
correlation id too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from core.settings import Settings
from tests.integration.api.conftest import PASSWORD, ApiHarness, serve_app, stop_server

pytestmark = pytest.mark.integration


@dataclass
class Forwarder:
    """A TCP forwarder to ``host:port`` on a free local port; ``cut()`` drops every connection and the port."""

    host: str
    port: int
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            client_writer.close()
            return
        self.writers |= {client_writer, upstream_writer}
        await asyncio.gather(
            _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer), return_exceptions=True
        )

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    auth = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


@dataclass
class Outage:
    """An API served through forwarders: ``cut_redis()`` / ``cut_postgres()`` take one server away."""

    api: ApiHarness
    redis: Forwarder
    postgres: Forwarder


@pytest.fixture
async def outage(
    settings: Settings, migrated_database_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Outage]:
    db, rd = urlsplit(migrated_database_url), urlsplit(redis_url)
    postgres = Forwarder(db.hostname or "127.0.0.1", db.port or 5432)
    redis = Forwarder(rd.hostname or "127.0.0.1", rd.port or 6379)
    pg_port, redis_port = await postgres.start(), await redis.start()
    settings.api = settings.api.model_copy(update={"db_wait_s": 1.0})  # a request waits 1 s for a connection
    app = create_app(
        settings,
        database_url=_through(migrated_database_url, pg_port),
        redis_url=_through(redis_url, redis_port),
        venues={"binance_rest_url": "http://127.0.0.1:9", "simulator": True},
    )
    _add_failing_route(app)
    server, task, base_url = await serve_app(app)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            harness = ApiHarness(app, base_url, client, None, migrated_database_url)  # type: ignore[arg-type]
            yield Outage(harness, redis, postgres)
    finally:
        with contextlib.suppress(Exception):
            await stop_server(server, task)
        for forwarder in (redis, postgres):
            with contextlib.suppress(Exception):
                await forwarder.cut()


def _add_failing_route(app: FastAPI) -> None:
    """A route whose code has a bug, as any route might: the 500 it causes is what is under test."""

    async def broken() -> dict[str, Any]:
        return {"ratio": 1 / len([])}

    app.add_api_route("/test-only/broken", broken, methods=["GET"])


def _unavailable(response: httpx.Response, dependency: str, correlation_id: str) -> bool:
    body = response.json()
    return (
        response.status_code == 503
        and body["error"]["code"] == "dependency_unavailable"
        and body["error"]["details"] == {"dependency": dependency}
        and body["correlation_id"] == correlation_id
        and response.headers["x-correlation-id"] == correlation_id
    )


Call = Callable[[httpx.AsyncClient, dict[str, str]], Any]


async def _each_unavailable(api: ApiHarness, calls: dict[str, Call], dependency: str) -> dict[str, Any]:
    """Run every call with a correlation id of its own; the answers that were not the expected 503."""
    wrong = {}
    for name, call in calls.items():
        cid = f"outage-{name}"
        response: httpx.Response = await call(api.client, {"X-Correlation-ID": cid})
        if not _unavailable(response, dependency, cid):
            wrong[name] = (response.status_code, response.text)
    return wrong


async def test_without_redis_no_token_is_honoured_and_every_route_answers_503_naming_redis(outage: Outage) -> None:
    api = outage.api
    admin, user = await api.new_user("admin"), await api.new_user("user")
    pair = (await api.client.post("/auth/login", json={"username": user.username, "password": PASSWORD})).json()
    suspended = await api.client.patch(
        f"/users/{user.user_id}", json={"status": "suspended"}, headers=api.headers(admin)
    )
    assert suspended.status_code == 200, suspended.text
    user_auth, admin_auth = api.headers(user), api.headers(admin)
    stale = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await api.client.get("/auth/me", headers=stale)).status_code == 401  # with Redis: refused

    await outage.redis.cut()

    calls: dict[str, Call] = {
        "me-stale": lambda c, h: c.get("/auth/me", headers={**h, **stale}),
        "orders-stale": lambda c, h: c.get("/orders", headers={**h, **stale}),
        "portfolio": lambda c, h: c.get("/portfolio", headers={**h, **user_auth}),
        "orders": lambda c, h: c.get("/orders", headers={**h, **user_auth}),
        "admin": lambda c, h: c.get("/users", headers={**h, **admin_auth}),
        "login": lambda c, h: c.post("/auth/login", json={"username": user.username, "password": PASSWORD}, headers=h),
        "refresh": lambda c, h: c.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}, headers=h),
    }
    assert await _each_unavailable(api, calls, "redis") == {}
    async with aiohttp.ClientSession() as http:
        ws_url = api.base_url.replace("http", "ws") + "/stream/ws"
        async with http.ws_connect(ws_url, params={"token": api.token(admin)}) as ws:
            message = await ws.receive(timeout=30)
            assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1011
            assert message.extra == "dependency_unavailable"


async def test_without_postgresql_every_route_that_reads_it_answers_503_naming_postgresql(outage: Outage) -> None:
    api = outage.api
    admin, user = await api.new_user("admin"), await api.new_user("user")
    pair = (await api.client.post("/auth/login", json={"username": user.username, "password": PASSWORD})).json()
    user_auth, admin_auth = api.headers(user), api.headers(admin)

    await outage.postgres.cut()
    # Redis is still there: what needs only Redis still works
    assert (await api.client.get("/auth/me", headers=user_auth)).status_code == 200

    calls: dict[str, Call] = {
        "portfolio": lambda c, h: c.get("/portfolio", headers={**h, **user_auth}),
        "orders": lambda c, h: c.get("/orders", headers={**h, **user_auth}),
        "admin": lambda c, h: c.get("/users", headers={**h, **admin_auth}),
        "admin-change": lambda c, h: c.patch(
            f"/users/{user.user_id}", json={"role": "fund_manager"}, headers={**h, **admin_auth}
        ),
        "login": lambda c, h: c.post("/auth/login", json={"username": user.username, "password": PASSWORD}, headers=h),
        "refresh": lambda c, h: c.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}, headers=h),
    }
    assert await _each_unavailable(api, calls, "postgresql") == {}


async def test_an_unexpected_failure_is_a_500_carrying_the_correlation_id(outage: Outage) -> None:
    given = await outage.api.client.get("/test-only/broken", headers={"X-Correlation-ID": "bug-report-1"})
    assert given.status_code == 500
    assert given.json() == {
        "error": {"code": "internal_error", "message": "the server failed; quote the correlation id when reporting it"},
        "correlation_id": "bug-report-1",
    }
    assert given.headers["x-correlation-id"] == "bug-report-1"
    generated = await outage.api.client.get("/test-only/broken")
    assert generated.status_code == 500 and generated.json()["correlation_id"]
    assert generated.headers["x-correlation-id"] == generated.json()["correlation_id"]
