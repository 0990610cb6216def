"""Bybit v5 private payloads become the same account events as Binance's, with stable ids."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any

import pytest

from core.domain.accounts import ExchangeBalanceReported, ExchangeFillReported, ExchangeOrderReported
from realtime.accounts.bybit_stream import BybitMalformedReport, auth_args, parse_bybit_private
from realtime.accounts.private_stream import LinkedAccount
from realtime.accounts.user_stream import MalformedReport

ACCOUNT = LinkedAccount(account_id="acc-1", user_id="user-1", api_key="k", exchange="bybit")


def order_msg(status: str = "PartiallyFilled", cum: str = "0.4", **extra: Any) -> dict[str, Any]:
    item = {
        "category": "spot",
        "symbol": "ETHUSDT",
        "orderId": "1690000000000000001",
        "orderLinkId": "my-1",
        "side": "Buy",
        "orderType": "Limit",
        "price": "2000.5",
        "qty": "1",
        "orderStatus": status,
        "cumExecQty": cum,
        "rejectReason": "EC_NoError",
        "updatedTime": "1700000000123",
    } | extra
    return {"id": "m1", "topic": "order", "creationTime": 1700000000124, "data": [item]}


EXECUTION = {
    "id": "m2",
    "topic": "execution",
    "creationTime": 1700000000125,
    "data": [
        {
            "category": "spot",
            "symbol": "ETHUSDT",
            "orderId": "1690000000000000001",
            "orderLinkId": "my-1",
            "side": "Buy",
            "execId": "e-77",
            "execType": "Trade",
            "execPrice": "2000.5",
            "execQty": "0.4",
            "execFee": "0.0004",
            "feeCurrency": "ETH",
            "isMaker": True,
            "execTime": "1700000000120",
        }
    ],
}

WALLET = {
    "id": "m3",
    "topic": "wallet",
    "creationTime": 1700000000130,
    "data": [
        {
            "accountType": "UNIFIED",
            "coin": [
                {"coin": "USDT", "walletBalance": "1000", "locked": "200"},
                {"coin": "ETH", "walletBalance": "0.4", "locked": "0"},
            ],
        }
    ],
}


def test_order_maps_status_and_fields() -> None:
    [event] = parse_bybit_private(ACCOUNT, order_msg())
    assert isinstance(event, ExchangeOrderReported)
    assert (event.status, event.side, event.order_type) == ("PARTIALLY_FILLED", "buy", "limit")
    assert (event.exchange_order_id, event.client_order_id, event.symbol) == ("1690000000000000001", "my-1", "ETHUSDT")
    assert event.filled_quantity == Decimal("0.4") and event.price == Decimal("2000.5")
    assert event.reason is None and event.exchange == "bybit" and event.aggregate_id == "acc-1"


@pytest.mark.parametrize(
    ("bybit", "ours"),
    [
        ("New", "NEW"),
        ("PartiallyFilled", "PARTIALLY_FILLED"),
        ("Filled", "FILLED"),
        ("Cancelled", "CANCELED"),
        ("PartiallyFilledCanceled", "CANCELED"),
        ("Rejected", "REJECTED"),
    ],
)
def test_status_mapping(bybit: str, ours: str) -> None:
    [event] = parse_bybit_private(ACCOUNT, order_msg(bybit))
    assert isinstance(event, ExchangeOrderReported) and event.status == ours


def test_ids_are_stable_and_distinct() -> None:
    first = parse_bybit_private(ACCOUNT, order_msg())[0].event_id
    assert parse_bybit_private(ACCOUNT, order_msg())[0].event_id == first
    assert parse_bybit_private(ACCOUNT, order_msg("Filled", "1"))[0].event_id != first
    assert parse_bybit_private(ACCOUNT, EXECUTION)[0].event_id == parse_bybit_private(ACCOUNT, EXECUTION)[0].event_id


def test_execution_is_a_fill() -> None:
    [fill] = parse_bybit_private(ACCOUNT, EXECUTION)
    assert isinstance(fill, ExchangeFillReported)
    assert (fill.trade_id, fill.side, fill.fee_asset, fill.is_maker) == ("e-77", "buy", "ETH", True)
    assert (fill.quantity, fill.price, fill.fee) == (Decimal("0.4"), Decimal("2000.5"), Decimal("0.0004"))
    assert fill.exchange_ts_ms == 1700000000120


def test_non_trade_executions_are_skipped() -> None:
    funding = {**EXECUTION, "data": [{**EXECUTION["data"][0], "execType": "Funding"}]}  # type: ignore[index]
    assert parse_bybit_private(ACCOUNT, funding) == []


def test_wallet_gives_free_and_locked() -> None:
    balances = [b for b in parse_bybit_private(ACCOUNT, WALLET) if isinstance(b, ExchangeBalanceReported)]
    assert len(balances) == 2
    by_asset = {b.asset: (b.free, b.locked) for b in balances}
    assert by_asset == {"USDT": (Decimal(800), Decimal(200)), "ETH": (Decimal("0.4"), Decimal(0))}


def test_unknown_topics_and_replies_are_ignored() -> None:
    assert parse_bybit_private(ACCOUNT, {"op": "pong", "args": ["1"]}) == []
    assert parse_bybit_private(ACCOUNT, {"topic": "greeks", "data": []}) == []


@pytest.mark.parametrize(
    "msg",
    [
        {"topic": "order", "data": [{"orderId": "1"}]},
        {"topic": "order"},
        {"topic": "execution", "data": "nope"},
        order_msg(cumExecQty="abc"),
        order_msg("Weird"),
        {"topic": "wallet", "data": [{"coin": [{"coin": "BTC"}]}], "creationTime": 1},
    ],
)
def test_malformed_raises(msg: dict[str, Any]) -> None:
    with pytest.raises(BybitMalformedReport) as info:
        parse_bybit_private(ACCOUNT, msg)
    assert isinstance(info.value, MalformedReport) and isinstance(info.value, ValueError)


def test_auth_signature_is_bybits_scheme() -> None:
    key, expires, signature = auth_args("key", "secret", 1700000000000)
    expected = hmac.new(b"secret", b"GET/realtime1700000000000", hashlib.sha256).hexdigest()
    assert (key, expires, signature) == ("key", 1700000000000, expected)
