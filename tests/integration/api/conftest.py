"""The API served for real: uvicorn on a free port in the test's event loop, in front of the running platform
(simulator, order service, lifecycle, account streams) on the real PostgreSQL and Redis. Tests talk to it over
HTTP with httpx, as clients do.

``api`` gives an :class:`ApiHarness`: ``client`` (httpx, no credentials), ``new_user(role)`` to create users
(staff with a password; ``with_account`` links a funded simulator account through the platform), and
``headers(user)`` for a bearer token minted by the app's own token service.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.passwords import hash_password
from api.state import ApiState
from core.settings import Settings
from tests.platform_harness import Platform, running_platform

PASSWORD = "correct horse battery staple"


@dataclass
class ApiUser:
    user_id: str
    username: str
    role: str
    password: str | None = None
    account_id: str | None = None
    api_key: str | None = None
    secret: str | None = None


@dataclass
class ApiHarness:
    app: FastAPI
    base_url: str
    client: httpx.AsyncClient
    platform: Platform
    database_url: str
    users: list[ApiUser] = field(default_factory=list)

    @property
    def state(self) -> ApiState:
        state: ApiState = self.app.state.api
        return state

    async def new_user(
        self,
        role: str = "user",
        *,
        with_account: bool = False,
        password: str | None = PASSWORD,
        balances: dict[str, str] | None = None,
    ) -> ApiUser:
        """A user of ``role``; ``with_account`` also opens a funded simulator account (with ``balances``, else the
        platform's default funding) and links it."""
        if with_account:
            linked = await self.platform.add_user(balances)
            user = ApiUser(linked.user_id, f"u-{linked.user_id[:8]}", role, None, linked.account_id)
            user.api_key, user.secret = linked.api_key, linked.secret
            await self.platform.follow_accounts()
        else:
            user_id = str(uuid.uuid4())
            user = ApiUser(user_id, f"{role}-{user_id[:8]}", role)
            with psycopg.connect(self.database_url) as conn:
                conn.execute("INSERT INTO users (id, username) VALUES (%s, %s)", (user_id, user.username))
                conn.commit()
        with psycopg.connect(self.database_url) as conn:
            conn.execute(
                "UPDATE users SET role = %s, password_hash = %s WHERE id = %s",
                (role, hash_password(password) if password else None, user.user_id),
            )
            conn.commit()
        user.password = password
        self.users.append(user)
        return user

    def token(self, user: ApiUser) -> str:
        return self.state.tokens.access_token(user.user_id, user.role, user.username)

    def headers(self, user: ApiUser, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}", **extra}

    def service_headers(self, service: str = "telegram-bot") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.state.tokens.service_token(service)}"}


async def serve_app(app: FastAPI) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """Start uvicorn on a free port in this event loop (lifespan on); returns the server, its task and base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()  # raises the startup error
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start within 5 s"
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


async def stop_server(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, 15)


@pytest.fixture
async def api(
    settings: Settings, migrated_database_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[ApiHarness]:
    async with running_platform(settings, migrated_database_url, redis_url, tmp_path, users=0) as platform:
        app = create_app(
            settings,
            database_url=migrated_database_url,
            redis_url=redis_url,
            venues={"binance_rest_url": platform.base_url, "simulator": True},
        )
        server, task, base_url = await serve_app(app)
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                yield ApiHarness(app, base_url, client, platform, migrated_database_url)
        finally:
            await stop_server(server, task)


def error_code(response: httpx.Response) -> Any:
    """The ``error.code`` of a JSON error body (consistent across the API)."""
    return response.json()["error"]["code"]


def market_buy(user: ApiUser, **fields: Any) -> dict[str, Any]:
    """The body of a 0.01 BTCUSDT market buy on the user's account (``fields`` override or add)."""
    return {
        "account_id": user.account_id,
        "symbol": "BTCUSDT",
        "side": "buy",
        "order_type": "market",
        "quantity": "0.01",
        **fields,
    }


async def venue_account(api: ApiHarness) -> tuple[str, str]:
    """A funded account on the simulator (as if opened at the exchange): its API key and secret."""
    api_key, secret = f"key{uuid.uuid4().hex}", f"secret{uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{api.platform.base_url}/admin/accounts",
            json={"account_id": str(uuid.uuid4()), "api_key": api_key, "secret": secret, "balances": {"USDT": "1000"}},
        )
        assert response.status == 200, await response.text()
    return api_key, secret


async def link_account(
    api: ApiHarness, user: ApiUser, api_key: str, api_secret: str, label: str = "main", exchange: str = "simulator"
) -> httpx.Response:
    """POST /accounts as ``user``: link the venue account these keys open."""
    body = {"exchange": exchange, "label": label, "api_key": api_key, "api_secret": api_secret}
    return await api.client.post("/accounts", json=body, headers=api.headers(user))
