"""Dependency aliases for routers: ``State``, ``Principal``, and ``require(permission)``.

A request is authenticated by a bearer token (``Authorization: Bearer <access or service token>``); each route
declares the permission it needs, and routes on a user's own data scope every query by ``principal.user_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.permissions import Permission, Role, permissions_of
from api.ratelimit import check_authenticated, check_refused_token, check_service
from api.state import ApiState
from api.tokens import ACCESS, SERVICE

_bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login, or a service token")


async def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(get_state)]


@dataclass(frozen=True, slots=True)
class AuthPrincipal:
    """Who is calling: a user (``user_id``) with a role, or an internal service (``service``)."""

    subject: str
    role: str
    token_id: str
    username: str | None = None

    @property
    def is_service(self) -> bool:
        return self.role == Role.SERVICE

    @property
    def user_id(self) -> str:
        return self.subject

    def can(self, permission: Permission) -> bool:
        return permission in permissions_of(self.role)


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> AuthPrincipal:
    """The caller of ``request``: its token verified, its limits counted and its user's cut-off checked."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthorized",
            "log in first: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    state: ApiState = request.app.state.api
    client_ip = request.client.host if request.client else None
    try:
        claims = state.tokens.decode(credentials.credentials, (ACCESS, SERVICE))
        if claims.token_type == SERVICE and await state.tokens.is_revoked(claims):
            raise ApiError(
                401, "token_revoked", "this service token was revoked", headers={"WWW-Authenticate": "Bearer"}
            )
    except ApiError:
        await check_refused_token(state, client_ip)  # a failed token counts against its address (429 once over)
        raise
    principal = AuthPrincipal(claims.subject, claims.role, claims.token_id, claims.username)
    if principal.is_service:  # per-token and per-address limits of their own (429)
        await check_service(state, client_ip, claims.token_id)
    else:  # per-IP and per-user limits (429) and the user's token cutoff (401)
        await check_authenticated(state, client_ip, principal.subject, claims.issued_at_ms)
    request.state.principal = principal
    return principal


async def get_principal(request: Request, credentials: Bearer) -> AuthPrincipal:
    return await authenticate(request, credentials)


Principal = Annotated[AuthPrincipal, Depends(get_principal)]


def authorize(principal: AuthPrincipal, permission: Permission) -> AuthPrincipal:
    """``principal`` when it holds ``permission``, else a 403 (``require`` and the hot reads of api.hot)."""
    if not principal.can(permission):
        raise ApiError(403, "forbidden", f"this needs the {permission.value} permission")
    return principal


def require(permission: Permission) -> object:
    """A dependency that passes the principal on when it holds ``permission``, else answers 403.

    It authenticates itself rather than depending on ``get_principal``: FastAPI resolves every dependency of
    every request, and on the hot reads (the portfolio) one level fewer is measurable."""

    async def _check(request: Request, credentials: Bearer) -> AuthPrincipal:
        return authorize(await authenticate(request, credentials), permission)

    _check.__permission__ = permission  # type: ignore[attr-defined]  # read by the role-matrix test and docs
    return Depends(_check)


def allowed(permission: Permission) -> type[AuthPrincipal]:
    """``Annotated`` alias: ``principal: allowed(Permission.ORDERS_CREATE)``."""
    return Annotated[AuthPrincipal, require(permission)]  # type: ignore[return-value]
