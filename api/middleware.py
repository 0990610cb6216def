"""Request context as plain ASGI middleware (cheaper than ``BaseHTTPMiddleware`` on the hot path).

For every HTTP request: the correlation id from ``X-Correlation-ID`` (or a new one) is bound for the request's
logs, commands and events and returned on the response; bodies over the limit get a 413 (a declared
Content-Length before the body is read, a chunked one as soon as it passes the limit); a JSON body with a string
escape no stored text can hold (a lone UTF-16 surrogate ``"\\ud800"``, which Python's JSON parser accepts but
UTF-8 cannot encode, or a NUL) gets a 422 before any route sees it; latency is observed per route template; one JSON
access-log line is written. An exception no route handled is answered here, still inside the correlation scope, so
a 500 (or a 503 for an unavailable PostgreSQL or Redis) carries the correlation id in its body and header like every
other answer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import MutableMapping
from typing import Any

import orjson

from api.errors import error_body, failure_response
from api.metrics import ApiMetrics
from core.observability.context import correlation_scope
from core.observability.logging import get_logger

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_HEADER = b"x-correlation-id"
# a \uXXXX escape that may be unstorable: a UTF-16 surrogate (D800-DFFF) or NUL
_CANDIDATE = re.compile(rb"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_LOW = 0xDC00
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # in decoded text: a NUL, or a surrogate left without its pair
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
        body = _Body()
        for name, value in scope.get("headers", ()):
            if name == _HEADER:
                given = value.decode("latin-1")
            elif name == b"content-length":
                body.length = value
            elif name == b"transfer-encoding":
                body.chunked = True
            elif name == b"content-type":
                body.content_type = value
        if given is not None and not _VALID_ID.match(given):
            given = None
        if given is None:
            self.metrics.missing_correlation_id.inc()
        with correlation_scope(given) as cid:
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
                return
            await self._http(scope, receive, send, cid, body)

    async def _http(self, scope: Scope, receive: Any, send: Any, cid: str, body: _Body) -> None:
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
            if body.length is not None and _too_long(body.length, self.max_body):
                await self._refuse(send_with_id, "too_large")
            elif body.length is None and not body.chunked:  # no body (h11 reads none without either header)
                await self.app(scope, receive, send_with_id)
            else:
                await self._with_body(scope, receive, send_with_id, body)
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

    async def _with_body(self, scope: Scope, receive: Any, send: Any, body: _Body) -> None:
        """Read the body (at most the limit: bodies are small) before the app does, refuse it when it is too large
        or holds a string no stored text can hold, else hand it to the app as one message."""
        read = await _read_at_most(receive, self.max_body)
        if read is None:
            await self._refuse(send, "too_large")
        elif body.is_json and (unstorable := unstorable_escape_at(read)) is not None:
            await self._refuse(send, "unstorable_text", *unstorable, body=read)
        else:
            await self.app(scope, _replay(read, receive), send)

    async def _refuse(self, send: Any, reason: str, at: int = 0, problem: str = "", body: bytes = b"") -> None:
        self.metrics.requests_refused.labels(reason).inc()
        if reason == "too_large":
            status = 413
            content = error_body("payload_too_large", f"the request body is larger than {self.max_body} bytes")
        else:
            status = 422
            fault = {"location": _location(body, at), "message": problem, "type": "json_invalid"}
            content = error_body("validation_error", "the request is not valid: see details", [fault])
        payload = orjson.dumps(content)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


_LONE_SURROGATE = "a \\u escape of a UTF-16 surrogate (D800-DFFF) without its pair is not a character"
_NUL = "a \\u0000 (NUL) escape: text here cannot hold NUL characters"


class _Body:
    """What the headers say about a request's body."""

    __slots__ = ("chunked", "content_type", "length")

    def __init__(self) -> None:
        self.length: bytes | None = None
        self.chunked = False
        self.content_type: bytes | None = None

    @property
    def is_json(self) -> bool:
        """JSON as FastAPI reads it: ``application/json`` or ``application/*+json`` (parameters ignored)."""
        if self.content_type is None:
            return False
        media = self.content_type.split(b";", 1)[0].strip().lower()
        return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


async def _read_at_most(receive: Any, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` bytes (a client that left gives what came)."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` giving the body already read as one message, then whatever the server sends next."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if given:
            message: dict[str, Any] = await receive()
            return message
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def unstorable_escape_at(body: bytes) -> tuple[int, str] | None:
    """The offset of the first ``\\uXXXX`` escape in a JSON text that decodes to what no UTF-8 text can hold
    (half of a UTF-16 surrogate pair without the other half) or PostgreSQL's text cannot (NUL), and what is wrong
    with it; None when there is none. A high surrogate must be followed at once by a low one.

    Only candidate escapes are visited (a C-speed regex finds them), so ordinary bodies, however many other
    escapes they hold, cost one scan; a body of surrogate pairs costs a short Python step per pair."""
    low_of_a_pair = -1
    for match in _CANDIDATE.finditer(body):
        start = match.start()
        if start == low_of_a_pair or not _is_escape(body, start):
            continue
        unit = int(body[start + 2 : start + 6], 16)
        if unit == 0:
            return start, _NUL
        if unit >= _LOW:  # a low surrogate not right after its high one
            return start, _LONE_SURROGATE
        following = _CANDIDATE.match(body, start + 6)
        if following is None or int(body[start + 8 : start + 12], 16) < _LOW:
            return start, _LONE_SURROGATE
        low_of_a_pair = start + 6
    return None


def _is_escape(body: bytes, start: int) -> bool:
    """Whether the backslash at ``start`` begins an escape: it does unless an odd run of backslashes precedes it
    (then it is the second half of an escaped backslash, and what follows is plain text)."""
    before = start
    while before > 0 and body[before - 1] == 0x5C:
        before -= 1
    return (start - before) % 2 == 0


def _location(body: bytes, at: int) -> list[str | int]:
    """Where the unstorable string is, as validation errors say it (``["body", "params", "x"]``): the first string
    (key or value) holding one, found by parsing the body (only a refused body is parsed here); the offset in the
    body when it is not JSON at all. Keys are shown with the bad character escaped, so the answer stays JSON."""
    try:
        document = json.loads(body)
    except ValueError:
        return ["body", at]
    pending: list[tuple[Any, list[str | int]]] = [(document, ["body"])]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str) and _UNSTORABLE.search(value):
            return path
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                shown = key.encode("utf-8", "backslashreplace").decode()
                if _UNSTORABLE.search(key):
                    return [*path, shown]
                pending.append((item, [*path, shown]))
        elif isinstance(value, list):
            pending.extend((item, [*path, n]) for n, item in reversed(list(enumerate(value))))
    return ["body", at]


def _too_long(value: bytes, limit: int) -> bool:
    try:
        return int(value) > limit
    except ValueError:
        return True
