"""Liveness, readiness and Prometheus metrics: unauthenticated, and they expose no user data."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from api.deps import State
from api.errors import ApiError
from core.observability.metrics import render_metrics

router = APIRouter(tags=["health"])


class HealthPublic(BaseModel):
    status: str


class ReadyPublic(BaseModel):
    status: str
    postgres: bool
    redis: bool


@router.get("/health", response_model=HealthPublic, summary="The process is up")
async def health() -> HealthPublic:
    return HealthPublic(status="ok")


@router.get(
    "/ready",
    response_model=ReadyPublic,
    summary="PostgreSQL and Redis answer",
    responses={503: {"description": "a dependency does not answer"}},
)
async def ready(state: State) -> ReadyPublic:
    postgres = redis = False
    try:
        async with state.kernel.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
        postgres = True
    except Exception:
        pass
    try:
        redis = bool(await state.kernel.redis.ping())
    except Exception:
        pass
    if not (postgres and redis):
        raise ApiError(503, "not_ready", "a dependency does not answer", {"postgres": postgres, "redis": redis})
    return ReadyPublic(status="ready", postgres=postgres, redis=redis)


@router.get("/metrics", summary="Prometheus metrics of this API process", response_class=Response)
async def metrics(request: Request) -> Response:
    body, content_type = render_metrics(request.app.state.metrics)
    return Response(body, media_type=content_type)
