"""/accounts: the caller's linked exchange accounts. Linking checks the keys against the venue, seals them here
(``core.security.account_secrets.seal_account``) and sends ``LinkExchangeAccount`` to the order service, which
stores the account and records ``ExchangeAccountLinked``; deactivating is ``DeactivateExchangeAccount``, which
also cancels the account's open orders. Answers carry the masked key only; the key and secret are never returned,
logged or sent anywhere unsealed. Another user's account is answered 404, as if it did not exist."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request, status

from api.deps import AuthPrincipal, State, require
from api.errors import AUTH_RESPONSES, ApiError, Responses
from api.permissions import Permission
from api.schemas.accounts import AccountCreate, AccountPublic
from api.services.trading import ask_order_service, own_account, own_accounts, validate_exchange_keys
from api.state import ApiState
from core.domain.exchange_accounts import DeactivateExchangeAccount, LinkExchangeAccount
from core.domain.messages import Command
from core.observability.context import get_correlation_id
from core.observability.logging import get_logger
from core.security.account_secrets import seal_account

router = APIRouter(prefix="/accounts", tags=["accounts"])
log = get_logger("api.accounts")

Reader = Annotated[AuthPrincipal, require(Permission.PORTFOLIO_READ)]
Trader = Annotated[AuthPrincipal, require(Permission.ORDERS_CREATE)]

_NOT_FOUND: Responses = {404: {"description": "you have no such account"}, 422: {"description": "the id is not a UUID"}}


@router.post(
    "",
    response_model=AccountPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Link an exchange account (keys are checked against the venue, stored encrypted)",
    responses={
        **AUTH_RESPONSES,
        400: {"description": "the venue refused the keys (invalid_exchange_keys) or the venue is not offered"},
        409: {"description": "you already have an account with this exchange and label"},
        422: {"description": "the body is not valid"},
        503: {"description": "the venue could not be reached to check the keys"},
        504: {"description": "the order service did not answer in time"},
    },
)
async def link_account(body: AccountCreate, principal: Trader, state: State, request: Request) -> dict[str, Any]:
    api_key, api_secret = body.api_key.get_secret_value(), body.api_secret.get_secret_value()
    kernel = state.kernel
    await validate_exchange_keys(state.venues, kernel.redis, kernel.names.prefix, body.exchange, api_key, api_secret)
    account_id = str(uuid.uuid4())
    sealed = seal_account(state.keyring, account_id, api_key, api_secret)  # only ciphertext leaves this process
    command = LinkExchangeAccount(
        account_id=account_id,
        user_id=principal.user_id,
        exchange=body.exchange,
        label=body.label,
        api_key_masked=sealed.api_key_masked,
        api_key_encrypted=sealed.api_key_encrypted,
        api_secret_encrypted=sealed.api_secret_encrypted,
        key_version=sealed.key_version,
        correlation_id=get_correlation_id(),
    )
    await _account_command(request, state, command, principal.user_id)
    log.info("account.linked", account_id=account_id, user_id=principal.user_id, exchange=body.exchange)
    return await own_account(kernel.pool, principal.user_id, account_id)


async def _account_command(request: Request, state: ApiState, command: Command, user_id: str) -> dict[str, Any]:
    """Send an account command to the order service and wait for its answer; refusals become errors."""
    return await ask_order_service(
        state,
        command,
        user_id,
        request.app.state.settings.api.order_reply_timeout_s,
        ApiError(504, "account_command_timeout", "the order service did not answer in time; GET /accounts to see"),
        _account_refusal,
    )


def _account_refusal(reply: dict[str, Any]) -> ApiError:
    error, message = reply.get("error"), str(reply.get("message") or reply.get("error"))
    if error == "AccountExists":
        return ApiError(409, "account_exists", message)
    if error == "AccountNotFound":
        return ApiError(404, "account_not_found", message)
    return ApiError(422, "account_command_refused", f"the order service refused the request: {message}")


@router.get("", response_model=list[AccountPublic], summary="Your linked exchange accounts", responses=AUTH_RESPONSES)
async def list_accounts(principal: Reader, state: State) -> list[dict[str, Any]]:
    return await own_accounts(state.kernel.pool, principal.user_id)


@router.get(
    "/{account_id}",
    response_model=AccountPublic,
    summary="One of your linked exchange accounts",
    responses={**AUTH_RESPONSES, **_NOT_FOUND},
)
async def get_account(account_id: uuid.UUID, principal: Reader, state: State) -> dict[str, Any]:
    return await own_account(state.kernel.pool, principal.user_id, str(account_id))


@router.delete(
    "/{account_id}",
    response_model=AccountPublic,
    summary="Deactivate one of your accounts: no new orders, its open orders cancelled, its private stream stops",
    responses={**AUTH_RESPONSES, **_NOT_FOUND, 504: {"description": "the order service did not answer in time"}},
)
async def deactivate(account_id: uuid.UUID, principal: Trader, state: State, request: Request) -> dict[str, Any]:
    command = DeactivateExchangeAccount(
        account_id=str(account_id), user_id=principal.user_id, correlation_id=get_correlation_id()
    )
    reply = await _account_command(request, state, command, principal.user_id)
    log.info("account.deactivated", account_id=str(account_id), user_id=principal.user_id, detail=reply.get("reason"))
    return await own_account(state.kernel.pool, principal.user_id, str(account_id))
