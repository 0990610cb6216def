"""The one protocol every venue adapter implements, its Decimal value types, capabilities, and domain errors.

Symbols are the venue's own ids (``BTCUSDT``), as the user streams and collectors report them; an adapter maps them to
whatever its client library wants. Errors are ours, not the client library's, so callers never import ccxt.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, runtime_checkable

import structlog

from core.domain.orders import OrderSide, OrderStatus, OrderType, TimeInForce

log = structlog.get_logger(__name__)

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Market:
    """A tradable spot symbol and the filters an order must pass (price on ``tick_size``, qty on ``step_size``)."""

    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    active: bool = True


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What to send; ``client_order_id`` is ours and makes a retried placement idempotent."""

    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC


@dataclass(frozen=True, slots=True)
class OrderState:
    """An order as the venue last reported it."""

    symbol: str
    exchange_order_id: str
    client_order_id: str
    status: OrderStatus  # ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED or REJECTED
    side: OrderSide
    type: OrderType
    quantity: Decimal
    price: Decimal | None
    filled_qty: Decimal = ZERO
    avg_price: Decimal | None = None
    fee: Decimal | None = None
    fee_asset: str | None = None
    updated_ms: int | None = None

    @property
    def is_open(self) -> bool:
        return self.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


OrderAck = OrderState  # the venue's answer to a place/cancel is the order's state at that moment


@dataclass(frozen=True, slots=True)
class ExchangeTrade:
    """One fill of one of our orders."""

    trade_id: str
    exchange_order_id: str
    symbol: str
    side: OrderSide
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_asset: str | None
    is_maker: bool
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a venue offers and how its request budget is counted; data, so venues differ in data, not code."""

    exchange: str
    native_stop_orders: bool
    oco_orders: bool
    reduce_only: bool
    bucket_capacity: int  # request weight allowed per window
    bucket_window_s: float
    request_weights: Mapping[str, int] = field(default_factory=dict)  # operation -> weight; see ``weight``
    default_weight: int = 1
    max_client_order_id_len: int = 36
    # venue error code -> error kind (a key of ``ERROR_KINDS``), for answers the client library leaves generic
    error_codes: Mapping[str, str] = field(default_factory=dict)

    @property
    def refill_per_s(self) -> float:
        return self.bucket_capacity / self.bucket_window_s

    def weight(self, operation: str) -> int:
        return self.request_weights.get(operation, self.default_weight)


@runtime_checkable
class RateLimiter(Protocol):
    """A request-weight budget shared by everyone using the same venue and key."""

    async def acquire(self, weight: int = 1) -> float: ...

    async def penalize(self, seconds: float) -> None: ...


@runtime_checkable
class ExchangeAdapter(Protocol):
    """Spot trading on one venue account: reference data, balances, orders and our fills."""

    capabilities: Capabilities

    async def load_markets(self) -> dict[str, Market]: ...

    async def fetch_balances(self) -> dict[str, Balance]: ...

    async def place_order(self, request: OrderRequest) -> OrderAck: ...

    async def cancel_order(
        self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None
    ) -> OrderAck: ...

    async def fetch_order(
        self, symbol: str, exchange_order_id: str | None = None, client_order_id: str | None = None
    ) -> OrderState: ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]: ...

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[ExchangeTrade]: ...

    async def close(self) -> None: ...


def check_grid(market: Market, request: OrderRequest) -> None:
    """Refuse a price or quantity off the venue's grid: ccxt would silently round it to another order."""
    if market.tick_size > 0 and request.price is not None and request.price % market.tick_size != 0:
        raise OrderRejected(f"Filter failure: PRICE_FILTER ({request.price} is not a multiple of {market.tick_size})")
    if market.step_size > 0 and request.quantity % market.step_size != 0:
        raise OrderRejected(f"Filter failure: LOT_SIZE ({request.quantity} is not a multiple of {market.step_size})")


async def pause_before_retry(
    exchange: str,
    operation: str,
    attempt: int,
    error: Exception,
    retry_after: float | None,
    base_backoff_s: float,
    max_backoff_s: float,
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    """Wait before retry number ``attempt`` (1-based): capped exponential backoff with jitter, never shorter than
    the venue's Retry-After. Every adapter's retry loop waits through here."""
    backoff = min(max_backoff_s, base_backoff_s * 2 ** (attempt - 1))
    delay = max(retry_after or 0.0, backoff * random.uniform(0.5, 1.0))
    log.warning(
        "exchange call failed, retrying",
        exchange=exchange,
        operation=operation,
        attempt=attempt,
        delay_s=round(delay, 3),
        error=type(error).__name__,
    )
    await sleep(delay)


# --- domain errors ----------------------------------------------------------------------------------------


class ExchangeError(Exception):
    """The venue refused or failed a request; ``code`` is the venue's own error code when it gave one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class InsufficientFunds(ExchangeError):
    """Not enough free balance for the order."""


class OrderRejected(ExchangeError):
    """The order broke a filter or was otherwise invalid; resending it unchanged will fail again."""


class OrderNotFound(ExchangeError):
    """No such order (or it is no longer cancellable)."""


class AuthenticationFailed(ExchangeError):
    """Bad key, bad signature or missing permission: the linked account needs attention."""


class RateLimited(ExchangeError):
    """The venue's request budget is spent; wait ``retry_after`` seconds (when it said) before trying again."""

    def __init__(self, message: str, retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class ExchangeUnavailable(ExchangeError):
    """5xx, maintenance, timeouts or connection failures: the outcome of the request is unknown."""


class ClockSkew(ExchangeError):
    """The request's timestamp was outside the venue's receive window."""


InvalidNonce = ClockSkew

ERROR_KINDS: dict[str, type[ExchangeError]] = {
    "insufficient_funds": InsufficientFunds,
    "order_rejected": OrderRejected,
    "order_not_found": OrderNotFound,
    "authentication": AuthenticationFailed,
    "rate_limited": RateLimited,
    "unavailable": ExchangeUnavailable,
    "clock_skew": ClockSkew,
}
