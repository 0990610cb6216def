"""User-administration commands and events: an administrator creates a user, or changes a user's role, status
or password.

Handled in the API's own process (``api.services.auth``) and recorded as events in the same transaction as the
row, with the administrator who made the change: the fund's record of who was given which rights when. A
command carries a password only as its argon2 hash, and an event never carries either (only that the password
changed). Each event is its own aggregate (``aggregate_id`` = the command id, version 1); the current users are
the ``users`` rows. Published on ``user.events``, partitioned by the user concerned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from core.domain.messages import Command, Event, register_command, register_event


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class CreateUser(Command):
    user_id: str
    username: str
    role: str
    password_hash: str | None = field(default=None, repr=False)
    by_user_id: str = ""


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeUser(Command):
    """Only the fields given (not None) change."""

    user_id: str
    role: str | None = None
    status: str | None = None
    password_hash: str | None = field(default=None, repr=False)
    by_user_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserEvent(Event):
    aggregate_type: ClassVar[str] = "user"
    user_id: str
    by_user_id: str = ""


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class UserCreated(UserEvent):
    username: str
    role: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class UserChanged(UserEvent):
    role: str | None = None
    status: str | None = None
    password_changed: bool = False
