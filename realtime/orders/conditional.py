"""Platform-held conditional orders on top of the trigger index: stops, take-profits, trailing stops, ladders.

Every moving part is an entry of the :class:`TriggerIndex`, so a price update stays O(log n + entries hit):
- the order's own level (a stop fires when the price falls to it for a sell, rises to it for a buy);
- a trailing stop's *ratchet*: an entry just beyond its best price; when the price passes it, the best price
  and the stop move (by at least one tick) and both entries are re-armed;
- a ladder's *next rung*: when the gain from the reference price reaches the rung, the stop is locked at the
  rung's level and the following rung is armed.
Levels are floats in the index (the hot path) and Decimal everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from core.domain.orders import LockStep, Order, OrderSide, OrderType
from realtime.orders.triggers import Direction, TriggerIndex, direction_for

_HUNDRED = Decimal(100)
_RATCHET = "#peak"
_RUNG = "#rung"


@dataclass(slots=True)
class ArmedOrder:
    """One armed order as the book holds it; its level, best price and rung move in place as it ratchets."""

    order_id: str
    symbol: str
    side: OrderSide
    kind: str  # 'stop' or 'take_profit'
    trigger: Decimal
    tick: Decimal | None = None
    trailing_offset: Decimal | None = None
    trailing_offset_pct: Decimal | None = None
    peak: Decimal | None = None
    lock_steps: tuple[LockStep, ...] = ()
    reference: Decimal | None = None
    lock_step: int = 0

    @classmethod
    def of(cls, order: Order, tick: Decimal | None = None) -> ArmedOrder:
        assert order.trigger_price is not None
        take_profit = order.order_type in (OrderType.TAKE_PROFIT_MARKET, OrderType.TAKE_PROFIT_LIMIT)
        return cls(
            order_id=order.id,
            symbol=order.symbol,
            side=order.side,
            kind="take_profit" if take_profit else "stop",
            trigger=order.trigger_price,
            tick=tick,
            trailing_offset=order.trailing_offset,
            trailing_offset_pct=order.trailing_offset_pct,
            peak=order.peak_price,
            lock_steps=order.lock_steps,
            reference=order.reference_price,
            lock_step=order.lock_step,
        )

    @property
    def trailing(self) -> bool:
        return self.trailing_offset is not None or self.trailing_offset_pct is not None


@dataclass(frozen=True, slots=True)
class Fire:
    order_id: str
    last_price: Decimal


@dataclass(frozen=True, slots=True)
class Rearm:
    order_id: str
    trigger: Decimal
    peak: Decimal | None
    lock_step: int


Action = Fire | Rearm


def trailing_level(side: OrderSide, peak: Decimal, offset: Decimal | None, pct: Decimal | None) -> Decimal:
    """A trailing stop's level for its best price: below it for a sell (protecting a long), above for a buy."""
    distance = offset if offset is not None else peak * (pct or Decimal(0)) / _HUNDRED
    return peak - distance if side is OrderSide.SELL else peak + distance


def on_tick(value: Decimal, tick: Decimal | None, side: OrderSide) -> Decimal:
    """Round a stop level onto the price grid, away from the market (a sell stop down, a buy stop up)."""
    if not tick:
        return value
    rounding = ROUND_FLOOR if side is OrderSide.SELL else ROUND_CEILING
    return (value / tick).to_integral_value(rounding) * tick


def initial_trigger(order: Order, mark: Decimal | None, tick: Decimal | None) -> tuple[Decimal, Decimal | None] | None:
    """(level, best price) to arm a new conditional order at; None when a trailing stop has no price to start."""
    if order.order_type is OrderType.TRAILING_STOP_MARKET and order.trigger_price is None:
        if mark is None:
            return None
        level = trailing_level(order.side, mark, order.trailing_offset, order.trailing_offset_pct)
        return on_tick(level, tick, order.side), mark
    if order.trigger_price is None:
        return None
    peak = mark if order.order_type is OrderType.TRAILING_STOP_MARKET else None
    return order.trigger_price, peak


def _favourable(armed: ArmedOrder) -> Direction:
    """Which way the price moves in the position's favour (up for a sell stop protecting a long)."""
    return Direction.RISES_TO if armed.side is OrderSide.SELL else Direction.FALLS_TO


class TriggerBook:
    """Armed orders by id and the index that finds which a price update fires or moves."""

    def __init__(self) -> None:
        self.index = TriggerIndex()
        self._armed: dict[str, ArmedOrder] = {}

    def __len__(self) -> int:
        return len(self._armed)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._armed

    def get(self, order_id: str) -> ArmedOrder | None:
        return self._armed.get(order_id)

    def armed(self) -> dict[str, ArmedOrder]:
        return dict(self._armed)

    def arm(self, armed: ArmedOrder) -> None:
        """Arm (or re-arm) one order with its ratchet and ladder entries."""
        self.disarm(armed.order_id)
        self._armed[armed.order_id] = armed
        oid, symbol = armed.order_id, armed.symbol
        self.index.arm(oid, symbol, direction_for(armed.side.value, armed.kind), float(armed.trigger))
        self._arm_ratchet(armed)
        rung = self._next_rung(armed)
        if rung is not None:
            self.index.arm(oid + _RUNG, symbol, _favourable(armed), float(rung))

    def _arm_ratchet(self, armed: ArmedOrder) -> None:
        """A trailing stop's entry just beyond its best price (one tick): passing it moves the best price."""
        if not armed.trailing:
            return
        if armed.peak is None:  # no best price yet: the first price beyond the stop starts the trail
            beyond = armed.trigger
        else:
            step = armed.tick or armed.peak * Decimal("1e-9")
            beyond = armed.peak + step if armed.side is OrderSide.SELL else armed.peak - step
        if beyond > 0:
            self.index.arm(armed.order_id + _RATCHET, armed.symbol, _favourable(armed), float(beyond))

    def disarm(self, order_id: str) -> bool:
        self.index.disarm(order_id + _RATCHET)
        self.index.disarm(order_id + _RUNG)
        self.index.disarm(order_id)
        return self._armed.pop(order_id, None) is not None

    def on_price(self, symbol: str, price: Decimal | float) -> list[Action]:
        """What ``price`` does: orders fired (disarmed here) and levels moved (re-armed here). A float price
        (the market feed's own) becomes a Decimal only when something fires."""
        as_float = price if isinstance(price, float) else float(price)
        fired = self.index.on_price(symbol, as_float)
        if not fired:
            return []
        if isinstance(price, float):
            price = Decimal(repr(price))
        actions: list[Action] = []
        while fired:
            moved = False
            for key in fired:
                if key.endswith(_RATCHET) or key.endswith(_RUNG):
                    rearm = self._move(key[:-5], price)
                    if rearm is not None:
                        actions.append(rearm)
                        moved = True
                elif self._armed.pop(key, None) is not None:
                    self.index.disarm(key + _RATCHET)
                    self.index.disarm(key + _RUNG)
                    actions.append(Fire(key, price))
            # a moved level can already be crossed by this same price (a ladder locking the whole gain)
            fired = self.index.on_price(symbol, as_float) if moved else []
        return actions

    def _move(self, order_id: str, price: Decimal) -> Rearm | None:
        """A ratchet or rung entry fired: move the best price / level, re-arm only the entries that changed."""
        armed = self._armed.get(order_id)
        if armed is None:
            return None
        sell = armed.side is OrderSide.SELL
        trigger, peak, step = armed.trigger, armed.peak, armed.lock_step
        if armed.trailing and (peak is None or (price > peak if sell else price < peak)):
            peak = price
            level = on_tick(
                trailing_level(armed.side, peak, armed.trailing_offset, armed.trailing_offset_pct),
                armed.tick,
                armed.side,
            )
            if level > trigger if sell else level < trigger:
                trigger = level
        while step < len(armed.lock_steps):
            rung = self._rung_level(armed, step)
            if rung > price if sell else rung < price:
                break
            lock = self._lock_level(armed, step)
            if lock > trigger if sell else lock < trigger:
                trigger = lock
            step += 1
        changed = (trigger, step) != (armed.trigger, armed.lock_step)
        old_trigger, old_step = armed.trigger, armed.lock_step
        armed.trigger, armed.peak, armed.lock_step = trigger, peak, step
        index, symbol = self.index, armed.symbol
        if trigger != old_trigger:
            index.arm(order_id, symbol, direction_for(armed.side.value, armed.kind), float(trigger))
        self._arm_ratchet(armed)
        if step != old_step:
            rung_level = self._next_rung(armed)
            if rung_level is None:
                index.disarm(order_id + _RUNG)
            else:
                index.arm(order_id + _RUNG, symbol, _favourable(armed), float(rung_level))
        return Rearm(order_id, trigger, peak, step) if changed else None

    @staticmethod
    def _rung_level(armed: ArmedOrder, step: int) -> Decimal:
        assert armed.reference is not None
        gain = armed.lock_steps[step][0] / _HUNDRED
        return armed.reference * (1 + gain) if armed.side is OrderSide.SELL else armed.reference * (1 - gain)

    @staticmethod
    def _lock_level(armed: ArmedOrder, step: int) -> Decimal:
        assert armed.reference is not None
        lock = armed.lock_steps[step][1] / _HUNDRED
        level = armed.reference * (1 + lock) if armed.side is OrderSide.SELL else armed.reference * (1 - lock)
        return on_tick(level, armed.tick, armed.side)

    def _next_rung(self, armed: ArmedOrder) -> Decimal | None:
        if armed.reference is None or armed.lock_step >= len(armed.lock_steps):
            return None
        return self._rung_level(armed, armed.lock_step)
