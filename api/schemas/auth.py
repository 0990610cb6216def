"""Request and response bodies of /auth: logins, token pairs, the Telegram link flow, service tokens, ``/me``."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

# Usernames are restricted to what can never break a query or a log line (no NUL, no whitespace, no control bytes).
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
# Telegram user ids are positive and fit in 52 bits; the column is a BIGINT.
TelegramId = Annotated[int, Field(ge=1, le=2**53)]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class LoginRequest(BaseModel):
    username: Username
    password: Password


class RefreshRequest(BaseModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class PasswordChange(BaseModel):
    """The caller's current password and the new one (staff passwords: 12 to 1024 characters)."""

    current_password: Password
    new_password: Annotated[str, StringConstraints(min_length=12, max_length=1024)]


class TokenPairPublic(BaseModel):
    """A short-lived access token and the refresh token that renews it (each refresh token works once)."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the access token stays valid")


class TelegramLinkRequest(BaseModel):
    code: Annotated[str, StringConstraints(min_length=4, max_length=32)] = Field(
        description="the one-time code from POST /users/{user_id}/telegram-link-code (case and dashes ignored)"
    )
    telegram_id: TelegramId


class TelegramTokenRequest(BaseModel):
    telegram_id: TelegramId


class TelegramLinkPublic(BaseModel):
    user_id: UUID
    username: str
    telegram_id: int


class ServiceTokenCreate(BaseModel):
    service: ServiceName = Field(description="the calling service's name, e.g. telegram-bot")


class ServiceTokenPublic(BaseModel):
    """A service token, shown once: store it in the service's secret store."""

    service: str
    token: str
    token_id: str = Field(description="its jti: DELETE /auth/service-tokens/{token_id} revokes it")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class MePublic(BaseModel):
    """The caller as the API sees it: a user (``user_id``) or an internal service (``service``)."""

    subject: str
    role: str
    permissions: list[str]
    user_id: UUID | None = None
    username: str | None = None
    service: str | None = None
