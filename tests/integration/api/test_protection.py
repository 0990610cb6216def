"""Rate limits and tracing over real HTTP: the app served by uvicorn on the real PostgreSQL and Redis, with limits
low enough to pass in a few requests. Per-user and per-IP limits answer 429 with ``Retry-After`` and the JSON
error body; a junk bearer token does not skip the per-IP limit; service tokens and link-code redemptions have
limits of their own; every request leaves a server span carrying its correlation id."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from api.app import create_app
from api.deps import Principal
from api.tracing import CORRELATION_ATTRIBUTE
from core.settings import ApiSettings, Settings
from tests.integration.api.conftest import error_code, serve_app, stop_server

pytestmark = pytest.mark.integration

USER_LIMIT, IP_LIMIT = 3, 8


@dataclass
class Served:
    app: FastAPI
    client: httpx.AsyncClient

    def bearer(self, user_id: str) -> dict[str, str]:
        token = self.app.state.api.tokens.access_token(user_id, "user", f"u-{user_id[:8]}")
        return {"Authorization": f"Bearer {token}"}


ServeWith = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve_with(settings: Settings) -> AsyncIterator[ServeWith]:
    """Serve the real app with the given per-user and per-IP limits (and a probe route needing a bearer token,
    so the test does not depend on which resource routers exist yet)."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None], httpx.AsyncClient]] = []

    async def start(user_per_min: int, ip_per_min: int, **limits: int) -> Served:
        settings.api = ApiSettings(rate_limit_user_per_min=user_per_min, rate_limit_ip_per_min=ip_per_min, **limits)
        app = create_app(settings, venues={})

        @app.get("/probe/me")
        async def me(principal: Principal) -> dict[str, str]:
            return {"user_id": principal.user_id}

        @app.get("/probe/open")
        async def open_route() -> dict[str, str]:
            return {"ok": "yes"}

        server, task, base_url = await serve_app(app)
        client = httpx.AsyncClient(base_url=base_url, timeout=10)
        running.append((server, task, client))
        return Served(app, client)

    yield start
    for server, task, client in running:
        await client.aclose()
        await stop_server(server, task)


async def _inside_one_window(margin_s: float = 3.0) -> None:
    """Limits count per wall-clock minute: start a burst far enough from a window boundary not to straddle it."""
    into = time.time() % 60
    if into > 60 - margin_s:
        await asyncio.sleep(60 - into + 0.05)


async def test_user_over_the_per_user_limit_gets_429_with_retry_after_and_the_json_body(serve_with: ServeWith) -> None:
    served = await serve_with(USER_LIMIT, 1000)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await _inside_one_window()
    for _ in range(USER_LIMIT):
        assert (await served.client.get("/probe/me", headers=served.bearer(alice))).status_code == 200

    refused = await served.client.get("/probe/me", headers={**served.bearer(alice), "X-Correlation-ID": "limited-1"})

    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["correlation_id"] == "limited-1"
    assert error_code(refused) == "rate_limited"
    assert refused.json()["error"]["details"]["scope"] == "user"
    # the limit is each user's own: another user from the same address is still served
    assert (await served.client.get("/probe/me", headers=served.bearer(bob))).status_code == 200
    metrics = (await served.client.get("/metrics")).text
    assert 'patriot_api_rate_limited_total{scope="user"} 1.0' in metrics


async def test_address_over_the_per_ip_limit_gets_429_but_health_still_answers(serve_with: ServeWith) -> None:
    served = await serve_with(1000, IP_LIMIT)
    await _inside_one_window()
    statuses = [(await served.client.get("/probe/open")).status_code for _ in range(IP_LIMIT + 2)]

    assert statuses == [200] * IP_LIMIT + [429, 429]
    refused = await served.client.get("/probe/open", headers={"X-Correlation-ID": "ip-limited"})
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-correlation-id"] == "ip-limited"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["details"] == {
        "scope": "ip",
        "limit_per_minute": IP_LIMIT,
        "retry_after_s": int(refused.headers["retry-after"]),
    }
    # probes and scrapes are exempt, so a throttled address never looks like a dead API
    assert (await served.client.get("/health")).status_code == 200
    metrics = (await served.client.get("/metrics")).text
    assert 'patriot_api_rate_limited_total{scope="ip"} 3.0' in metrics


async def test_requests_with_junk_bearer_tokens_count_against_the_address_and_get_429(serve_with: ServeWith) -> None:
    served = await serve_with(1000, IP_LIMIT)
    await _inside_one_window()
    junk = [{"Authorization": "Bearer junk"}, {"Authorization": f"Bearer {uuid.uuid4().hex}"}]
    statuses = [(await served.client.get("/probe/me", headers=junk[n % 2])).status_code for n in range(IP_LIMIT)]
    assert statuses == [401] * IP_LIMIT  # each refused token was counted against the address

    refused = await served.client.get("/probe/me", headers=junk[0])
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert refused.json()["error"]["details"]["scope"] == "ip"
    # the same address's counter: no token at all is refused too, a valid token from it as well
    assert (await served.client.get("/probe/open")).status_code == 429
    assert (await served.client.get("/probe/me", headers=served.bearer(str(uuid.uuid4())))).status_code == 429
    metrics = (await served.client.get("/metrics")).text
    assert 'patriot_api_rate_limited_total{scope="ip"} 3.0' in metrics


async def test_service_tokens_are_limited_per_token_and_per_address(serve_with: ServeWith) -> None:
    served = await serve_with(1000, 1000, rate_limit_service_per_min=3, rate_limit_service_ip_per_min=5)
    tokens = served.app.state.api.tokens
    first, second = ({"Authorization": f"Bearer {tokens.service_token('telegram-bot')}"} for _ in range(2))
    await _inside_one_window()
    statuses = [(await served.client.get("/auth/me", headers=first)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    second_token = await served.client.get("/auth/me", headers=second)
    assert second_token.status_code == 200  # a limit per token: the other token is still served
    over_address = await served.client.get("/auth/me", headers=second)  # the address's sixth service request
    assert over_address.status_code == 429
    assert over_address.json()["error"]["details"]["scope"] == "service_ip"
    assert 1 <= int(over_address.headers["retry-after"]) <= 60


async def test_link_code_redemptions_are_limited_per_service_token(serve_with: ServeWith) -> None:
    served = await serve_with(1000, 1000, rate_limit_link_per_min=3)
    bot = {"Authorization": f"Bearer {served.app.state.api.tokens.service_token('telegram-bot')}"}
    await _inside_one_window()
    guesses = [
        await served.client.post("/auth/telegram/link", headers=bot, json={"code": f"GUESS{n:03d}", "telegram_id": 7})
        for n in range(4)
    ]
    assert [r.status_code for r in guesses] == [400, 400, 400, 429]
    assert error_code(guesses[-1]) == "rate_limited" and guesses[-1].json()["error"]["details"]["scope"] == "link"
    # other calls of the same bot are not link redemptions: they go on
    assert (await served.client.get("/auth/me", headers=bot)).status_code == 200


async def test_each_request_records_a_server_span_with_its_correlation_id(
    serve_with: ServeWith, recorded_spans: InMemorySpanExporter
) -> None:
    exporter = recorded_spans
    served = await serve_with(1, 1000)
    user = str(uuid.uuid4())
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    await _inside_one_window()
    served_ok = await served.client.get(
        "/probe/me", headers={**served.bearer(user), "X-Correlation-ID": "trace-me-1", "traceparent": parent}
    )
    limited = await served.client.get("/probe/me", headers={**served.bearer(user), "X-Correlation-ID": "trace-2"})
    assert (served_ok.status_code, limited.status_code) == (200, 429)

    spans = {s.attributes.get(CORRELATION_ATTRIBUTE): s for s in exporter.get_finished_spans() if s.attributes}
    first: ReadableSpan = spans["trace-me-1"]
    assert first.kind is SpanKind.SERVER and first.name == "GET /probe/me"
    assert first.attributes is not None and first.attributes["http.response.status_code"] == 200
    assert format(first.context.trace_id, "032x") == trace_id  # the caller's trace is continued
    second = spans["trace-2"]
    assert second.attributes is not None and second.attributes["http.response.status_code"] == 429
