"""``ExchangeAdapter`` over ccxt's async clients: Decimal in and out, a shared weight budget, retries, our errors.

Every call takes its request weight from the shared bucket first; transient failures (429/418, 5xx, timeouts,
connection errors) are retried with exponential backoff and jitter, honouring ``Retry-After``; everything else is
mapped once to the domain errors of ``realtime.exchanges.base``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import ccxt.async_support as ccxt

from core.domain.orders import OrderSide, OrderStatus, OrderType
from core.security.account_secrets import mask_api_key
from realtime.exchanges.base import (
    ERROR_KINDS,
    ZERO,
    AuthenticationFailed,
    Balance,
    Capabilities,
    ClockSkew,
    ExchangeError,
    ExchangeTrade,
    ExchangeUnavailable,
    InsufficientFunds,
    Market,
    OrderAck,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
    RateLimited,
    RateLimiter,
    check_grid,
    pause_before_retry,
)
from realtime.exchanges.ratelimit import UnlimitedBudget

T = TypeVar("T")

_STATUS = {
    "open": OrderStatus.ACCEPTED,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}
# ccxt's hierarchy: subclasses first, since OrderNotFound is an InvalidOrder and InvalidNonce a NetworkError.
_CODE = re.compile(r'"(?:code|retCode)"\s*:\s*"?(-?\d+)')
_ERROR_MAP: tuple[tuple[type[Exception], type[ExchangeError]], ...] = (
    (ccxt.InsufficientFunds, InsufficientFunds),
    (ccxt.OrderNotFound, OrderNotFound),
    (ccxt.InvalidOrder, OrderRejected),
    (ccxt.BadRequest, OrderRejected),
    (ccxt.AuthenticationError, AuthenticationFailed),
    (ccxt.InvalidNonce, ClockSkew),
    (ccxt.RateLimitExceeded, RateLimited),
    (ccxt.DDoSProtection, RateLimited),
    (ccxt.ExchangeNotAvailable, ExchangeUnavailable),
    (ccxt.RequestTimeout, ExchangeUnavailable),
    (ccxt.NetworkError, ExchangeUnavailable),
    (ccxt.OperationFailed, ExchangeUnavailable),  # e.g. Binance -1001 "Internal error" on a 500
)


def venue_error_code(message: str) -> str | None:
    """The venue's code in a ccxt message: Binance's ``"code":-2010``, Bybit's ``"retCode":170131``."""
    found = _CODE.search(message)
    return found.group(1) if found else None


def map_ccxt_error(
    error: Exception, capabilities: Capabilities | None = None, retry_after: float | None = None
) -> ExchangeError:
    """The domain error for a ccxt exception: the venue's code table first, then ccxt's class."""
    message = str(error)
    code = venue_error_code(message)
    kind = capabilities.error_codes.get(code) if capabilities is not None and code is not None else None
    domain_type = ERROR_KINDS[kind] if kind else next((d for c, d in _ERROR_MAP if isinstance(error, c)), ExchangeError)
    if domain_type is RateLimited:
        return RateLimited(message, retry_after, code)
    return domain_type(message, code)


def is_transient(error: Exception) -> bool:
    """Worth retrying: the venue was busy or unreachable, not refusing the request itself."""
    return isinstance(error, ccxt.OperationFailed) and not isinstance(error, ccxt.InvalidNonce)


def dec(value: Any) -> Decimal | None:
    """ccxt's floats/strings -> Decimal via their shortest text, so 0.1 stays 0.1."""
    return None if value is None else Decimal(str(value))


class CcxtAdapter:
    """One venue account through ccxt async; ``urls`` overrides ``exchange.urls['api']`` (e.g. the simulator)."""

    def __init__(
        self,
        exchange_id: str,
        api_key: str,
        api_secret: str,
        urls: Mapping[str, str] | None,
        rate_limiter: RateLimiter | None,
        capabilities: Capabilities,
        max_retries: int = 4,
        *,
        base_backoff_s: float = 0.25,
        max_backoff_s: float = 30.0,
        timeout_ms: int = 10_000,
        options: Mapping[str, Any] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        exchange_class = getattr(ccxt, exchange_id)
        self.exchange_id = exchange_id
        self._masked_key = mask_api_key(api_key)
        # ccxt's own limiter is per client instance; the shared Redis bucket replaces it.
        self._exchange: Any = exchange_class(
            {
                "apiKey": api_key,
                "secret": api_secret,
                "enableRateLimit": False,
                "timeout": timeout_ms,
                "options": dict(options or {}),
            }
        )
        if urls:
            self._exchange.urls["api"] = {**self._exchange.urls["api"], **urls}
        self._limiter: RateLimiter = rate_limiter or UnlimitedBudget()
        self.capabilities = capabilities
        self.max_retries = max_retries
        self._base_backoff_s = base_backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._markets: dict[str, Market] | None = None

    def __repr__(self) -> str:
        return f"CcxtAdapter(exchange={self.exchange_id!r}, api_key={self._masked_key!r})"

    __str__ = __repr__

    # --- plumbing -----------------------------------------------------------------------------------------

    def _retry_after(self) -> float | None:
        headers = getattr(self._exchange, "last_response_headers", None) or {}
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]], weight: int | None = None) -> T:
        """Take the weight, call, retry transient failures with backoff; raise domain errors."""
        attempt = 0
        while True:
            await self._limiter.acquire(weight if weight is not None else self.capabilities.weight(operation))
            self._exchange.last_response_headers = None
            try:
                return await call()
            except ccxt.BaseError as error:
                retry_after = self._retry_after() if isinstance(error, ccxt.DDoSProtection) else None
                if retry_after:
                    await self._limiter.penalize(retry_after)
                if not is_transient(error) or attempt >= self.max_retries:
                    raise map_ccxt_error(error, self.capabilities, retry_after) from error
                attempt += 1
                await pause_before_retry(
                    self.exchange_id,
                    operation,
                    attempt,
                    error,
                    retry_after,
                    self._base_backoff_s,
                    self._max_backoff_s,
                    self._sleep,
                )

    async def _unified(self, symbol: str) -> str:
        if self._markets is None:
            await self.load_markets()
        if "/" in symbol:
            return symbol
        found = self._exchange.markets_by_id.get(symbol)
        if not found:
            raise OrderRejected(f"{self.exchange_id} has no market {symbol!r}")
        return str(found[0]["symbol"])

    def _native(self, unified: str) -> str:
        return str(self._exchange.markets[unified]["id"]) if unified in self._exchange.markets else unified

    # --- the protocol -------------------------------------------------------------------------------------

    async def load_markets(self) -> dict[str, Market]:
        """Spot markets keyed by the venue's symbol id, with tick/step/min filters as Decimal."""
        raw = await self._call("load_markets", lambda: self._exchange.load_markets(True))
        markets: dict[str, Market] = {}
        for m in raw.values():
            if not m.get("spot"):
                continue
            limits = m.get("limits") or {}
            markets[m["id"]] = Market(
                symbol=m["id"],
                base=m["base"],
                quote=m["quote"],
                tick_size=dec(m["precision"]["price"]) or ZERO,
                step_size=dec(m["precision"]["amount"]) or ZERO,
                min_qty=dec((limits.get("amount") or {}).get("min")) or ZERO,
                min_notional=dec((limits.get("cost") or {}).get("min")) or ZERO,
                active=bool(m.get("active", True)),
            )
        self._markets = markets
        return markets

    async def fetch_balances(self) -> dict[str, Balance]:
        raw = await self._call("fetch_balances", self._exchange.fetch_balance)
        balances = {}
        for asset, free in (raw.get("free") or {}).items():
            locked = (raw.get("used") or {}).get(asset)
            balances[asset] = Balance(asset, dec(free) or ZERO, dec(locked) or ZERO)
        return balances

    async def place_order(self, request: OrderRequest) -> OrderAck:
        """Place; a duplicate client id after an ambiguous failure returns the order the first attempt created."""
        if request.type not in (OrderType.MARKET, OrderType.LIMIT):
            raise OrderRejected(f"{self.exchange_id} adapter places market and limit orders only, not {request.type}")
        symbol = await self._unified(request.symbol)
        if self._markets is not None and request.symbol in self._markets:
            check_grid(self._markets[request.symbol], request)
        params: dict[str, Any] = {"clientOrderId": request.client_order_id}
        if request.type is OrderType.LIMIT:
            params["timeInForce"] = request.time_in_force.value
        price = float(request.price) if request.price is not None else None
        try:
            raw = await self._call(
                "place_order",
                lambda: self._exchange.create_order(
                    symbol, request.type.value, request.side.value, float(request.quantity), price, params
                ),
            )
        except OrderRejected as rejected:
            if "duplicate" not in str(rejected).lower():
                raise
            return await self.fetch_order(request.symbol, client_order_id=request.client_order_id)
        state = self._order(raw)
        if not state.client_order_id:  # an ACK-only answer may omit it
            state = replace(state, client_order_id=request.client_order_id)
        return state

    async def cancel_order(
        self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None
    ) -> OrderAck:
        unified, params = await self._unified(symbol), self._id_params(client_order_id)
        raw = await self._call("cancel_order", lambda: self._exchange.cancel_order(exchange_order_id, unified, params))
        return self._order(raw)

    async def fetch_order(
        self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None
    ) -> OrderState:
        unified, params = await self._unified(symbol), self._id_params(client_order_id)
        raw = await self._call("fetch_order", lambda: self._exchange.fetch_order(exchange_order_id, unified, params))
        return self._order(raw)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        unified = await self._unified(symbol) if symbol else None
        if unified is None:
            self._exchange.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        operation = "fetch_open_orders" if symbol else "fetch_open_orders_all"
        raw = await self._call(operation, lambda: self._exchange.fetch_open_orders(unified))
        return [self._order(o) for o in raw]

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[ExchangeTrade]:
        unified = await self._unified(symbol)
        raw = await self._call("fetch_my_trades", lambda: self._exchange.fetch_my_trades(unified, since_ms))
        return [self._trade(t) for t in raw]

    async def close(self) -> None:
        await self._exchange.close()

    # --- conversions --------------------------------------------------------------------------------------

    def _id_params(self, client_order_id: str | None) -> dict[str, Any]:
        if client_order_id is None:
            return {}
        return {"clientOrderId": client_order_id}  # ccxt maps it to origClientOrderId (Binance) / orderLinkId (Bybit)

    def _order(self, raw: Mapping[str, Any]) -> OrderState:
        filled = dec(raw.get("filled")) or ZERO
        status = _STATUS.get(str(raw.get("status")), OrderStatus.ACCEPTED)
        if status is OrderStatus.ACCEPTED and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        fee_cost, fee_asset = _fee(raw)
        return OrderState(
            symbol=self._native(str(raw.get("symbol"))),
            exchange_order_id=str(raw.get("id")),
            client_order_id=str(raw.get("clientOrderId") or ""),
            status=status,
            side=OrderSide(str(raw.get("side") or "buy").lower()),
            type=OrderType(str(raw.get("type") or "limit").lower()),
            quantity=dec(raw.get("amount")) or ZERO,
            price=dec(raw.get("price")) if raw.get("type") != "market" else None,
            filled_qty=filled,
            avg_price=dec(raw.get("average")) if filled > 0 else None,
            fee=fee_cost,
            fee_asset=fee_asset,
            updated_ms=raw.get("lastUpdateTimestamp") or raw.get("timestamp"),
        )

    def _trade(self, raw: Mapping[str, Any]) -> ExchangeTrade:
        fee_cost, fee_asset = _fee(raw)
        return ExchangeTrade(
            trade_id=str(raw.get("id")),
            exchange_order_id=str(raw.get("order")),
            symbol=self._native(str(raw.get("symbol"))),
            side=OrderSide(str(raw.get("side")).lower()),
            price=dec(raw.get("price")) or ZERO,
            qty=dec(raw.get("amount")) or ZERO,
            fee=fee_cost or ZERO,
            fee_asset=fee_asset,
            is_maker=raw.get("takerOrMaker") == "maker",
            ts_ms=int(raw.get("timestamp") or 0),
        )


def _fee(raw: Mapping[str, Any]) -> tuple[Decimal | None, str | None]:
    """Total fee and its asset; ccxt gives ``fee`` or a list of ``fees`` depending on the venue's answer."""
    fees = [f for f in (raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])) if f and f.get("cost") is not None]
    if not fees:
        return None, None
    return sum((dec(f["cost"]) or ZERO for f in fees), ZERO), fees[0].get("currency")
