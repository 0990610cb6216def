"""Security of the API as a whole: forged, expired and misused tokens are refused; every route of the app (read from
the app itself, so routes added later are covered) needs a token unless it is public, and refuses every role that
lacks the permission its ``require()`` declares; a user cannot reach another user's record or link code."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api.permissions import Permission, permissions_of
from api.tokens import load_jwt_secret
from tests.integration.api.conftest import ApiHarness, error_code

pytestmark = pytest.mark.integration

# the only operations anyone may call without a bearer token (the docs are not API routes)
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
}
ROLES = ("user", "fund_manager", "admin", "service")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the template, e.g. /users/{user_id}
    permissions: frozenset[Permission]

    def url(self) -> str:
        return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), self.path)


def _permissions(dependant: Dependant) -> Iterator[Permission]:
    """Every permission a ``require()`` anywhere in the route's dependency tree asks for."""
    for sub in dependant.dependencies:
        permission = getattr(sub.call, "__permission__", None)
        if permission is not None:
            yield permission
        yield from _permissions(sub)


def _operations(api: ApiHarness) -> list[Operation]:
    """Every HTTP operation the app serves. ``app.routes`` holds included routers as lazy wrappers (FastAPI
    >= 0.165); ``iter_route_contexts`` flattens them, as the OpenAPI generator does, with each route's effective
    path and dependencies (router-level ones included)."""
    return [
        Operation(method, context.path or "", frozenset(_permissions(context.dependant)))
        for context in iter_route_contexts(api.app.routes)
        if isinstance(context.original_route, APIRoute)
        for method in sorted((context.methods or set()) - {"HEAD", "OPTIONS"})
    ]


async def _call(api: ApiHarness, op: Operation, headers: dict[str, str]) -> tuple[int, Any]:
    """The status (and the error body of a 401/403) without reading a body otherwise: a stream never ends."""
    async with api.client.stream(op.method, op.url(), headers=headers, timeout=20) as response:
        if response.status_code in (401, 403):
            await response.aread()
            return response.status_code, response.json()
        return response.status_code, None


def _claims(user_id: str, role: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": user_id, "role": role, "typ": "access", "iss": "patriot", "iat": now, "exp": now + 600}
    return {**claims, "jti": uuid.uuid4().hex, **changes}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _tampered(token: str, **changes: Any) -> str:
    """The token with payload claims changed and its original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_b64({**claims, **changes})}.{signature}"


async def test_forged_expired_and_misused_tokens_are_refused_with_401(api: ApiHarness) -> None:
    settings = api.app.state.settings
    secret = load_jwt_secret(settings.api, settings.runtime)
    user = await api.new_user("user")
    genuine = api.token(user)
    login = (await api.client.post("/auth/login", json={"username": user.username, "password": user.password})).json()
    admin_claims = _claims(user.user_id, "admin")
    forged = {
        "role changed in the payload": _tampered(genuine, role="admin"),
        "subject changed in the payload": _tampered(genuine, sub=str(uuid.uuid4())),
        "expired": jwt.encode(
            _claims(user.user_id, "user", iat=int(time.time()) - 3600, exp=int(time.time()) - 60), secret
        ),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(admin_claims)}.",
        "alg HS512 with the right key": jwt.encode(admin_claims, secret, algorithm="HS512"),
        "signed with another key": jwt.encode(admin_claims, b"x" * 48),
        "another issuer": jwt.encode({**admin_claims, "iss": "someone-else"}, secret),
        "no token type": jwt.encode({k: v for k, v in admin_claims.items() if k != "typ"}, secret),
        "no token id": jwt.encode({k: v for k, v in admin_claims.items() if k != "jti"}, secret),
        "a refresh token as bearer": login["refresh_token"],
        "garbage": "garbage",
        "three garbage parts": "a.b.c",
        "a non-JSON payload": f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.bm90IGpzb24.c2ln",
    }
    assert (await api.client.get("/auth/me", headers={"Authorization": f"Bearer {genuine}"})).status_code == 200
    wrong: dict[str, tuple[str, int, Any]] = {}
    for name, token in forged.items():
        for path in ("/auth/me", "/users"):  # any principal; an admin's permission
            response = await api.client.get(path, headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 401 or error_code(response) not in ("invalid_token", "token_expired"):
                wrong[name] = (path, response.status_code, response.text)
    assert not wrong, wrong
    expired = await api.client.get("/auth/me", headers={"Authorization": f"Bearer {forged['expired']}"})
    assert error_code(expired) == "token_expired" and expired.headers["www-authenticate"] == "Bearer"
    for header in ("", "Bearer", "Basic dXNlcjpwYXNz", genuine):  # no scheme, no token, another scheme
        response = await api.client.get("/auth/me", headers={"Authorization": header} if header else {})
        assert response.status_code == 401, header


async def test_every_route_needs_a_token_except_the_public_ones(api: ApiHarness) -> None:
    operations = _operations(api)
    found = {(op.method, op.path) for op in operations}
    assert PUBLIC <= found and ("GET", "/auth/me") in found and ("GET", "/users") in found
    wrong = {}
    for op in operations:
        status, body = await _call(api, op, {})
        public = (op.method, op.path) in PUBLIC
        if public and status == 401:
            wrong[f"{op.method} {op.path}"] = f"public but answered 401: {body}"
        if not public and (status != 401 or body["error"]["code"] != "unauthorized"):
            wrong[f"{op.method} {op.path}"] = f"answered {status} without a token: {body}"
    assert not wrong, wrong


async def test_every_route_refuses_each_role_lacking_its_permission_with_403(api: ApiHarness) -> None:
    members = {role: await api.new_user(role) for role in ROLES if role != "service"}
    headers = {role: api.headers(member) for role, member in members.items()}
    headers["service"] = api.service_headers()
    guarded = [op for op in _operations(api) if op.permissions]
    # the matrix must see real decisions: admin-only, staff-only, service-only and every user's routes
    assert {Permission.USERS_MANAGE, Permission.TELEGRAM_LINK} <= {p for op in guarded for p in op.permissions}
    wrong = {}
    for op in guarded:
        for role in ROLES:
            status, body = await _call(api, op, headers[role])
            key = f"{role} {op.method} {op.path}"
            if not op.permissions <= permissions_of(role):
                if status != 403 or body["error"]["code"] != "forbidden":
                    wrong[key] = f"lacks {sorted(op.permissions)} but answered {status}"
            elif status == 401 or (status == 403 and "permission" in body["error"]["message"]):
                wrong[key] = f"holds {sorted(op.permissions)} but answered {status}: {body}"
    assert not wrong, wrong


async def test_user_cannot_reach_another_users_record_or_link_code(api: ApiHarness) -> None:
    user, other = await api.new_user("user"), await api.new_user("user")
    fund_manager = await api.new_user("fund_manager")
    mine = await api.client.get(f"/users/{user.user_id}", headers=api.headers(user))
    assert mine.status_code == 200 and mine.json()["id"] == user.user_id and "password_hash" not in mine.json()
    own_code = await api.client.post(f"/users/{user.user_id}/telegram-link-code", headers=api.headers(user))
    assert own_code.status_code == 201
    for caller in (user, fund_manager):
        for method, path in (
            ("GET", f"/users/{other.user_id}"),
            ("POST", f"/users/{other.user_id}/telegram-link-code"),
        ):
            response = await api.client.request(method, path, headers=api.headers(caller))
            assert response.status_code == 403 and error_code(response) == "forbidden", (caller.role, path)
        # an id that does not exist answers the same: nothing tells a user which ids exist
        unknown = await api.client.get(f"/users/{uuid.uuid4()}", headers=api.headers(caller))
        assert unknown.status_code == 403
    as_service = await api.client.post(f"/users/{other.user_id}/telegram-link-code", headers=api.service_headers())
    assert as_service.status_code == 403
    changed = await api.client.patch(f"/users/{user.user_id}", json={"role": "admin"}, headers=api.headers(user))
    assert changed.status_code == 403
    assert (await api.client.get(f"/users/{user.user_id}", headers=api.headers(user))).json()["role"] == "user"
