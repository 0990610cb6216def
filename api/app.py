"""The FastAPI application: ``create_app()`` wires settings, the kernel's clients, middleware, error bodies and
one router per resource. ``patriot api`` serves it with granian (see ``api.serve``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from api.docs import install_offline_docs
from api.errors import COMMON_RESPONSES, install_error_handlers
from api.hot import HotReadsMiddleware
from api.metrics import build_api_metrics
from api.middleware import RequestContextMiddleware
from api.ratelimit import IpRateLimitMiddleware
from api.routers import ROUTERS
from api.services.auth import USER_HANDLERS
from api.services.strategy_commands import STRATEGY_HANDLERS
from api.state import ApiState
from api.tokens import TokenService, load_jwt_secret
from api.tracing import TracingMiddleware
from core.bootstrap import bootstrap
from core.messaging.bus import MessageBus
from core.observability.metrics import Metrics, build_metrics
from core.security.master_key import load_keyring
from core.settings import Settings, load_settings
from realtime.orders.commands import CommandClient
from realtime.portfolio.readmodels import PortfolioReadModels
from warehouse.store import WarehouseStore

API_VERSION = "1.0.0"
# the commands the API handles itself (configuration and user administration); trading commands go to the order
# service over order.commands
API_COMMANDS = {**STRATEGY_HANDLERS, **USER_HANDLERS}
DESCRIPTION = """PATRIOT's command and query API. Authenticate with `POST /auth/login` (staff) or the Telegram
link flow (users) and send `Authorization: Bearer <access token>`. Every response carries `X-Correlation-ID`;
send your own to follow a request through the platform. Errors are `{"error": {"code", "message", "details"},
"correlation_id"}`.

**WebSocket `/stream/ws`** (not listed below: OpenAPI has no WebSocket operations) pushes the caller's order,
fill, balance, risk and portfolio updates as JSON. Authenticate with the same access token, one of three ways:
`/stream/ws?token=<access token>`, an `Authorization: Bearer <access token>` header, or a first message
`{"type": "auth", "token": "<access token>"}` within 10 s. A bad token closes the socket with code 4401 (4403 for a
role that may not read orders or the portfolio, 1011 when Redis is unavailable). The socket lives only as long as
its token: it closes with 4401, reason `token_expired`, when the token expires, and with 4401, reason
`token_revoked`, about a second after a suspension, role change or password change. To stay connected, send
`{"type": "auth", "token": "<newer access token>"}` before the expiry (after `POST /auth/refresh`): the answer is
`{"type": "authenticated", "expires_at"}`; another user's token closes the socket. Once subscribed the server
sends `{"type": "ready", "user_id", "expires_at"}` (Unix seconds); `{"type": "ping"}` is answered
`{"type": "pong"}`."""


def create_app(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    venues: dict[str, Any] | None = None,
    metrics: Metrics | None = None,
    access_log: bool = True,
) -> FastAPI:
    """The app; its lifespan opens PostgreSQL and Redis (given URLs, else the settings', else embedded servers)."""
    settings = settings or load_settings()
    metrics = metrics or build_metrics("api")
    api_metrics = build_api_metrics(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db_url, r_url = _endpoints(settings, database_url, redis_url)
        kernel = await bootstrap(settings, db_url, r_url, service="api", metrics=metrics)
        # a request waits this long for a PostgreSQL connection, then answers 503 (api.errors), not 30 s
        kernel.pool.timeout = settings.api.db_wait_s
        try:
            state = ApiState(
                kernel=kernel,
                tokens=TokenService(
                    load_jwt_secret(settings.api, settings.runtime), settings.api, kernel.redis, kernel.names.prefix
                ),
                keyring=load_keyring(settings.security, settings.runtime),
                commands=CommandClient(kernel.redis, kernel.names),
                read_models=PortfolioReadModels(kernel.pool, kernel.redis, kernel.names.prefix),
                warehouse=WarehouseStore(Path(settings.runtime.data_dir) / "warehouse"),
                venues=venues if venues is not None else _venues(settings),
                extras={"metrics": api_metrics},
                bus=MessageBus(partial(kernel.uow_factory, transactional=True), API_COMMANDS, metrics),  # type: ignore[arg-type]
            )
            app.state.api = state
            yield
        finally:
            await kernel.close()

    app = FastAPI(
        title="PATRIOT API",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc load their scripts from the installed package, not a CDN (api.docs)
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry instrumentation is off: api.tracing already opens the request's server span
        # (with the correlation id) and api.metrics counts requests; FastAPI's would add a second server span, a
        # span per operation and a second duration histogram to every request (about 5% of a worker's CPU)
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.metrics = metrics
    app.state.api_metrics = api_metrics
    app.state.settings = settings
    install_error_handlers(app)
    install_offline_docs(app)
    for router in ROUTERS:
        app.include_router(router, responses=COMMON_RESPONSES)
    # protection and tracing (issue 6); the last added runs first, so both run inside the request context and
    # a per-IP 429 is still traced, timed and logged with its correlation id; the hot reads (api.hot) innermost
    app.add_middleware(HotReadsMiddleware)  # type: ignore[arg-type]
    app.add_middleware(IpRateLimitMiddleware)  # type: ignore[arg-type]
    app.add_middleware(TracingMiddleware)  # type: ignore[arg-type]
    app.add_middleware(
        RequestContextMiddleware,  # type: ignore[arg-type]
        metrics=api_metrics,
        max_body_bytes=settings.api.max_body_bytes,
        access_log=access_log,
    )
    return app


def _endpoints(settings: Settings, database_url: str | None, redis_url: str | None) -> tuple[str, str]:
    db = database_url or settings.database.url
    rd = redis_url or settings.redis.url
    if db and rd:
        return db, rd
    from core.runtime.embedded import start_services

    endpoints = start_services(settings)
    return db or endpoints.database_url, rd or endpoints.redis_url


def _venues(settings: Settings) -> dict[str, Any]:
    md = settings.market_data
    if md.uses_simulator:
        return {"binance_rest_url": f"http://{md.simulator_host}:{md.simulator_port}", "simulator": True}
    return {"binance_rest_url": md.binance_rest_url, "simulator": False}
