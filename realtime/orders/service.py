"""The order service process: order commands in, risk, venue submission, platform-held triggers, sweeps.

At start it re-arms every armed order from PostgreSQL exactly where it was (level, best price, ladder rung) and
resolves orders a crash left in flight; then it serves the command stream, follows market prices into the
trigger book, and keeps the book in step with orders armed or ended by other processes (bracket legs armed
by the lifecycle when their entry fills).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import structlog

from core.bootstrap import Kernel
from core.domain.messages import Command
from core.domain.orders import OrderSide, OrderType, RearmOrder, TriggerOrder
from core.messaging.bus import MessageBus
from core.runtime.faults import FaultPlan
from core.settings import Settings
from realtime.orders.commands import CommandServer
from realtime.orders.conditional import ArmedOrder, Fire, Rearm, TriggerBook
from realtime.orders.execution import Execution
from realtime.orders.handlers import OrderDeps, order_handlers
from realtime.orders.price_feed import PriceFeed
from realtime.orders.risk_gate import RiskGate
from realtime.orders.venues import VenueRegistry, trading_process

log = structlog.get_logger(__name__)

_ARMED_ROWS = """
SELECT id::text, symbol, side, order_type, trigger_price, version, details, exchange FROM orders WHERE status = 'armed'
"""
_ARMED_VERSIONS = "SELECT id::text, version FROM orders WHERE status = 'armed'"


@dataclass(frozen=True)
class OrderServiceConfig:
    consumer: str = "order-service-1"
    sweep_interval_s: float = 2.0
    sync_interval_s: float = 0.5
    submit_timeout_s: float = 10.0


def armed_from_row(row: tuple[Any, ...], tick: Decimal | None) -> ArmedOrder:
    order_id, symbol, side, order_type, trigger, _version, details, _exchange = row
    d = details if isinstance(details, dict) else orjson.loads(details or b"{}")

    def dec(key: str) -> Decimal | None:
        return None if d.get(key) is None else Decimal(str(d[key]))

    take_profit = order_type in (OrderType.TAKE_PROFIT_MARKET.value, OrderType.TAKE_PROFIT_LIMIT.value)
    return ArmedOrder(
        order_id=str(order_id),
        symbol=str(symbol),
        side=OrderSide(side),
        kind="take_profit" if take_profit else "stop",
        trigger=Decimal(trigger),
        tick=tick,
        trailing_offset=dec("trailing_offset"),
        trailing_offset_pct=dec("trailing_offset_pct"),
        peak=dec("peak_price"),
        lock_steps=tuple((Decimal(str(g)), Decimal(str(k))) for g, k in d.get("lock_steps") or ()),
        reference=dec("reference_price"),
        lock_step=int(d.get("lock_step") or 0),
    )


class OrderService:
    def __init__(self, kernel: Kernel, venues: VenueRegistry, config: OrderServiceConfig | None = None) -> None:
        self.kernel = kernel
        self.config = config or OrderServiceConfig()
        self.venues = venues
        self.feed = PriceFeed(kernel.redis, kernel.names, kernel.metrics)
        self.execution = Execution(
            kernel.uow_factory,
            venues,
            kernel.metrics,
            submit_timeout_s=self.config.submit_timeout_s,
            faults=FaultPlan.from_env(),
        )
        self.deps = OrderDeps(
            risk=RiskGate(kernel.pool, venues, marks=self.feed.marks),
            execution=self.execution,
            triggers=TriggerBook(),
            pool=kernel.pool,
            metrics=kernel.metrics,
        )
        self.bus = MessageBus(kernel.uow_factory, order_handlers(), kernel.metrics, {"orders": self.deps})
        self.server = CommandServer(
            kernel.redis, kernel.names, kernel.codec, self.bus, kernel.metrics, consumer=self.config.consumer
        )
        self._armed_at: dict[str, float] = {}
        self._work: set[asyncio.Task[Any]] = set()
        self._fired = kernel.metrics.counter("patriot_triggers_fired_total", "Platform-held orders triggered")

    @property
    def triggers(self) -> TriggerBook:
        return self.deps.triggers

    async def handle(self, command: Command) -> Any:
        """Run one command in this process (strategies hosted here, benchmarks, tests)."""
        return await self.bus.handle(command)

    # --- start: restore the book, resolve what a crash left in flight -------------------------------------

    async def restore(self) -> int:
        """Re-arm every armed order from its stored state; returns how many."""
        async with self.kernel.pool.connection() as conn:
            rows = await (await conn.execute(_ARMED_ROWS)).fetchall()
        for row in rows:
            armed = armed_from_row(row, self.deps.tick(str(row[7]), str(row[1])))
            self.triggers.arm(armed)
            self.deps.versions[armed.order_id] = int(row[5])
            self._armed_at[armed.order_id] = time.monotonic()
        log.info("trigger book restored", armed=len(rows))
        return len(rows)

    async def sync_armed(self) -> None:
        """Arm what another process armed (or re-armed); drop what another process ended."""
        started = time.monotonic()
        async with self.kernel.pool.connection() as conn:
            stored = {str(i): int(v) for i, v in await (await conn.execute(_ARMED_VERSIONS)).fetchall()}
        for order_id, version in stored.items():
            if version > self.deps.versions.get(order_id, 0):
                async with self.kernel.uow_factory() as uow:
                    order = await uow.orders.get(order_id)
                if order is not None and order.version == version:
                    self.deps.arm(order)
                    self._armed_at[order_id] = time.monotonic()
        for order_id in [o for o in self.deps.versions if o not in stored]:
            if self._armed_at.get(order_id, 0.0) < started and order_id in self.triggers:
                self.deps.disarm(order_id)
                self._armed_at.pop(order_id, None)

    # --- prices ---------------------------------------------------------------------------------------------

    async def on_prices(self, prices: list[tuple[str, Decimal]]) -> None:
        for symbol, price in prices:
            for action in self.triggers.on_price(symbol, price):
                if isinstance(action, Fire):
                    self._fired.inc()
                    self._spawn(self.bus.handle(TriggerOrder(order_id=action.order_id, last_price=action.last_price)))
                elif isinstance(action, Rearm):
                    self._spawn(
                        self.bus.handle(
                            RearmOrder(
                                order_id=action.order_id,
                                trigger_price=action.trigger,
                                peak_price=action.peak,
                                lock_step=action.lock_step,
                            )
                        )
                    )

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._work.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # the book's sync re-arms an order whose trigger could not be recorded
            log.error("trigger handling failed", error=repr(task.exception()))

    # --- run ------------------------------------------------------------------------------------------------

    async def _every(self, stop: asyncio.Event, interval_s: float, work: Any, name: str) -> None:
        while not stop.is_set():
            try:
                await work()
            except Exception as exc:  # a failed round is logged and tried again next round
                log.error(f"{name} failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass

    async def run(self, stop: asyncio.Event) -> None:
        positions = await self.feed.opening_marks()
        await self.restore()
        await self.execution.sweep()
        log.info("order service ready", armed=len(self.triggers))
        try:
            await asyncio.gather(
                self.server.run(stop),
                self.feed.run(stop, self.on_prices, positions),
                self._every(stop, self.config.sweep_interval_s, self.execution.sweep, "sweep"),
                self._every(stop, self.config.sync_interval_s, self.sync_armed, "armed-order sync"),
            )
        finally:
            await self.execution.drain()
            await asyncio.gather(*self._work, return_exceptions=True)


async def warm_markets(kernel: Kernel, venues: VenueRegistry) -> None:
    """Load each venue's symbols and filters once, through any active account on it."""
    async with kernel.pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT DISTINCT ON (exchange) exchange, id::text FROM user_accounts WHERE active")
        ).fetchall()
    for exchange, account_id in rows:
        try:
            await venues.markets(str(exchange), str(account_id))
        except Exception as exc:  # the venue may be down; orders then load them on first use
            log.warning("could not load markets", exchange=exchange, error=repr(exc))


async def run_order_service(settings: Settings, database_url: str, redis_url: str, stop: asyncio.Event) -> None:
    """The ``patriot orders`` process."""
    async with trading_process(settings, database_url, redis_url, "orders") as (kernel, venues):
        await warm_markets(kernel, venues)
        await OrderService(kernel, venues).run(stop)
