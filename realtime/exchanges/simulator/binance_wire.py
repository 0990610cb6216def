"""Binance spot JSON shapes for the simulator: exchangeInfo symbols, orders, fills, klines and user-data events.

Decimals go out as Binance writes them: fixed-point text with 8 places (``"0.10000000"``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from realtime.exchanges.simulator.candles import SimTrade
from realtime.exchanges.simulator.engine_types import (
    MARKET,
    BalancesUpdated,
    Fill,
    Order,
    OrderUpdated,
    SymbolRules,
)
from realtime.exchanges.simulator.market import Kline

_EIGHT = Decimal("0.00000001")
Json = dict[str, Any]


def fmt(value: Decimal) -> str:
    return format(value.quantize(_EIGHT), "f")


def symbol_info(rules: SymbolRules) -> Json:
    """One ``exchangeInfo`` symbol, filters in Binance's order and shape."""
    if rules.notional_filter == "MIN_NOTIONAL":
        notional: Json = {
            "filterType": "MIN_NOTIONAL",
            "minNotional": fmt(rules.min_notional),
            "applyToMarket": rules.apply_min_to_market,
            "avgPriceMins": 5,
        }
    else:
        notional = {
            "filterType": "NOTIONAL",
            "minNotional": fmt(rules.min_notional),
            "applyMinToMarket": rules.apply_min_to_market,
            "maxNotional": fmt(rules.max_notional),
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        }
    return {
        "symbol": rules.symbol,
        "status": "TRADING",
        "baseAsset": rules.base_asset,
        "baseAssetPrecision": rules.base_precision,
        "quoteAsset": rules.quote_asset,
        "quotePrecision": rules.quote_precision,
        "quoteAssetPrecision": rules.quote_precision,
        "baseCommissionPrecision": rules.base_precision,
        "quoteCommissionPrecision": rules.quote_precision,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "amendAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(rules.min_price),
                "maxPrice": fmt(rules.max_price),
                "tickSize": fmt(rules.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(rules.min_qty),
                "maxQty": fmt(rules.max_qty),
                "stepSize": fmt(rules.step_size),
            },
            notional,
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _order_core(order: Order) -> Json:
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
    }


def _order_state(order: Order) -> Json:
    return {
        "price": fmt(order.price),
        "origQty": fmt(order.orig_qty),
        "executedQty": fmt(order.executed_qty),
        "origQuoteOrderQty": fmt(order.orig_quote_qty),
        "cummulativeQuoteQty": fmt(order.cumulative_quote_qty),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
    }


def fill_json(fill: Fill) -> Json:
    return {
        "price": fmt(fill.price),
        "qty": fmt(fill.qty),
        "commission": fmt(fill.commission),
        "commissionAsset": fill.commission_asset,
        "tradeId": fill.trade_id,
    }


def new_order_response(order: Order, response_type: str, fills: list[Fill]) -> Json:
    """``POST /api/v3/order`` answer for ``newOrderRespType`` ACK, RESULT or FULL."""
    body = {**_order_core(order), "transactTime": order.time_ms}
    if response_type == "ACK":
        return body
    body |= _order_state(order) | {"workingTime": order.time_ms, "selfTradePreventionMode": "NONE"}
    if response_type == "FULL":
        body["fills"] = [fill_json(f) for f in fills]
    return body


def order_json(order: Order) -> Json:
    """``GET /api/v3/order`` / ``openOrders`` / ``allOrders`` entry."""
    return {
        **_order_core(order),
        **_order_state(order),
        "stopPrice": fmt(Decimal(0)),
        "icebergQty": fmt(Decimal(0)),
        "time": order.time_ms,
        "updateTime": order.update_time_ms,
        "isWorking": order.type != MARKET,
        "workingTime": order.time_ms,
        "selfTradePreventionMode": "NONE",
    }


def cancel_json(order: Order, cancel_client_order_id: str) -> Json:
    """``DELETE /api/v3/order`` answer: ``clientOrderId`` is the cancel's id, ``origClientOrderId`` the order's."""
    return {
        "symbol": order.symbol,
        "origClientOrderId": order.client_order_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_order_id,
        "transactTime": order.update_time_ms,
        **_order_state(order),
        "selfTradePreventionMode": "NONE",
    }


def my_trade_json(fill: Fill) -> Json:
    return {
        "symbol": fill.symbol,
        "id": fill.trade_id,
        "orderId": fill.order_id,
        "orderListId": -1,
        "price": fmt(fill.price),
        "qty": fmt(fill.qty),
        "quoteQty": fmt(fill.quote_qty),
        "commission": fmt(fill.commission),
        "commissionAsset": fill.commission_asset,
        "time": fill.time_ms,
        "isBuyer": fill.is_buyer,
        "isMaker": fill.is_maker,
        "isBestMatch": True,
    }


def public_trade_json(trade: SimTrade) -> Json:
    return {
        "id": trade.trade_id,
        "price": fmt(trade.price),
        "qty": fmt(trade.qty),
        "quoteQty": fmt(trade.quote_qty),
        "time": trade.ts_ms,
        "isBuyerMaker": trade.is_buyer_maker,
        "isBestMatch": True,
    }


def agg_trade_json(trade: SimTrade) -> Json:
    """Every simulated trade is its own aggregate (one taker order, one price)."""
    return {
        "a": trade.trade_id,
        "p": fmt(trade.price),
        "q": fmt(trade.qty),
        "f": trade.trade_id,
        "l": trade.trade_id,
        "T": trade.ts_ms,
        "m": trade.is_buyer_maker,
        "M": True,
    }


def kline_row(kline: Kline, interval_ms: int) -> list[Any]:
    return [
        kline.open_time_ms,
        fmt(kline.open),
        fmt(kline.high),
        fmt(kline.low),
        fmt(kline.close),
        fmt(kline.volume),
        kline.open_time_ms + interval_ms - 1,
        fmt(kline.quote_volume),
        kline.trades,
        fmt(kline.taker_buy_volume),
        fmt(kline.taker_buy_quote),
        "0",
    ]


def execution_report(event: OrderUpdated) -> Json:
    """The user-data stream's ``executionReport`` for one engine order event."""
    order, fill = event.order, event.fill
    cancelled = event.execution_type == "CANCELED"
    return {
        "e": "executionReport",
        "E": event.event_time_ms,
        "s": order.symbol,
        "c": (event.cancel_client_order_id or order.client_order_id) if cancelled else order.client_order_id,
        "S": order.side,
        "o": order.type,
        "f": order.time_in_force,
        "q": fmt(order.orig_qty),
        "p": fmt(order.price),
        "P": fmt(Decimal(0)),
        "F": fmt(Decimal(0)),
        "g": -1,
        "C": order.client_order_id if cancelled else "",
        "x": event.execution_type,
        "X": order.status,
        "r": "NONE",
        "i": order.order_id,
        "l": fmt(fill.qty if fill else Decimal(0)),
        "z": fmt(order.executed_qty),
        "L": fmt(fill.price if fill else Decimal(0)),
        "n": fmt(fill.commission) if fill else "0",
        "N": fill.commission_asset if fill else None,
        "T": event.event_time_ms,
        "t": fill.trade_id if fill else -1,
        "v": 0,
        "I": 0,
        "w": order.is_open,
        "m": bool(fill and fill.is_maker),
        "M": False,
        "O": order.time_ms,
        "Z": fmt(order.cumulative_quote_qty),
        "Y": fmt(fill.quote_qty if fill else Decimal(0)),
        "Q": fmt(order.orig_quote_qty),
        "W": order.time_ms,
        "V": "NONE",
    }


def account_position(event: BalancesUpdated) -> Json:
    """The user-data stream's ``outboundAccountPosition``."""
    return {
        "e": "outboundAccountPosition",
        "E": event.event_time_ms,
        "u": event.event_time_ms,
        "B": [{"a": asset, "f": fmt(free), "l": fmt(locked)} for asset, free, locked in event.balances],
    }
