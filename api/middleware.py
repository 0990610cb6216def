"""Request context as plain ASGI middleware (cheaper than ``BaseHTTPMiddleware`` on the hot path).

For every HTTP request: the correlation id from ``X-Correlation-ID`` (or a new one) is bound for the request's
logs, commands and events and returned on the response; bodies over the limit get a 413 before they are read;
latency is observed per route template; one JSON access-log line is written. An exception no route handled is
answered here, still inside the correlation scope, so a 500 (or a 503 for an unavailable PostgreSQL or Redis)
carries the correlation id in its body and header like every other answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import MutableMapping
from typing import Any

import orjson

from api.errors import BodyTooLarge, error_body, failure_response
from api.metrics import ApiMetrics
from core.observability.context import correlation_scope
from core.observability.logging import get_logger

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_HEADER = b"x-correlation-id"
log = get_logger("api.access")

Scope = dict[str, Any]


class RequestContextMiddleware:
    def __init__(self, app: Any, metrics: ApiMetrics, max_body_bytes: int, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = None
        content_length = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER:
                given = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value
        if given is not None and not _VALID_ID.match(given):
            given = None
        if given is None:
            self.metrics.missing_correlation_id.inc()
        with correlation_scope(given) as cid:
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
                return
            await self._http(scope, receive, send, cid, content_length)

    async def _http(self, scope: Scope, receive: Any, send: Any, cid: str, content_length: bytes | None) -> None:
        started = time.perf_counter()
        status = 500
        cid_header = (_HEADER, cid.encode())

        started_response = False

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message["headers"] = [*message.get("headers", ()), cid_header]
            await send(message)

        try:
            if content_length is not None and _too_long(content_length, self.max_body):
                await self._reject_too_large(send_with_id)
            else:  # a body without Content-Length is counted as it arrives (BodyTooLarge -> 413 in api.errors)
                await self.app(scope, self._limited(receive), send_with_id)
        except Exception as exc:
            if started_response:  # too late for an error body: the server drops the connection
                raise
            await failure_response(exc)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.request_seconds.labels(method, template, str(status)).observe(elapsed)
            self.metrics.requests.labels(method, template, str(status)).inc()
            if self.access_log:
                client = scope.get("client")
                log.info(
                    "http.request",
                    method=method,
                    path=scope.get("path"),
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                    client_ip=client[0] if client else None,
                )

    def _limited(self, receive: Any) -> Any:
        seen = 0
        limit = self.max_body

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited_receive

    async def _reject_too_large(self, send: Any) -> None:
        body = orjson.dumps(error_body("payload_too_large", f"the request body is larger than {self.max_body} bytes"))
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _too_long(value: bytes, limit: int) -> bool:
    try:
        return int(value) > limit
    except ValueError:
        return True
