"""Account events: what an exchange reports about a linked account (order updates, fills, balances).

They are facts from the venue, not transitions of our own aggregates: published on ``account.events`` for the
order lifecycle, positions and balances to act on. Their ids are derived from the venue's own identifiers, so
the same report received twice (a reconnect, a replay) carries the same event id and consumers drop the copy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from core.domain.messages import Event, register_event

_NAMESPACE = uuid.UUID("5d2c8a51-52d8-4f5e-9a59-7d3f0c6e3b1a")


def report_id(*parts: object) -> uuid.UUID:
    """A stable event id for a venue report, from the venue's identifiers."""
    return uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts))


def fill_report_id(account_id: str, symbol: str, trade_id: str, exchange_order_id: str) -> uuid.UUID:
    """The event id of one fill, whoever reports it (a private stream or reconciliation): the same fill always
    has the same id, so consumers apply it once."""
    return report_id(account_id, "fill", symbol, trade_id, exchange_order_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountEvent(Event):
    aggregate_type: ClassVar[str] = "account"
    user_id: str
    exchange: str
    exchange_ts_ms: int


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeOrderReported(AccountEvent):
    symbol: str
    client_order_id: str
    exchange_order_id: str
    side: str
    order_type: str
    status: str
    price: Decimal
    quantity: Decimal
    filled_quantity: Decimal
    reason: str | None = None


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeFillReported(AccountEvent):
    symbol: str
    client_order_id: str
    exchange_order_id: str
    trade_id: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str | None
    is_maker: bool


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeBalanceReported(AccountEvent):
    asset: str
    free: Decimal
    locked: Decimal
