"""Trigger index for conditional orders the exchange does not hold (stops, take-profits), per symbol and side.

Each symbol keeps two heaps: levels that fire when the price rises to them (buy stops, sell take-profits) and
levels that fire when it falls to them (sell stops, buy take-profits). A price update looks only at the tops
and pops what fired, so it costs O(log n) per order triggered plus O(1), instead of a scan of every armed order.
Cancelling is O(1): the entry stays in its heap and is skipped when it surfaces (lazy deletion); re-arming at a
new level (a trailing stop's ratchet) supersedes the old entry the same way.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import StrEnum


class Direction(StrEnum):
    RISES_TO = "rises_to"  # fire when price >= level: buy stop, sell take-profit
    FALLS_TO = "falls_to"  # fire when price <= level: sell stop, buy take-profit


def direction_for(side: str, kind: str) -> Direction:
    """Which way the price must move to fire a ``kind`` ('stop' or 'take_profit') order on ``side``."""
    if kind == "stop":
        return Direction.RISES_TO if side == "buy" else Direction.FALLS_TO
    if kind == "take_profit":
        return Direction.FALLS_TO if side == "buy" else Direction.RISES_TO
    raise ValueError(f"unknown conditional kind {kind!r}: expected 'stop' or 'take_profit'")


@dataclass(slots=True)
class _SymbolHeaps:
    rises: list[tuple[float, int, str]] = field(default_factory=list)  # (level, seq, order id): min-heap
    falls: list[tuple[float, int, str]] = field(default_factory=list)  # (-level, seq, order id): max-heap


class TriggerIndex:
    def __init__(self) -> None:
        self._symbols: dict[str, _SymbolHeaps] = {}
        self._live: dict[str, int] = {}  # order id -> seq of its current entry
        self._where: dict[str, tuple[str, Direction, float]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._live

    def arm(self, order_id: str, symbol: str, direction: Direction, level: float) -> None:
        """Arm (or re-arm at a new level) one order; the previous entry, if any, no longer fires."""
        if not level > 0:  # also rejects NaN
            raise ValueError(f"trigger level must be a positive number, got {level!r}")
        self._seq += 1
        self._live[order_id] = self._seq
        self._where[order_id] = (symbol, direction, level)
        heaps = self._symbols.get(symbol)
        if heaps is None:
            heaps = self._symbols[symbol] = _SymbolHeaps()
        if direction is Direction.RISES_TO:
            heapq.heappush(heaps.rises, (level, self._seq, order_id))
        else:
            heapq.heappush(heaps.falls, (-level, self._seq, order_id))

    def disarm(self, order_id: str) -> bool:
        """Cancel one armed order; False if it was not armed."""
        self._where.pop(order_id, None)
        return self._live.pop(order_id, None) is not None

    def level(self, order_id: str) -> tuple[str, Direction, float] | None:
        return self._where.get(order_id)

    def on_price(self, symbol: str, price: float) -> list[str]:
        """Orders of ``symbol`` that ``price`` fires, in the order their levels were crossed; they are disarmed."""
        heaps = self._symbols.get(symbol)
        if heaps is None:
            return []
        fired: list[str] = []
        live = self._live
        rises = heaps.rises
        while rises and rises[0][0] <= price:
            _, seq, order_id = heapq.heappop(rises)
            if live.get(order_id) == seq:
                del live[order_id]
                del self._where[order_id]
                fired.append(order_id)
        falls = heaps.falls
        while falls and -falls[0][0] >= price:
            _, seq, order_id = heapq.heappop(falls)
            if live.get(order_id) == seq:
                del live[order_id]
                del self._where[order_id]
                fired.append(order_id)
        return fired

    def armed(self) -> dict[str, tuple[str, Direction, float]]:
        """Every armed order and where it sits (what a restart must restore exactly)."""
        return dict(self._where)


def naive_scan(orders: dict[str, tuple[str, Direction, float]], symbol: str, price: float) -> list[str]:
    """The loop over every tracked order that the index replaces; kept for the benchmark's comparison."""
    fired = [
        order_id
        for order_id, (sym, direction, level) in orders.items()
        if sym == symbol and (price >= level if direction is Direction.RISES_TO else price <= level)
    ]
    for order_id in fired:
        del orders[order_id]
    return fired
