"""Exchange-account commands, handled by the order service (the service that trades on the accounts):

- ``LinkExchangeAccount`` inserts the account with its sealed credentials, then records ``ExchangeAccountLinked``.
- ``DeactivateExchangeAccount`` marks the account inactive, makes the order service forget what it cached of it
  (the next order on it is denied at once), begins cancelling its open orders (venue-held and platform-held) and
  records ``ExchangeAccountDeactivated`` with the cancels. An order that passed the risk check before and commits
  after the listing finds the account inactive when it is released and is cancelled unsent (see
  ``realtime.orders.handlers._after_commit``): the flag is written before the orders are listed.

The row is written on its own connection and committed first, as the risk-limit commands do: the unit of work of
a command commits its events through the group committer, on a connection that may only read. A crash between
the two leaves the command unacknowledged; handled again, it finds its row written and its event missing, and
records the event then. With the event there, handling it again answers the same and changes nothing. An
account of another user is answered as missing (``AccountNotFound``), never touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from core.domain.exchange_accounts import (
    DeactivateExchangeAccount,
    ExchangeAccountDeactivated,
    ExchangeAccountLinked,
    LinkExchangeAccount,
)
from core.messaging.bus import CommandRefused
from core.security.account_secrets import INSERT_ACCOUNT
from core.uow import UnitOfWork
from realtime.orders.kill_switch import begin_cancel_open

if TYPE_CHECKING:
    from realtime.orders.handlers import OrderDeps, OrderResult


class AccountExists(CommandRefused):
    """The user already has an account with this exchange and label."""


class AccountNotFound(CommandRefused):
    """No such account of this user."""


_INSERT = INSERT_ACCOUNT + " ON CONFLICT (id) DO NOTHING RETURNING id"


async def _recorded(uow: UnitOfWork, account_id: str, version: int) -> bool:
    """Whether the account's event of ``version`` is in the event store (the command was handled to the end)."""
    conn = await uow.connection()
    found = await conn.execute(
        "SELECT 1 FROM event_store WHERE aggregate_id = %s AND event_version = %s", (account_id, version)
    )
    return await found.fetchone() is not None


async def link_exchange_account(cmd: LinkExchangeAccount, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    from realtime.orders.handlers import OrderResult

    values = (cmd.account_id, cmd.user_id, cmd.exchange, cmd.label, cmd.api_key_encrypted, cmd.api_secret_encrypted)
    try:
        async with orders.pool.connection() as conn:
            inserted = await (await conn.execute(_INSERT, (*values, cmd.key_version, cmd.api_key_masked))).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccountExists(
            f"you already have a {cmd.exchange} account labelled {cmd.label!r}: choose another label"
        ) from None
    if inserted is None:  # the id is taken: by this command handled before, or by someone else's account
        conn = await uow.connection()
        owner = await (
            await conn.execute("SELECT user_id::text FROM user_accounts WHERE id = %s", (cmd.account_id,))
        ).fetchone()
        if owner is None or owner[0] != cmd.user_id:
            raise AccountExists(f"account id {cmd.account_id} is taken")
        if await _recorded(uow, cmd.account_id, 1):
            return OrderResult(None, "linked", duplicate=True)  # handled before, to the end
    uow.record(
        ExchangeAccountLinked(
            aggregate_id=cmd.account_id,
            version=1,
            user_id=cmd.user_id,
            exchange=cmd.exchange,
            label=cmd.label,
            api_key_masked=cmd.api_key_masked,
            correlation_id=cmd.correlation_id,
        )
    )
    await uow.commit()
    return OrderResult(None, "linked")


async def deactivate_exchange_account(
    cmd: DeactivateExchangeAccount, uow: UnitOfWork, orders: OrderDeps
) -> OrderResult:
    from realtime.orders.handlers import OrderResult, after_cancel

    conn = await uow.connection()
    row = await (
        await conn.execute(
            "SELECT exchange, active FROM user_accounts WHERE id::text = %s AND user_id::text = %s",
            (cmd.account_id, cmd.user_id),
        )
    ).fetchone()
    if row is None:
        raise AccountNotFound(f"you have no exchange account {cmd.account_id}")
    exchange, active = row
    if not active and await _recorded(uow, cmd.account_id, 2):
        return OrderResult(None, "inactive", duplicate=True)  # handled before, to the end
    if active:
        async with orders.pool.connection() as write:
            await write.execute(
                "UPDATE user_accounts SET active = false, updated_at = now() WHERE id = %s", (cmd.account_id,)
            )
    orders.risk.venues.forget(cmd.account_id)  # before the open orders are listed: no new one gets in after
    cancelled = await begin_cancel_open(uow, "account", cmd.account_id, "account deactivated", cmd.correlation_id)
    uow.record(
        ExchangeAccountDeactivated(
            aggregate_id=cmd.account_id,
            version=2,
            user_id=cmd.user_id,
            exchange=exchange,
            orders_canceled=len(cancelled),
            correlation_id=cmd.correlation_id,
        )
    )
    await uow.commit()
    for order in cancelled:
        after_cancel(order, orders)
    return OrderResult(None, "inactive", f"{len(cancelled)} open orders cancelled")
