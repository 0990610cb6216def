"""Risk limits stored per scope (fund, user, account) in ``risk_limits``, changeable while the platform runs.

For a limit on one order or one account's activity the most specific scope wins (account, then user, then
fund). Gross exposure is limited at every scope at once, so each scope keeps its own. A ``kill_switch`` row with
a non-zero value switches that scope off.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg

from realtime.risk.pretrade import RiskLimits

SCOPES = ("account", "user", "fund")
_MOST_SPECIFIC_WINS = (
    "max_order_notional",
    "max_position_per_symbol",
    "max_open_orders",
    "max_orders_per_minute",
    "price_band_pct",
    "daily_loss_limit",
)
MONITOR_LIMITS = ("max_leverage", "max_drawdown_pct", "auto_kill_switch")  # watched by the real-time monitor
# Every limit a risk manager sets by value; the kill switch is switched on and off by its own commands.
SETTABLE_LIMIT_TYPES = (*_MOST_SPECIFIC_WINS, *MONITOR_LIMITS, "max_gross_exposure")
LIMIT_TYPES = frozenset({*SETTABLE_LIMIT_TYPES, "kill_switch"})
_INTEGER_LIMITS = frozenset({"max_open_orders", "max_orders_per_minute"})

_UPSERT = """
INSERT INTO risk_limits (id, scope, scope_id, limit_type, value, active) VALUES (%s, %s, %s, %s, %s, true)
ON CONFLICT (scope, scope_id, limit_type) DO UPDATE SET value = EXCLUDED.value, active = true, updated_at = now()
"""
_LOAD = """
SELECT scope, limit_type, value FROM risk_limits
WHERE active AND ((scope = 'account' AND scope_id = %s) OR (scope = 'user' AND scope_id = %s) OR scope = 'fund')
"""


class InvalidRiskLimit(ValueError):
    """A limit that cannot be stored: unknown type or scope, or a negative value."""


async def set_limit(
    conn: psycopg.AsyncConnection[Any], scope: str, scope_id: str, limit_type: str, value: Decimal | None
) -> None:
    """Set (or with ``None`` lift) one limit; takes effect at the next evaluation, no restart."""
    if scope not in SCOPES:
        raise InvalidRiskLimit(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
    if limit_type not in LIMIT_TYPES:
        raise InvalidRiskLimit(f"unknown limit {limit_type!r}; expected one of {', '.join(sorted(LIMIT_TYPES))}")
    scope_id = "" if scope == "fund" else scope_id
    if value is None:
        await conn.execute(
            "UPDATE risk_limits SET active = false, updated_at = now() "
            "WHERE scope = %s AND scope_id = %s AND limit_type = %s",
            (scope, scope_id, limit_type),
        )
        return
    if not value.is_finite() or value < 0:
        raise InvalidRiskLimit(f"{limit_type} must be a finite, non-negative number, got {value}")
    await conn.execute(_UPSERT, (uuid.uuid4(), scope, scope_id, limit_type, value))


_ALL = "SELECT scope, scope_id, limit_type, value FROM risk_limits WHERE active"

LimitRows = dict[tuple[str, str], dict[str, Decimal]]


async def load_all_limits(conn: psycopg.AsyncConnection[Any]) -> LimitRows:
    """Every active limit by (scope, scope id): one read serves every account's evaluation."""
    cur = await conn.execute(_ALL)
    rows: LimitRows = {}
    for scope, scope_id, limit_type, value in await cur.fetchall():
        rows.setdefault((str(scope), str(scope_id)), {})[str(limit_type)] = Decimal(value)
    return rows


def limits_for(rows: LimitRows, account_id: str, user_id: str) -> tuple[RiskLimits, frozenset[str]]:
    """The limits that apply to an order on ``account_id`` of ``user_id``, and the scopes switched off."""
    by_scope = {
        "account": rows.get(("account", account_id), {}),
        "user": rows.get(("user", user_id), {}),
        "fund": rows.get(("fund", ""), {}),
    }
    values: dict[str, Any] = {}
    for limit_type in _MOST_SPECIFIC_WINS:
        for scope in SCOPES:
            if limit_type in by_scope[scope]:
                found = by_scope[scope][limit_type]
                values[limit_type] = int(found) if limit_type in _INTEGER_LIMITS else found
                break
    for scope in SCOPES:
        if "max_gross_exposure" in by_scope[scope]:
            values[f"max_gross_exposure_{scope}"] = by_scope[scope]["max_gross_exposure"]
    killed = frozenset(scope for scope in SCOPES if by_scope[scope].get("kill_switch", Decimal(0)) != 0)
    return RiskLimits(**values), killed


async def load_limits(
    conn: psycopg.AsyncConnection[Any], account_id: str, user_id: str
) -> tuple[RiskLimits, frozenset[str]]:
    """The limits that apply to an order on ``account_id`` of ``user_id``, and the scopes switched off."""
    cur = await conn.execute(_LOAD, (account_id, user_id))
    rows: LimitRows = {}
    for scope, limit_type, value in await cur.fetchall():
        key = (str(scope), account_id if scope == "account" else user_id if scope == "user" else "")
        rows.setdefault(key, {})[str(limit_type)] = Decimal(value)
    return limits_for(rows, account_id, user_id)
