"""Real-time risk monitor: marks positions to market every second and watches each account, user and the fund.

Measures per scope: gross exposure, equity (quote cash + marked positions), leverage (gross / equity), drawdown
from the day's peak equity, the day's loss against start-of-day equity, and the use of each limit. A limit
crossed is published once (``RiskLimitBreached`` on ``risk.alerts``, through the outbox) until it clears; with
``auto_kill_switch`` set on the scope, the breach also switches the scope off through the order service.
It also keeps ``mark_prices`` current and writes ``portfolio_snapshots`` every ``snapshot_interval_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from core.bootstrap import Kernel, bootstrap
from core.domain.risk import ActivateKillSwitch, RiskLimitBreached
from core.observability.metrics import serve_metrics
from core.settings import Settings
from realtime.orders.commands import CommandClient
from realtime.orders.price_feed import PriceFeed
from realtime.portfolio.marks import MARKED_BY

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
_QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "USD")
_ACCOUNTS = f"""
WITH marked AS (
  SELECT p.account_id, sum(abs(p.quantity * m.price)) AS gross, sum(p.quantity * m.price) AS net,
         sum(CASE WHEN p.avg_entry_price IS NULL THEN 0 ELSE (m.price - p.avg_entry_price) * p.quantity END) AS upnl,
         sum(p.realized_pnl - p.fees) AS rpnl
  FROM positions p JOIN mark_prices m ON {MARKED_BY}
  GROUP BY p.account_id
), cash AS (
  SELECT account_id, sum(free + locked) AS cash FROM balances
  WHERE asset IN ({", ".join(f"'{a}'" for a in _QUOTE_ASSETS)}) GROUP BY account_id
)
SELECT a.id::text, a.user_id::text, coalesce(c.cash, 0), coalesce(m.gross, 0), coalesce(m.net, 0),
       coalesce(m.upnl, 0), coalesce(m.rpnl, 0)
FROM user_accounts a LEFT JOIN marked m ON m.account_id = a.id LEFT JOIN cash c ON c.account_id = a.id
WHERE a.active
"""
_LIMITS = "SELECT scope, scope_id, limit_type, value FROM risk_limits WHERE active"
_START_OF_DAY = """
SELECT DISTINCT ON (account_id) account_id::text, equity FROM portfolio_snapshots
WHERE ts >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' ORDER BY account_id, ts
"""
_MARK = """
INSERT INTO mark_prices (exchange, symbol, price, ts) VALUES (%s, %s, %s, to_timestamp(%s / 1000.0))
ON CONFLICT (exchange, symbol) DO UPDATE SET price = EXCLUDED.price, ts = EXCLUDED.ts
"""
_SNAPSHOT = """
INSERT INTO portfolio_snapshots (ts, account_id, user_id, equity, cash, positions_value, unrealized_pnl, realized_pnl)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


@dataclass(slots=True)
class Exposure:
    """One scope's figures at one moment."""

    cash: Decimal = ZERO
    gross: Decimal = ZERO
    net: Decimal = ZERO
    unrealized: Decimal = ZERO
    realized: Decimal = ZERO
    start_of_day: Decimal | None = None

    @property
    def equity(self) -> Decimal:
        return self.cash + self.net

    @property
    def leverage(self) -> Decimal:
        return self.gross / self.equity if self.equity > 0 else (ZERO if self.gross == 0 else Decimal("Infinity"))

    def add(self, other: Exposure) -> None:
        self.cash += other.cash
        self.gross += other.gross
        self.net += other.net
        self.unrealized += other.unrealized
        self.realized += other.realized
        # an account with no start-of-day figure yet (linked today, or before the day's first snapshot) counts
        # as unchanged since the start of the day, so it neither hides nor invents a loss of the others
        other_start = other.start_of_day if other.start_of_day is not None else other.equity
        self.start_of_day = (self.start_of_day or ZERO) + other_start


@dataclass(frozen=True, slots=True)
class Breach:
    scope: str
    scope_id: str
    user_id: str
    metric: str
    value: Decimal
    limit: Decimal

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.scope, self.scope_id, self.metric)

    def message(self) -> str:
        who = "the fund" if self.scope == "fund" else f"{self.scope} {self.scope_id}"
        return f"{self.metric} of {who} is {self.value:.4f}, beyond its limit of {self.limit}"


def breaches(
    scope: str, scope_id: str, user_id: str, x: Exposure, peak: Decimal, limits: dict[str, Decimal]
) -> list[Breach]:
    """Every limit of one scope its figures are beyond (pure: the tests drive it directly)."""
    found: list[Breach] = []

    def over(metric: str, value: Decimal, limit_type: str) -> None:
        limit = limits.get(limit_type)
        if limit is not None and value > limit:
            found.append(Breach(scope, scope_id, user_id, metric, value, limit))

    over("gross_exposure", x.gross, "max_gross_exposure")
    over("leverage", x.leverage, "max_leverage")
    if peak > 0:
        over("drawdown_pct", (peak - x.equity) / peak * 100, "max_drawdown_pct")
    if x.start_of_day is not None:
        over("daily_loss", x.start_of_day - x.equity, "daily_loss_limit")
    return found


@dataclass
class RiskMonitor:
    kernel: Kernel
    feed: PriceFeed
    commands: CommandClient
    snapshot_interval_s: float = 60.0
    active: dict[tuple[str, str, str], Breach] = field(default_factory=dict)
    peaks: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    _marks_written: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    _last_snapshot: float = 0.0

    def __post_init__(self) -> None:
        m = self.kernel.metrics
        self._gauges = {
            name: m.gauge(f"patriot_risk_{name}", f"Risk monitor: {name.replace('_', ' ')}", ("scope", "scope_id"))
            for name in ("equity", "gross_exposure", "leverage", "drawdown_pct")
        }
        self._usage = m.gauge("patriot_risk_limit_usage_ratio", "Measure / limit", ("scope", "scope_id", "limit"))
        self._alerts = m.counter("patriot_risk_breaches_total", "Limits crossed", ("scope", "metric"))

    async def write_marks(self) -> None:
        changed = [(k, v) for k, v in self.feed.venue_marks.items() if self._marks_written.get(k) != v[0]]
        if not changed:
            return
        async with self.kernel.pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(_MARK, [(ex, sym, price, ts) for (ex, sym), (price, ts) in changed])
        for key, (price, _) in changed:
            self._marks_written[key] = price

    async def measure(self) -> tuple[dict[tuple[str, str], Exposure], dict[str, str]]:
        """Figures per (scope, scope id) and each account's owner."""
        async with self.kernel.pool.connection() as conn:
            rows = await (await conn.execute(_ACCOUNTS)).fetchall()
            start = {str(a): Decimal(e) for a, e in await (await conn.execute(_START_OF_DAY)).fetchall()}
        scopes: dict[tuple[str, str], Exposure] = defaultdict(Exposure)
        owners: dict[str, str] = {}
        for account_id, user_id, cash, gross, net, upnl, rpnl in rows:
            x = Exposure(
                Decimal(cash), Decimal(gross), Decimal(net), Decimal(upnl), Decimal(rpnl), start.get(account_id)
            )
            owners[str(account_id)] = str(user_id)
            scopes[("account", str(account_id))] = x
            scopes[("user", str(user_id))].add(x)
            scopes[("fund", "")].add(x)
        return dict(scopes), owners

    async def limits(self) -> dict[tuple[str, str], dict[str, Decimal]]:
        found: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(dict)
        async with self.kernel.pool.connection() as conn:
            for scope, scope_id, limit_type, value in await (await conn.execute(_LIMITS)).fetchall():
                found[(str(scope), str(scope_id))][str(limit_type)] = Decimal(value)
        return found

    async def check_once(self) -> list[Breach]:
        """One round: marks, figures, limits; publish new breaches; returns the breaches that are new."""
        await self.write_marks()
        scopes, owners = await self.measure()
        limits = await self.limits()
        current: dict[tuple[str, str, str], Breach] = {}
        for (scope, scope_id), x in scopes.items():
            peak = max(self.peaks.get((scope, scope_id), ZERO), x.equity, x.start_of_day or ZERO)
            self.peaks[(scope, scope_id)] = peak
            self._observe(scope, scope_id, x, peak, limits.get((scope, scope_id), {}))
            user_id = scope_id if scope == "user" else owners.get(scope_id, "")
            for b in breaches(scope, scope_id, user_id, x, peak, limits.get((scope, scope_id), {})):
                current[b.key] = b
        new = [b for key, b in current.items() if key not in self.active]
        self.active = current
        if new:
            await self._publish(new, limits)
        if time.monotonic() - self._last_snapshot >= self.snapshot_interval_s:
            await self.snapshot(scopes, owners)
        return new

    def _observe(self, scope: str, scope_id: str, x: Exposure, peak: Decimal, limits: dict[str, Decimal]) -> None:
        labels = {"scope": scope, "scope_id": scope_id}
        self._gauges["equity"].labels(**labels).set(float(x.equity))
        self._gauges["gross_exposure"].labels(**labels).set(float(x.gross))
        self._gauges["leverage"].labels(**labels).set(float(x.leverage))
        self._gauges["drawdown_pct"].labels(**labels).set(float((peak - x.equity) / peak * 100) if peak > 0 else 0.0)
        if limits.get("max_gross_exposure"):
            self._usage.labels(**labels, limit="max_gross_exposure").set(float(x.gross / limits["max_gross_exposure"]))

    async def _publish(self, new: list[Breach], limits: dict[tuple[str, str], dict[str, Decimal]]) -> None:
        async with self.kernel.uow_factory() as uow:
            for b in new:
                self._alerts.labels(scope=b.scope, metric=b.metric).inc()
                uow.record(
                    RiskLimitBreached(
                        aggregate_id=f"breach:{b.scope}:{b.scope_id}:{b.metric}:{time.time_ns()}",
                        version=1,
                        scope=b.scope,
                        scope_id=b.scope_id,
                        user_id=b.user_id,
                        metric=b.metric,
                        value=b.value,
                        limit=b.limit,
                        message=b.message(),
                    )
                )
            await uow.commit()
        for b in new:
            log.warning("risk limit breached", scope=b.scope, scope_id=b.scope_id, metric=b.metric)
            if limits.get((b.scope, b.scope_id), {}).get("auto_kill_switch", ZERO) != 0:
                command = ActivateKillSwitch(scope=b.scope, scope_id=b.scope_id, reason=b.message())
                await self.commands.send(command, b.user_id or b.scope_id, wait_s=None)

    async def snapshot(self, scopes: dict[tuple[str, str], Exposure], owners: dict[str, str]) -> int:
        """One ``portfolio_snapshots`` row per account (start-of-day equity and the warehouse read them)."""
        now = datetime.now(UTC)
        rows = [
            (now, account_id, owners[account_id], x.equity, x.cash, x.net, x.unrealized, x.realized)
            for (scope, account_id), x in scopes.items()
            if scope == "account"
        ]
        if rows:
            async with self.kernel.pool.connection() as conn:
                async with conn.cursor() as cur:
                    await cur.executemany(_SNAPSHOT, rows)
        self._last_snapshot = time.monotonic()
        return len(rows)

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        positions = await self.feed.opening_marks()

        async def no_triggers(_: list[tuple[str, Decimal]]) -> None:
            return None

        reading = asyncio.create_task(self.feed.run(stop, no_triggers, positions))
        try:
            while not stop.is_set():
                try:
                    await self.check_once()
                except Exception as exc:  # one failed round must not stop the monitor
                    log.error("risk round failed", error=repr(exc))
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                except TimeoutError:
                    pass
        finally:
            await asyncio.gather(reading, return_exceptions=True)


async def run_risk_monitor(settings: Settings, database_url: str, redis_url: str, stop: asyncio.Event) -> None:
    """The ``patriot risk`` process."""
    kernel = await bootstrap(settings, database_url, redis_url, service="risk")
    if settings.observability.metrics_port:
        serve_metrics(kernel.metrics, settings.observability.metrics_port)
    monitor = RiskMonitor(
        kernel, PriceFeed(kernel.redis, kernel.names, kernel.metrics), CommandClient(kernel.redis, kernel.names)
    )
    try:
        await monitor.run(stop)
    finally:
        await kernel.close()
