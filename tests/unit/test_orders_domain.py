"""The Order aggregate: transition table, fills, replay."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.domain.messages import DomainError, InvalidTransition
from core.domain.orders import (
    _ORDER_STATE_TABLE,
    TERMINAL_STATUSES,
    Order,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderPendingCancel,
    OrderSide,
    OrderStatus,
    OrderType,
    PlaceOrder,
)


def place(quantity: str = "1.0") -> Order:
    cmd = PlaceOrder(
        account_id="acc",
        user_id="u1",
        client_order_id="c1",
        exchange="binance",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal(quantity),
        price=Decimal("50000"),
        correlation_id="corr-1",
    )
    return Order.place(cmd, order_id="o1")


def test_place_order_records_initialized_event_with_metadata() -> None:
    order = place()
    (event,) = order.pending_events
    assert order.status == OrderStatus.INITIALIZED and order.version == 1
    assert event.event_type == "OrderInitialized"
    assert event.correlation_id == "corr-1" and event.causation_id is not None
    assert event.aggregate_id == "o1" and event.version == 1


def test_lifecycle_submit_accept_partial_then_full_fill_reaches_filled() -> None:
    order = place("1.0")
    order.submit()
    order.accept("ex-1")
    order.fill("t1", Decimal("0.4"), Decimal("50000"), fee=Decimal("0.1"))
    assert order.status == OrderStatus.PARTIALLY_FILLED
    order.fill("t2", Decimal("0.6"), Decimal("50010"))
    assert order.status == OrderStatus.FILLED
    assert order.filled_quantity == Decimal("1.0")
    assert order.avg_fill_price == Decimal("50006")
    assert order.fees == Decimal("0.1")
    assert order.exchange_order_id == "ex-1"


def test_fill_on_canceled_order_raises_invalid_transition() -> None:
    order = place()
    order.submit()
    order.cancel()
    with pytest.raises(InvalidTransition):
        order.fill("t1", Decimal("0.1"), Decimal("1"))
    assert order.status == OrderStatus.CANCELED


def test_duplicate_fill_is_rejected_and_state_unchanged() -> None:
    order = place()
    order.submit()
    order.fill("t1", Decimal("0.5"), Decimal("100"))
    with pytest.raises(InvalidTransition):
        order.fill("t1", Decimal("0.5"), Decimal("100"))
    assert order.filled_quantity == Decimal("0.5")


def test_overfill_is_rejected() -> None:
    order = place("1.0")
    order.submit()
    with pytest.raises(InvalidTransition):
        order.fill("t1", Decimal("1.5"), Decimal("100"))


def test_event_with_wrong_version_is_rejected() -> None:
    order = place()
    with pytest.raises(DomainError):
        order.apply(OrderAccepted(aggregate_id="o1", version=5, user_id="u1", exchange_order_id="x"))


def test_cancel_rejected_resumes_partially_filled() -> None:
    order = place("1.0")
    order.submit()
    order.fill("t1", Decimal("0.2"), Decimal("100"))
    order.apply(OrderPendingCancel(aggregate_id="o1", version=order.version + 1, user_id="u1"))
    order.apply(OrderCancelRejected(aggregate_id="o1", version=order.version + 1, user_id="u1", reason="too late"))
    assert order.status == OrderStatus.PARTIALLY_FILLED


def test_terminal_states_have_no_outgoing_transitions() -> None:
    assert not [key for key in _ORDER_STATE_TABLE if key[0] in TERMINAL_STATUSES]


def test_replay_of_events_rebuilds_identical_state() -> None:
    order = place("2")
    order.submit()
    order.accept("ex-9")
    order.fill("t1", Decimal("0.5"), Decimal("10"))
    order.apply(OrderPendingCancel(aggregate_id="o1", version=order.version + 1, user_id="u1"))
    order.apply(OrderCanceled(aggregate_id="o1", version=order.version + 1, user_id="u1", reason="user"))
    replayed = Order.from_events(list(order.pending_events))
    assert replayed.status == order.status == OrderStatus.CANCELED
    assert replayed.filled_quantity == order.filled_quantity
    assert replayed.version == order.version == 6
    assert replayed.persisted_version == 6 and replayed.pending_events == []


def test_non_positive_quantity_cannot_be_placed() -> None:
    with pytest.raises(DomainError):
        place("0")


def test_fill_event_with_non_positive_price_is_rejected() -> None:
    order = place()
    order.submit()
    with pytest.raises(DomainError):
        order.apply(
            OrderFilled(
                aggregate_id="o1",
                version=3,
                user_id="u1",
                trade_id="t",
                quantity=Decimal(1),
                price=Decimal(0),
            )
        )


def test_new_id_is_a_random_version_4_uuid_equal_to_its_parsed_form() -> None:
    import uuid

    from core.domain.messages import new_id

    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:50]:
        assert value.version == 4 and value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value and hash(uuid.UUID(str(value))) == hash(value)
