"""Gathers the plain-data :class:`RiskContext` for one order, then runs the pre-trade checks.

Every limit of the fund is read in one statement at most once per ``limits_ttl_s`` (a change applies within a
second, no restart). Per order, one statement reads only the figures its limits use (position, open orders,
recent orders, exposures, equity): an order with none of those limits costs no read at all. Mark prices come
from the live market feed, falling back to ``mark_prices``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from psycopg_pool import AsyncConnectionPool

from core.domain.orders import PlaceOrder
from realtime.exchanges.base import Market
from realtime.orders.venues import VenueRegistry
from realtime.portfolio.marks import MARKED_BY
from realtime.risk.limits import LimitRows, limits_for, load_all_limits
from realtime.risk.pretrade import (
    RiskContext,
    RiskDecision,
    RiskLimits,
    SymbolFilters,
    check_account_owner,
    check_valid_numbers,
    deny,
    evaluate,
)

_OPEN = "status NOT IN ('filled', 'canceled', 'rejected', 'denied', 'expired')"
_EXPOSURE = (
    f"SELECT coalesce(sum(abs(p.quantity * m.price)), 0) FROM positions p JOIN mark_prices m ON {MARKED_BY} WHERE "
)
# Each figure the checks may need, with the limits that need it: an order reads only what its limits use.
_FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "position": (
        "(SELECT quantity FROM positions WHERE account_id = %(account)s AND symbol = %(symbol)s)",
        ("max_position_per_symbol",),
    ),
    "open_orders": (f"(SELECT count(*) FROM orders WHERE account_id = %(account)s AND {_OPEN})", ("max_open_orders",)),
    "recent": (
        "(SELECT count(*) FROM orders WHERE account_id = %(account)s AND created_at > now() - interval '1 minute')",
        ("max_orders_per_minute",),
    ),
    "exposure_account": (f"({_EXPOSURE} p.account_id = %(account)s)", ("max_gross_exposure_account",)),
    "exposure_user": (f"({_EXPOSURE} p.user_id = %(user)s)", ("max_gross_exposure_user",)),
    "exposure_fund": (f"({_EXPOSURE} true)", ("max_gross_exposure_fund",)),
    "start_of_day": (
        "(SELECT equity FROM portfolio_snapshots WHERE account_id = %(account)s "
        "AND ts >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' ORDER BY ts LIMIT 1)",
        ("daily_loss_limit",),
    ),
    "equity": (
        "(SELECT equity FROM portfolio_snapshots WHERE account_id = %(account)s ORDER BY ts DESC LIMIT 1)",
        ("daily_loss_limit",),
    ),
}
_STORED_MARK = "SELECT price FROM mark_prices WHERE symbol = %s ORDER BY ts DESC LIMIT 1"


@lru_cache(maxsize=256)
def _figures_sql(names: tuple[str, ...]) -> str:
    return "SELECT " + ", ".join(_FIGURES[n][0] for n in names)


def needed_figures(limits: RiskLimits) -> tuple[str, ...]:
    """The figures the configured limits need (none when the order has no such limit)."""
    return tuple(n for n, (_, uses) in _FIGURES.items() if any(getattr(limits, u) is not None for u in uses))


def symbol_filters(markets: dict[str, Market] | None, symbol: str) -> SymbolFilters:
    if markets is None:
        return SymbolFilters(known=True)  # not loaded: the venue's own filters still apply
    market = markets.get(symbol)
    if market is None or not market.active:
        return SymbolFilters(known=False)
    return SymbolFilters(
        tick_size=market.tick_size or None,
        step_size=market.step_size or None,
        min_qty=market.min_qty or None,
        min_notional=market.min_notional or None,
    )


@dataclass
class RiskGate:
    pool: AsyncConnectionPool[Any]
    venues: VenueRegistry
    marks: dict[str, Decimal] = field(default_factory=dict)  # symbol -> last trade price, fed by the market feed
    limits_ttl_s: float = 1.0
    _rows: LimitRows = field(default_factory=dict)
    _loaded_at: float = -1e9
    _loading: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def screen(self, cmd: PlaceOrder) -> RiskDecision:
        """Checks that decide whether the order can be recorded at all: numbers and ownership."""
        decision = check_valid_numbers(cmd, _BARE)
        if not decision.allowed:
            return decision
        account = await self.venues.account(cmd.account_id)
        if account is None:
            return deny(f"unknown account {cmd.account_id}")
        if not account.active:
            return deny(f"account {cmd.account_id} is deactivated")
        if cmd.exchange != account.exchange:
            return deny(f"account {cmd.account_id} is on {account.exchange}, not {cmd.exchange}")
        return check_account_owner(cmd, RiskContext(filters=SymbolFilters(), account_owner_user_id=account.user_id))

    async def limits(self, account_id: str, user_id: str) -> tuple[RiskLimits, frozenset[str]]:
        """The limits of one order, from every limit read at most ``limits_ttl_s`` ago (one read for all)."""
        if time.monotonic() - self._loaded_at >= self.limits_ttl_s:
            async with self._loading:
                if time.monotonic() - self._loaded_at >= self.limits_ttl_s:
                    async with self.pool.connection() as conn:
                        self._rows = await load_all_limits(conn)
                    self._loaded_at = time.monotonic()
        return limits_for(self._rows, account_id, user_id)

    def forget_limits(self) -> None:
        """Re-read the limits for the very next order (a kill switch or limit changed here)."""
        self._loaded_at = -1e9

    async def context(self, cmd: PlaceOrder) -> RiskContext:
        limits, killed = await self.limits(cmd.account_id, cmd.user_id)
        try:
            markets = await self.venues.markets(cmd.exchange, cmd.account_id)
        except Exception:
            markets = self.venues.known_markets(cmd.exchange)
        names = needed_figures(limits)
        figures: dict[str, Any] = {}
        mark = self.marks.get(cmd.symbol)
        if names or mark is None:
            async with self.pool.connection() as conn:
                if names:
                    params = {"account": cmd.account_id, "user": cmd.user_id, "symbol": cmd.symbol}
                    row = await (await conn.execute(_figures_sql(names), params)).fetchone()
                    figures = dict(zip(names, row or (), strict=True))
                if mark is None:
                    stored = await (await conn.execute(_STORED_MARK, (cmd.symbol,))).fetchone()
                    mark = Decimal(stored[0]) if stored else None

        def dec(name: str) -> Decimal:
            value = figures.get(name)
            return Decimal(0) if value is None else Decimal(value)

        equity = dec("equity")
        return RiskContext(
            filters=symbol_filters(markets, cmd.symbol),
            account_owner_user_id=cmd.user_id,
            mark_price=mark,
            limits=limits,
            position_qty=dec("position"),
            gross_exposure_account=dec("exposure_account"),
            gross_exposure_user=dec("exposure_user"),
            gross_exposure_fund=dec("exposure_fund"),
            open_orders=int(dec("open_orders")),
            orders_last_minute=int(dec("recent")),
            start_of_day_equity=dec("start_of_day") if figures.get("start_of_day") is not None else equity,
            equity=equity,
            kill_switches=killed,
        )

    async def check(self, cmd: PlaceOrder) -> RiskDecision:
        """Every pre-trade check against fresh context; the first denial wins."""
        return evaluate(cmd, await self.context(cmd))


_BARE = RiskContext(filters=SymbolFilters(), account_owner_user_id="")
