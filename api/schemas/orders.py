"""Order requests and answers. Money and quantities are decimals, sent and returned as JSON strings (numbers are
accepted on input); statuses follow the order lifecycle (``core.domain.orders.OrderStatus``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from core.domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce


def plain_decimal(value: Decimal) -> str:
    """``0.010000000000000000`` (a NUMERIC column's scale) as ``0.01``; never an exponent."""
    return format(value.normalize(), "f") if value.is_finite() else str(value)


Amount = Annotated[Decimal, PlainSerializer(plain_decimal, return_type=str, when_used="json")]
Quantity = Field(gt=0, allow_inf_nan=False, max_digits=36, decimal_places=18)
Price = Field(None, gt=0, allow_inf_nan=False, max_digits=36, decimal_places=18)
SYMBOL = r"^[A-Z0-9]{2,30}$"
CLIENT_ORDER_ID = r"^[A-Za-z0-9._:\-]{1,36}$"


class OrderCreate(BaseModel):
    """A new order on one of your linked accounts. Stops, take-profits and trailing stops are held by the
    platform and sent to the venue when their trigger price is crossed.

    Which fields each type needs (a price for limits, a trigger price for stops, one trailing offset for a
    trailing stop) is checked by the order service's risk gate, the one place those rules live: a mismatch is
    a 422 ``order_denied`` naming the missing field."""

    model_config = ConfigDict(extra="forbid")

    account_id: uuid.UUID
    symbol: str = Field(pattern=SYMBOL, examples=["BTCUSDT"])
    side: OrderSide
    order_type: OrderType
    quantity: Decimal = Quantity
    price: Decimal | None = Price
    trigger_price: Decimal | None = Price
    time_in_force: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    client_order_id: str | None = Field(
        None, pattern=CLIENT_ORDER_ID, description="your id for the order; the Idempotency-Key when not given"
    )
    trailing_offset: Decimal | None = Price
    trailing_offset_pct: Decimal | None = Field(None, gt=0, lt=100, allow_inf_nan=False)


class BracketCreate(BaseModel):
    """An entry with a stop-loss and/or take-profit leg (one OCO pair, armed when the entry fills)."""

    model_config = ConfigDict(extra="forbid")

    account_id: uuid.UUID
    symbol: str = Field(pattern=SYMBOL, examples=["BTCUSDT"])
    side: OrderSide
    quantity: Decimal = Quantity
    entry_type: Literal[OrderType.MARKET, OrderType.LIMIT] | None = Field(
        OrderType.MARKET, description="market or limit; null: no entry, the legs protect an existing position"
    )
    entry_price: Decimal | None = Price
    stop_loss: Decimal | None = Price
    take_profit: Decimal | None = Price
    trailing_offset_pct: Decimal | None = Field(None, gt=0, lt=100, allow_inf_nan=False)
    client_order_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._:\-]{1,32}$")


class OrderPublic(BaseModel):
    """An order as its owner sees it, read from the orders table the order service and lifecycle keep."""

    id: uuid.UUID
    account_id: uuid.UUID
    client_order_id: str
    exchange_order_id: str | None
    exchange: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: Amount
    price: Amount | None
    trigger_price: Amount | None
    reduce_only: bool
    status: OrderStatus
    filled_quantity: Amount
    avg_fill_price: Amount | None
    fees: Amount
    reason: str | None
    parent_order_id: uuid.UUID | None
    oco_group: str | None
    created_at: datetime
    updated_at: datetime


class BracketPublic(BaseModel):
    """The entry (or, without one, the first leg) and the protective legs."""

    order: OrderPublic
    legs: list[OrderPublic]
