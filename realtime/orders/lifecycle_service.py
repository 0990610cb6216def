"""The ``patriot lifecycle`` process: account events -> orders, fills, positions, balances; reconciliation.

Every active account is reconciled at start and every ``reconcile_interval_s``; an account whose private stream
is down (its heartbeat in Redis lapsed) is polled over REST every ``fallback_poll_s`` instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from core.bootstrap import Kernel
from core.domain.accounts import AccountEvent
from core.messaging.consumer import ConsumerConfig, StreamConsumer
from core.messaging.publisher import publish_events
from core.messaging.streams import Stream
from core.runtime.faults import FaultPlan
from core.settings import Settings
from realtime.accounts.service import stream_heartbeat_key
from realtime.orders.lifecycle import Lifecycle
from realtime.orders.reconcile import OurOrder, Reconciler, gather_limited
from realtime.orders.venues import AccountRef, VenueRegistry, trading_process
from realtime.portfolio.readmodels import PortfolioReadModels

log = structlog.get_logger(__name__)

_ACCOUNTS = "SELECT id::text, user_id::text, exchange FROM user_accounts WHERE active"
_IN_FLIGHT = """
SELECT account_id::text, id::text, symbol, status, filled_quantity,
       (extract(epoch FROM created_at) * 1000)::bigint
FROM orders WHERE status IN ('submitted', 'accepted', 'partially_filled', 'pending_cancel')
"""


@dataclass(frozen=True)
class LifecycleConfig:
    consumer: str = "lifecycle-1"
    reconcile_interval_s: float = 60.0
    fallback_poll_s: float = 2.0
    reconcile_grace_s: float = 3.0


class LifecycleService:
    def __init__(self, kernel: Kernel, venues: VenueRegistry, config: LifecycleConfig | None = None) -> None:
        self.kernel = kernel
        self.venues = venues
        self.config = config or LifecycleConfig()
        self.lifecycle = Lifecycle(kernel.metrics)
        self.read_models = PortfolioReadModels(kernel.pool, kernel.redis, kernel.names.prefix)
        self.consumer = StreamConsumer(
            kernel.redis,
            kernel.uow_factory,
            kernel.names,
            kernel.codec,
            kernel.metrics,
            self.lifecycle.handle,
            ConsumerConfig(
                group="lifecycle",
                streams=[Stream.ACCOUNT_EVENTS],
                consumer_name=self.config.consumer,
                max_deliveries=20,
                claim_idle_ms=10_000,
                retry_delay_s=0.1,
            ),
            faults=FaultPlan.from_env(),
        )
        self.reconciler = Reconciler(kernel.metrics, self._publish, self.config.reconcile_grace_s)
        self._last_reconciled: dict[str, float] = {}

    async def _publish(self, events: Sequence[AccountEvent]) -> None:
        await publish_events(self.kernel.redis, self.kernel.names, self.kernel.codec, events)

    async def consume(self, stop: asyncio.Event) -> None:
        await self.consumer.setup()
        await self.consumer.recover_own_pending()
        while not stop.is_set():
            await self.consumer.poll_once()
            if self.lifecycle.touched:
                touched, self.lifecycle.touched = self.lifecycle.touched, set()
                await self.read_models.invalidate(touched)

    async def reconcile_due(self, everything: bool = False) -> int:
        """Reconcile accounts that are due (or all); returns the events replayed."""
        async with self.kernel.pool.connection() as conn:
            accounts = [AccountRef(*map(str, r)) for r in await (await conn.execute(_ACCOUNTS)).fetchall()]
            flights = await (await conn.execute(_IN_FLIGHT)).fetchall()
        ours: dict[str, list[OurOrder]] = {}
        for account_id, order_id, symbol, status, filled, created_ms in flights:
            ours.setdefault(str(account_id), []).append(
                OurOrder(str(order_id), str(symbol), str(status), filled, int(created_ms))
            )
        now = time.monotonic()
        due = []
        for account in accounts:
            alive = await self.kernel.redis.exists(stream_heartbeat_key(self.kernel.names.prefix, account.account_id))
            last = self._last_reconciled.get(account.account_id, 0.0)
            interval = self.config.reconcile_interval_s if alive else self.config.fallback_poll_s
            if everything or now - last >= interval:
                self._last_reconciled[account.account_id] = now
                due.append(self._one(account, ours.get(account.account_id, [])))
        return await gather_limited(due)

    async def _one(self, account: AccountRef, ours: list[OurOrder]) -> int:
        try:
            adapter = await self.venues.adapter(account.account_id)
        except Exception as exc:
            log.warning("cannot reconcile account", account=account.account_id, error=repr(exc))
            return 0
        return await self.reconciler.reconcile(account, adapter, ours)

    async def reconcile_loop(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            try:
                await self.reconcile_due(everything=first)
                first = False
            except Exception as exc:  # logged; the next round tries again
                log.error("reconciliation round failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), self.config.fallback_poll_s)
            except TimeoutError:
                pass

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self.consume(stop), self.reconcile_loop(stop))


async def run_lifecycle(settings: Settings, database_url: str, redis_url: str, stop: asyncio.Event) -> None:
    """The ``patriot lifecycle`` process."""
    async with trading_process(settings, database_url, redis_url, "lifecycle") as (kernel, venues):
        await LifecycleService(kernel, venues).run(stop)
