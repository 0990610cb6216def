"""Gathers the plain-data :class:`RiskContext` for one order, then runs the pre-trade checks.

Two reads per order at most: the account's limits (cached for ``limits_ttl_s``, so a change applies within a
second, no restart) and one statement that returns position, open orders, recent order count, exposures and
equity together. Mark prices come from the live market feed, falling back to ``mark_prices``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg_pool import AsyncConnectionPool

from core.domain.orders import PlaceOrder
from realtime.exchanges.base import Market
from realtime.orders.venues import VenueRegistry
from realtime.risk.limits import load_limits
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
    "SELECT coalesce(sum(abs(p.quantity * m.price)), 0) FROM positions p JOIN mark_prices m ON m.symbol = p.symbol "
    "AND m.exchange = CASE WHEN p.exchange = 'simulator' THEN 'binance' ELSE p.exchange END WHERE "
)
_STATS = f"""
SELECT
  (SELECT quantity FROM positions WHERE account_id = %(account)s AND symbol = %(symbol)s),
  (SELECT count(*) FROM orders WHERE account_id = %(account)s AND {_OPEN}),
  (SELECT count(*) FROM orders WHERE account_id = %(account)s AND created_at > now() - interval '1 minute'),
  ({_EXPOSURE} p.account_id = %(account)s),
  ({_EXPOSURE} p.user_id = %(user)s),
  ({_EXPOSURE} true),
  (SELECT price FROM mark_prices WHERE symbol = %(symbol)s ORDER BY ts DESC LIMIT 1),
  (SELECT equity FROM portfolio_snapshots WHERE account_id = %(account)s
     AND ts >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' ORDER BY ts LIMIT 1),
  (SELECT equity FROM portfolio_snapshots WHERE account_id = %(account)s ORDER BY ts DESC LIMIT 1)
"""


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
    _limits: dict[tuple[str, str], tuple[float, RiskLimits, frozenset[str]]] = field(default_factory=dict)

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
        key = (account_id, user_id)
        cached = self._limits.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.limits_ttl_s:
            return cached[1], cached[2]
        async with self.pool.connection() as conn:
            limits, killed = await load_limits(conn, account_id, user_id)
        self._limits[key] = (now, limits, killed)
        return limits, killed

    def forget_limits(self) -> None:
        """Drop cached limits (a kill switch changed here: apply it to the very next order)."""
        self._limits.clear()

    async def context(self, cmd: PlaceOrder) -> RiskContext:
        limits, killed = await self.limits(cmd.account_id, cmd.user_id)
        try:
            markets = await self.venues.markets(cmd.exchange, cmd.account_id)
        except Exception:
            markets = self.venues.known_markets(cmd.exchange)
        async with self.pool.connection() as conn:
            cur = await conn.execute(_STATS, {"account": cmd.account_id, "user": cmd.user_id, "symbol": cmd.symbol})
            row = await cur.fetchone()
        assert row is not None
        position, open_orders, recent, exp_account, exp_user, exp_fund, stored_mark, sod_equity, equity = row
        mark = self.marks.get(cmd.symbol) or (Decimal(stored_mark) if stored_mark is not None else None)
        equity_now = Decimal(equity) if equity is not None else Decimal(0)
        return RiskContext(
            filters=symbol_filters(markets, cmd.symbol),
            account_owner_user_id=cmd.user_id,
            mark_price=mark,
            limits=limits,
            position_qty=Decimal(position or 0),
            gross_exposure_account=Decimal(exp_account),
            gross_exposure_user=Decimal(exp_user),
            gross_exposure_fund=Decimal(exp_fund),
            open_orders=int(open_orders),
            orders_last_minute=int(recent),
            start_of_day_equity=Decimal(sod_equity) if sod_equity is not None else equity_now,
            equity=equity_now,
            kill_switches=killed,
        )

    async def check(self, cmd: PlaceOrder) -> RiskDecision:
        """Every pre-trade check against fresh context; the first denial wins."""
        return evaluate(cmd, await self.context(cmd))


_BARE = RiskContext(filters=SymbolFilters(), account_owner_user_id="")
