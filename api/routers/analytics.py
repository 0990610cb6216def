"""/analytics: NAV, performance, VaR and exposures from the published warehouse (``warehouse.queries``).

Fund managers and admins (analytics:read) read any scope. A plain user reads only their own: ``scope=user`` with
their own user id, or ``scope=account`` with an account they own; any other scope is 403 (whether or not it
exists, so ids cannot be probed). The warehouse is built by the pipeline (Dagster); until it has published once
these routes answer 503 ``warehouse_not_ready``. Queries run in a worker thread: DuckDB calls block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar
from uuid import UUID

import duckdb
import polars as pl
from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import AuthPrincipal, State, allowed
from api.errors import ApiError, ErrorBody
from api.permissions import Permission
from api.schemas.analytics import (
    ExposuresPublic,
    Frequency,
    NavSeriesPublic,
    PerformancePublic,
    RiskPublic,
    Scope,
)
from warehouse import queries
from warehouse.store import NothingPublishedError

router = APIRouter(prefix="/analytics", tags=["analytics"])

# portfolio:read admits users to their own scopes; analytics:read (staff) widens it to every scope
Reader = allowed(Permission.PORTFOLIO_READ)
ScopeId = Annotated[
    str,
    Query(
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]*$",
        description="the account's, user's or strategy's id; empty for scope=fund",
    ),
]
_OWN_ACCOUNT = "SELECT 1 FROM user_accounts WHERE id = %s AND user_id = %s"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "a user asked for a scope that is not their own"},
    503: {"model": ErrorBody, "description": "nothing published yet: run the pipeline (Dagster) first"},
}
T = TypeVar("T")


async def check_scope(state: State, principal: AuthPrincipal, scope: str, scope_id: str) -> None:
    """Staff read every scope; a user only their own user scope or an account they own (else 403)."""
    if principal.can(Permission.ANALYTICS_READ):
        return
    if scope == "user" and scope_id == principal.user_id:
        return
    if scope == "account" and _is_uuid(scope_id):
        async with state.kernel.pool.connection() as conn:
            owned = await (await conn.execute(_OWN_ACCOUNT, (scope_id, principal.user_id))).fetchone()
        if owned is not None:
            return
    raise ApiError(
        403,
        "forbidden",
        "you may read only your own analytics: scope=user&scope_id=<your user id> or scope=account of your account",
    )


async def from_warehouse(query: Callable[..., T], *args: Any) -> T:
    """Run a ``warehouse.queries`` function off the event loop; no published warehouse is a 503."""
    try:
        return await run_in_threadpool(query, *args)
    except NothingPublishedError as exc:
        raise ApiError(
            503, "warehouse_not_ready", "no published warehouse yet: run the pipeline (Dagster) first"
        ) from exc
    except duckdb.CatalogException as exc:  # a published file without the marts: the pipeline has not built them
        raise ApiError(
            503, "warehouse_not_ready", "the published warehouse has no marts yet: run the pipeline (Dagster) first"
        ) from exc
    except ValueError as exc:  # a scope / scope_id combination the marts do not have
        raise ApiError(422, "invalid_scope", str(exc)) from exc


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as JSON-safe dicts: numbers as floats (NaN and infinities as null), times as ISO text."""
    return [{k: json_safe(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]


def json_safe(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, (float, Decimal)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


@router.get(
    "/nav",
    response_model=NavSeriesPublic,
    summary="NAV, net flows and time-weighted return of one scope, oldest first",
    responses=_RESPONSES,
)
async def nav(
    state: State,
    principal: Reader,
    scope: Scope,
    scope_id: ScopeId = "",
    frequency: Frequency = "daily",
    start: Annotated[datetime | None, Query(description="first period included (ISO date or time)")] = None,
    end: Annotated[datetime | None, Query(description="first period excluded (ISO date or time)")] = None,
) -> NavSeriesPublic:
    await check_scope(state, principal, scope, scope_id)
    frame = await from_warehouse(queries.nav_series, state.warehouse, scope, scope_id, frequency, start, end)
    time_column = "day" if frequency == "daily" else "hour"
    points = [{**row, "at": row.pop(time_column)} for row in records(frame)]
    return NavSeriesPublic.model_validate(
        {"scope": scope, "scope_id": scope_id, "frequency": frequency, "points": points}
    )


@router.get(
    "/performance",
    response_model=PerformancePublic,
    summary="Performance figures (returns, Sharpe, drawdown, ...) per scope and frequency",
    responses=_RESPONSES,
)
async def performance(
    state: State,
    principal: Reader,
    scope: Annotated[Scope | None, Query(description="one level of scopes; users must give user or account")] = None,
    scope_id: Annotated[
        str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$", description="one scope only")
    ] = None,
) -> PerformancePublic:
    if not principal.can(Permission.ANALYTICS_READ):
        if scope is None or scope_id is None:
            raise ApiError(403, "forbidden", "you may read only your own analytics: give scope and scope_id")
        await check_scope(state, principal, scope, scope_id)
    frame = await from_warehouse(queries.performance_table, state.warehouse, scope)
    if scope_id is not None:
        frame = frame.filter(pl.col("scope_id") == scope_id)
    return PerformancePublic.model_validate({"rows": records(frame)})


@router.get(
    "/risk",
    response_model=RiskPublic,
    summary="One-day VaR and CVaR of one scope: every method at every confidence level",
    responses=_RESPONSES,
)
async def risk(state: State, principal: Reader, scope: Scope, scope_id: ScopeId = "") -> RiskPublic:
    await check_scope(state, principal, scope, scope_id)
    frame = await from_warehouse(queries.risk_table, state.warehouse, scope, scope_id)
    return RiskPublic.model_validate({"scope": scope, "scope_id": scope_id, "var": records(frame)})


@router.get(
    "/exposures",
    response_model=ExposuresPublic,
    summary="Gross and net exposure per exchange and symbol, with the scope's leverage and concentration",
    responses=_RESPONSES,
)
async def exposures(state: State, principal: Reader, scope: Scope, scope_id: ScopeId = "") -> ExposuresPublic:
    await check_scope(state, principal, scope, scope_id)
    rows = records(await from_warehouse(queries.exposures, state.warehouse, scope, scope_id))
    summaries = records(await from_warehouse(queries.risk_summary, state.warehouse, scope))
    summary = next((s for s in summaries if s["scope_id"] == scope_id), None)
    return ExposuresPublic.model_validate({"scope": scope, "scope_id": scope_id, "summary": summary, "exposures": rows})
