"""/strategies: strategy definitions (name, kind, params, status) and their allocations to accounts.

Anyone logged in may list strategies; a user sees only the assignments of their own accounts. Creating,
changing and assigning strategies needs strategies:manage; each is a command (``DefineStrategy``,
``ChangeStrategy``, ``SetStrategyAllocations``) handled by the API's own bus, which writes the rows and records
the event in one transaction (``api.services.strategy_commands``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from uuid import UUID

import psycopg
from fastapi import APIRouter
from psycopg.rows import dict_row

from api.deps import AuthPrincipal, Principal, State, allowed
from api.errors import ApiError, ErrorBody
from api.permissions import STAFF_ROLES, Permission
from api.schemas.strategies import AssignmentsPut, StrategyCreate, StrategyPublic, StrategyUpdate
from core.domain.strategies import ChangeStrategy, DefineStrategy, SetStrategyAllocations
from core.observability.context import get_correlation_id

router = APIRouter(prefix="/strategies", tags=["strategies"])

Manager = allowed(Permission.STRATEGIES_MANAGE)
_COLUMNS = "id, name, kind, params, status, created_at, updated_at"
_ASSIGNMENTS = """
SELECT s.strategy_id, s.account_id, s.allocation, s.active FROM strategy_assignments s
JOIN user_accounts a ON a.id = s.account_id
WHERE s.strategy_id = ANY(%s) AND (%s OR a.user_id::text = %s)
ORDER BY s.strategy_id, s.account_id"""
_NOT_FOUND = {"model": ErrorBody, "description": "no such strategy"}
_TAKEN = {"model": ErrorBody, "description": "another strategy has this name"}


def _check_params(params: dict[str, Any]) -> None:
    """Values PostgreSQL's JSON cannot hold (NaN, infinities, NUL characters) are a 422, before any command."""
    try:
        text = json.dumps(params, allow_nan=False)
    except ValueError as exc:
        raise ApiError(422, "invalid_params", f"params must be plain JSON: {exc}") from exc
    if "\\u0000" in text:
        raise ApiError(422, "invalid_params", "params must not contain NUL characters")


async def _strategies(
    conn: psycopg.AsyncConnection[Any], principal: AuthPrincipal, strategy_id: UUID | None = None
) -> list[StrategyPublic]:
    cur = conn.cursor(row_factory=dict_row)
    if strategy_id is None:
        await cur.execute(f"SELECT {_COLUMNS} FROM strategies ORDER BY name")
    else:
        await cur.execute(f"SELECT {_COLUMNS} FROM strategies WHERE id = %s", (strategy_id,))
    rows = await cur.fetchall()
    everyone = principal.role in STAFF_ROLES
    await cur.execute(_ASSIGNMENTS, ([r["id"] for r in rows], everyone, principal.user_id))
    assigned: dict[UUID, list[dict[str, Any]]] = {}
    for a in await cur.fetchall():
        assigned.setdefault(a.pop("strategy_id"), []).append(a)
    return [StrategyPublic.model_validate({**r, "assignments": assigned.get(r["id"], [])}) for r in rows]


async def _one(conn: psycopg.AsyncConnection[Any], principal: AuthPrincipal, strategy_id: UUID) -> StrategyPublic:
    found = await _strategies(conn, principal, strategy_id)
    if not found:
        raise ApiError(404, "strategy_not_found", f"no strategy {strategy_id}")
    return found[0]


@router.get("", response_model=list[StrategyPublic], summary="Every strategy, by name")
async def list_strategies(state: State, principal: Principal) -> list[StrategyPublic]:
    async with state.kernel.pool.connection() as conn:
        return await _strategies(conn, principal)


@router.post(
    "",
    response_model=StrategyPublic,
    status_code=201,
    summary="Define a strategy",
    responses={409: _TAKEN},
)
async def create_strategy(state: State, principal: Manager, body: StrategyCreate) -> StrategyPublic:
    strategy_id = str(uuid.uuid4())
    _check_params(body.params)
    command = DefineStrategy(
        strategy_id=strategy_id,
        name=body.name,
        kind=body.kind,
        params=body.params,
        status=body.status.value,
        by_user_id=principal.user_id,
        correlation_id=get_correlation_id(),
    )
    await state.bus.handle(command)
    async with state.kernel.pool.connection() as conn:
        return await _one(conn, principal, UUID(strategy_id))


@router.patch(
    "/{strategy_id}",
    response_model=StrategyPublic,
    summary="Change a strategy's name, kind, params or status",
    responses={404: _NOT_FOUND, 409: _TAKEN},
)
async def update_strategy(state: State, principal: Manager, strategy_id: UUID, body: StrategyUpdate) -> StrategyPublic:
    changes: dict[str, Any] = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if "params" in changes:
        _check_params(changes["params"])
    if "status" in changes:
        changes["status"] = changes["status"].value
    if changes:
        command = ChangeStrategy(
            strategy_id=str(strategy_id), changes=changes, by_user_id=principal.user_id,
            correlation_id=get_correlation_id(),
        )  # fmt: skip
        await state.bus.handle(command)
    async with state.kernel.pool.connection() as conn:
        return await _one(conn, principal, strategy_id)


@router.put(
    "/{strategy_id}/assignments",
    response_model=StrategyPublic,
    summary="Set the strategy's account allocations (accounts left out are unassigned)",
    responses={404: _NOT_FOUND},
)
async def set_assignments(state: State, principal: Manager, strategy_id: UUID, body: AssignmentsPut) -> StrategyPublic:
    allocations = [
        {"account_id": str(a.account_id), "allocation": str(a.allocation), "active": a.active} for a in body.assignments
    ]
    command = SetStrategyAllocations(
        strategy_id=str(strategy_id), allocations=allocations, by_user_id=principal.user_id,
        correlation_id=get_correlation_id(),
    )  # fmt: skip
    await state.bus.handle(command)
    async with state.kernel.pool.connection() as conn:
        return await _one(conn, principal, strategy_id)
