"""Event wire format and stream naming."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.domain.orders import Order, OrderSide, OrderType, PlaceOrder
from core.messaging.codec import Codec, MalformedMessage
from core.messaging.streams import STREAM_SPECS, Stream, StreamNames, route


def initialized_event() -> object:
    cmd = PlaceOrder(
        account_id="a",
        user_id="user-7",
        client_order_id="c",
        exchange="binance",
        symbol="ETHUSDT",
        side=OrderSide.SELL,
        order_type=OrderType.LIMIT,
        quantity=Decimal("0.123456789012345678"),
        price=Decimal("3000.01"),
        correlation_id="cid",
    )
    return Order.place(cmd, "o").pending_events[0]


def test_envelope_roundtrip_keeps_decimals_exact_and_metadata() -> None:
    codec = Codec.create()
    event = initialized_event()
    decoded = codec.decode_envelope(codec.encode_envelope(event))  # type: ignore[arg-type]
    assert decoded == event
    assert decoded.quantity == Decimal("0.123456789012345678")  # type: ignore[attr-defined]
    assert decoded.correlation_id == "cid"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"{}",
        b'{"type":"NoSuchEvent","aggregate_type":"x","event":{}}',
        b'{"type":"OrderInitialized","aggregate_type":"order","event":{"aggregate_id":1}}',
        b"\xff\xfe",
    ],
)
def test_malformed_payloads_raise_malformed_message(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        Codec.create().decode_envelope(payload)


def test_every_stream_of_the_architecture_is_named_and_partitioned() -> None:
    expected = {
        "market.trades",
        "market.book_ticker",
        "market.candles",
        "order.commands",
        "order.events",
        "account.events",
        "user.events",
        "strategy.events",
        "risk.alerts",
        "risk.metrics",
    }
    assert {s.value for s in Stream} == expected
    assert all(STREAM_SPECS[s].partition_by == "symbol" for s in Stream if s.value.startswith("market."))
    assert STREAM_SPECS[Stream.ORDER_EVENTS].partition_by == "user"
    assert STREAM_SPECS[Stream.ACCOUNT_EVENTS].partition_by == "user"


def test_one_partition_key_always_maps_to_one_shard() -> None:
    names = StreamNames("p:", 8)
    keys = {names.key(Stream.ORDER_EVENTS, "user-42") for _ in range(10)}
    assert keys == {names.key(Stream.ORDER_EVENTS, "user-42")}
    spread = {names.key(Stream.ORDER_EVENTS, f"user-{i}") for i in range(200)}
    assert len(spread) == 8 and all(k.startswith("p:order.events:") for k in spread)


def test_order_events_route_to_order_stream_by_user() -> None:
    assert route(initialized_event()) == (Stream.ORDER_EVENTS, "user-7")  # type: ignore[arg-type]
