"""The strategy commands' handlers, run by the API's own command bus (``ApiState.bus``): each writes the rows and
records its event in one transaction of a transactional unit of work (``core.domain.strategies``)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from api.errors import ApiError
from core.domain.messages import Command
from core.domain.strategies import (
    ChangeStrategy,
    DefineStrategy,
    SetStrategyAllocations,
    StrategyAllocationsSet,
    StrategyChanged,
    StrategyDefined,
)
from core.messaging.bus import CommandHandler
from core.uow import UnitOfWork

_COLUMNS = ("name", "kind", "params", "status")


def _event_fields(cmd: DefineStrategy | ChangeStrategy | SetStrategyAllocations) -> dict[str, Any]:
    return {
        "aggregate_id": str(cmd.command_id),
        "version": 1,
        "strategy_id": cmd.strategy_id,
        "by_user_id": cmd.by_user_id,
        "correlation_id": cmd.correlation_id,
    }


def _name_taken(name: str) -> ApiError:
    return ApiError(409, "strategy_name_taken", f"a strategy named {name!r} exists")


def _not_found(strategy_id: str) -> ApiError:
    return ApiError(404, "strategy_not_found", f"no strategy {strategy_id}")


async def define_strategy(cmd: DefineStrategy, uow: UnitOfWork) -> None:
    conn = await uow.connection()
    try:
        await conn.execute(
            "INSERT INTO strategies (id, name, kind, params, status) VALUES (%s, %s, %s, %s, %s)",
            (cmd.strategy_id, cmd.name, cmd.kind, Jsonb(cmd.params), cmd.status),
        )
    except psycopg.errors.UniqueViolation:
        raise _name_taken(cmd.name) from None
    uow.record(
        StrategyDefined(**_event_fields(cmd), name=cmd.name, kind=cmd.kind, params=cmd.params, status=cmd.status)
    )
    await uow.commit()


async def change_strategy(cmd: ChangeStrategy, uow: UnitOfWork) -> None:
    changes = {column: cmd.changes[column] for column in _COLUMNS if column in cmd.changes}
    if not changes:
        return
    values = [Jsonb(value) if column == "params" else value for column, value in changes.items()]
    assignments = ", ".join(f"{column} = %s" for column in changes)  # columns: only the names above
    conn = await uow.connection()
    try:
        done = await conn.execute(
            f"UPDATE strategies SET {assignments}, updated_at = now() WHERE id = %s", (*values, cmd.strategy_id)
        )
    except psycopg.errors.UniqueViolation:
        raise _name_taken(str(changes.get("name"))) from None
    if done.rowcount == 0:
        raise _not_found(cmd.strategy_id)
    uow.record(StrategyChanged(**_event_fields(cmd), changes=changes))
    await uow.commit()


async def set_strategy_allocations(cmd: SetStrategyAllocations, uow: UnitOfWork) -> None:
    accounts = [str(a["account_id"]) for a in cmd.allocations]
    if len(set(accounts)) != len(accounts):
        raise ApiError(422, "duplicate_account", "each account may appear once in assignments")
    conn = await uow.connection()
    found = await conn.execute("SELECT 1 FROM strategies WHERE id = %s FOR UPDATE", (cmd.strategy_id,))
    if await found.fetchone() is None:
        raise _not_found(cmd.strategy_id)
    known = await conn.execute("SELECT id::text FROM user_accounts WHERE id::text = ANY(%s)", (accounts,))
    missing = set(accounts) - {str(row[0]) for row in await known.fetchall()}
    if missing:
        raise ApiError(422, "unknown_account", "no such accounts", {"account_ids": sorted(missing)})
    await conn.execute(
        "DELETE FROM strategy_assignments WHERE strategy_id = %s AND NOT (account_id::text = ANY(%s))",
        (cmd.strategy_id, accounts),
    )
    for a in cmd.allocations:
        await conn.execute(
            "INSERT INTO strategy_assignments (id, strategy_id, account_id, allocation, active)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (strategy_id, account_id)"
            " DO UPDATE SET allocation = EXCLUDED.allocation, active = EXCLUDED.active",
            (uuid.uuid4(), cmd.strategy_id, a["account_id"], a["allocation"], a["active"]),
        )
    uow.record(StrategyAllocationsSet(**_event_fields(cmd), allocations=cmd.allocations))
    await uow.commit()


STRATEGY_HANDLERS: dict[type[Command], CommandHandler] = {
    DefineStrategy: define_strategy,
    ChangeStrategy: change_strategy,
    SetStrategyAllocations: set_strategy_allocations,
}
