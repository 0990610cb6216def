"""/portfolio: the caller's live positions, balances, open orders and summary (``PortfolioReadModels``).

These are the hot reads (the portfolio screen, the Telegram bot), so they are served from the read models' Redis
cache as the cached JSON bytes, with no parsing and no SQL: one ``MGET`` when every part is cached; a part that
is not is read from PostgreSQL by the read models, which cache it for the next request. A user sees only their
own portfolio; fund managers and admins may pass ``?user_id=`` to see another user's.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Response

from api.deps import AuthPrincipal, State, allowed
from api.errors import ApiError, ErrorBody
from api.permissions import STAFF_ROLES, Permission
from api.schemas.portfolio import BalancePublic, OpenOrderPublic, PortfolioPublic, PositionPublic
from api.state import ApiState

router = APIRouter(prefix="/portfolio", tags=["portfolio"])

Reader = allowed(Permission.PORTFOLIO_READ)
UserId = Annotated[
    UUID | None,
    Query(description="another user's portfolio (fund managers and admins only); default: your own"),
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "no portfolio:read permission, or a user asked for another's portfolio"},
}
_JSON = "application/json"


def target_user(principal: AuthPrincipal, user_id: UUID | None) -> str:
    """Whose portfolio: the caller's own, or (staff only) the one asked for."""
    if user_id is None or str(user_id) == principal.user_id:
        return principal.user_id
    if principal.role not in STAFF_ROLES:
        raise ApiError(403, "forbidden", "you may only read your own portfolio: leave out user_id")
    return str(user_id)


@router.get(
    "",
    response_model=PortfolioPublic,
    response_class=Response,
    summary="Summary, positions and balances in one response",
    responses={
        **_ERRORS,
        200: {"model": PortfolioPublic, "content": {_JSON: {}}},
        404: {"model": ErrorBody, "description": "no such user"},
    },
)
async def portfolio(state: State, principal: Reader, user_id: UserId = None) -> Response:
    return Response(await read_portfolio(state, target_user(principal, user_id)), media_type=_JSON)


async def read_portfolio(state: ApiState, target: str) -> bytes:
    """The JSON of ``GET /portfolio`` for ``target`` (also served by api.hot)."""
    summary, positions, balances = await state.read_models.cached(target, ("summary", "positions", "balances"))
    if summary == b"null":
        raise ApiError(404, "user_not_found", f"no user {target}")
    parts = [b'{"user_id":', orjson.dumps(target), b',"summary":', summary, b',"positions":', positions]
    return b"".join([*parts, b',"balances":', balances, b"}"])


# the parts with a route of their own: URL segment -> read model kind
PARTS = {"positions": "positions", "balances": "balances", "open-orders": "open_orders"}


async def read_part(state: ApiState, target: str, part: str) -> bytes:
    """The JSON of ``GET /portfolio/<part>`` for ``target`` (also served by api.hot)."""
    (body,) = await state.read_models.cached(target, (PARTS[part],))
    return body


@router.get(
    "/positions",
    response_model=list[PositionPublic],
    response_class=Response,
    summary="Open positions (and closed ones with realized PnL), marked to the latest prices",
    responses={**_ERRORS, 200: {"model": list[PositionPublic], "content": {_JSON: {}}}},
)
async def positions(state: State, principal: Reader, user_id: UserId = None) -> Response:
    return Response(await read_part(state, target_user(principal, user_id), "positions"), media_type=_JSON)


@router.get(
    "/balances",
    response_model=list[BalancePublic],
    response_class=Response,
    summary="Non-zero balances of every linked account",
    responses={**_ERRORS, 200: {"model": list[BalancePublic], "content": {_JSON: {}}}},
)
async def balances(state: State, principal: Reader, user_id: UserId = None) -> Response:
    return Response(await read_part(state, target_user(principal, user_id), "balances"), media_type=_JSON)


@router.get(
    "/open-orders",
    response_model=list[OpenOrderPublic],
    response_class=Response,
    summary="Orders still working (not filled, canceled, rejected, denied or expired), oldest first",
    responses={**_ERRORS, 200: {"model": list[OpenOrderPublic], "content": {_JSON: {}}}},
)
async def open_orders(state: State, principal: Reader, user_id: UserId = None) -> Response:
    return Response(await read_part(state, target_user(principal, user_id), "open-orders"), media_type=_JSON)
