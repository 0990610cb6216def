"""Order command handlers of the order service: ``(command, uow, orders=OrderDeps)``, one table, one bus.

Each handler records its decision in one unit of work and acts on the venue only after the commit: a denial is
an ``OrderDenied`` event with the reason; an order for the venue is committed ``submitted`` and then sent;
a platform-held order is committed ``armed`` and then put in the trigger book. Input that cannot make a valid
order at all (bad numbers, someone else's account) is refused with the reason and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

import structlog
from psycopg_pool import AsyncConnectionPool

from core.domain.messages import Command, DomainError, new_id
from core.domain.orders import (
    CancelOrder,
    ModifyOrder,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    PlaceBracketOrder,
    PlaceOrder,
    RearmOrder,
    TriggerOrder,
)
from core.messaging.bus import CommandHandler
from core.observability.metrics import Metrics
from core.uow import DuplicateClientOrderId, UnitOfWork
from realtime.orders.active_accounts import ActiveAccounts
from realtime.orders.conditional import ArmedOrder, TriggerBook, initial_trigger
from realtime.orders.execution import Execution, update_order
from realtime.orders.kill_switch import activate_kill_switch, deactivate_kill_switch, set_risk_limit
from realtime.orders.risk_gate import RiskGate

log = structlog.get_logger(__name__)

_FIND = "SELECT id::text, status, reason FROM orders WHERE account_id = %s AND client_order_id = %s"


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What a command did: the order's id and status, the reason when denied, and bracket legs' ids."""

    order_id: str | None
    status: str
    reason: str | None = None
    duplicate: bool = False
    legs: tuple[str, ...] = ()


@dataclass
class OrderDeps:
    risk: RiskGate
    execution: Execution
    triggers: TriggerBook
    pool: AsyncConnectionPool  # type: ignore[type-arg]
    metrics: Metrics
    versions: dict[str, int] = field(default_factory=dict)  # armed order id -> version the book holds

    def __post_init__(self) -> None:
        self.denied = self.metrics.counter("patriot_orders_denied_total", "Orders denied, by check", ("check",))
        self.placed = self.metrics.counter("patriot_orders_placed_total", "Orders recorded", ("kind",))
        self.accounts = ActiveAccounts(self.pool)
        self.cancelled_on_arrival = self.metrics.counter(
            "patriot_orders_cancelled_on_arrival_total", "Orders cancelled unsent: their account was deactivated"
        )

    def tick(self, exchange: str, symbol: str) -> Decimal | None:
        market = (self.risk.venues.known_markets(exchange) or {}).get(symbol)
        return market.tick_size if market is not None and market.tick_size else None

    def arm(self, order: Order) -> None:
        self.triggers.arm(ArmedOrder.of(order, self.tick(order.exchange, order.symbol)))
        self.versions[order.id] = order.version

    def disarm(self, order_id: str) -> None:
        self.triggers.disarm(order_id)
        self.versions.pop(order_id, None)

    def count_denial(self, reason: str) -> None:
        self.denied.labels(check=reason.split(" ")[0][:24]).inc()


async def _decide(cmd: PlaceOrder, order: Order, deps: OrderDeps) -> None:
    """Risk, then the order's first step: denied, armed (platform-held) or submitted."""
    decision = await deps.risk.check(cmd)
    if not decision.allowed:
        assert decision.reason is not None
        deps.count_denial(decision.reason)
        order.deny(decision.reason, cmd.correlation_id, str(cmd.command_id))
    elif order.is_conditional:
        start = initial_trigger(order, deps.risk.marks.get(order.symbol), deps.tick(order.exchange, order.symbol))
        if start is None:
            order.deny(f"no market price for {order.symbol} yet to start the trailing stop from")
        else:
            order.arm(start[0], peak_price=start[1], correlation_id=cmd.correlation_id)
    else:
        order.submit(cmd.correlation_id, str(cmd.command_id))


DEACTIVATED_ON_ARRIVAL = "account deactivated before the order reached the venue"


def _cancel_unsent(order: Order) -> bool:
    """Cancel an order the venue never saw; False when it is already ending (the deactivation got to it)."""
    if order.is_terminal or order.status is OrderStatus.PENDING_CANCEL:
        return False
    order.cancel(DEACTIVATED_ON_ARRIVAL)
    return True


async def _after_commit(order: Order, deps: OrderDeps) -> Order:
    """Send (or arm) a committed order, unless its account was deactivated meanwhile: then cancel it unsent.

    The risk check read the account before the commit, so a deactivation may have committed in between and
    listed the account's open orders before this one existed. Deactivation marks the account inactive before it
    lists, so reading the flag after this commit sees one of the two: the order in the list (cancelled by the
    deactivation) or the account inactive (cancelled here). Either way it never reaches the venue."""
    deps.execution.faults.maybe_crash("orders.after_commit")
    if order.status not in (OrderStatus.SUBMITTED, OrderStatus.ARMED):
        return order
    if not await deps.accounts.active(order.account_id):
        deps.cancelled_on_arrival.inc()
        log.info("order cancelled: its account was deactivated", order_id=order.id, account_id=order.account_id)
        return await update_order(deps.execution.uow_factory, order.id, _cancel_unsent, known=order) or order
    if order.status is OrderStatus.SUBMITTED:
        deps.execution.submit_soon(order)
    else:
        deps.arm(order)
    return order


async def _existing(uow: UnitOfWork, cmd: PlaceOrder) -> OrderResult:
    cur = await (await uow.connection()).execute(_FIND, (cmd.account_id, cmd.client_order_id))
    row = await cur.fetchone()
    if row is None:
        raise DomainError(f"client order id {cmd.client_order_id} clashed but no such order exists")
    return OrderResult(str(row[0]), str(row[1]), None if row[2] is None else str(row[2]), duplicate=True)


async def place_order(cmd: PlaceOrder, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    screened = await orders.risk.screen(cmd)
    if not screened.allowed:
        assert screened.reason is not None
        orders.count_denial(screened.reason)
        log.info("order refused", reason=screened.reason, client_order_id=cmd.client_order_id)
        return OrderResult(None, OrderStatus.DENIED.value, screened.reason)
    order = Order.place(cmd, order_id=str(new_id()))
    await _decide(cmd, order, orders)
    await orders.execution.faults.pause("orders.before_commit")
    uow.orders.add(order)
    try:
        await uow.commit()
    except DuplicateClientOrderId:
        return await _existing(uow, cmd)
    orders.placed.labels(kind=cmd.order_type.value).inc()
    order = await _after_commit(order, orders)
    return OrderResult(order.id, order.status.value, order.reason)


async def _owned(uow: UnitOfWork, order_id: str, user_id: str) -> Order | None:
    try:
        order = await uow.orders.get(order_id)
    except Exception:  # not an id at all
        return None
    return order if order is not None and order.user_id == user_id else None


def begin_cancel(order: Order, reason: str, correlation_id: str | None = None) -> bool:
    """The first step of cancelling: at once for an order the venue never saw, else a cancel request.
    False when the order is already ending."""
    if order.is_terminal or order.status is OrderStatus.PENDING_CANCEL:
        return False
    if order.status in (OrderStatus.INITIALIZED, OrderStatus.ARMED, OrderStatus.TRIGGERED):
        order.cancel(reason, correlation_id)
    else:
        order.request_cancel(reason, correlation_id)
    return True


def after_cancel(order: Order, deps: OrderDeps) -> None:
    if order.status is OrderStatus.PENDING_CANCEL:
        deps.execution.cancel_soon(order)
    else:
        deps.disarm(order.id)


async def cancel_order(cmd: CancelOrder, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    order = await _owned(uow, cmd.order_id, cmd.user_id)
    if order is None:
        return OrderResult(None, "not_found", f"order {cmd.order_id} not found")
    if not begin_cancel(order, cmd.reason, cmd.correlation_id):
        return OrderResult(order.id, order.status.value, order.reason)
    await uow.commit()
    after_cancel(order, orders)
    return OrderResult(order.id, order.status.value, order.reason)


async def modify_order(cmd: ModifyOrder, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    """Cancel-replace: the old order is cancelled and a new one, with the changed fields, goes through risk."""
    old = await _owned(uow, cmd.order_id, cmd.user_id)
    if old is None:
        return OrderResult(None, "not_found", f"order {cmd.order_id} not found")
    if old.is_terminal or old.status is OrderStatus.PENDING_CANCEL:
        return OrderResult(old.id, old.status.value, f"order is {old.status.value}; nothing to modify")
    new_cmd = PlaceOrder(
        account_id=old.account_id,
        user_id=old.user_id,
        client_order_id=f"{old.client_order_id}~{str(cmd.command_id)[:8]}",
        exchange=old.exchange,
        symbol=old.symbol,
        side=old.side,
        order_type=old.order_type,
        quantity=cmd.quantity if cmd.quantity is not None else old.leaves_quantity,
        price=cmd.price if cmd.price is not None else old.price,
        trigger_price=cmd.trigger_price if cmd.trigger_price is not None else old.trigger_price,
        time_in_force=old.time_in_force,
        reduce_only=old.reduce_only,
        strategy_id=old.strategy_id,
        trailing_offset=old.trailing_offset,
        trailing_offset_pct=old.trailing_offset_pct,
        lock_steps=old.lock_steps,
        reference_price=old.reference_price,
        correlation_id=cmd.correlation_id,
    )
    screened = await orders.risk.screen(new_cmd)
    if not screened.allowed:
        return OrderResult(None, OrderStatus.DENIED.value, screened.reason)
    new = Order.place(new_cmd, str(new_id()), old.parent_order_id, old.oco_group, replaces=old.id)
    await _decide(new_cmd, new, orders)
    if new.status is OrderStatus.DENIED:
        return OrderResult(None, OrderStatus.DENIED.value, new.reason)  # the old order stays as it was
    live_on_venue = old.status not in (OrderStatus.INITIALIZED, OrderStatus.ARMED, OrderStatus.TRIGGERED)
    if live_on_venue and new.status is OrderStatus.SUBMITTED:
        # the replacement waits (initialized) until the venue confirms the old order is gone
        new = Order.place(new_cmd, new.id, old.parent_order_id, old.oco_group, replaces=old.id)
    begin_cancel(old, f"replaced by {new.id}", cmd.correlation_id)
    uow.orders.add(new)
    await uow.commit()
    after_cancel(old, orders)
    if live_on_venue and new.status is OrderStatus.INITIALIZED:
        orders.execution.replace_after_cancel(old, new)
    else:
        new = await _after_commit(new, orders)
    return OrderResult(new.id, new.status.value, new.reason)


def _opposite(side: OrderSide) -> OrderSide:
    return OrderSide.SELL if side is OrderSide.BUY else OrderSide.BUY


async def place_bracket(cmd: PlaceBracketOrder, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    """Entry plus stop-loss and take-profit legs (one OCO pair), armed when the entry fills."""
    if cmd.stop_loss is None and cmd.take_profit is None:
        return OrderResult(None, OrderStatus.DENIED.value, "a bracket needs a stop-loss, a take-profit or both")
    if cmd.stop_loss is not None and cmd.take_profit is not None:
        low, high = (cmd.stop_loss, cmd.take_profit) if cmd.side is OrderSide.BUY else (cmd.take_profit, cmd.stop_loss)
        if not low < high:
            return OrderResult(
                None, OrderStatus.DENIED.value, "the stop-loss must be on the losing side of the take-profit"
            )
    base = PlaceOrder(
        account_id=cmd.account_id,
        user_id=cmd.user_id,
        client_order_id=cmd.client_order_id,
        exchange=cmd.exchange,
        symbol=cmd.symbol,
        side=cmd.side,
        order_type=cmd.entry_type or OrderType.MARKET,
        quantity=cmd.quantity,
        price=cmd.entry_price,
        strategy_id=cmd.strategy_id,
        correlation_id=cmd.correlation_id,
    )
    legs: list[PlaceOrder] = []
    exit_side = _opposite(cmd.side) if cmd.entry_type is not None else cmd.side
    if cmd.stop_loss is not None:
        trailing = cmd.trailing_offset_pct is not None
        legs.append(
            replace(
                base,
                client_order_id=f"{cmd.client_order_id}:sl",
                side=exit_side,
                order_type=OrderType.TRAILING_STOP_MARKET if trailing else OrderType.STOP_MARKET,
                price=None,
                trigger_price=cmd.stop_loss,
                trailing_offset_pct=cmd.trailing_offset_pct,
                reduce_only=True,
            )
        )
    if cmd.take_profit is not None:
        legs.append(
            replace(
                base,
                client_order_id=f"{cmd.client_order_id}:tp",
                side=exit_side,
                order_type=OrderType.TAKE_PROFIT_MARKET,
                price=None,
                trigger_price=cmd.take_profit,
                reduce_only=True,
            )
        )
    for command in ([base] if cmd.entry_type is not None else []) + legs:
        screened = await orders.risk.screen(command)
        if not screened.allowed:
            return OrderResult(None, OrderStatus.DENIED.value, screened.reason)
    entry = Order.place(base, str(new_id())) if cmd.entry_type is not None else None
    group = entry.id if entry is not None else str(new_id())
    leg_orders = [Order.place(leg, str(new_id()), entry.id if entry else None, group) for leg in legs]
    if entry is not None:
        await _decide(base, entry, orders)
        uow.orders.add(entry)
        if entry.status is OrderStatus.DENIED:
            leg_orders = []
    else:
        for leg, leg_cmd in zip(leg_orders, legs, strict=True):
            await _decide(leg_cmd, leg, orders)
    for leg in leg_orders:
        uow.orders.add(leg)
    try:
        await uow.commit()
    except DuplicateClientOrderId:
        return await _existing(uow, base if entry is not None else legs[0])
    released = [await _after_commit(placed, orders) for placed in ([entry] if entry is not None else []) + leg_orders]
    head = released[0]
    if entry is not None and head.reason == DEACTIVATED_ON_ARRIVAL:  # the legs would wait for it forever
        for leg in leg_orders:
            await update_order(orders.execution.uow_factory, leg.id, _cancel_unsent, known=leg)
    return OrderResult(head.id, head.status.value, head.reason, legs=tuple(leg.id for leg in leg_orders))


async def trigger_order(cmd: TriggerOrder, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    """An armed order's level was crossed: trigger and submit it; its OCO siblings are cancelled with it."""
    order = await uow.orders.get(cmd.order_id)
    if order is None or order.status is not OrderStatus.ARMED:
        return OrderResult(cmd.order_id, order.status.value if order else "not_found")
    order.trigger(cmd.last_price, cmd.correlation_id)
    order.submit(cmd.correlation_id, str(cmd.command_id))
    siblings = await _oco_siblings(uow, order)
    for sibling in siblings:
        begin_cancel(sibling, f"one-cancels-other: {order.id} triggered")
    await uow.commit()
    orders.versions.pop(order.id, None)
    for sibling in siblings:
        after_cancel(sibling, orders)
    order = await _after_commit(order, orders)
    return OrderResult(order.id, order.status.value)


async def _oco_siblings(uow: UnitOfWork, order: Order) -> list[Order]:
    if order.oco_group is None:
        return []
    cur = await (await uow.connection()).execute(
        "SELECT id::text FROM orders WHERE oco_group = %s AND id <> %s AND status IN ('initialized', 'armed')",
        (order.oco_group, order.id),
    )
    found = [await uow.orders.get(str(r[0])) for r in await cur.fetchall()]
    return [o for o in found if o is not None]


async def rearm_order(cmd: RearmOrder, uow: UnitOfWork, orders: OrderDeps) -> OrderResult:
    """Record a moved level (trailing ratchet, ladder rung) so a restart resumes exactly there."""
    order = await uow.orders.get(cmd.order_id)
    if order is None or order.status is not OrderStatus.ARMED:
        return OrderResult(cmd.order_id, order.status.value if order else "not_found")
    order.arm(cmd.trigger_price, peak_price=cmd.peak_price, lock_step=cmd.lock_step, correlation_id=cmd.correlation_id)
    await uow.commit()
    if order.id in orders.triggers:
        orders.versions[order.id] = order.version
    return OrderResult(order.id, order.status.value)


ORDER_HANDLERS: dict[type[Command], CommandHandler] = {
    PlaceOrder: place_order,
    CancelOrder: cancel_order,
    ModifyOrder: modify_order,
    PlaceBracketOrder: place_bracket,
    TriggerOrder: trigger_order,
    RearmOrder: rearm_order,
}


def order_handlers() -> dict[type[Command], CommandHandler]:
    """The order service's table: order commands, risk-limit and kill-switch commands, exchange-account commands."""
    from core.domain.exchange_accounts import DeactivateExchangeAccount, LinkExchangeAccount
    from core.domain.risk import ActivateKillSwitch, DeactivateKillSwitch, SetRiskLimit
    from realtime.orders.account_commands import deactivate_exchange_account, link_exchange_account

    return {
        **ORDER_HANDLERS,
        SetRiskLimit: set_risk_limit,
        ActivateKillSwitch: activate_kill_switch,
        DeactivateKillSwitch: deactivate_kill_switch,
        LinkExchangeAccount: link_exchange_account,
        DeactivateExchangeAccount: deactivate_exchange_account,
    }
