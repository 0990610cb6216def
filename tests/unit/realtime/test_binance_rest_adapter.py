"""The native Binance REST adapter without a network: signing, Binance's JSON -> Decimal values, error mapping."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from core.domain.orders import OrderSide, OrderStatus, OrderType
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
    OrderRequest,
    RateLimited,
)
from realtime.exchanges.binance import BINANCE_SPOT, BinanceRestAdapter, build_binance_rest_adapter
from realtime.exchanges.binance.rest import (
    binance_error,
    dec,
    encode_params,
    is_transient,
    parse_balances,
    parse_market,
    parse_order,
    parse_trade,
    sign,
)

D = Decimal
# Binance's documented SIGNED example (spot REST API, "SIGNED endpoint examples for POST /api/v3/order").
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
CREDENTIALS = ExchangeCredentials("binanceKeyAbcdefgh12345678", "binance-secret-value")

FULL_MARKET_BUY = {
    "symbol": "BTCUSDT",
    "orderId": 28,
    "orderListId": -1,
    "clientOrderId": "cid-mkt",
    "transactTime": 1507725176595,
    "price": "0.00000000",
    "origQty": "0.03000000",
    "executedQty": "0.03000000",
    "origQuoteOrderQty": "0.00000000",
    "cummulativeQuoteQty": "1800.30000000",
    "status": "FILLED",
    "timeInForce": "GTC",
    "type": "MARKET",
    "side": "BUY",
    "workingTime": 1507725176595,
    "selfTradePreventionMode": "NONE",
    "fills": [
        {"price": "60000.00000000", "qty": "0.02000000", "commission": "0.00002000", "commissionAsset": "BTC"},
        {"price": "60030.00000000", "qty": "0.01000000", "commission": "0.00001000", "commissionAsset": "BTC"},
    ],
}


def query_order(**changes: object) -> dict[str, object]:
    """``GET /api/v3/order`` for a resting limit buy, with ``changes`` applied."""
    order: dict[str, object] = {
        "symbol": "BTCUSDT",
        "orderId": 1,
        "orderListId": -1,
        "clientOrderId": "cid-limit",
        "price": "50000.00000000",
        "origQty": "0.02000000",
        "executedQty": "0.00000000",
        "cummulativeQuoteQty": "0.00000000",
        "status": "NEW",
        "timeInForce": "GTC",
        "type": "LIMIT",
        "side": "BUY",
        "stopPrice": "0.00000000",
        "time": 1499827319559,
        "updateTime": 1499827319560,
        "isWorking": True,
    }
    return order | changes


def test_signature_matches_binances_documented_example() -> None:
    assert sign(DOC_SECRET.encode(), DOC_QUERY) == DOC_SIGNATURE


def test_params_keep_their_order_and_encode_only_what_needs_it() -> None:
    params = [("symbol", "LTCBTC"), ("side", "BUY"), ("quantity", "1"), ("price", "0.1")]
    assert encode_params([*params[:2], ("type", "LIMIT"), ("timeInForce", "GTC"), *params[2:]]) == (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    )
    assert encode_params([("newClientOrderId", "grid:7/a.b_c-d")]) == "newClientOrderId=grid%3A7%2Fa.b_c-d"


def test_binance_padded_numbers_become_plain_decimals() -> None:
    assert [dec(t) for t in ("0.10000000", "50000.00000000", "0.00000000", "100", None)] == [
        D("0.1"),
        D(50000),
        D(0),
        D(100),
        D(0),
    ]
    assert str(dec("50000.00000000")) == "50000" and str(dec("100")) == "100"


def test_full_market_answer_gives_fills_fee_and_average_price() -> None:
    state = parse_order(FULL_MARKET_BUY)
    assert (state.status, state.type, state.side, state.price) == (
        OrderStatus.FILLED,
        OrderType.MARKET,
        OrderSide.BUY,
        None,
    )
    assert (state.exchange_order_id, state.client_order_id, state.updated_ms) == ("28", "cid-mkt", 1507725176595)
    assert (state.quantity, state.filled_qty, state.avg_price) == (D("0.03"), D("0.03"), D("60010"))
    assert (state.fee, state.fee_asset) == (D("0.00003"), "BTC")


def test_queried_limit_order_without_fills_has_price_and_no_fee() -> None:
    state = parse_order(query_order())
    assert (state.status, state.type, state.price, state.filled_qty) == (
        OrderStatus.ACCEPTED,
        OrderType.LIMIT,
        D(50000),
        D(0),
    )
    assert (state.avg_price, state.fee, state.fee_asset, state.updated_ms) == (None, None, None, 1499827319560)
    assert state.is_open


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("NEW", OrderStatus.ACCEPTED),
        ("PARTIALLY_FILLED", OrderStatus.PARTIALLY_FILLED),
        ("FILLED", OrderStatus.FILLED),
        ("CANCELED", OrderStatus.CANCELED),
        ("PENDING_CANCEL", OrderStatus.CANCELED),
        ("EXPIRED", OrderStatus.EXPIRED),
        ("EXPIRED_IN_MATCH", OrderStatus.EXPIRED),
        ("REJECTED", OrderStatus.REJECTED),
    ],
)
def test_binance_statuses_map_to_ours(wire: str, expected: OrderStatus) -> None:
    assert parse_order(query_order(status=wire)).status is expected


def test_partial_fill_averages_the_quote_spent() -> None:
    state = parse_order(query_order(status="PARTIALLY_FILLED", executedQty="0.01000000", cummulativeQuoteQty="499.9"))
    assert (state.status, state.filled_qty, state.avg_price) == (OrderStatus.PARTIALLY_FILLED, D("0.01"), D("49990"))


def test_cancel_answer_names_the_order_by_its_original_client_id() -> None:
    cancel = query_order(status="CANCELED", clientOrderId="cancel-123", origClientOrderId="cid-limit")
    cancel["transactTime"] = 1499827320000
    state = parse_order(cancel)
    assert (state.client_order_id, state.status, state.updated_ms) == ("cid-limit", OrderStatus.CANCELED, 1499827320000)


def test_limit_maker_and_stop_types_keep_their_meaning() -> None:
    assert parse_order(query_order(type="LIMIT_MAKER")).type is OrderType.LIMIT
    stop = parse_order(query_order(type="STOP_LOSS", price="0.00000000", side="SELL"))
    assert (stop.type, stop.price, stop.side) == (OrderType.STOP_MARKET, None, OrderSide.SELL)
    assert parse_order(query_order(type="TAKE_PROFIT_LIMIT")).type is OrderType.TAKE_PROFIT_LIMIT


def test_exchange_info_filters_become_market_grid_either_notional_filter() -> None:
    symbol: dict[str, Any] = {
        "symbol": "ETHBTC",
        "status": "BREAK",
        "baseAsset": "ETH",
        "quoteAsset": "BTC",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.00000100", "tickSize": "0.00000100"},
            {"filterType": "LOT_SIZE", "minQty": "0.00010000", "stepSize": "0.00010000"},
            {"filterType": "MIN_NOTIONAL", "minNotional": "0.00010000", "applyToMarket": True},
        ],
    }
    market = parse_market(symbol)
    assert (market.symbol, market.base, market.quote, market.active) == ("ETHBTC", "ETH", "BTC", False)
    assert (market.tick_size, market.step_size, market.min_qty, market.min_notional) == (
        D("0.000001"),
        D("0.0001"),
        D("0.0001"),
        D("0.0001"),
    )
    symbol["filters"][2] = {"filterType": "NOTIONAL", "minNotional": "5.00000000", "maxNotional": "9000000.00000000"}
    assert parse_market(symbol | {"status": "TRADING"}).min_notional == D(5)
    assert parse_market(symbol | {"status": "TRADING"}).active


def test_account_balances_and_my_trades_parse_to_decimals() -> None:
    account = {"balances": [{"asset": "BTC", "free": "0.40000000", "locked": "0.10000000"}]}
    btc = parse_balances(account)["BTC"]
    assert (btc.free, btc.locked, btc.total) == (D("0.4"), D("0.1"), D("0.5"))
    trade = parse_trade(
        {
            "symbol": "BTCUSDT",
            "id": 28457,
            "orderId": 100234,
            "price": "4.00000100",
            "qty": "12.00000000",
            "quoteQty": "48.000012",
            "commission": "10.10000000",
            "commissionAsset": "BNB",
            "time": 1499865549590,
            "isBuyer": False,
            "isMaker": True,
            "isBestMatch": True,
        }
    )
    assert (trade.trade_id, trade.exchange_order_id, trade.side, trade.is_maker) == (
        "28457",
        "100234",
        OrderSide.SELL,
        True,
    )
    assert (trade.price, trade.qty, trade.fee, trade.fee_asset, trade.ts_ms) == (
        D("4.000001"),
        D(12),
        D("10.1"),
        "BNB",
        1499865549590,
    )


def answer(code: int, msg: str) -> bytes:
    return orjson.dumps({"code": code, "msg": msg})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, answer(-2010, "Account has insufficient balance for requested action."), InsufficientFunds),
        (400, answer(-2010, "Duplicate order sent."), OrderRejected),
        (400, answer(-2010, "Order would immediately match and take."), OrderRejected),
        (400, answer(-1013, "Filter failure: NOTIONAL"), OrderRejected),
        (400, answer(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed."), OrderRejected),
        (400, answer(-1121, "Invalid symbol."), OrderRejected),
        (400, answer(-2011, "Unknown order sent."), OrderNotFound),
        (400, answer(-2013, "Order does not exist."), OrderNotFound),
        (401, answer(-2015, "Invalid API-key, IP, or permissions for action."), AuthenticationFailed),
        (401, answer(-2014, "API-key format invalid."), AuthenticationFailed),
        (400, answer(-1022, "Signature for this request is not valid."), AuthenticationFailed),
        (400, answer(-1021, "Timestamp for this request is outside of the recvWindow."), ClockSkew),
        (500, answer(-1001, "Internal error; unable to process your request. Please try again."), ExchangeUnavailable),
        (503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", ExchangeUnavailable),
        (502, b"", ExchangeUnavailable),
        (401, b"Unauthorized", AuthenticationFailed),
        (400, answer(-9999, "Something new."), ExchangeError),
    ],
)
def test_binance_answers_map_to_domain_errors(status: int, body: bytes, expected: type[ExchangeError]) -> None:
    error = binance_error(status, body, BINANCE_SPOT)
    assert type(error) is expected
    if body.startswith(b"{"):
        code = str(orjson.loads(body)["code"])
        assert error.code == code and code in str(error)


@pytest.mark.parametrize("status", [429, 418])
def test_rate_limit_answers_carry_retry_after_and_are_retried(status: int) -> None:
    body = answer(-1003, "Too much request weight used; current limit is 6000 request weight per 1 MINUTE.")
    limited = binance_error(status, body, BINANCE_SPOT, retry_after="60")
    assert isinstance(limited, RateLimited) and limited.retry_after == 60.0 and limited.code == "-1003"
    assert is_transient(limited)
    too_many_orders = binance_error(status, answer(-1015, "Too many new orders."), BINANCE_SPOT, retry_after="x")
    assert isinstance(too_many_orders, RateLimited) and too_many_orders.retry_after is None


def test_only_outages_and_rate_limits_are_transient() -> None:
    assert is_transient(binance_error(503, b"<html></html>"))
    assert is_transient(ExchangeUnavailable("connection reset"))
    for refusal in (
        answer(-2010, "Account has insufficient balance for requested action."),
        answer(-1021, "Timestamp for this request is outside of the recvWindow."),
        answer(-2013, "Order does not exist."),
        answer(-1022, "Signature for this request is not valid."),
    ):
        assert not is_transient(binance_error(400, refusal))


async def test_adapter_satisfies_the_protocol_and_shows_only_the_masked_key() -> None:
    adapter = build_binance_rest_adapter(CREDENTIALS, "http://127.0.0.1:1/")
    try:
        assert isinstance(adapter, ExchangeAdapter) and isinstance(adapter, BinanceRestAdapter)
        assert adapter.capabilities is BINANCE_SPOT
        shown = f"{adapter!r} {adapter}"
        assert CREDENTIALS.api_key not in shown and CREDENTIALS.api_secret not in shown
        assert "bina…5678" in shown and "http://127.0.0.1:1" in shown
    finally:
        await adapter.close()


async def test_stop_orders_are_refused_before_anything_is_sent() -> None:
    adapter = build_binance_rest_adapter(CREDENTIALS, "http://127.0.0.1:1")  # nothing listens: a request would fail
    stop = OrderRequest("cid-stop", "BTCUSDT", OrderSide.SELL, OrderType.STOP_MARKET, D("0.01"))
    try:
        with pytest.raises(OrderRejected, match="market and limit orders only"):
            await adapter.place_order(stop)
    finally:
        await adapter.close()


async def test_unreachable_venue_is_unavailable_after_the_retries() -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    adapter = build_binance_rest_adapter(CREDENTIALS, "http://127.0.0.1:1", max_retries=2, sleep=record)
    try:
        with pytest.raises(ExchangeUnavailable, match="/api/v3/account"):
            await adapter.fetch_balances()
    finally:
        await adapter.close()
    assert len(sleeps) == 2 and 0.125 <= sleeps[0] <= 0.25 and 0.25 <= sleeps[1] <= 0.5
