"""Risk-limit and kill-switch commands: limits change at run time; a kill switch blocks new orders in its scope
(fund, user or account) and cancels every open one, venue-held and platform-held alike."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from core.domain.risk import (
    RISK_SCOPES,
    ActivateKillSwitch,
    DeactivateKillSwitch,
    KillSwitchActivated,
    KillSwitchDeactivated,
    RiskLimitChanged,
    SetRiskLimit,
)
from core.uow import UnitOfWork
from realtime.risk.limits import InvalidRiskLimit, set_limit

if TYPE_CHECKING:
    from core.domain.orders import Order
    from realtime.orders.handlers import OrderDeps, OrderResult

_OPEN = "status IN ('initialized', 'armed', 'triggered', 'submitted', 'accepted', 'partially_filled')"
_IN_SCOPE = {
    "account": f"SELECT id::text FROM orders WHERE account_id::text = %s AND {_OPEN}",
    "user": f"SELECT id::text FROM orders WHERE user_id::text = %s AND {_OPEN}",
    "fund": f"SELECT id::text FROM orders WHERE %s = '' AND {_OPEN}",
}


def _scope_id(scope: str, scope_id: str) -> str:
    if scope not in RISK_SCOPES:
        raise InvalidRiskLimit(f"unknown scope {scope!r}; expected one of {', '.join(RISK_SCOPES)}")
    return "" if scope == "fund" else scope_id


def _event_fields(cmd: SetRiskLimit | ActivateKillSwitch | DeactivateKillSwitch, scope_id: str) -> dict[str, Any]:
    """What every risk event of a command carries: its own aggregate, the scope, the user to route it to."""
    return {
        "aggregate_id": str(cmd.command_id),
        "version": 1,
        "scope": cmd.scope,
        "scope_id": scope_id,
        "user_id": scope_id if cmd.scope == "user" else "",
        "correlation_id": cmd.correlation_id,
    }


async def set_risk_limit(cmd: SetRiskLimit, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    from realtime.orders.handlers import OrderResult

    scope_id = _scope_id(cmd.scope, cmd.scope_id)
    async with orders.pool.connection() as conn:
        await set_limit(conn, cmd.scope, scope_id, cmd.limit_type, cmd.value)
    orders.risk.forget_limits()
    uow.record(
        RiskLimitChanged(
            **_event_fields(cmd, scope_id),
            limit_type=cmd.limit_type,
            value=cmd.value,
        )
    )
    await uow.commit()
    return OrderResult(None, "set")


async def activate_kill_switch(cmd: ActivateKillSwitch, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    """Switch the scope off (new orders denied from now on), then cancel its open orders."""
    from realtime.orders.handlers import OrderResult, after_cancel

    scope_id = _scope_id(cmd.scope, cmd.scope_id)
    async with orders.pool.connection() as conn:
        await set_limit(conn, cmd.scope, scope_id, "kill_switch", Decimal(1))
    orders.risk.forget_limits()
    reason = f"kill switch ({cmd.scope}): {cmd.reason}"
    cancelled = await begin_cancel_open(uow, cmd.scope, scope_id, reason, cmd.correlation_id)
    uow.record(
        KillSwitchActivated(
            **_event_fields(cmd, scope_id),
            reason=cmd.reason,
            orders_canceled=len(cancelled),
        )
    )
    await uow.commit()
    for order in cancelled:
        after_cancel(order, orders)
    return OrderResult(None, "kill_switch_active", f"{len(cancelled)} open orders cancelled")


async def begin_cancel_open(
    uow: UnitOfWork, scope: str, scope_id: str, reason: str, correlation_id: str | None
) -> list[Order]:
    """Begin cancelling every open order of the scope in ``uow``; the caller commits, then calls ``after_cancel``
    on each order returned (the venue cancels go out once the cancel requests are committed)."""
    from realtime.orders.handlers import begin_cancel

    cur = await (await uow.connection()).execute(_IN_SCOPE[scope], (scope_id,))
    cancelled = []
    for order_id in [str(r[0]) for r in await cur.fetchall()]:
        order = await uow.orders.get(order_id)
        if order is not None and begin_cancel(order, reason, correlation_id):
            cancelled.append(order)
    return cancelled


async def deactivate_kill_switch(cmd: DeactivateKillSwitch, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    from realtime.orders.handlers import OrderResult

    scope_id = _scope_id(cmd.scope, cmd.scope_id)
    async with orders.pool.connection() as conn:
        await set_limit(conn, cmd.scope, scope_id, "kill_switch", None)
    orders.risk.forget_limits()
    uow.record(
        KillSwitchDeactivated(
            **_event_fields(cmd, scope_id),
        )
    )
    await uow.commit()
    return OrderResult(None, "kill_switch_off")
