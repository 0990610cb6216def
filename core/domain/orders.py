"""The Order aggregate: status changes only through :meth:`Order.apply` and the explicit transition table.

Modelled on nautilus_trader's ``_ORDER_STATE_TABLE`` + ``Order.apply``: every event is checked against the
table, an illegal transition raises :class:`InvalidTransition`, and replaying the stored events rebuilds the
order exactly (:meth:`Order.from_events`). Its commands and events live in :mod:`core.domain.order_messages`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from core.domain.messages import DomainError, Event, InvalidTransition
from core.domain.order_messages import (
    CONDITIONAL_TYPES,
    OPEN_STATUSES,
    PRICED_TYPES,
    STOP_TYPES,
    TERMINAL_STATUSES,
    CancelOrder,
    LockStep,
    ModifyOrder,
    OrderAccepted,
    OrderArmed,
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderPendingCancel,
    OrderRejected,
    OrderSide,
    OrderStatus,
    OrderSubmitted,
    OrderTriggered,
    OrderType,
    PlaceBracketOrder,
    PlaceOrder,
    RearmOrder,
    TimeInForce,
    TriggerOrder,
)

__all__ = [
    "CONDITIONAL_TYPES",
    "OPEN_STATUSES",
    "PRICED_TYPES",
    "STOP_TYPES",
    "TERMINAL_STATUSES",
    "CancelOrder",
    "LockStep",
    "ModifyOrder",
    "Order",
    "OrderAccepted",
    "OrderArmed",
    "OrderCancelRejected",
    "OrderCanceled",
    "OrderDenied",
    "OrderEvent",
    "OrderExpired",
    "OrderFilled",
    "OrderInitialized",
    "OrderPendingCancel",
    "OrderRejected",
    "OrderSide",
    "OrderStatus",
    "OrderSubmitted",
    "OrderTriggered",
    "OrderType",
    "PlaceBracketOrder",
    "PlaceOrder",
    "RearmOrder",
    "TimeInForce",
    "TriggerOrder",
]


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
    (S.PENDING_CANCEL, OrderAccepted): S.PENDING_CANCEL,  # the venue's ack overtook our cancel request
    (S.PENDING_CANCEL, OrderRejected): S.REJECTED,
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
    trailing_offset: Decimal | None = None
    trailing_offset_pct: Decimal | None = None
    lock_steps: tuple[LockStep, ...] = ()
    reference_price: Decimal | None = None
    parent_order_id: str | None = None
    oco_group: str | None = None
    peak_price: Decimal | None = None  # trailing stop: best price since arming
    lock_step: int = 0  # profit-lock ladder: rungs reached
    replaces: str | None = None  # cancel-replace: the order this one replaces
    submitted_at: datetime | None = None  # when it was (last) handed to the venue side
    # the request that placed it: every later event of the order carries it unless its cause brings its own
    correlation_id: str | None = None
    trade_ids: set[str] = field(default_factory=set)
    pending_events: list[OrderEvent] = field(default_factory=list)

    aggregate_type: ClassVar[str] = "order"

    @classmethod
    def place(
        cls,
        command: PlaceOrder,
        order_id: str,
        parent_order_id: str | None = None,
        oco_group: str | None = None,
        replaces: str | None = None,
    ) -> Order:
        """A new order from a PlaceOrder command: its first event is OrderInitialized."""
        if not command.quantity > 0:  # also refuses NaN
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
            trailing_offset=command.trailing_offset,
            trailing_offset_pct=command.trailing_offset_pct,
            lock_steps=command.lock_steps,
            reference_price=command.reference_price,
            parent_order_id=parent_order_id,
            oco_group=oco_group,
            replaces=replaces,
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
            trailing_offset=e.trailing_offset,
            trailing_offset_pct=e.trailing_offset_pct,
            lock_steps=tuple((Decimal(g), Decimal(k)) for g, k in e.lock_steps),
            reference_price=e.reference_price,
            parent_order_id=e.parent_order_id,
            oco_group=e.oco_group,
            replaces=e.replaces,
            correlation_id=e.correlation_id,
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
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_conditional(self) -> bool:
        """Held and triggered by the platform (stops, take-profits, trailing stops, ladders)."""
        return self.order_type in CONDITIONAL_TYPES

    @property
    def is_stop(self) -> bool:
        return self.order_type in STOP_TYPES

    @property
    def venue_type(self) -> OrderType:
        """What is sent to the venue once the order is live: a limit when it has a price, else a market order."""
        return OrderType.LIMIT if self.order_type in PRICED_TYPES else OrderType.MARKET

    @property
    def venue_client_id(self) -> str:
        """The client order id the venue knows the order by: our order id (36 characters, what Binance and
        Bybit allow), so every venue report names the order directly."""
        return self.id

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
            if event.quantity is not None:
                self.quantity = event.quantity
            self.peak_price = event.peak_price if event.peak_price is not None else self.peak_price
            self.lock_step = event.lock_step
        elif isinstance(event, OrderTriggered):
            self.trigger_price = event.trigger_price
        elif isinstance(event, OrderSubmitted):
            self.submitted_at = event.occurred_at
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
        self.apply(
            OrderDenied(
                **self._next(),
                reason=reason,
                correlation_id=correlation_id or self.correlation_id,
                causation_id=causation_id,
            )
        )

    def arm(
        self,
        trigger_price: Decimal,
        *,
        quantity: Decimal | None = None,
        peak_price: Decimal | None = None,
        lock_step: int = 0,
        correlation_id: str | None = None,
    ) -> None:
        self.apply(
            OrderArmed(
                **self._next(),
                trigger_price=trigger_price,
                quantity=quantity,
                peak_price=peak_price,
                lock_step=lock_step,
                correlation_id=correlation_id or self.correlation_id,
            )
        )

    def trigger(self, last_price: Decimal, correlation_id: str | None = None) -> None:
        assert self.trigger_price is not None
        self.apply(
            OrderTriggered(
                **self._next(),
                trigger_price=self.trigger_price,
                last_price=last_price,
                correlation_id=correlation_id or self.correlation_id,
            )
        )

    def reject(self, reason: str, correlation_id: str | None = None) -> None:
        self.apply(OrderRejected(**self._next(), reason=reason, correlation_id=correlation_id or self.correlation_id))

    def request_cancel(self, reason: str = "requested", correlation_id: str | None = None) -> None:
        self.apply(
            OrderPendingCancel(**self._next(), reason=reason, correlation_id=correlation_id or self.correlation_id)
        )

    def cancel_rejected(self, reason: str, correlation_id: str | None = None) -> None:
        self.apply(
            OrderCancelRejected(**self._next(), reason=reason, correlation_id=correlation_id or self.correlation_id)
        )

    def expire(self, correlation_id: str | None = None) -> None:
        self.apply(OrderExpired(**self._next(), correlation_id=correlation_id or self.correlation_id))

    def submit(self, correlation_id: str | None = None, causation_id: str | None = None) -> None:
        self.apply(
            OrderSubmitted(
                **self._next(), correlation_id=correlation_id or self.correlation_id, causation_id=causation_id
            )
        )

    def accept(self, exchange_order_id: str, correlation_id: str | None = None) -> None:
        self.apply(
            OrderAccepted(
                **self._next(),
                exchange_order_id=exchange_order_id,
                correlation_id=correlation_id or self.correlation_id,
            )
        )

    def fill(
        self,
        trade_id: str,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal = Decimal(0),
        correlation_id: str | None = None,
        *,
        fee_asset: str | None = None,
        liquidity: str | None = None,
    ) -> None:
        self.apply(
            OrderFilled(
                **self._next(),
                trade_id=trade_id,
                quantity=quantity,
                price=price,
                fee=fee,
                fee_asset=fee_asset,
                liquidity=liquidity,
                account_id=self.account_id,
                symbol=self.symbol,
                side=self.side,
                correlation_id=correlation_id or self.correlation_id,
            )
        )

    def cancel(
        self, reason: str = "requested", correlation_id: str | None = None, causation_id: str | None = None
    ) -> None:
        self.apply(
            OrderCanceled(
                **self._next(),
                reason=reason,
                correlation_id=correlation_id or self.correlation_id,
                causation_id=causation_id,
            )
        )
