"""/orders: place, read and cancel the caller's orders. A write becomes a command on the order service's stream
(``PlaceOrder``, ``PlaceBracketOrder``, ``CancelOrder``) carrying the request's correlation id; the answer is the
order service's decision. Reads come from the orders table, always scoped to the caller."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from api.deps import AuthPrincipal, State, require
from api.errors import AUTH_RESPONSES, ApiError, Responses, error_body
from api.metrics import ApiMetrics
from api.permissions import Permission
from api.schemas.orders import SYMBOL, BracketCreate, BracketPublic, OrderCreate, OrderPublic
from api.services.trading import (
    Idempotency,
    OrderFilter,
    client_order_id_from,
    own_account,
    own_order,
    own_orders,
    raise_for_reply,
)
from api.state import ApiState
from core.domain.orders import TERMINAL_STATUSES, CancelOrder, OrderStatus, PlaceBracketOrder, PlaceOrder
from core.observability.context import get_correlation_id
from realtime.orders.commands import CommandTimeout

router = APIRouter(prefix="/orders", tags=["orders"])

Creator = Annotated[AuthPrincipal, require(Permission.ORDERS_CREATE)]
Reader = Annotated[AuthPrincipal, require(Permission.ORDERS_READ)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="retrying with the same key and body answers the first response; it also becomes the "
        "client_order_id when none is given",
    ),
]

_FINAL = frozenset(s.value for s in TERMINAL_STATUSES)
_PLACE_RESPONSES: Responses = {
    **AUTH_RESPONSES,
    200: {"description": "this client_order_id was already placed: the existing order"},
    404: {"description": "you have no such account"},
    409: {"description": "the Idempotency-Key was used for another body, or is still in flight; the account is off"},
    422: {"description": "invalid body, or the order was denied (order_denied) or rejected (order_rejected)"},
    504: {"description": "the order service did not answer in time: the order may still be placed"},
}


def _metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.api_metrics
    return metrics


async def _tradable_exchange(state: ApiState, user_id: str, account_id: uuid.UUID) -> str:
    account = await own_account(state.kernel.pool, user_id, str(account_id))
    if not account["active"]:
        raise ApiError(409, "account_inactive", f"account {account_id} is deactivated: link it again to trade")
    return str(account["exchange"])


def _client_order_id(given: str | None, idempotency_key: str | None, max_len: int = 36) -> str:
    """The order's client id: as given, else derived from the Idempotency-Key (so a retry dedupes), else new."""
    if given:
        return given
    return client_order_id_from(idempotency_key, max_len) if idempotency_key else uuid.uuid4().hex


async def _idempotent(
    request: Request,
    state: ApiState,
    principal: AuthPrincipal,
    key: str | None,
    body: Any,
    handle: Callable[[], Awaitable[tuple[int, Any]]],
) -> Response:
    """Run ``handle`` once per (user, Idempotency-Key); replay its answer (success or refusal) for a retry."""
    if key is None:
        status_code, content = await handle()
        return JSONResponse(content, status_code)
    store = Idempotency(
        state.kernel.redis,
        state.kernel.names.prefix,
        request.app.state.settings.api.idempotency_ttl_s,
        request.app.state.settings.api.order_reply_timeout_s + 5,
    )
    fingerprint = Idempotency.fingerprint(request.url.path, body)
    stored = await store.begin(principal.user_id, key, fingerprint)
    if stored is not None:
        content = stored.body
        if isinstance(content, dict) and "correlation_id" in content:  # an error body names this request
            content = {**content, "correlation_id": get_correlation_id()}
        return JSONResponse(content, stored.status, headers={"Idempotent-Replayed": "true"})
    try:
        status_code, content = await handle()
    except ApiError as refused:
        if refused.status == 422:  # a decision (denied, rejected): the same request would get it again
            await store.finish(
                principal.user_id, key, fingerprint, 422, error_body(refused.code, refused.message, refused.details)
            )
        else:
            await store.abandon(principal.user_id, key)
        raise
    except BaseException:
        await store.abandon(principal.user_id, key)
        raise
    await store.finish(principal.user_id, key, fingerprint, status_code, content)
    return JSONResponse(content, status_code)


async def _send(
    request: Request, state: ApiState, command: Any, user_id: str, kind: str, client_order_id: str
) -> dict[str, Any]:
    """Send a placing command and wait for the decision; count it, time it, and map refusals to errors."""
    metrics = _metrics(request)
    wait_s = request.app.state.settings.api.order_reply_timeout_s
    started = time.perf_counter()
    try:
        reply = await state.commands.send(command, user_id, wait_s=wait_s)
    except CommandTimeout:
        metrics.orders_failed.labels(reason="timeout").inc()
        raise ApiError(
            504,
            "order_timeout",
            f"the order service did not answer within {wait_s:g}s; the order may still be placed: "
            f"GET /orders?client_order_id={client_order_id} before placing it again",
            {"client_order_id": client_order_id},
        ) from None
    finally:
        metrics.order_seconds.observe(time.perf_counter() - started)
    assert reply is not None
    try:
        raise_for_reply(reply)
    except ApiError as refused:
        metrics.orders_failed.labels(reason=refused.code.removeprefix("order_")).inc()
        raise
    metrics.orders_placed.labels(order_type=kind).inc()
    return reply


def _public(row: dict[str, Any]) -> Any:
    return OrderPublic.model_validate(row).model_dump(mode="json")


@router.post(
    "",
    response_model=OrderPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Place an order on one of your accounts",
    responses=_PLACE_RESPONSES,
)
async def place_order(
    body: OrderCreate, request: Request, principal: Creator, state: State, idempotency_key: IdempotencyKey = None
) -> Response:
    async def handle() -> tuple[int, Any]:
        exchange = await _tradable_exchange(state, principal.user_id, body.account_id)
        client_order_id = _client_order_id(body.client_order_id, idempotency_key)
        command = PlaceOrder(
            account_id=str(body.account_id),
            user_id=principal.user_id,
            client_order_id=client_order_id,
            exchange=exchange,
            symbol=body.symbol,
            side=body.side,
            order_type=body.order_type,
            quantity=body.quantity,
            price=body.price,
            trigger_price=body.trigger_price,
            time_in_force=body.time_in_force,
            reduce_only=body.reduce_only,
            trailing_offset=body.trailing_offset,
            trailing_offset_pct=body.trailing_offset_pct,
            correlation_id=get_correlation_id(),
        )
        reply = await _send(request, state, command, principal.user_id, body.order_type.value, client_order_id)
        row = await own_order(state.kernel.pool, principal.user_id, str(reply["order_id"]))
        return (200 if reply.get("duplicate") else 201), _public(row)

    return await _idempotent(request, state, principal, idempotency_key, body.model_dump(mode="json"), handle)


@router.post(
    "/bracket",
    response_model=BracketPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Place an entry with stop-loss / take-profit legs (one OCO pair, armed when the entry fills)",
    responses=_PLACE_RESPONSES,
)
async def place_bracket(
    body: BracketCreate, request: Request, principal: Creator, state: State, idempotency_key: IdempotencyKey = None
) -> Response:
    async def handle() -> tuple[int, Any]:
        exchange = await _tradable_exchange(state, principal.user_id, body.account_id)
        client_order_id = _client_order_id(body.client_order_id, idempotency_key, 32)
        command = PlaceBracketOrder(
            account_id=str(body.account_id),
            user_id=principal.user_id,
            client_order_id=client_order_id,
            exchange=exchange,
            symbol=body.symbol,
            side=body.side,
            quantity=body.quantity,
            entry_type=body.entry_type,
            entry_price=body.entry_price,
            stop_loss=body.stop_loss,
            take_profit=body.take_profit,
            trailing_offset_pct=body.trailing_offset_pct,
            correlation_id=get_correlation_id(),
        )
        reply = await _send(request, state, command, principal.user_id, "bracket", client_order_id)
        pool = state.kernel.pool
        head = await own_order(pool, principal.user_id, str(reply["order_id"]))
        legs = [await own_order(pool, principal.user_id, str(leg)) for leg in reply.get("legs") or ()]
        content = {"order": _public(head), "legs": [_public(leg) for leg in legs]}
        return (200 if reply.get("duplicate") else 201), content

    return await _idempotent(request, state, principal, idempotency_key, body.model_dump(mode="json"), handle)


@router.get("", response_model=list[OrderPublic], summary="Your orders, newest first", responses=AUTH_RESPONSES)
async def list_orders(
    principal: Reader,
    state: State,
    status_: Annotated[
        OrderStatus | Literal["open"] | None, Query(alias="status", description="a status, or open")
    ] = None,
    symbol: Annotated[str | None, Query(pattern=SYMBOL)] = None,
    account_id: uuid.UUID | None = None,
    client_order_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    where = OrderFilter(
        status=None if status_ is None else str(status_),
        symbol=symbol,
        account_id=None if account_id is None else str(account_id),
        client_order_id=client_order_id,
        limit=limit,
    )
    return await own_orders(state.kernel.pool, principal.user_id, where)


@router.get(
    "/{order_id}",
    response_model=OrderPublic,
    summary="One of your orders",
    responses={**AUTH_RESPONSES, 404: {"description": "you have no such order"}, 422: {"description": "not a UUID"}},
)
async def get_order(order_id: uuid.UUID, principal: Reader, state: State) -> dict[str, Any]:
    return await own_order(state.kernel.pool, principal.user_id, str(order_id))


@router.delete(
    "/{order_id}",
    response_model=OrderPublic,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel one of your orders (pending_cancel until the venue confirms)",
    responses={
        **AUTH_RESPONSES,
        404: {"description": "you have no such order"},
        409: {"description": "the order is already final"},
        422: {"description": "not a UUID"},
        504: {"description": "the order service did not answer in time: the cancel may still happen"},
    },
)
async def cancel_order(order_id: uuid.UUID, request: Request, principal: Creator, state: State) -> dict[str, Any]:
    pool = state.kernel.pool
    row = await own_order(pool, principal.user_id, str(order_id))
    if row["status"] in _FINAL:
        raise ApiError(409, "order_not_open", f"the order is already {row['status']}: nothing to cancel")
    command = CancelOrder(order_id=str(order_id), user_id=principal.user_id, correlation_id=get_correlation_id())
    try:
        reply = await state.commands.send(
            command, principal.user_id, wait_s=request.app.state.settings.api.order_reply_timeout_s
        )
    except CommandTimeout:
        raise ApiError(
            504, "cancel_timeout", "the order service did not answer in time; GET the order to see if it ended"
        ) from None
    assert reply is not None
    if not reply.get("ok", False) or reply.get("status") == "not_found":
        raise ApiError(404, "order_not_found", f"you have no order {order_id}")
    return await own_order(pool, principal.user_id, str(order_id))
