"""Pre-trade risk checks: one small pure function per check, each returning pass or a denial with a reason.

A denial is data (:class:`RiskDecision`), never an exception; the order handler turns it into ``Order.deny(reason)``
-> ``OrderDenied`` (nautilus_trader ``risk/engine``). Every check reads only the command and a plain-data
:class:`RiskContext`, so the checks do no I/O and are trivially testable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from core.domain.orders import PRICED_TYPES, OrderSide, OrderType, PlaceOrder

_PRICED_TYPES = PRICED_TYPES
_TRIGGERED_TYPES = frozenset(
    {OrderType.STOP_MARKET, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_MARKET, OrderType.TAKE_PROFIT_LIMIT}
)
KILL_SWITCH_SCOPES = ("account", "user", "fund")


@dataclass(frozen=True, slots=True)
class RiskDecision:
    allowed: bool
    reason: str | None = None


PASS = RiskDecision(True, None)


def deny(reason: str) -> RiskDecision:
    return RiskDecision(False, reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolFilters:
    """Exchange trading rules for one symbol; ``None`` (or zero) means the exchange sets no such rule."""

    known: bool = True
    tick_size: Decimal | None = None
    step_size: Decimal | None = None
    min_qty: Decimal | None = None
    min_notional: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskLimits:
    """Configured limits; ``None`` means no limit."""

    max_order_notional: Decimal | None = None
    max_position_per_symbol: Decimal | None = None
    max_gross_exposure_account: Decimal | None = None
    max_gross_exposure_user: Decimal | None = None
    max_gross_exposure_fund: Decimal | None = None
    max_open_orders: int | None = None
    max_orders_per_minute: int | None = None
    price_band_pct: Decimal | None = None
    daily_loss_limit: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskContext:
    """Everything the checks read, as plain data gathered by the caller before evaluation."""

    filters: SymbolFilters
    account_owner_user_id: str
    mark_price: Decimal | None = None
    limits: RiskLimits = field(default_factory=RiskLimits)
    position_qty: Decimal = Decimal(0)  # signed, this symbol on this account
    gross_exposure_account: Decimal = Decimal(0)
    gross_exposure_user: Decimal = Decimal(0)
    gross_exposure_fund: Decimal = Decimal(0)
    open_orders: int = 0
    orders_last_minute: int = 0
    start_of_day_equity: Decimal = Decimal(0)
    equity: Decimal = Decimal(0)
    kill_switches: frozenset[str] = frozenset()


RiskCheck = Callable[[PlaceOrder, RiskContext], RiskDecision]


# --- helpers ----------------------------------------------------------------------------------------------


def _fmt(value: Decimal) -> str:
    """Render a Decimal plainly (``0.0001``, ``50000``), never in exponent notation."""
    if not value.is_finite():
        return str(value)
    return format(value.normalize(), "f")


def _reference_price(cmd: PlaceOrder, ctx: RiskContext) -> Decimal | None:
    """Price used to value the order: its limit price when it has one, else the mark price."""
    if cmd.order_type in _PRICED_TYPES and cmd.price is not None:
        return cmd.price
    return ctx.mark_price


def _notional(cmd: PlaceOrder, ctx: RiskContext) -> Decimal | None:
    price = _reference_price(cmd, ctx)
    return None if price is None else cmd.quantity * price


def _no_price(cmd: PlaceOrder, what: str) -> RiskDecision:
    return deny(f"no mark price for {cmd.symbol}; cannot check the {what} of a {cmd.order_type} order")


def _signed_qty(cmd: PlaceOrder) -> Decimal:
    return cmd.quantity if cmd.side is OrderSide.BUY else -cmd.quantity


# --- checks -----------------------------------------------------------------------------------------------


def check_valid_numbers(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    trailing = cmd.order_type is OrderType.TRAILING_STOP_MARKET
    fields: list[tuple[str, Decimal | None, bool]] = [
        ("quantity", cmd.quantity, True),
        ("price", cmd.price, cmd.order_type in _PRICED_TYPES),
        ("trigger price", cmd.trigger_price, cmd.order_type in _TRIGGERED_TYPES),
        ("trailing offset", cmd.trailing_offset, False),
        ("trailing offset percent", cmd.trailing_offset_pct, False),
        ("reference price", cmd.reference_price, bool(cmd.lock_steps)),
    ]
    fields += [(f"ladder step {n + 1}", v, True) for n, step in enumerate(cmd.lock_steps) for v in step]
    if trailing and (cmd.trailing_offset is None) == (cmd.trailing_offset_pct is None):
        return deny("a trailing stop needs exactly one of trailing offset (price) or trailing offset percent")
    if cmd.trailing_offset_pct is not None and cmd.trailing_offset_pct.is_finite() and cmd.trailing_offset_pct >= 100:
        return deny(f"trailing offset percent {_fmt(cmd.trailing_offset_pct)} must be below 100")
    if cmd.lock_steps and cmd.order_type not in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT):
        return deny("a profit-lock ladder belongs on a stop order")
    for name, value, required in fields:
        if value is None:
            if required:
                return deny(f"{name} is required for a {cmd.order_type} order")
            continue
        if not isinstance(value, Decimal):
            return deny(f"{name} {value!r} is not a Decimal")
        if not value.is_finite():
            return deny(f"{name} {value} is not a finite number")
        if value <= 0:
            return deny(f"{name} {_fmt(value)} must be positive")
    gains = [g for g, _ in cmd.lock_steps]
    if gains != sorted(gains) or any(lock > gain for gain, lock in cmd.lock_steps):
        return deny("ladder steps must rise in gain, each locking no more than the gain it needs")
    return PASS


def check_known_symbol(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    if not ctx.filters.known:
        return deny(f"unknown symbol {cmd.symbol} on {cmd.exchange}")
    return PASS


def check_account_owner(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    if cmd.user_id != ctx.account_owner_user_id:
        return deny(f"user {cmd.user_id} does not own account {cmd.account_id}")
    return PASS


def check_kill_switch(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    for scope in KILL_SWITCH_SCOPES:
        if scope in ctx.kill_switches:
            return deny(f"{scope} kill switch is active; no new orders")
    return PASS


def check_tick_size(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    tick = ctx.filters.tick_size
    for name, value in (("price", cmd.price), ("trigger price", cmd.trigger_price)):
        if tick and value is not None and value % tick != 0:
            return deny(f"{name} {_fmt(value)} is not a multiple of the tick size {_fmt(tick)} for {cmd.symbol}")
    return PASS


def check_lot_size(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    f = ctx.filters
    if f.min_qty is not None and cmd.quantity < f.min_qty:
        return deny(f"quantity {_fmt(cmd.quantity)} is below the minimum {_fmt(f.min_qty)} for {cmd.symbol}")
    if f.step_size and cmd.quantity % f.step_size != 0:
        return deny(
            f"quantity {_fmt(cmd.quantity)} is not a multiple of the step size {_fmt(f.step_size)} for {cmd.symbol}"
        )
    return PASS


def check_min_notional(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    minimum = ctx.filters.min_notional
    if minimum is None:
        return PASS
    notional = _notional(cmd, ctx)
    if notional is None:
        return _no_price(cmd, "minimum notional")
    if notional < minimum:
        return deny(f"order notional {_fmt(notional)} is below the minimum {_fmt(minimum)} for {cmd.symbol}")
    return PASS


def check_max_order_notional(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    maximum = ctx.limits.max_order_notional
    if maximum is None:
        return PASS
    notional = _notional(cmd, ctx)
    if notional is None:
        return _no_price(cmd, "maximum order notional")
    if notional > maximum:
        return deny(f"order notional {_fmt(notional)} exceeds the maximum {_fmt(maximum)} per order")
    return PASS


def check_max_position(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    maximum = ctx.limits.max_position_per_symbol
    if maximum is None:
        return PASS
    after = ctx.position_qty + _signed_qty(cmd)
    if abs(after) > maximum and abs(after) > abs(ctx.position_qty):
        return deny(f"position in {cmd.symbol} would be {_fmt(after)}, beyond the limit of {_fmt(maximum)}")
    return PASS


def check_gross_exposure(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    lim = ctx.limits
    scopes = (
        ("account", ctx.gross_exposure_account, lim.max_gross_exposure_account),
        ("user", ctx.gross_exposure_user, lim.max_gross_exposure_user),
        ("fund", ctx.gross_exposure_fund, lim.max_gross_exposure_fund),
    )
    if cmd.reduce_only or all(limit is None for _, _, limit in scopes):
        return PASS
    notional = _notional(cmd, ctx)
    if notional is None:
        return _no_price(cmd, "gross exposure")
    for scope, current, limit in scopes:
        if limit is not None and current + notional > limit:
            return deny(
                f"{scope} gross exposure would be {_fmt(current + notional)}, beyond the limit of {_fmt(limit)}"
            )
    return PASS


def check_max_open_orders(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    maximum = ctx.limits.max_open_orders
    if maximum is not None and ctx.open_orders >= maximum:
        return deny(f"{ctx.open_orders} open orders already; the limit is {maximum}")
    return PASS


def check_order_rate(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    maximum = ctx.limits.max_orders_per_minute
    if maximum is not None and ctx.orders_last_minute >= maximum:
        return deny(f"{ctx.orders_last_minute} orders in the last minute; the limit is {maximum} per minute")
    return PASS


def check_price_band(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    band = ctx.limits.price_band_pct
    if band is None or cmd.order_type not in _PRICED_TYPES or cmd.price is None:
        return PASS
    mark = ctx.mark_price
    if mark is None:
        return _no_price(cmd, "price band")
    low = mark * (1 - band / 100)
    high = mark * (1 + band / 100)
    if not low <= cmd.price <= high:
        return deny(
            f"price {_fmt(cmd.price)} is outside ±{_fmt(band)}% of the mark {_fmt(mark)} for {cmd.symbol} "
            f"(allowed {_fmt(low)} to {_fmt(high)})"
        )
    return PASS


def check_daily_loss(cmd: PlaceOrder, ctx: RiskContext) -> RiskDecision:
    limit = ctx.limits.daily_loss_limit
    if limit is None or cmd.reduce_only:
        return PASS
    floor = ctx.start_of_day_equity - limit
    if ctx.equity <= floor:
        return deny(
            f"daily loss limit {_fmt(limit)} reached: equity {_fmt(ctx.equity)} <= {_fmt(floor)}; "
            "only reduce-only orders are allowed"
        )
    return PASS


PRE_TRADE_CHECKS: tuple[RiskCheck, ...] = (
    check_valid_numbers,
    check_known_symbol,
    check_account_owner,
    check_kill_switch,
    check_tick_size,
    check_lot_size,
    check_min_notional,
    check_price_band,
    check_max_order_notional,
    check_max_position,
    check_gross_exposure,
    check_max_open_orders,
    check_order_rate,
    check_daily_loss,
)


def evaluate(cmd: PlaceOrder, ctx: RiskContext, checks: tuple[RiskCheck, ...] = PRE_TRADE_CHECKS) -> RiskDecision:
    """Run the checks in order and return the first denial, or :data:`PASS`."""
    for check in checks:
        decision = check(cmd, ctx)
        if not decision.allowed:
            return decision
    return PASS
