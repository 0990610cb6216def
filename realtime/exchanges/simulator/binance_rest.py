"""Binance spot REST API of the simulator: signed trading and account endpoints, listen keys, and the request gate.

``add_routes`` registers these and the public market-data routes (``binance_public``) behind one middleware that
does what Binance does before serving: count request weight per IP (429, then 418), check the API key and the
HMAC signature and timestamp of signed endpoints, and apply injected faults (``POST /admin/faults``).
"""

from __future__ import annotations

import asyncio
import re
import zlib
from decimal import Decimal

import orjson
from aiohttp import web

from realtime.exchanges.simulator.binance_guard import (
    CREDENTIAL_KEY,
    PARAMS_KEY,
    BinanceError,
    Credential,
    Endpoint,
    Handler,
    api_key_credential,
    credential_of,
    decimal_param,
    fixed,
    forced_error,
    int_param,
    json_response,
    mandatory,
    params_of,
    read_params,
    verify_signed,
)
from realtime.exchanges.simulator.binance_public import public_endpoints, state_of, symbol_param
from realtime.exchanges.simulator.binance_wire import (
    cancel_json,
    fmt,
    my_trade_json,
    new_order_response,
    order_json,
)
from realtime.exchanges.simulator.engine_types import (
    BUY,
    FOK,
    GTC,
    IOC,
    LIMIT,
    LIMIT_MAKER,
    MARKET,
    SELL,
    Order,
    OrderRejected,
    OrderRequest,
    default_cancel_id,
)
from realtime.exchanges.simulator.state import STATE_KEY

_CLIENT_ORDER_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")


def _order_request(request: web.Request) -> tuple[OrderRequest, str]:
    """Binance's parameter rules for ``POST /api/v3/order``; returns the request and ``newOrderRespType``."""
    params = params_of(request)
    symbol = symbol_param(request)
    assert symbol is not None
    side, order_type, tif = params.get("side"), params.get("type"), params.get("timeInForce")
    if not side:
        raise mandatory("side")
    if side not in (BUY, SELL):
        raise BinanceError(-1117, "Invalid side.")
    if not order_type:
        raise mandatory("type")
    if order_type not in (LIMIT, MARKET, LIMIT_MAKER):
        raise BinanceError(-1116, "Invalid orderType.")
    quantity, quote_qty, price = (decimal_param(params, n) for n in ("quantity", "quoteOrderQty", "price"))
    if order_type == MARKET:
        for name, value in (("timeInForce", tif), ("price", price)):
            if value is not None:
                raise BinanceError(-1106, f"Parameter '{name}' sent when not required.")
        if quantity is None and quote_qty is None:
            raise BinanceError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
        if quantity is not None and quote_qty is not None:
            raise BinanceError(-1106, "Parameter 'quoteOrderQty' sent when not required.")
    else:
        if order_type == LIMIT and not tif:
            raise mandatory("timeInForce")
        if order_type == LIMIT_MAKER and tif:
            raise BinanceError(-1106, "Parameter 'timeInForce' sent when not required.")
        if tif and tif not in (GTC, IOC, FOK):
            raise BinanceError(-1115, "Invalid timeInForce.")
        if quantity is None:
            raise mandatory("quantity")
        if price is None:
            raise mandatory("price")
    client_id = params.get("newClientOrderId")
    if client_id is not None and not _CLIENT_ORDER_ID.fullmatch(client_id):
        raise BinanceError(
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'; legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
        )
    response_type = params.get("newOrderRespType") or ("FULL" if order_type in (LIMIT, MARKET) else "ACK")
    if response_type not in ("ACK", "RESULT", "FULL"):
        raise BinanceError(
            -1100, "Illegal characters found in parameter 'newOrderRespType'; legal range is 'ACK, RESULT, FULL'."
        )
    order = OrderRequest(
        symbol=symbol,
        side=side,
        type=order_type,
        quantity=Decimal(quantity) if quantity is not None else None,
        quote_order_qty=Decimal(quote_qty) if quote_qty is not None else None,
        price=Decimal(price) if price is not None else None,
        time_in_force=tif,
        client_order_id=client_id,
    )
    return order, response_type


async def new_order(request: web.Request) -> web.Response:
    state, account = state_of(request), credential_of(request).account_id
    order_request, response_type = _order_request(request)
    order = state.engine.place_order(account, order_request)
    fills = state.engine.my_trades(account, order.symbol, order_id=order.order_id, limit=10_000)
    return json_response(new_order_response(order, response_type, fills))


async def test_order(request: web.Request) -> web.Response:
    order_request, _ = _order_request(request)
    state_of(request).engine.check_order(order_request)
    return json_response({})


def _find_order(request: web.Request) -> Order:
    params, state = params_of(request), state_of(request)
    symbol = symbol_param(request)
    assert symbol is not None
    order_id, client_id = int_param(params, "orderId"), params.get("origClientOrderId")
    if order_id is None and not client_id:
        raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
    return state.engine.get_order(credential_of(request).account_id, symbol, order_id, client_id)


async def query_order(request: web.Request) -> web.Response:
    return json_response(order_json(_find_order(request)))


async def cancel_order(request: web.Request) -> web.Response:
    try:
        order = _find_order(request)
    except OrderRejected as rejected:
        raise OrderRejected(-2011, "Unknown order sent.") if rejected.code == -2013 else rejected from None
    cancel_id = params_of(request).get("newClientOrderId") or default_cancel_id(order)
    state_of(request).engine.cancel_order(order.account_id, order.symbol, order.order_id, None, cancel_id)
    return json_response(cancel_json(order, cancel_id))


async def open_orders(request: web.Request) -> web.Response:
    orders = state_of(request).engine.open_orders(credential_of(request).account_id, symbol_param(request, False))
    return json_response([order_json(o) for o in orders])


async def cancel_open_orders(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    cancelled = state_of(request).engine.cancel_open_orders(credential_of(request).account_id, symbol)
    return json_response([cancel_json(o, default_cancel_id(o)) for o in cancelled])


async def all_orders(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    params = params_of(request)
    orders = state_of(request).engine.all_orders(
        credential_of(request).account_id,
        symbol,
        int_param(params, "orderId"),
        int_param(params, "startTime"),
        int_param(params, "endTime"),
        int_param(params, "limit", 500, 1000) or 500,
    )
    return json_response([order_json(o) for o in orders])


async def account(request: web.Request) -> web.Response:
    state, account_id = state_of(request), credential_of(request).account_id
    omit_zero = params_of(request).get("omitZeroBalances", "false").lower() == "true"
    balances = [
        {"asset": asset, "free": fmt(b.free), "locked": fmt(b.locked)}
        for asset, b in state.engine.balances(account_id).items()
        if not (omit_zero and b.total == 0)
    ]
    fees = state.engine.fees
    return json_response(
        {
            "makerCommission": int(fees.maker * 10_000),
            "takerCommission": int(fees.taker * 10_000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt(fees.maker),
                "taker": fmt(fees.taker),
                "buyer": fmt(Decimal(0)),
                "seller": fmt(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": state.clock_ms(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": zlib.crc32(account_id.encode()),
        }
    )


async def my_trades(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    assert symbol is not None
    params = params_of(request)
    fills = state_of(request).engine.my_trades(
        credential_of(request).account_id,
        symbol,
        int_param(params, "orderId"),
        int_param(params, "fromId"),
        int_param(params, "startTime"),
        int_param(params, "endTime"),
        int_param(params, "limit", 500, 1000) or 500,
    )
    return json_response([my_trade_json(f) for f in fills])


async def listen_key_create(request: web.Request) -> web.Response:
    state = state_of(request)
    key = state.listen_keys.create(credential_of(request).account_id)
    state.listen_key_opened(key)
    return json_response({"listenKey": key})


async def listen_key_keepalive(request: web.Request) -> web.Response:
    key = params_of(request).get("listenKey")
    if not key:
        raise mandatory("listenKey")
    if not state_of(request).listen_keys.keepalive(key, credential_of(request).account_id):
        raise BinanceError(-1125, "This listenKey does not exist.")
    return json_response({})


async def listen_key_close(request: web.Request) -> web.Response:
    state, key = state_of(request), params_of(request).get("listenKey")
    if not key:
        raise mandatory("listenKey")
    if not state.listen_keys.close(key, credential_of(request).account_id):
        raise BinanceError(-1125, "This listenKey does not exist.")
    state.listen_key_closed(key)
    return json_response({})


async def set_faults(request: web.Request) -> web.Response:
    """``POST /admin/faults`` ``{"status": 503, "count": 2, "delay_ms": 250, "path_prefix": "/api/v3/order"}``
    (``"retry_after_s"`` for a forced 429/418); ``{"reset": true}`` clears them. Answers the faults now in force."""
    faults = state_of(request).faults
    body = orjson.loads(await request.read() or b"{}")
    if body.get("reset"):
        faults.status, faults.count, faults.delay_ms, faults.path_prefix = None, None, 0, "/api/"
        faults.retry_after_s = None
    for name in ("status", "count", "delay_ms", "path_prefix", "retry_after_s"):
        if name in body:
            setattr(faults, name, body[name])
    return json_response(faults.state())


async def get_faults(request: web.Request) -> web.Response:
    return json_response(state_of(request).faults.state())


async def deposit(request: web.Request) -> web.Response:
    """``POST /admin/deposit`` ``{"account_id": "demo", "asset": "USDT", "amount": "1000"}``: fund a test account."""
    body, engine = orjson.loads(await request.read() or b"{}"), state_of(request).engine
    if not engine.has_account(str(body.get("account_id"))):
        raise web.HTTPNotFound(text="unknown account")
    engine.deposit(str(body["account_id"]), str(body["asset"]), Decimal(str(body["amount"])))
    balances = engine.balances(str(body["account_id"]))
    return json_response({a: {"free": fmt(b.free), "locked": fmt(b.locked)} for a, b in balances.items()})


async def open_account(request: web.Request) -> web.Response:
    """``POST /admin/accounts`` ``{"account_id": "u1", "api_key": "k", "secret": "s", "balances": {"USDT": "1"}}``:
    a new test account with its API key, as a venue's testnet lets a user create keys. An existing key is refused."""
    body, state = orjson.loads(await request.read() or b"{}"), state_of(request)
    try:
        account_id, api_key, secret = str(body["account_id"]), str(body["api_key"]), str(body["secret"])
        balances = {str(a): Decimal(str(v)) for a, v in (body.get("balances") or {}).items()}
    except (KeyError, ArithmeticError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"account_id, api_key, secret and numeric balances are required: {exc}") from exc
    if api_key in state.credentials or state.engine.has_account(account_id):
        raise web.HTTPConflict(text="account or API key exists")
    state.engine.open_account(account_id, balances)
    state.credentials[api_key] = Credential(account_id, api_key, secret)
    return json_response({"account_id": account_id})


def private_endpoints() -> list[Endpoint]:
    """Signed trading/account routes and the listen-key routes, with Binance's request weights."""
    api = "/api/v3"
    one_or_all = lambda params: 6 if params.get("symbol") else 80  # noqa: E731
    return [
        Endpoint("POST", f"{api}/order", new_order, fixed(1), "SIGNED"),
        Endpoint("POST", f"{api}/order/test", test_order, fixed(1), "SIGNED"),
        Endpoint("GET", f"{api}/order", query_order, fixed(4), "SIGNED"),
        Endpoint("DELETE", f"{api}/order", cancel_order, fixed(1), "SIGNED"),
        Endpoint("GET", f"{api}/openOrders", open_orders, one_or_all, "SIGNED"),
        Endpoint("DELETE", f"{api}/openOrders", cancel_open_orders, fixed(1), "SIGNED"),
        Endpoint("GET", f"{api}/allOrders", all_orders, fixed(20), "SIGNED"),
        Endpoint("GET", f"{api}/account", account, fixed(20), "SIGNED"),
        Endpoint("GET", f"{api}/myTrades", my_trades, lambda p: 5 if p.get("orderId") else 20, "SIGNED"),
        Endpoint("POST", f"{api}/userDataStream", listen_key_create, fixed(2), "USER_STREAM"),
        Endpoint("PUT", f"{api}/userDataStream", listen_key_keepalive, fixed(2), "USER_STREAM"),
        Endpoint("DELETE", f"{api}/userDataStream", listen_key_close, fixed(2), "USER_STREAM"),
    ]


@web.middleware
async def binance_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults, request weight, API key and signature, then the handler; Binance errors become Binance's JSON."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    state = request.app[STATE_KEY]
    forced, delay_s = state.faults.take(request.path)
    if delay_s:
        await asyncio.sleep(delay_s)
    ip = request.remote or "unknown"
    resource = request.match_info.route.resource
    endpoint = state.endpoints.get((request.method, resource.canonical if resource is not None else ""))
    try:
        params, payload = await read_params(request)
        request[PARAMS_KEY] = params
        if forced is not None:
            raise forced_error(forced, state.limiter.limit, state.faults.retry_after_s)
        state.limiter.charge(ip, endpoint.weight(params) if endpoint is not None else 1)
        if endpoint is not None and endpoint.security != "NONE":
            credential = api_key_credential(request, state.credentials)
            if endpoint.security == "SIGNED":
                verify_signed(params, payload, credential, state.clock_ms(), state.max_recv_window_ms)
            request[CREDENTIAL_KEY] = credential
        response = await handler(request)
    except BinanceError as error:
        response = error.response()
    except OrderRejected as rejected:
        response = BinanceError.from_rejection(rejected).response()
    if "X-MBX-USED-WEIGHT-1M" not in response.headers:
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(state.limiter.used(ip))
    return response


def add_routes(app: web.Application) -> None:
    """Binance spot REST routes, public and private, behind :func:`binance_gate`; admin routes for faults."""
    state = app[STATE_KEY]
    for endpoint in [*public_endpoints(), *private_endpoints()]:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
        state.endpoints[(endpoint.method, endpoint.path)] = endpoint
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", set_faults)
    app.router.add_post("/admin/deposit", deposit)
    app.router.add_post("/admin/accounts", open_account)
    app.middlewares.append(binance_gate)
