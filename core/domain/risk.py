"""Risk commands and events: limits per scope, kill switches, and breaches seen by the real-time monitor.

A scope is ``fund`` (scope id ""), ``user`` (a user id) or ``account`` (an account id). Each event is its own
aggregate (``aggregate_id`` = the event id, version 1): alerts are facts to publish, not state to rebuild; the
current limits and switches live in ``risk_limits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from core.domain.messages import Command, Event, register_command, register_event

RISK_SCOPES = ("account", "user", "fund")


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class SetRiskLimit(Command):
    scope: str
    scope_id: str
    limit_type: str
    value: Decimal | None  # None lifts the limit


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class ActivateKillSwitch(Command):
    """Block new orders in the scope and cancel every open one."""

    scope: str
    scope_id: str
    reason: str = "manual"


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class DeactivateKillSwitch(Command):
    scope: str
    scope_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskEvent(Event):
    aggregate_type: ClassVar[str] = "risk"
    scope: str
    scope_id: str
    user_id: str = ""  # partition key of risk.alerts: the user concerned, "" for fund-wide


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class RiskLimitBreached(RiskEvent):
    metric: str  # exposure, leverage, drawdown, daily_loss, limit_usage
    value: Decimal
    limit: Decimal
    message: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class KillSwitchActivated(RiskEvent):
    reason: str
    orders_canceled: int = 0


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class KillSwitchDeactivated(RiskEvent):
    pass


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class RiskLimitChanged(RiskEvent):
    limit_type: str
    value: Decimal | None
