"""/risk: limits and kill switches per scope (fund, user, account), for fund managers and admins.

Changes are commands to the order service (``SetRiskLimit``, ``ActivateKillSwitch``, ``DeactivateKillSwitch``),
which owns the risk gate: a limit applies from the next order, a kill switch denies new orders in its scope and
cancels the open ones. The current limits are read from ``risk_limits``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from psycopg.rows import dict_row
from pydantic import ValidationError

from api.deps import AuthPrincipal, State, require
from api.errors import ApiError, Responses
from api.permissions import Permission
from api.schemas.risk import KillSwitchActivate, KillSwitchPublic, RiskLimitPublic, RiskLimitSet, Scope
from api.services.trading import ask_order_service
from api.sql import where_equal
from api.state import ApiState
from core.domain.messages import Command
from core.domain.risk import ActivateKillSwitch, DeactivateKillSwitch, SetRiskLimit
from core.observability.context import get_correlation_id
from core.observability.logging import get_logger

router = APIRouter(prefix="/risk", tags=["risk"])
log = get_logger("api.risk")

Manager = Annotated[AuthPrincipal, require(Permission.RISK_MANAGE)]

_RESPONSES: Responses = {
    401: {"description": "no or an invalid token"},
    403: {"description": "this needs the risk:manage permission"},
    422: {"description": "the body is not valid, or the order service refused the limit"},
    504: {"description": "the order service did not answer in time: the change may still apply"},
}


def _details(invalid: ValidationError) -> list[dict[str, Any]]:
    return [{"location": ["query"], "message": e["msg"], "type": e["type"]} for e in invalid.errors()]


async def _command(request: Request, state: ApiState, command: Command, partition_key: str) -> dict[str, Any]:
    return await ask_order_service(
        state,
        command,
        partition_key,
        request.app.state.settings.api.order_reply_timeout_s,
        ApiError(504, "risk_command_timeout", "the order service did not answer in time; GET /risk/limits to see"),
        lambda reply: ApiError(422, "invalid_risk_limit", str(reply.get("message") or reply.get("error"))),
    )


@router.get(
    "/limits", response_model=list[RiskLimitPublic], summary="Active limits and kill switches", responses=_RESPONSES
)
async def list_limits(
    _principal: Manager,
    state: State,
    scope: Scope | None = None,
    scope_id: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:
    where, params = where_equal({"scope": scope, "scope_id": scope_id}, "active")
    query = (
        f"SELECT scope, scope_id, limit_type, value, active, updated_at FROM risk_limits{where} "
        "ORDER BY scope, scope_id, limit_type"
    )
    async with state.kernel.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query.encode(), params)  # composed from constants only
        return await cur.fetchall()


@router.put(
    "/limits", response_model=RiskLimitPublic, summary="Set or (value null) lift one limit", responses=_RESPONSES
)
async def set_limit(body: RiskLimitSet, request: Request, principal: Manager, state: State) -> RiskLimitPublic:
    command = SetRiskLimit(
        scope=body.scope,
        scope_id=body.scope_id,
        limit_type=body.limit_type,
        value=body.value,
        correlation_id=get_correlation_id(),
    )
    await _command(request, state, command, body.scope_id or principal.user_id)
    log.info(
        "risk.limit_set", scope=body.scope, scope_id=body.scope_id, limit_type=body.limit_type, by=principal.user_id
    )
    return RiskLimitPublic(
        scope=body.scope,
        scope_id=body.scope_id,
        limit_type=body.limit_type,
        value=body.value,
        active=body.value is not None,
    )


@router.post(
    "/kill-switch",
    response_model=KillSwitchPublic,
    summary="Block new orders in a scope and cancel its open ones",
    responses=_RESPONSES,
)
async def activate_kill_switch(
    body: KillSwitchActivate, request: Request, principal: Manager, state: State
) -> KillSwitchPublic:
    command = ActivateKillSwitch(
        scope=body.scope, scope_id=body.scope_id, reason=body.reason, correlation_id=get_correlation_id()
    )
    reply = await _command(request, state, command, body.scope_id or principal.user_id)
    log.warning("risk.kill_switch_on", scope=body.scope, scope_id=body.scope_id, by=principal.user_id)
    return KillSwitchPublic(scope=body.scope, scope_id=body.scope_id, active=True, message=reply.get("reason"))


@router.delete(
    "/kill-switch",
    response_model=KillSwitchPublic,
    summary="Allow orders in a scope again",
    responses=_RESPONSES,
)
async def deactivate_kill_switch(
    request: Request,
    principal: Manager,
    state: State,
    scope: Scope,
    scope_id: Annotated[str, Query(max_length=64)] = "",
) -> KillSwitchPublic:
    try:
        target = KillSwitchActivate(
            scope=scope, scope_id=scope_id, reason="lifted"
        )  # the same scope checks as activation
    except ValidationError as invalid:
        raise ApiError(422, "validation_error", "the scope is not valid: see details", _details(invalid)) from None
    command = DeactivateKillSwitch(scope=target.scope, scope_id=target.scope_id, correlation_id=get_correlation_id())
    await _command(request, state, command, target.scope_id or principal.user_id)
    log.warning("risk.kill_switch_off", scope=target.scope, scope_id=target.scope_id, by=principal.user_id)
    return KillSwitchPublic(scope=target.scope, scope_id=target.scope_id, active=False)
