"""Venue capability data and ccxt -> domain error mapping (Bybit has no REST simulator: no network here)."""

from __future__ import annotations

import json

import ccxt.async_support as ccxt
import pytest

from core.security.account_secrets import ExchangeCredentials
from realtime.exchanges.base import (
    AuthenticationFailed,
    ClockSkew,
    ExchangeAdapter,
    ExchangeError,
    ExchangeUnavailable,
    InsufficientFunds,
    OrderNotFound,
    OrderRejected,
    RateLimited,
)
from realtime.exchanges.binance import BINANCE_SPOT
from realtime.exchanges.binance.capabilities import depth_weight
from realtime.exchanges.bybit import BYBIT_SPOT, build_bybit_adapter
from realtime.exchanges.ccxt_adapter import is_transient, map_ccxt_error

CREDENTIALS = ExchangeCredentials("bybitKeyAbcdefgh12345678", "bybit-secret-value")


def test_binance_weights_match_the_spot_rest_docs() -> None:
    assert (BINANCE_SPOT.bucket_capacity, BINANCE_SPOT.bucket_window_s, BINANCE_SPOT.refill_per_s) == (6000, 60, 100)
    weights = {op: BINANCE_SPOT.weight(op) for op in ("place_order", "fetch_open_orders", "fetch_open_orders_all")}
    assert weights == {"place_order": 1, "fetch_open_orders": 6, "fetch_open_orders_all": 80}
    assert (BINANCE_SPOT.weight("fetch_my_trades"), BINANCE_SPOT.weight("load_markets")) == (20, 20)
    assert [depth_weight(n) for n in (5, 100, 500, 1000, 5000)] == [5, 5, 25, 50, 250]
    assert BINANCE_SPOT.oco_orders and not BINANCE_SPOT.reduce_only


def test_bybit_counts_every_request_as_one_within_its_ip_limit() -> None:
    assert (BYBIT_SPOT.bucket_capacity, BYBIT_SPOT.bucket_window_s, BYBIT_SPOT.refill_per_s) == (600, 5, 120)
    assert BYBIT_SPOT.weight("place_order") == BYBIT_SPOT.weight("fetch_balances") == 1
    assert BYBIT_SPOT.native_stop_orders and not BYBIT_SPOT.oco_orders


async def test_bybit_adapter_builds_for_spot_and_masks_its_key() -> None:
    adapter = build_bybit_adapter(CREDENTIALS, urls={"spot": "http://127.0.0.1:1"})
    try:
        assert isinstance(adapter, ExchangeAdapter)
        assert CREDENTIALS.api_key not in repr(adapter) and CREDENTIALS.api_secret not in repr(adapter)
        assert adapter._exchange.options["defaultType"] == "spot"
        assert adapter._exchange.options["fetchMarkets"]["types"] == ["spot"]
        assert adapter._exchange.urls["api"]["spot"] == "http://127.0.0.1:1"
    finally:
        await adapter.close()


def ccxt_error_from(exchange: ccxt.Exchange, status: int, body: dict[str, object]) -> Exception:
    """The exception real ccxt raises for this answer (its own error handling, no network)."""
    text = json.dumps(body)
    try:
        exchange.handle_errors(status, "", "https://x/api", "POST", {}, text, body, {}, "")
        exchange.handle_http_status_code(status, "", "https://x/api", "POST", text)
    except ccxt.BaseError as error:
        raised: Exception = error
        return raised
    raise AssertionError("ccxt raised nothing")


@pytest.mark.parametrize(
    ("ret_code", "expected"),
    [
        (170131, InsufficientFunds),
        (170213, OrderNotFound),
        (170140, OrderRejected),
        (10003, AuthenticationFailed),
        (10002, ClockSkew),
        (10006, RateLimited),
    ],
)
async def test_bybit_answers_map_to_domain_errors(ret_code: int, expected: type[ExchangeError]) -> None:
    exchange = ccxt.bybit()
    try:
        error = ccxt_error_from(exchange, 200, {"retCode": ret_code, "retMsg": "refused", "result": {}})
    finally:
        await exchange.close()
    mapped = map_ccxt_error(error, BYBIT_SPOT)
    assert type(mapped) is expected and mapped.code == str(ret_code)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (-2010, "Account has insufficient balance for requested action.", InsufficientFunds),
        (-1013, "Filter failure: NOTIONAL", OrderRejected),
        (-2013, "Order does not exist.", OrderNotFound),
        (-2015, "Invalid API-key, IP, or permissions for action.", AuthenticationFailed),
        (-1021, "Timestamp for this request is outside of the recvWindow.", ClockSkew),
    ],
)
async def test_binance_answers_map_to_domain_errors(code: int, message: str, expected: type[ExchangeError]) -> None:
    exchange = ccxt.binance()
    try:
        error = ccxt_error_from(exchange, 400, {"code": code, "msg": message})
    finally:
        await exchange.close()
    assert type(map_ccxt_error(error, BINANCE_SPOT)) is expected


def test_class_mapping_applies_without_a_venue_code_and_only_outages_are_retried() -> None:
    limited = map_ccxt_error(ccxt.RateLimitExceeded("slow down"), None, retry_after=3.0)
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0
    assert isinstance(map_ccxt_error(ccxt.RequestTimeout("timed out")), ExchangeUnavailable)
    assert isinstance(map_ccxt_error(ccxt.InvalidNonce("nonce")), ClockSkew)
    assert type(map_ccxt_error(ccxt.ExchangeError("something"))) is ExchangeError
    assert is_transient(ccxt.ExchangeNotAvailable("503")) and is_transient(ccxt.DDoSProtection("429"))
    assert not is_transient(ccxt.InvalidNonce("skew")) and not is_transient(ccxt.InsufficientFunds("poor"))
