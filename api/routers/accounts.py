"""/accounts: the caller's linked exchange accounts. Linking checks the keys against the venue, stores them
encrypted (``core.security.account_secrets``) and answers with the masked key only; the key and secret are never
returned or logged. Another user's account is answered 404, as if it did not exist."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, status

from api.deps import AuthPrincipal, State, require
from api.errors import AUTH_RESPONSES, ApiError, Responses
from api.permissions import Permission
from api.schemas.accounts import AccountCreate, AccountPublic
from api.services.trading import (
    deactivate_account,
    is_unique_violation,
    own_account,
    own_accounts,
    validate_exchange_keys,
)
from core.observability.logging import get_logger
from core.security.account_secrets import store_account

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
    },
)
async def link_account(body: AccountCreate, principal: Trader, state: State) -> dict[str, Any]:
    api_key, api_secret = body.api_key.get_secret_value(), body.api_secret.get_secret_value()
    kernel = state.kernel
    await validate_exchange_keys(state.venues, kernel.redis, kernel.names.prefix, body.exchange, api_key, api_secret)
    account_id = str(uuid.uuid4())

    def store() -> None:  # account_secrets speaks the sync driver; a link is rare enough for one connection
        with psycopg.connect(kernel.database_url) as conn:
            store_account(
                conn,
                state.keyring,
                account_id=account_id,
                user_id=principal.user_id,
                exchange=body.exchange,
                label=body.label,
                api_key=api_key,
                api_secret=api_secret,
            )
            conn.commit()

    try:
        await asyncio.to_thread(store)
    except psycopg.Error as error:
        if is_unique_violation(error):
            raise ApiError(
                409,
                "account_exists",
                f"you already have a {body.exchange} account labelled {body.label!r}: choose another label",
            ) from None
        raise
    log.info("account.linked", account_id=account_id, user_id=principal.user_id, exchange=body.exchange)
    return await own_account(kernel.pool, principal.user_id, account_id)


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
    summary="Deactivate one of your accounts: no new orders; its private stream stops",
    responses={**AUTH_RESPONSES, **_NOT_FOUND},
)
async def deactivate(account_id: uuid.UUID, principal: Trader, state: State) -> dict[str, Any]:
    row = await deactivate_account(state.kernel.pool, principal.user_id, str(account_id))
    log.info("account.deactivated", account_id=str(account_id), user_id=principal.user_id)
    return row
