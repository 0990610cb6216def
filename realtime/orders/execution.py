"""Sending orders and cancels to the venue, and recording what it answered.

The order is committed (``submitted``) before the venue hears of it, under a client order id equal to our order id.
So after any crash the outcome is found by asking the venue for that id: an order is never sent twice. A clear
refusal is recorded as ``OrderRejected``; an ambiguous failure (timeout, 5xx) leaves the order ``submitted`` and
the sweep resolves it later (found on the venue: accepted; not found: sent again while young, else rejected).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from core.domain.orders import Order, OrderStatus
from core.eventstore import ConcurrencyError
from core.observability.context import correlation_scope, get_correlation_id
from core.observability.metrics import Metrics
from core.observability.tracing import get_tracer
from core.runtime.faults import FaultPlan
from core.uow import UnitOfWork, UnitOfWorkFactory
from realtime.exchanges.base import (
    AuthenticationFailed,
    ExchangeError,
    InsufficientFunds,
    OrderAck,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
)
from realtime.orders.venues import VenueRegistry

log = structlog.get_logger(__name__)
_tracer = get_tracer(__name__)

_REFUSED = (OrderRejected, InsufficientFunds, AuthenticationFailed)
_STUCK = """
SELECT id::text, status FROM orders
WHERE (status IN ('submitted', 'pending_cancel', 'triggered')
       OR (status = 'initialized' AND details->>'replaces' IS NOT NULL))
  AND updated_at < %s
ORDER BY updated_at LIMIT 500
"""

Change = Callable[[Order], bool]  # applies events to the order; False when there is nothing to do


async def update_order(
    uow_factory: UnitOfWorkFactory, order_id: str, change: Change, known: Order | None = None, attempts: int = 5
) -> Order | None:
    """Load (or take ``known``), change and commit one order, reloading on a concurrent write."""
    for attempt in range(attempts):
        async with uow_factory() as uow:
            order = await _load(uow, order_id, known if attempt == 0 else None)
            if order is None or not change(order):
                return order
            try:
                await uow.commit()
                return order
            except ConcurrencyError:
                if attempt == attempts - 1:
                    raise
    return None


async def _load(uow: UnitOfWork, order_id: str, known: Order | None) -> Order | None:
    if known is not None and not known.pending_events:
        uow.orders.add(known)
        return known
    return await uow.orders.get(order_id)


@dataclass
class Execution:
    uow_factory: UnitOfWorkFactory
    venues: VenueRegistry
    metrics: Metrics
    submit_timeout_s: float = 10.0
    resubmit_window_s: float = 120.0
    on_ack: Callable[[Order, OrderAck, float], Awaitable[None]] | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    in_flight: set[str] = field(default_factory=set)
    _placing: dict[str, asyncio.Event] = field(default_factory=dict)  # order id -> set when its placement ends
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._sent = self.metrics.counter("patriot_orders_sent_total", "Orders sent to venues", ("exchange", "outcome"))
        self._latency = self.metrics.histogram(
            "patriot_order_ack_seconds",
            "Venue round trip of an order placement",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    # --- fast path: the process that committed the order sends it at once ----------------------------------

    def submit_soon(self, order: Order) -> None:
        self._spawn(self.submit(order, fresh=True))

    def cancel_soon(self, order: Order) -> None:
        self._spawn(self.cancel(order.id, order))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every send in progress (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- submission ---------------------------------------------------------------------------------------

    async def submit(self, order: Order, fresh: bool = False) -> None:
        """Send one ``submitted`` order. ``fresh``: this process just committed it, so no earlier attempt exists;
        otherwise the venue is asked first whether an earlier attempt reached it. Runs under the order's own
        correlation id (a sweep's resend too), so the venue call's logs and span name the request."""
        if order.id in self.in_flight:
            return
        with correlation_scope(order.correlation_id or get_correlation_id(), order.id):
            await self._submit(order, fresh)

    async def _submit(self, order: Order, fresh: bool) -> None:
        self.in_flight.add(order.id)
        self._placing[order.id] = asyncio.Event()
        started = time.perf_counter()
        try:
            adapter = await self.venues.adapter(order.account_id)
            if not fresh:
                found = await self._find(order)
                if found is not None:
                    await self._record_ack(order, found)
                    return
                if _age_s(order) > self.resubmit_window_s:
                    await self._reject(order, "not acknowledged by the venue in time; it never reached the venue")
                    return
            request = OrderRequest(
                client_order_id=order.venue_client_id,
                symbol=order.symbol,
                side=order.side,
                type=order.venue_type,
                quantity=order.leaves_quantity,
                price=order.price,
                time_in_force=order.time_in_force,
            )
            try:
                self.faults.maybe_crash("orders.before_venue")
                with _tracer.start_as_current_span(
                    "exchange.place_order",
                    attributes={
                        "exchange": order.exchange,
                        "symbol": order.symbol,
                        "order.id": order.id,
                        "correlation_id": get_correlation_id() or "",
                    },
                ):
                    ack = await adapter.place_order(request)
                self.faults.maybe_crash("orders.after_venue_ack")
            except _REFUSED as refused:
                self._sent.labels(exchange=order.exchange, outcome="rejected").inc()
                await self._reject(order, f"venue refused the order: {refused}")
                return
            except ExchangeError as unknown:
                self._sent.labels(exchange=order.exchange, outcome="unknown").inc()
                log.warning(
                    "order outcome unknown; the sweep will ask the venue", order_id=order.id, error=repr(unknown)
                )
                return
            elapsed = time.perf_counter() - started
            self._latency.observe(elapsed)
            self._sent.labels(exchange=order.exchange, outcome="accepted").inc()
            log.info(
                "order placed on the venue",
                order_id=order.id,
                exchange=order.exchange,
                exchange_order_id=ack.exchange_order_id,
                venue_ms=round(elapsed * 1000, 2),
            )
            if self.on_ack is not None:
                await self.on_ack(order, ack, elapsed)
            await self._record_ack(order, ack)
        except Exception as exc:  # never lose the task silently: the sweep retries what is left submitted
            log.error("order submission failed", order_id=order.id, error=repr(exc))
        finally:
            self.in_flight.discard(order.id)
            self._placing.pop(order.id).set()

    async def _find(self, order: Order) -> OrderAck | None:
        adapter = await self.venues.adapter(order.account_id)
        try:
            return await adapter.fetch_order(order.symbol, client_order_id=order.venue_client_id)
        except OrderNotFound:
            return None

    async def _record_ack(self, order: Order, ack: OrderAck) -> None:
        def accept(o: Order) -> bool:
            if o.exchange_order_id is not None or o.status not in (OrderStatus.SUBMITTED, OrderStatus.PENDING_CANCEL):
                return False
            if ack.status is OrderStatus.REJECTED:
                o.reject("venue rejected the order")
            else:
                o.accept(ack.exchange_order_id)
            return True

        await update_order(self.uow_factory, order.id, accept, order)

    async def _reject(self, order: Order, reason: str) -> None:
        def reject(o: Order) -> bool:
            if o.status is not OrderStatus.SUBMITTED:
                return False
            o.reject(reason)
            return True

        await update_order(self.uow_factory, order.id, reject, order)

    # --- cancellation -------------------------------------------------------------------------------------

    async def cancel(self, order_id: str, known: Order | None = None) -> None:
        """Cancel a ``pending_cancel`` order on the venue; the venue's report (or this ack) records the outcome."""
        key = f"cancel:{order_id}"
        if key in self.in_flight:
            return
        self.in_flight.add(key)
        try:
            order = known
            if order is None:
                async with self.uow_factory() as uow:
                    order = await uow.orders.get(order_id)
            if order is None or order.status is not OrderStatus.PENDING_CANCEL:
                return
            placing = self._placing.get(order.id)
            if placing is not None:  # its placement is on the way: cancel what the venue will have
                await placing.wait()
            adapter = await self.venues.adapter(order.account_id)
            try:
                ack = await adapter.cancel_order(
                    order.symbol, exchange_order_id=order.exchange_order_id, client_order_id=order.venue_client_id
                )
            except OrderNotFound:
                ack = await self._find(order)
                if ack is None:
                    if _age_s(order) < self.submit_timeout_s:
                        return  # a placement from before a crash may still land: the sweep asks again later
                    await update_order(self.uow_factory, order.id, _cancel_now("canceled before it reached the venue"))
                    return
            except ExchangeError as exc:
                log.warning("cancel failed; the sweep retries", order_id=order.id, error=repr(exc))
                return
            await update_order(self.uow_factory, order.id, _settle_cancel(ack))
        except Exception as exc:
            log.error("order cancel failed", order_id=order_id, error=repr(exc))
        finally:
            self.in_flight.discard(key)

    def replace_after_cancel(self, old: Order, new: Order) -> None:
        self._spawn(self._replace(old, new))

    async def _replace(self, old: Order, new: Order) -> None:
        """Cancel-replace on the venue: the replacement goes out only once the old order is cancelled there."""
        await self.cancel(old.id, old)
        await self.release_replacement(new.id)

    async def release_replacement(self, new_id: str) -> None:
        """Send a replacement whose old order is cancelled; cancel it if the old one filled instead."""
        async with self.uow_factory() as uow:
            new = await uow.orders.get(new_id)
            old = await uow.orders.get(new.replaces) if new is not None and new.replaces else None
        if new is None or old is None or new.status is not OrderStatus.INITIALIZED:
            return
        if old.status is OrderStatus.CANCELED:
            submitted = await update_order(self.uow_factory, new.id, _submit_initialized)
            if submitted is not None and submitted.status is OrderStatus.SUBMITTED:
                await self.submit(submitted, fresh=True)
        elif old.is_terminal or old.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
            await update_order(self.uow_factory, new.id, _cancel_now(f"the replaced order {old.id} is {old.status}"))

    # --- sweep: orders left in flight by a crash or an ambiguous failure ----------------------------------

    async def sweep(self) -> int:
        """Resolve orders stuck in flight for longer than ``submit_timeout_s``; returns how many were looked at."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.submit_timeout_s)
        async with self.uow_factory() as uow:
            cur = await (await uow.connection()).execute(_STUCK, (cutoff,))
            stuck = [(str(i), str(s)) for i, s in await cur.fetchall()]
        for order_id, status in stuck:
            if order_id in self.in_flight:
                continue
            if status == "pending_cancel":
                await self.cancel(order_id)
                continue
            if status == "initialized":
                await self.release_replacement(order_id)
                continue
            async with self.uow_factory() as uow:
                order = await uow.orders.get(order_id)
            if order is None:
                continue
            if order.status is OrderStatus.TRIGGERED:
                await update_order(self.uow_factory, order.id, _submit_triggered)
                continue
            if order.status is OrderStatus.SUBMITTED and order.exchange_order_id is None:
                await self.submit(order, fresh=False)
        return len(stuck)


def _age_s(order: Order) -> float:
    first = order.submitted_at
    return 0.0 if first is None else (datetime.now(UTC) - first).total_seconds()


def _cancel_now(reason: str) -> Change:
    def change(o: Order) -> bool:
        if o.is_terminal:
            return False
        o.cancel(reason)
        return True

    return change


def _settle_cancel(ack: OrderAck) -> Change:
    """A cancel's answer: cancelled (once every fill it reports is recorded), or too late (it filled)."""

    def change(o: Order) -> bool:
        if o.status is not OrderStatus.PENDING_CANCEL:
            return False
        if o.exchange_order_id is None:
            o.accept(ack.exchange_order_id)
        if ack.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
            if ack.filled_qty > o.filled_quantity:
                return o.exchange_order_id is not None and bool(o.pending_events)  # fills first, via the reports
            o.cancel("canceled on the venue")
            return True
        if ack.status is OrderStatus.FILLED:
            o.cancel_rejected("already filled")
            return True
        return bool(o.pending_events)

    return change


def _submit_initialized(o: Order) -> bool:
    if o.status is not OrderStatus.INITIALIZED:
        return False
    o.submit()
    return True


def _submit_triggered(o: Order) -> bool:
    if o.status is not OrderStatus.TRIGGERED:
        return False
    o.submit()
    return True
