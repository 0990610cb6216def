"""The Order aggregate: status changes only through :meth:`Order.apply` and the explicit transition table.

Modelled on nautilus_trader's ``_ORDER_STATE_TABLE`` + ``Order.apply``: every event is checked against the
table, an illegal transition raises :class:`InvalidTransition`, and replaying the stored events rebuilds the
order exactly (:meth:`Order.from_events`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from core.domain.messages import Command, DomainError, Event, InvalidTransition, register_event


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP_MARKET = "stop_market"
    STOP_LIMIT = "stop_limit"


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


# --- commands ---------------------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrder(Command):
    order_id: str
    user_id: str
    reason: str = "requested"


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


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDenied(OrderEvent):
    reason: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderArmed(OrderEvent):
    trigger_price: Decimal


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


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPendingCancel(OrderEvent):
    pass


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


_FILL = "fill"  # target computed from the filled quantity
_RESUME = "resume"  # back to accepted / partially filled after a rejected cancel

S = OrderStatus
_ORDER_STATE_TABLE: dict[tuple[OrderStatus, type[OrderEvent]], OrderStatus | str] = {
    (S.INITIALIZED, OrderDenied): S.DENIED,
    (S.INITIALIZED, OrderArmed): S.ARMED,
    (S.INITIALIZED, OrderSubmitted): S.SUBMITTED,
    (S.INITIALIZED, OrderCanceled): S.CANCELED,
    (S.ARMED, OrderArmed): S.ARMED,  # a trailing stop ratchets its trigger
    (S.ARMED, OrderTriggered): S.TRIGGERED,
    (S.ARMED, OrderCanceled): S.CANCELED,
    (S.ARMED, OrderDenied): S.DENIED,
    (S.TRIGGERED, OrderSubmitted): S.SUBMITTED,
    (S.TRIGGERED, OrderDenied): S.DENIED,
    (S.TRIGGERED, OrderCanceled): S.CANCELED,
    (S.SUBMITTED, OrderAccepted): S.ACCEPTED,
    (S.SUBMITTED, OrderRejected): S.REJECTED,
    (S.SUBMITTED, OrderFilled): _FILL,
    (S.SUBMITTED, OrderPendingCancel): S.PENDING_CANCEL,
    (S.SUBMITTED, OrderCanceled): S.CANCELED,
    (S.SUBMITTED, OrderExpired): S.EXPIRED,
    (S.ACCEPTED, OrderFilled): _FILL,
    (S.ACCEPTED, OrderPendingCancel): S.PENDING_CANCEL,
    (S.ACCEPTED, OrderCanceled): S.CANCELED,
    (S.ACCEPTED, OrderExpired): S.EXPIRED,
    (S.PARTIALLY_FILLED, OrderFilled): _FILL,
    (S.PARTIALLY_FILLED, OrderPendingCancel): S.PENDING_CANCEL,
    (S.PARTIALLY_FILLED, OrderCanceled): S.CANCELED,
    (S.PARTIALLY_FILLED, OrderExpired): S.EXPIRED,
    (S.PENDING_CANCEL, OrderFilled): _FILL,
    (S.PENDING_CANCEL, OrderCanceled): S.CANCELED,
    (S.PENDING_CANCEL, OrderCancelRejected): _RESUME,
    (S.PENDING_CANCEL, OrderExpired): S.EXPIRED,
}
del S


@dataclass(slots=True)
class Order:
    """One order's state, rebuilt from its events; ``pending_events`` are those not yet stored."""

    id: str
    user_id: str
    account_id: str
    client_order_id: str
    exchange: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    trigger_price: Decimal | None
    time_in_force: TimeInForce
    reduce_only: bool
    strategy_id: str | None
    status: OrderStatus = OrderStatus.INITIALIZED
    version: int = 0
    persisted_version: int = 0
    exchange_order_id: str | None = None
    filled_quantity: Decimal = Decimal(0)
    avg_fill_price: Decimal | None = None
    fees: Decimal = Decimal(0)
    reason: str | None = None
    trade_ids: set[str] = field(default_factory=set)
    pending_events: list[OrderEvent] = field(default_factory=list)

    aggregate_type: ClassVar[str] = "order"

    @classmethod
    def place(cls, command: PlaceOrder, order_id: str) -> Order:
        """A new order from a PlaceOrder command: its first event is OrderInitialized."""
        if command.quantity <= 0:
            raise DomainError("quantity must be positive")
        init = OrderInitialized(
            aggregate_id=order_id,
            version=1,
            user_id=command.user_id,
            account_id=command.account_id,
            client_order_id=command.client_order_id,
            exchange=command.exchange,
            symbol=command.symbol,
            side=command.side,
            order_type=command.order_type,
            quantity=command.quantity,
            price=command.price,
            trigger_price=command.trigger_price,
            time_in_force=command.time_in_force,
            reduce_only=command.reduce_only,
            strategy_id=command.strategy_id,
            correlation_id=command.correlation_id,
            causation_id=str(command.command_id),
        )
        order = cls._from_initialized(init)
        order.pending_events.append(init)
        return order

    @classmethod
    def _from_initialized(cls, e: OrderInitialized) -> Order:
        return cls(
            id=e.aggregate_id,
            user_id=e.user_id,
            account_id=e.account_id,
            client_order_id=e.client_order_id,
            exchange=e.exchange,
            symbol=e.symbol,
            side=e.side,
            order_type=e.order_type,
            quantity=e.quantity,
            price=e.price,
            trigger_price=e.trigger_price,
            time_in_force=e.time_in_force,
            reduce_only=e.reduce_only,
            strategy_id=e.strategy_id,
            version=1,
        )

    @classmethod
    def from_events(cls, events: list[Event]) -> Order:
        """Replay stored events; the result has nothing pending."""
        if not events or not isinstance(events[0], OrderInitialized):
            raise DomainError("an order's history starts with OrderInitialized")
        order = cls._from_initialized(events[0])
        for event in events[1:]:
            assert isinstance(event, OrderEvent)
            order.apply(event)
        order.pending_events.clear()
        order.persisted_version = order.version
        return order

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def leaves_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity

    def apply(self, event: OrderEvent) -> None:
        """Check ``event`` against the transition table, then change state; illegal transitions raise."""
        if event.aggregate_id != self.id:
            raise DomainError(f"event for order {event.aggregate_id} applied to order {self.id}")
        if event.version != self.version + 1:
            raise DomainError(f"order {self.id} is at version {self.version}; event has {event.version}")
        target = _ORDER_STATE_TABLE.get((self.status, type(event)))
        if target is None:
            raise InvalidTransition(f"{type(event).__name__} is not allowed for an order in state {self.status}")
        if isinstance(event, OrderFilled):
            target = self._apply_fill(event)
        elif target == _RESUME:
            target = OrderStatus.PARTIALLY_FILLED if self.filled_quantity > 0 else OrderStatus.ACCEPTED
        elif isinstance(event, OrderAccepted):
            self.exchange_order_id = event.exchange_order_id
        elif isinstance(event, OrderDenied | OrderRejected):
            self.reason = event.reason
        elif isinstance(event, OrderCanceled):
            self.reason = event.reason
        elif isinstance(event, OrderArmed):
            self.trigger_price = event.trigger_price
        assert isinstance(target, OrderStatus)
        self.status = target
        self.version = event.version
        self.pending_events.append(event)

    def _apply_fill(self, event: OrderFilled) -> OrderStatus:
        if event.trade_id in self.trade_ids:
            raise InvalidTransition(f"fill {event.trade_id} already applied to order {self.id}")
        if event.quantity <= 0 or event.price <= 0:
            raise DomainError("a fill needs a positive quantity and price")
        if self.filled_quantity + event.quantity > self.quantity:
            raise InvalidTransition(f"fill of {event.quantity} would overfill order {self.id}")
        notional = (self.avg_fill_price or Decimal(0)) * self.filled_quantity + event.price * event.quantity
        self.filled_quantity += event.quantity
        self.avg_fill_price = notional / self.filled_quantity
        self.fees += event.fee
        self.trade_ids.add(event.trade_id)
        if self.filled_quantity == self.quantity:
            return OrderStatus.FILLED
        if self.status == OrderStatus.PENDING_CANCEL:
            return OrderStatus.PENDING_CANCEL
        return OrderStatus.PARTIALLY_FILLED

    def _next(self) -> dict[str, Any]:
        return {"aggregate_id": self.id, "version": self.version + 1, "user_id": self.user_id}

    def deny(self, reason: str, correlation_id: str | None = None, causation_id: str | None = None) -> None:
        self.apply(OrderDenied(**self._next(), reason=reason, correlation_id=correlation_id, causation_id=causation_id))

    def submit(self, correlation_id: str | None = None, causation_id: str | None = None) -> None:
        self.apply(OrderSubmitted(**self._next(), correlation_id=correlation_id, causation_id=causation_id))

    def accept(self, exchange_order_id: str, correlation_id: str | None = None) -> None:
        self.apply(OrderAccepted(**self._next(), exchange_order_id=exchange_order_id, correlation_id=correlation_id))

    def fill(
        self,
        trade_id: str,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal = Decimal(0),
        correlation_id: str | None = None,
    ) -> None:
        self.apply(
            OrderFilled(
                **self._next(),
                trade_id=trade_id,
                quantity=quantity,
                price=price,
                fee=fee,
                correlation_id=correlation_id,
            )
        )

    def cancel(
        self, reason: str = "requested", correlation_id: str | None = None, causation_id: str | None = None
    ) -> None:
        self.apply(
            OrderCanceled(**self._next(), reason=reason, correlation_id=correlation_id, causation_id=causation_id)
        )
