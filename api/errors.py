"""One JSON error body for every failure: ``{"error": {"code", "message", "details"}, "correlation_id"}``.

``code`` is stable and machine-readable; ``message`` says what was wrong and what to do; ``details`` carries the
fields at fault (validation) when there are any. An unreachable PostgreSQL or Redis is a 503
``dependency_unavailable`` naming the dependency (``details.dependency``); any other unexpected exception becomes
a 500 that names only the correlation id, never internals. Both carry the correlation id in the body and the
``X-Correlation-ID`` header (rendered by :func:`failure_response` inside the request context).
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.messaging.bus import CommandRefused
from core.observability.context import get_correlation_id
from core.observability.logging import get_logger

log = get_logger("api.errors")


class ApiError(CommandRefused):
    """A failure the client can act on: its HTTP status, a stable code and a message saying what to do (raised
    by the API's own command handlers too, where the bus counts it as a refusal, not an error)."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


class DependencyUnavailable(ApiError):
    """PostgreSQL or Redis did not answer: a 503 naming it, so clients retry later and operators know where."""

    def __init__(self, dependency: str, message: str | None = None) -> None:
        super().__init__(
            503,
            "dependency_unavailable",
            message or f"{dependency} is unavailable: retry shortly",
            {"dependency": dependency},
        )
        self.dependency = dependency


# the outage exceptions of each dependency's client (psycopg_pool's PoolTimeout is an OperationalError)
_OUTAGES: tuple[tuple[tuple[type[Exception], ...], str], ...] = (
    ((RedisConnectionError, RedisTimeoutError), "redis"),
    ((psycopg.OperationalError,), "postgresql"),
)


def unavailable_dependency(exc: BaseException) -> str | None:
    """The dependency whose outage ``exc`` is (or was caused by, or groups), else None."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DependencyUnavailable):
            return current.dependency
        for types, dependency in _OUTAGES:
            if isinstance(current, types):
                return dependency
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail
    correlation_id: str | None = None


Responses = dict[int | str, dict[str, Any]]
"""A route's OpenAPI ``responses``: status -> what it means."""

AUTH_RESPONSES: Responses = {
    401: {"description": "no or an invalid token"},
    403: {"description": "the role may not do this"},
}


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Statuses any route can answer (authentication, permission, validation, size and rate limits); the app adds
# them to every route's OpenAPI responses so clients and schemathesis know them.
COMMON_RESPONSES: Responses = {
    400: _documented("The request is malformed"),
    401: _documented("No valid bearer token: log in (or refresh) and retry"),
    403: _documented("The token's role lacks the permission this route needs"),
    413: _documented("The request body is over the size limit"),
    422: _documented("The request failed validation: see error.details"),
    429: _documented("Rate limited: retry after the Retry-After header's seconds"),
    503: _documented("PostgreSQL or Redis is unavailable (error.details.dependency names it): retry later"),
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}, "correlation_id": get_correlation_id()}
    if details is not None:
        body["error"]["details"] = details
    return body


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def failure_response(exc: BaseException) -> JSONResponse:
    """The answer to an exception no route handled: 503 naming an unavailable dependency, else a bare 500.

    Rendered inside the request context (``api.middleware`` and the handlers below), so the body and the
    ``X-Correlation-ID`` header carry the request's correlation id."""
    dependency = unavailable_dependency(exc)
    if dependency is not None:
        log.warning("api.dependency_unavailable", dependency=dependency, error=repr(exc))
        body = error_body(
            "dependency_unavailable", f"{dependency} is unavailable: retry shortly", {"dependency": dependency}
        )
        return JSONResponse(body, 503)
    log.error("api.unhandled", error_type=type(exc).__name__, exc_info=exc)
    return JSONResponse(
        error_body("internal_error", "the server failed; quote the correlation id when reporting it"), 500
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.app.state.api_metrics.requests_refused.labels("validation").inc()
        details = [
            {"location": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(error_body("validation_error", "the request is not valid: see details", details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(error_body(code, message), exc.status_code, headers=getattr(exc, "headers", None))

    async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
        return failure_response(exc)

    for types, _dependency in _OUTAGES:
        for outage in types:
            app.add_exception_handler(outage, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # reached only outside api.middleware's request context (which renders failures itself)
        return failure_response(exc)
