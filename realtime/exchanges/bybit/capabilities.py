"""Bybit v5 (spot): what it offers and its request limits.

Bybit limits per IP (600 requests per 5 s over HTTP) and, per UID, per endpoint per second; one request costs 1.
The shared bucket models the IP limit; ``BYBIT_UID_LIMITS_PER_S`` records the per-endpoint ceilings.
"""

from __future__ import annotations

from realtime.exchanges.base import Capabilities

BYBIT_UID_LIMITS_PER_S: dict[str, int] = {
    "place_order": 20,  # POST /v5/order/create (spot)
    "cancel_order": 20,  # POST /v5/order/cancel
    "fetch_order": 50,  # GET /v5/order/realtime, /v5/order/history
    "fetch_open_orders": 50,  # GET /v5/order/realtime
    "fetch_my_trades": 50,  # GET /v5/execution/list
    "fetch_balances": 50,  # GET /v5/account/wallet-balance
}

# Bybit v5 retCodes (common and spot) as error kinds.
BYBIT_ERROR_CODES: dict[str, str] = {
    "10002": "clock_skew",  # request time outside recv_window
    "10003": "authentication",  # invalid API key
    "10004": "authentication",  # bad signature
    "10005": "authentication",  # permission denied
    "10006": "rate_limited",  # too many visits
    "10018": "rate_limited",  # IP rate limit
    "10016": "unavailable",  # server error
    "110001": "order_not_found",
    "110007": "insufficient_funds",
    "170131": "insufficient_funds",  # spot: balance insufficient
    "170213": "order_not_found",  # spot: order does not exist
    "170136": "order_rejected",  # qty below minimum
    "170137": "order_rejected",  # qty decimals too long
    "170134": "order_rejected",  # price decimals too long
    "170140": "order_rejected",  # order value below minimum
    "170141": "order_rejected",  # duplicate clientOrderId
}

BYBIT_SPOT = Capabilities(
    exchange="bybit",
    native_stop_orders=True,  # conditional orders via triggerPrice
    oco_orders=False,  # spot TP/SL rides on one order; there is no OCO list
    reduce_only=False,  # derivatives only
    bucket_capacity=600,
    bucket_window_s=5.0,
    request_weights={},  # every request weighs 1
    max_client_order_id_len=36,  # orderLinkId
    error_codes=BYBIT_ERROR_CODES,
)
