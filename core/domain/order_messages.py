"""The order aggregate's vocabulary: enums, commands (imperative) and events (past tense).

Conditional orders the venue does not hold (stops, take-profits, trailing stops, profit-lock ladders) are armed
and triggered by the platform; brackets and OCO pairs link their legs through ``parent_order_id`` (armed when
the entry fills) and ``oco_group`` (one leg firing cancels the others).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from core.domain.messages import Command, Event, register_command, register_event


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP_MARKET = "stop_market"
    STOP_LIMIT = "stop_limit"
    TAKE_PROFIT_MARKET = "take_profit_market"
    TAKE_PROFIT_LIMIT = "take_profit_limit"
    TRAILING_STOP_MARKET = "trailing_stop_market"


CONDITIONAL_TYPES = frozenset(
    {
        OrderType.STOP_MARKET,
        OrderType.STOP_LIMIT,
        OrderType.TAKE_PROFIT_MARKET,
        OrderType.TAKE_PROFIT_LIMIT,
        OrderType.TRAILING_STOP_MARKET,
    }
)
PRICED_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT})
STOP_TYPES = frozenset({OrderType.STOP_MARKET, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP_MARKET})


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(StrEnum):
    INITIALIZED = "initialized"
    DENIED = "denied"
    ARMED = "armed"
    TRIGGERED = "triggered"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
)
OPEN_STATUSES = frozenset(
    {
        OrderStatus.INITIALIZED,
        OrderStatus.ARMED,
        OrderStatus.TRIGGERED,
        OrderStatus.SUBMITTED,
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.PENDING_CANCEL,
    }
)

LockStep = tuple[Decimal, Decimal]
"""One rung of a profit-lock ladder: (gain reached, gain locked), both percent of the reference (entry) price."""


# --- commands ---------------------------------------------------------------------------------------------


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceOrder(Command):
    account_id: str
    user_id: str
    client_order_id: str
    exchange: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    strategy_id: str | None = None
    trailing_offset: Decimal | None = None  # trailing stop: callback as a price distance ...
    trailing_offset_pct: Decimal | None = None  # ... or as a percent of the best price since arming
    lock_steps: tuple[LockStep, ...] = ()  # profit-lock ladder on a stop: (gain reached %, gain locked %)
    reference_price: Decimal | None = None  # the entry price the ladder's gains are measured from


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrder(Command):
    order_id: str
    user_id: str
    reason: str = "requested"


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class ModifyOrder(Command):
    """Cancel-replace: the order is cancelled and a new one placed with the changed fields (a new order id)."""

    order_id: str
    user_id: str
    quantity: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceBracketOrder(Command):
    """An entry with a stop-loss and a take-profit leg, armed when the entry fills; the legs are one OCO pair.

    With ``entry_type`` None there is no entry: the two legs protect an existing position and arm at once.
    """

    account_id: str
    user_id: str
    client_order_id: str
    exchange: str
    symbol: str
    side: OrderSide  # the entry's side; the legs close it (opposite side, reduce-only)
    quantity: Decimal
    entry_type: OrderType | None = OrderType.MARKET
    entry_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    trailing_offset_pct: Decimal | None = None  # make the stop-loss leg a trailing stop
    strategy_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerOrder(Command):
    """The platform saw ``last_price`` cross an armed order's level: trigger it and send it to the venue."""

    order_id: str
    last_price: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class RearmOrder(Command):
    """Move an armed order's level: a trailing stop's ratchet or a profit-lock ladder's next rung."""

    order_id: str
    trigger_price: Decimal
    peak_price: Decimal | None = None
    lock_step: int = 0


# --- events -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent(Event):
    aggregate_type: ClassVar[str] = "order"
    user_id: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderInitialized(OrderEvent):
    account_id: str
    client_order_id: str
    exchange: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    strategy_id: str | None = None
    trailing_offset: Decimal | None = None
    trailing_offset_pct: Decimal | None = None
    lock_steps: tuple[LockStep, ...] = ()
    reference_price: Decimal | None = None
    parent_order_id: str | None = None
    oco_group: str | None = None
    replaces: str | None = None


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDenied(OrderEvent):
    reason: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderArmed(OrderEvent):
    """Armed, or re-armed at a new level: a trailing stop's ratchet (``peak_price``), a ladder's step, or a
    bracket leg armed for the quantity its entry filled."""

    trigger_price: Decimal
    quantity: Decimal | None = None
    peak_price: Decimal | None = None
    lock_step: int = 0


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderTriggered(OrderEvent):
    trigger_price: Decimal
    last_price: Decimal


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSubmitted(OrderEvent):
    pass


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderAccepted(OrderEvent):
    exchange_order_id: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(OrderEvent):
    reason: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFilled(OrderEvent):
    trade_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal = Decimal(0)
    fee_asset: str | None = None
    liquidity: str | None = None
    account_id: str | None = None
    symbol: str | None = None
    side: OrderSide | None = None


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPendingCancel(OrderEvent):
    reason: str = "requested"


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelRejected(OrderEvent):
    reason: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCanceled(OrderEvent):
    reason: str = "requested"


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderExpired(OrderEvent):
    pass
