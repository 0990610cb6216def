"""Serve the API with granian (Rust HTTP server, ASGI): ``serve(settings)`` (what ``patriot api`` and ``patriot up``
call). granian parses HTTP in Rust: on this 2-core machine it answers about 1.5x the requests uvicorn+httptools
does for the same app, with a far shorter tail (docs/benchmarks.md, bench.api).

granian's own access log is off (``api.middleware`` writes one JSON line per request with the correlation id).
With ``workers > 1`` granian starts that many processes, each building the app through :func:`app_factory`;
everything they must agree on is settled here first, in the parent, and handed down through the environment:
the PostgreSQL and Redis URLs (embedded servers are started once, not once per worker), and in dev the generated
JWT secret and master-key files (created once, before workers race to create them).
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from granian import Granian
from granian.constants import Interfaces, Loops

from api.app import create_app
from api.tokens import load_jwt_secret
from core.observability.logging import configure_logging
from core.observability.tracing import configure_tracing
from core.runtime.processes import tune_gc
from core.security.master_key import load_keyring
from core.settings import Settings, load_settings

SERVICE = "api"


def app_factory() -> FastAPI:
    """Build one worker's app from the environment (granian calls this in every worker process)."""
    settings = load_settings()
    configure_logging(SERVICE, settings.observability.log_level, json_output=settings.observability.log_json)
    configure_tracing(SERVICE, settings.observability.otlp_endpoint)
    app = create_app(settings)
    # what start-up built (modules, routes, models) out of the cyclic GC, and fewer young collections: a worker
    # serving thousands of reads a second otherwise pauses in gen-2 collections, seen as its p99 (bench.api)
    tune_gc()
    return app


def prepare(settings: Settings) -> dict[str, str]:
    """Resolve what every worker must share and return it as environment variables for the workers."""
    load_jwt_secret(settings.api, settings.runtime)  # fails fast outside dev without PATRIOT_JWT_SECRET
    load_keyring(settings.security, settings.runtime)  # fails fast without a master key
    database_url, redis_url = settings.database.url, settings.redis.url
    if not (database_url and redis_url):
        from core.runtime.embedded import start_services

        endpoints = start_services(settings)
        database_url, redis_url = database_url or endpoints.database_url, redis_url or endpoints.redis_url
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url}


def serve(
    settings: Settings | None = None, *, host: str | None = None, port: int | None = None, workers: int | None = None
) -> None:
    """Run the API in the foreground until SIGINT/SIGTERM; ``settings.api`` gives host, port and workers."""
    settings = settings or load_settings()
    os.environ.update(prepare(settings))
    Granian(
        "api.serve:app_factory",
        factory=True,
        interface=Interfaces.ASGI,
        address=host or settings.api.host,
        port=port or settings.api.port,
        workers=workers or settings.api.workers,
        loop=Loops.uvloop,
        websockets=True,
        log_access=False,
        log_level=settings.observability.log_level.lower(),  # type: ignore[arg-type]
        respawn_failed_workers=True,
    ).serve()


if __name__ == "__main__":
    serve()
