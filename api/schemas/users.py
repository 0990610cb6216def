"""Request and response bodies of /users. A user's password hash never leaves the database."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from api.schemas.auth import Username

UserRole = Literal["user", "fund_manager", "admin"]
UserStatus = Literal["pending", "active", "suspended", "closed"]
# staff passwords: long enough to resist guessing, capped so hashing stays cheap
NewPassword = Annotated[str, StringConstraints(min_length=12, max_length=1024)]


class UserCreate(BaseModel):
    username: Username
    role: UserRole = "user"
    password: NewPassword | None = Field(
        default=None, description="for staff who log in with a password; Telegram users have none"
    )


class UserUpdate(BaseModel):
    """Fields to change; those left out stay as they are."""

    role: UserRole | None = None
    status: UserStatus | None = None
    password: NewPassword | None = None


class UserPublic(BaseModel):
    id: UUID
    username: str
    role: str
    status: str
    telegram_id: int | None
    has_password: bool
    created_at: datetime
    updated_at: datetime


class UserPage(BaseModel):
    items: list[UserPublic]
    total: int
    limit: int
    offset: int


class LinkCodePublic(BaseModel):
    """A one-time code the user sends to the Telegram bot; it expires after ``expires_in`` seconds."""

    code: str
    expires_in: int
