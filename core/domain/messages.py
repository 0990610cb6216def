"""Base classes of every command (imperative) and event (past tense): frozen, slotted dataclasses.

Each event carries ``event_id``, ``aggregate_id``, ``version``, ``occurred_at`` and the ``correlation_id`` /
``causation_id`` of the request that caused it. Standard library only: the domain imports nothing outward.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar


def utcnow() -> datetime:
    return datetime.now(UTC)


_VERSION_4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_id() -> uuid.UUID:
    """A random (version 4) UUID, built without ``UUID.__init__``'s argument parsing: the hot path makes
    several per command, and ``uuid.uuid4()`` was the largest single Python cost of placing an order."""
    value = (int.from_bytes(os.urandom(16)) & _VERSION_4_CLEAR) | _VERSION_4_SET
    u = object.__new__(uuid.UUID)
    object.__setattr__(u, "int", value)
    object.__setattr__(u, "is_safe", uuid.SafeUUID.unknown)
    return u


class DomainError(Exception):
    """A rule of the domain was broken by the caller."""


class InvalidTransition(DomainError):
    """An event that the aggregate's current state does not allow (e.g. a fill on a cancelled order)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    command_id: uuid.UUID = field(default_factory=new_id)
    issued_at: datetime = field(default_factory=utcnow)
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    aggregate_type: ClassVar[str] = "none"

    aggregate_id: str
    version: int
    event_id: uuid.UUID = field(default_factory=new_id)
    occurred_at: datetime = field(default_factory=utcnow)
    correlation_id: str | None = None
    causation_id: str | None = None

    @property
    def event_type(self) -> str:
        return type(self).__name__


_EVENT_TYPES: dict[str, type[Event]] = {}
_COMMAND_TYPES: dict[str, type[Command]] = {}


def register_command(cls: type[Command]) -> type[Command]:
    """Class decorator: name a command type so it can travel on the command stream."""
    _COMMAND_TYPES[cls.__name__] = cls
    return cls


def command_class(command_type: str) -> type[Command]:
    try:
        return _COMMAND_TYPES[command_type]
    except KeyError:
        raise KeyError(f"unknown command type {command_type!r}") from None


def register_event(cls: type[Event]) -> type[Event]:
    """Class decorator: name an event type so the event store and the bus can decode it."""
    _EVENT_TYPES[cls.__name__] = cls
    return cls


def event_class(event_type: str) -> type[Event]:
    """The class of a stored event type; KeyError names the unknown type."""
    try:
        return _EVENT_TYPES[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None


def event_types() -> dict[str, type[Event]]:
    return dict(_EVENT_TYPES)
