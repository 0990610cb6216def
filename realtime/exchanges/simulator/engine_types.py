"""The matching engine's vocabulary: symbol rules, orders, fills, balances, the events it emits and its rejections.

Rejections carry Binance's error code and message: it is the venue the simulator imitates, and a paper-trading
adapter reusing the engine can map the codes the same way the live adapter maps Binance's answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

BUY, SELL = "BUY", "SELL"
LIMIT, MARKET, LIMIT_MAKER = "LIMIT", "MARKET", "LIMIT_MAKER"
GTC, IOC, FOK = "GTC", "IOC", "FOK"
NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED = "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"
OPEN_STATUSES = frozenset({NEW, PARTIALLY_FILLED})
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """A spot symbol and its Binance filters (PRICE_FILTER, LOT_SIZE, NOTIONAL or the legacy MIN_NOTIONAL)."""

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    min_price: Decimal = Decimal("0.01")
    max_price: Decimal = Decimal("1000000")
    max_qty: Decimal = Decimal("9000")
    max_notional: Decimal = Decimal("9000000")
    notional_filter: str = "NOTIONAL"  # "MIN_NOTIONAL": the pre-2023 filter shape, for clients that still read it
    apply_min_to_market: bool = True
    base_precision: int = 8
    quote_precision: int = 8


def default_symbol_rules() -> list[SymbolRules]:
    """BTCUSDT and ETHUSDT with the filters Binance spot publishes for them."""
    return [
        SymbolRules("BTCUSDT", "BTC", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal(5)),
        SymbolRules("ETHUSDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.0001"), Decimal("0.0001"), Decimal(5)),
    ]


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Commission rates; charged in the asset the fill gives the account (base on a buy, quote on a sell)."""

    maker: Decimal = Decimal("0.001")
    taker: Decimal = Decimal("0.001")


@dataclass(slots=True)
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass(frozen=True, slots=True)
class OrderRequest:
    symbol: str
    side: str
    type: str
    quantity: Decimal | None = None
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    time_in_force: str | None = None
    client_order_id: str | None = None


@dataclass(slots=True)
class Order:
    account_id: str
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    status: str = NEW
    executed_qty: Decimal = ZERO
    cumulative_quote_qty: Decimal = ZERO
    update_time_ms: int = 0
    locked_asset: str = ""
    locked_amount: Decimal = ZERO  # what this order still holds locked, released on cancel/expiry

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining_qty(self) -> Decimal:
        return self.orig_qty - self.executed_qty


@dataclass(frozen=True, slots=True)
class Fill:
    account_id: str
    symbol: str
    trade_id: int
    order_id: int
    client_order_id: str
    side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty

    @property
    def is_buyer(self) -> bool:
        return self.side == BUY


@dataclass(frozen=True, slots=True)
class OrderUpdated:
    """One executionReport: ``execution_type`` is NEW, TRADE (with ``fill``), CANCELED or EXPIRED."""

    account_id: str
    order: Order  # a snapshot, not the live order
    execution_type: str
    event_time_ms: int
    fill: Fill | None = None
    cancel_client_order_id: str | None = None  # Binance reports a cancel under the cancel request's own client id


@dataclass(frozen=True, slots=True)
class BalancesUpdated:
    """One outboundAccountPosition: the assets whose balance the last change touched."""

    account_id: str
    balances: tuple[tuple[str, Decimal, Decimal], ...]  # (asset, free, locked)
    event_time_ms: int


EngineEvent = OrderUpdated | BalancesUpdated
Listener = Callable[[EngineEvent], None]


@dataclass(slots=True)
class Book:
    """Liquidity the engine's takers trade against: bids best first (descending), asks best first (ascending)."""

    bids: list[list[Decimal]] = field(default_factory=list)
    asks: list[list[Decimal]] = field(default_factory=list)
    update_id: int = 0


class OrderRejected(Exception):
    """The venue refused a request; ``code``/``msg`` are Binance's."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


def default_cancel_id(order: Order) -> str:
    """The client id a cancel gets when its request names none (Binance makes one up too)."""
    return f"simcancel{order.symbol}{order.order_id}"


def filter_failure(name: str) -> OrderRejected:
    return OrderRejected(-1013, f"Filter failure: {name}")


def insufficient_balance() -> OrderRejected:
    return OrderRejected(-2010, "Account has insufficient balance for requested action.")
