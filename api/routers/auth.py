"""/auth: password login, refresh rotation, logout, the Telegram bot's link and token calls, service tokens, /me.

Login, refresh and logout need no bearer token (the body carries the credential); everything else does.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Request, Response, status

from api.deps import AuthPrincipal, Principal, State, require
from api.errors import ApiError, ErrorBody
from api.permissions import Permission, permissions_of
from api.ratelimit import check_link_redemption, check_login
from api.schemas.auth import (
    LoginRequest,
    MePublic,
    PasswordChange,
    RefreshRequest,
    ServiceTokenCreate,
    ServiceTokenPublic,
    TelegramLinkPublic,
    TelegramLinkRequest,
    TelegramTokenRequest,
    TokenPairPublic,
)
from api.services import auth as service
from api.tokens import SERVICE, TokenPair

router = APIRouter(prefix="/auth", tags=["auth"])

TelegramBot = Annotated[AuthPrincipal, require(Permission.TELEGRAM_LINK)]
Admin = Annotated[AuthPrincipal, require(Permission.USERS_MANAGE)]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


def _pair(pair: TokenPair) -> TokenPairPublic:
    return TokenPairPublic(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)


@router.post(
    "/login",
    response_model=TokenPairPublic,
    summary="Log in with a username and password",
    responses={
        401: _error("The username or password is wrong (the same answer for both)"),
        403: _error("The user is not active"),
        429: _error("Too many attempts for this username from this address, or from this address: see Retry-After"),
    },
)
async def login(body: LoginRequest, state: State, request: Request) -> TokenPairPublic:
    client_ip = request.client.host if request.client else None
    await check_login(state, client_ip, body.username)  # per (username, address) and per address
    return _pair(await service.login(state, body.username, body.password, client_ip))


@router.post(
    "/refresh",
    response_model=TokenPairPublic,
    summary="Spend a refresh token for a new token pair",
    description="Each refresh token works once. Presenting a spent one again revokes the whole session.",
    responses={
        401: _error("The refresh token is invalid, expired, revoked or was already used"),
        403: _error("The user is no longer active"),
    },
)
async def refresh(body: RefreshRequest, state: State) -> TokenPairPublic:
    return _pair(await service.refresh(state, body.refresh_token))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End the session the refresh token belongs to",
    responses={401: _error("The refresh token is invalid or expired")},
)
async def logout(body: RefreshRequest, state: State) -> Response:
    await state.tokens.revoke_family(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password",
    response_model=TokenPairPublic,
    summary="Change your own password; every session ends and this answer is a new one",
    description="Every access token and refresh token issued before the change stops working (on REST and on "
    "`/stream/ws`), on every device; the token pair returned starts a new session.",
    responses={
        401: _error("The current password is wrong"),
        409: _error("The user has no password (Telegram users log in through the bot)"),
        429: _error("Too many attempts for this user from this address, or from this address: see Retry-After"),
    },
)
async def change_password(
    body: PasswordChange, state: State, principal: Principal, request: Request
) -> TokenPairPublic:
    if principal.is_service:
        raise ApiError(403, "forbidden", "a service has no password")
    client_ip = request.client.host if request.client else None
    pair = await service.change_own_password(
        state, principal.user_id, body.current_password, body.new_password, client_ip
    )
    return _pair(pair)


@router.post(
    "/telegram/link",
    response_model=TelegramLinkPublic,
    summary="Bind a Telegram id to the user a link code was issued for (the Telegram bot)",
    responses={
        400: _error("The code is unknown, expired or already used"),
        404: _error("The user the code was issued for no longer exists"),
        409: _error("The Telegram id is linked to another user"),
        429: _error("Too many redemptions with this service token or from this address: see Retry-After"),
    },
)
async def link_telegram(
    body: TelegramLinkRequest, state: State, bot: TelegramBot, request: Request
) -> TelegramLinkPublic:
    await check_link_redemption(state, request.client.host if request.client else None, bot.token_id)
    user = await service.link_telegram(state, body.code, body.telegram_id)
    assert user.telegram_id is not None
    return TelegramLinkPublic(user_id=UUID(user.id), username=user.username, telegram_id=user.telegram_id)


@router.post(
    "/telegram/token",
    response_model=TokenPairPublic,
    summary="A token pair for the user linked to a Telegram id (the Telegram bot)",
    responses={404: _error("No user is linked to this Telegram id")},
)
async def telegram_token(body: TelegramTokenRequest, state: State, _bot: TelegramBot) -> TokenPairPublic:
    return _pair(await service.telegram_token(state, body.telegram_id))


@router.post(
    "/service-tokens",
    response_model=ServiceTokenPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Mint a token for an internal service (admins)",
)
async def create_service_token(body: ServiceTokenCreate, state: State, admin: Admin) -> ServiceTokenPublic:
    token = state.tokens.service_token(body.service)
    claims = state.tokens.decode(token, SERVICE)
    service.log.info("service token issued", service=body.service, token_id=claims.token_id, by=admin.subject)
    return ServiceTokenPublic(
        service=body.service,
        token=token,
        token_id=claims.token_id,
        expires_in=state.kernel.settings.api.service_token_ttl_s,
    )


@router.delete(
    "/service-tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a service token by its id (admins)",
)
async def revoke_service_token(
    token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")], state: State, admin: Admin
) -> Response:
    await state.tokens.revoke_token_id(token_id)
    service.log.info("service token revoked", token_id=token_id, by=admin.subject)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=MePublic, summary="Who the bearer token says you are")
async def me(principal: Principal) -> MePublic:
    permissions = sorted(p.value for p in permissions_of(principal.role))
    if principal.is_service:
        return MePublic(
            subject=principal.subject, role=principal.role, permissions=permissions, service=principal.subject
        )
    return MePublic(
        subject=principal.subject,
        role=principal.role,
        permissions=permissions,
        user_id=UUID(principal.user_id),
        username=principal.username,
    )
