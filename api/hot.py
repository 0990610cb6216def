"""The hot reads as plain ASGI: a user's own ``GET /portfolio`` (and its positions, balances and open orders) without
FastAPI's routing, dependency resolution and response classes.

The portfolio screen and the Telegram bot poll these all the time; served through FastAPI they cost about four
times what their work does (verify the token, one Redis call for the limits, one ``MGET`` of the cached parts),
which capped a 2-core machine at about 1,000 reads a second (docs/benchmarks.md, bench.api). This middleware runs
innermost, inside the correlation id, access log, metrics, tracing and per-IP limit middlewares, so a hot read is
logged, counted and traced like any other request, under the same route template.

It takes only the common case: ``GET`` of one of those exact paths, no query string, a bearer token. It
authenticates with :func:`api.deps.authenticate` (signature, type, revocation, per-IP and per-user limits, the
user's token cutoff), checks ``portfolio:read`` and answers from the same functions as the FastAPI routes in
:mod:`api.routers.portfolio`. A refusal is rendered by the app's own ``ApiError`` handler. Anything else (another
user's portfolio with ``?user_id=``, no or another kind of credentials, a trailing slash, ``HEAD``) goes on to
FastAPI, whose routes stay the documented operations and answer those cases exactly as before.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import Request

from api.deps import authenticate, authorize
from api.errors import ApiError
from api.permissions import Permission
from api.routers.portfolio import PARTS, read_part, read_portfolio
from api.state import ApiState

_PREFIX = "/portfolio"
_HOT_PATHS = frozenset([_PREFIX, *(f"{_PREFIX}/{part}" for part in PARTS)])
_JSON_HEADER = (b"content-type", b"application/json")


class HotReadsMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._routes: dict[str, APIRoute] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        token = _bearer_token(scope) if path in _HOT_PATHS else None
        if token is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route(scope, path)  # the template the access log, metrics and trace name
        request = Request(scope, receive)
        try:
            credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
            principal = authorize(await authenticate(request, credentials), Permission.PORTFOLIO_READ)
            state: ApiState = scope["app"].state.api
            if path == _PREFIX:
                body = await read_portfolio(state, principal.user_id)
            else:
                body = await read_part(state, principal.user_id, path[len(_PREFIX) + 1 :])
        except ApiError as refused:
            response = await scope["app"].exception_handlers[ApiError](request, refused)
            await response(scope, receive, send)
            return
        headers = [_JSON_HEADER, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _route(self, scope: dict[str, Any], path: str) -> APIRoute | None:
        route = self._routes.get(path)
        if route is None:
            routes = scope["app"].router.routes
            route = next((r for r in routes if isinstance(r, APIRoute) and r.path == path and "GET" in r.methods), None)
            if route is not None:
                self._routes[path] = route
        return route


def _bearer_token(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token if scheme.lower() == "bearer" and token else None
    return None
