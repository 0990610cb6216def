"""Binance spot public REST endpoints of the simulator: time, exchangeInfo, depth, trades, klines, tickers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from realtime.exchanges.simulator.binance_guard import (
    BinanceError,
    Endpoint,
    Params,
    fixed,
    int_param,
    json_response,
    mandatory,
    params_of,
)
from realtime.exchanges.simulator.binance_wire import (
    agg_trade_json,
    fmt,
    kline_row,
    public_trade_json,
    symbol_info,
)
from realtime.exchanges.simulator.market import Kline
from realtime.exchanges.simulator.state import STATE_KEY, SimulatorState

INTERVAL_MINUTES = {
    "1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "2h": 120, "4h": 240, "6h": 360, "8h": 480,
    "12h": 720, "1d": 1440,
}  # fmt: skip


def state_of(request: web.Request) -> SimulatorState:
    return request.app[STATE_KEY]


def symbol_param(request: web.Request, required: bool = True) -> str | None:
    """The ``symbol`` parameter, checked against the symbols the simulator trades (-1121 otherwise)."""
    symbol = params_of(request).get("symbol")
    if not symbol:
        if required:
            raise mandatory("symbol")
        return None
    if symbol not in state_of(request).engine.rules:
        raise BinanceError(-1121, "Invalid symbol.")
    return symbol


def symbols_param(request: web.Request) -> list[str]:
    """``symbol``, or ``symbols`` as a JSON array, or every symbol."""
    state = state_of(request)
    one = symbol_param(request, required=False)
    if one is not None:
        return [one]
    raw = params_of(request).get("symbols")
    if not raw:
        return list(state.engine.rules)
    try:
        names = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'.") from None
    if not isinstance(names, list) or any(n not in state.engine.rules for n in names):
        raise BinanceError(-1121, "Invalid symbol.")
    return [str(n) for n in names]


async def ping(request: web.Request) -> web.Response:
    return json_response({})


async def server_time(request: web.Request) -> web.Response:
    return json_response({"serverTime": state_of(request).clock_ms()})


async def exchange_info(request: web.Request) -> web.Response:
    state = state_of(request)
    return json_response(
        {
            "timezone": "UTC",
            "serverTime": state.clock_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": state.limiter.limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [symbol_info(state.engine.rules[s]) for s in symbols_param(request)],
        }
    )


def depth_weight(params: Params) -> int:
    limit = int(params["limit"]) if params.get("limit", "").isdigit() else 100
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


async def depth(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    limit = int_param(params_of(request), "limit", 100, 5000) or 100
    state = state_of(request)
    snapshot = state.depth_snapshot(symbol, limit) if state.depth_snapshot is not None else None
    if snapshot is not None:
        return json_response(snapshot)
    book = state.engine.book(symbol)
    return json_response(
        {
            "lastUpdateId": book.update_id,
            "bids": [[fmt(p), fmt(q)] for p, q in book.bids[:limit]],
            "asks": [[fmt(p), fmt(q)] for p, q in book.asks[:limit]],
        }
    )


async def recent_trades(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    limit = int_param(params_of(request), "limit", 500, 1000) or 500
    return json_response([public_trade_json(t) for t in state_of(request).market.trades(symbol, None, limit)])


async def historical_trades(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    params = params_of(request)
    limit = int_param(params, "limit", 500, 1000) or 500
    trades = state_of(request).market.trades(symbol, int_param(params, "fromId"), limit)
    return json_response([public_trade_json(t) for t in trades])


async def agg_trades(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    params, market = params_of(request), state_of(request).market
    limit = int_param(params, "limit", 500, 1000) or 500
    from_id = int_param(params, "fromId")
    if from_id is not None or ("startTime" not in params and "endTime" not in params):
        trades = market.trades(symbol, from_id, limit)
    else:
        trades = market.trades_between(symbol, int_param(params, "startTime"), int_param(params, "endTime"), limit)
    return json_response([agg_trade_json(t) for t in trades])


async def klines(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    params = params_of(request)
    interval = params.get("interval")
    if not interval:
        raise mandatory("interval")
    if interval not in INTERVAL_MINUTES:
        raise BinanceError(-1120, "Invalid interval.")
    interval_ms = INTERVAL_MINUTES[interval] * 60_000
    limit = int_param(params, "limit", 500, 1000) or 500
    rows = state_of(request).market.klines(
        symbol, interval_ms, int_param(params, "startTime"), int_param(params, "endTime"), limit
    )
    return json_response([kline_row(k, interval_ms) for k in rows])


async def ticker_price(request: web.Request) -> web.Response:
    engine = state_of(request).engine
    rows = [{"symbol": s, "price": fmt(engine.reference_price(s) or Decimal(0))} for s in symbols_param(request)]
    return json_response(rows[0] if "symbol" in params_of(request) else rows)


async def book_ticker(request: web.Request) -> web.Response:
    engine = state_of(request).engine
    rows = []
    for s in symbols_param(request):
        book = engine.book(s)
        bid = book.bids[0] if book.bids else [Decimal(0), Decimal(0)]
        ask = book.asks[0] if book.asks else [Decimal(0), Decimal(0)]
        rows.append(
            {
                "symbol": s,
                "bidPrice": fmt(bid[0]),
                "bidQty": fmt(bid[1]),
                "askPrice": fmt(ask[0]),
                "askQty": fmt(ask[1]),
            }
        )
    return json_response(rows[0] if "symbol" in params_of(request) else rows)


def _ticker_24h(state: SimulatorState, symbol: str) -> dict[str, Any]:
    """Rolling 24 h statistics over the last 1,440 one-minute klines the market has."""
    day = state.market.klines(symbol, 60_000, None, None, 1440)
    book = state.engine.book(symbol)
    last = state.market.last_trade(symbol)
    total = day[0] if day else Kline(0, Decimal(0), Decimal(0), Decimal(0), Decimal(0))
    for k in day[1:]:
        total = total.merged(k, total.open_time_ms)
    change = total.close - total.open
    return {
        "symbol": symbol,
        "priceChange": fmt(change),
        "priceChangePercent": fmt(change / total.open * 100) if total.open else fmt(Decimal(0)),
        "weightedAvgPrice": fmt(total.quote_volume / total.volume) if total.volume else fmt(Decimal(0)),
        "prevClosePrice": fmt(total.open),
        "lastPrice": fmt(total.close),
        "lastQty": fmt(last.qty if last else Decimal(0)),
        "bidPrice": fmt(book.bids[0][0] if book.bids else Decimal(0)),
        "bidQty": fmt(book.bids[0][1] if book.bids else Decimal(0)),
        "askPrice": fmt(book.asks[0][0] if book.asks else Decimal(0)),
        "askQty": fmt(book.asks[0][1] if book.asks else Decimal(0)),
        "openPrice": fmt(total.open),
        "highPrice": fmt(total.high),
        "lowPrice": fmt(total.low),
        "volume": fmt(total.volume),
        "quoteVolume": fmt(total.quote_volume),
        "openTime": total.open_time_ms,
        "closeTime": (day[-1].open_time_ms + 59_999) if day else 0,
        "firstId": -1,
        "lastId": last.trade_id if last else -1,
        "count": total.trades,
    }


async def ticker_24h(request: web.Request) -> web.Response:
    state = state_of(request)
    rows = [_ticker_24h(state, s) for s in symbols_param(request)]
    return json_response(rows[0] if "symbol" in params_of(request) else rows)


async def avg_price(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    state = state_of(request)
    recent = state.market.klines(symbol, 60_000, None, None, 5)
    volume = sum((k.volume for k in recent), Decimal(0))
    quote = sum((k.quote_volume for k in recent), Decimal(0))
    price = quote / volume if volume else state.engine.reference_price(symbol) or Decimal(0)
    close_time = recent[-1].open_time_ms + 59_999 if recent else 0
    return json_response({"mins": 5, "price": fmt(price), "closeTime": close_time})


def _one_or_all(single: int, every: int) -> Any:
    return lambda params: single if params.get("symbol") else every


def public_endpoints() -> list[Endpoint]:
    """The public market-data routes with Binance's request weights."""
    api = "/api/v3"
    return [
        Endpoint("GET", f"{api}/ping", ping, fixed(1)),
        Endpoint("GET", f"{api}/time", server_time, fixed(1)),
        Endpoint("GET", f"{api}/exchangeInfo", exchange_info, fixed(20)),
        Endpoint("GET", f"{api}/depth", depth, depth_weight),
        Endpoint("GET", f"{api}/trades", recent_trades, fixed(25)),
        Endpoint("GET", f"{api}/historicalTrades", historical_trades, fixed(25)),
        Endpoint("GET", f"{api}/aggTrades", agg_trades, fixed(4)),
        Endpoint("GET", f"{api}/klines", klines, fixed(2)),
        Endpoint("GET", f"{api}/uiKlines", klines, fixed(2)),
        Endpoint("GET", f"{api}/avgPrice", avg_price, fixed(2)),
        Endpoint("GET", f"{api}/ticker/price", ticker_price, _one_or_all(2, 4)),
        Endpoint("GET", f"{api}/ticker/bookTicker", book_ticker, _one_or_all(2, 4)),
        Endpoint("GET", f"{api}/ticker/24hr", ticker_24h, _one_or_all(2, 80)),
    ]
