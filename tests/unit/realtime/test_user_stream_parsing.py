"""Binance user-data payloads become account events with stable ids."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.domain.accounts import ExchangeBalanceReported, ExchangeFillReported, ExchangeOrderReported
from core.messaging.codec import Codec
from core.messaging.streams import Stream, route
from realtime.accounts.private_stream import LinkedAccount
from realtime.accounts.user_stream import MalformedReport, parse_user_event

ACCOUNT = LinkedAccount(account_id="acc-1", user_id="user-1", api_key="k")

TRADE_REPORT = {
    "e": "executionReport",
    "E": 1499405658658,
    "s": "ETHBTC",
    "c": "mUvoqJxFIILMdfAW5iGSOW",
    "S": "BUY",
    "o": "LIMIT",
    "f": "GTC",
    "q": "1.00000000",
    "p": "0.10264410",
    "P": "0.00000000",
    "F": "0.00000000",
    "g": -1,
    "C": "",
    "x": "TRADE",
    "X": "PARTIALLY_FILLED",
    "r": "NONE",
    "i": 4293153,
    "l": "0.40000000",
    "z": "0.40000000",
    "L": "0.10264410",
    "n": "0.00040000",
    "N": "ETH",
    "T": 1499405658657,
    "t": 12345,
    "I": 8641984,
    "w": False,
    "m": True,
    "M": True,
    "O": 1499405658657,
    "Z": "0.04105764",
}


def test_trade_execution_report_gives_order_update_and_fill() -> None:
    order, fill = parse_user_event(ACCOUNT, TRADE_REPORT)
    assert isinstance(order, ExchangeOrderReported) and isinstance(fill, ExchangeFillReported)
    assert order.status == "PARTIALLY_FILLED" and order.filled_quantity == Decimal("0.4")
    assert fill.trade_id == "12345" and fill.quantity == Decimal("0.4") and fill.price == Decimal("0.10264410")
    assert fill.fee == Decimal("0.0004") and fill.fee_asset == "ETH" and fill.is_maker
    assert route(fill) == (Stream.ACCOUNT_EVENTS, "user-1")


def test_the_same_report_twice_has_the_same_event_ids() -> None:
    first = parse_user_event(ACCOUNT, TRADE_REPORT)
    again = parse_user_event(ACCOUNT, dict(TRADE_REPORT))
    assert [e.event_id for e in first] == [e.event_id for e in again]
    other = parse_user_event(ACCOUNT, {**TRADE_REPORT, "t": 12346, "z": "0.80000000"})
    assert {e.event_id for e in other}.isdisjoint({e.event_id for e in first})


def test_balance_update_and_codec_roundtrip() -> None:
    (balance,) = parse_user_event(
        ACCOUNT,
        {
            "e": "outboundAccountPosition",
            "E": 1564034571105,
            "u": 1564034571073,
            "B": [{"a": "ETH", "f": "10000.000000", "l": "1.5"}],
        },
    )
    assert isinstance(balance, ExchangeBalanceReported) and balance.locked == Decimal("1.5")
    codec = Codec.create()
    assert codec.decode_envelope(codec.encode_envelope(balance)) == balance


@pytest.mark.parametrize(
    "payload",
    [{"e": "executionReport"}, {**TRADE_REPORT, "l": "abc"}, {"e": "outboundAccountPosition", "E": 1, "B": 5}],
)
def test_malformed_reports_raise_malformed_report(payload: dict[str, object]) -> None:
    with pytest.raises(MalformedReport):
        parse_user_event(ACCOUNT, payload)


def test_unknown_report_kinds_are_ignored() -> None:
    assert parse_user_event(ACCOUNT, {"e": "balanceUpdate", "E": 1}) == []
