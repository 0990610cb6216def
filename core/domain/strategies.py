"""Strategy commands and events: defining a strategy, changing it, and setting its allocations to accounts.

Strategies are configuration the fund manager changes by hand; each change is a command handled in the API's
own process and recorded as an event in the same transaction as the rows, so the fund keeps an audit trail of
who changed what and when (allocations decide how a strategy's NAV is attributed). Each event is its own
aggregate (``aggregate_id`` = the command id, version 1), like the risk events: facts to publish and keep, not
state to rebuild; the current definitions live in ``strategies`` and ``strategy_assignments``. Published on
``strategy.events``, partitioned by strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from core.domain.messages import Command, Event, register_command, register_event


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class DefineStrategy(Command):
    strategy_id: str
    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "inactive"
    by_user_id: str = ""


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeStrategy(Command):
    """Only the fields in ``changes`` (name, kind, params, status) change."""

    strategy_id: str
    changes: dict[str, Any]
    by_user_id: str = ""


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class SetStrategyAllocations(Command):
    """The strategy's allocations, each ``{"account_id", "allocation" (decimal string), "active"}``; accounts left
    out are unassigned."""

    strategy_id: str
    allocations: list[dict[str, Any]]
    by_user_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyEvent(Event):
    aggregate_type: ClassVar[str] = "strategy"
    strategy_id: str
    by_user_id: str = ""


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyDefined(StrategyEvent):
    name: str
    kind: str
    params: dict[str, Any]
    status: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyChanged(StrategyEvent):
    changes: dict[str, Any]


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyAllocationsSet(StrategyEvent):
    allocations: list[dict[str, Any]]
