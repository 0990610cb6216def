"""Binance spot: what it offers and the request weight of each REST call the adapter makes (per IP, per minute)."""

from __future__ import annotations

from realtime.exchanges.base import Capabilities

# Weights from Binance's spot REST docs for the endpoints behind each adapter operation.
BINANCE_SPOT_WEIGHTS: dict[str, int] = {
    "load_markets": 20,  # GET /api/v3/exchangeInfo
    "fetch_balances": 20,  # GET /api/v3/account
    "place_order": 1,  # POST /api/v3/order
    "cancel_order": 1,  # DELETE /api/v3/order
    "fetch_order": 4,  # GET /api/v3/order
    "fetch_open_orders": 6,  # GET /api/v3/openOrders with a symbol
    "fetch_open_orders_all": 80,  # ... without one
    "fetch_my_trades": 20,  # GET /api/v3/myTrades (5 with orderId)
    "fetch_all_orders": 20,  # GET /api/v3/allOrders
    "fetch_time": 1,  # GET /api/v3/time
    "listen_key": 2,  # POST/PUT/DELETE /api/v3/userDataStream
}

# GET /api/v3/depth: weight by limit.
BINANCE_DEPTH_WEIGHTS: tuple[tuple[int, int], ...] = ((100, 5), (500, 25), (1000, 50), (5000, 250))


def depth_weight(limit: int) -> int:
    """Weight of an order-book snapshot of ``limit`` levels."""
    return next((w for max_limit, w in BINANCE_DEPTH_WEIGHTS if limit <= max_limit), BINANCE_DEPTH_WEIGHTS[-1][1])


# Binance error codes whose meaning ccxt leaves generic or gets too broad (e.g. -1013 "Filter failure: NOTIONAL").
BINANCE_ERROR_CODES: dict[str, str] = {
    "-1001": "unavailable",  # internal error
    "-1003": "rate_limited",  # too much request weight / IP banned
    "-1013": "order_rejected",  # filter failure
    "-1021": "clock_skew",  # timestamp outside recvWindow
    "-1022": "authentication",  # bad signature
    "-1100": "order_rejected",
    "-1111": "order_rejected",  # precision over the maximum
    "-1121": "order_rejected",  # invalid symbol
    "-2011": "order_not_found",  # cancel of an unknown order
    "-2013": "order_not_found",
    "-2014": "authentication",
    "-2015": "authentication",
}

BINANCE_SPOT = Capabilities(
    exchange="binance",
    native_stop_orders=True,  # STOP_LOSS(_LIMIT) / TAKE_PROFIT(_LIMIT)
    oco_orders=True,  # POST /api/v3/orderList/oco
    reduce_only=False,  # spot has no positions to reduce
    bucket_capacity=6000,  # REQUEST_WEIGHT per minute
    bucket_window_s=60.0,
    request_weights=BINANCE_SPOT_WEIGHTS,
    max_client_order_id_len=36,
    error_codes=BINANCE_ERROR_CODES,
)
