"""Unit of work: one PostgreSQL transaction writes aggregate rows, event-store rows and outbox rows together.

Reads happen while the handler runs; every write is deferred to :meth:`UnitOfWork.commit`, which sends them in
one pipelined round trip and commits. Deferring the writes keeps a transaction's id (which the outbox relay
orders by) younger than anything it read, so the relay publishes one aggregate's events in version order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from core import eventstore
from core.domain.messages import Event
from core.domain.orders import Order
from core.eventstore import ConcurrencyError
from core.messaging.codec import Codec
from core.messaging.streams import route
from core.observability.metrics import Metrics

Conn = psycopg.AsyncConnection[tuple[object, ...]]

_OUTBOX = "INSERT INTO outbox (event_id, stream, partition_key, payload) VALUES (%s, %s, %s, %s)"


class DuplicateClientOrderId(Exception):
    """The account already has an order with this client order id (PlaceOrder is idempotent on it)."""


_ORDER_UPSERT = """
INSERT INTO orders (id, account_id, user_id, strategy_id, client_order_id, exchange_order_id, exchange, symbol,
    side, order_type, time_in_force, quantity, price, trigger_price, reduce_only, status, filled_quantity,
    avg_fill_price, fees, reason, version)
VALUES (%(id)s, %(account_id)s, %(user_id)s, %(strategy_id)s, %(client_order_id)s, %(exchange_order_id)s,
    %(exchange)s, %(symbol)s, %(side)s, %(order_type)s, %(time_in_force)s, %(quantity)s, %(price)s,
    %(trigger_price)s, %(reduce_only)s, %(status)s, %(filled_quantity)s, %(avg_fill_price)s, %(fees)s,
    %(reason)s, %(version)s)
ON CONFLICT (id) DO UPDATE SET exchange_order_id = EXCLUDED.exchange_order_id, trigger_price = EXCLUDED.trigger_price,
    status = EXCLUDED.status, filled_quantity = EXCLUDED.filled_quantity, avg_fill_price = EXCLUDED.avg_fill_price,
    fees = EXCLUDED.fees, reason = EXCLUDED.reason, version = EXCLUDED.version, updated_at = now()
WHERE orders.version = %(persisted_version)s
"""


def _order_row(order: Order) -> dict[str, object]:
    return {
        "id": order.id,
        "account_id": order.account_id,
        "user_id": order.user_id,
        "strategy_id": order.strategy_id,
        "client_order_id": order.client_order_id,
        "exchange_order_id": order.exchange_order_id,
        "exchange": order.exchange,
        "symbol": order.symbol,
        "side": order.side.value,
        "order_type": order.order_type.value,
        "time_in_force": order.time_in_force.value,
        "quantity": order.quantity,
        "price": order.price,
        "trigger_price": order.trigger_price,
        "reduce_only": order.reduce_only,
        "status": order.status.value,
        "filled_quantity": order.filled_quantity,
        "avg_fill_price": order.avg_fill_price,
        "fees": order.fees,
        "reason": order.reason,
        "version": order.version,
        "persisted_version": order.persisted_version,
    }


class OrderRepository:
    """Loads orders by replaying their events; tracked orders are written by the unit of work's commit."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    def add(self, order: Order) -> None:
        self._uow.track(order)

    async def get(self, order_id: str) -> Order | None:
        tracked = self._uow.tracked(order_id)
        if isinstance(tracked, Order):
            return tracked
        events = await eventstore.load(self._uow.connection, order_id, self._uow.codec)
        if not events:
            return None
        order = Order.from_events(events)
        self._uow.track(order)
        return order

    async def id_by_client_order_id(self, account_id: str, client_order_id: str) -> str | None:
        cur = await self._uow.connection.execute(
            "SELECT id FROM orders WHERE account_id = %s AND client_order_id = %s",
            (account_id, client_order_id),
        )
        row = await cur.fetchone()
        return str(row[0]) if row else None

    @staticmethod
    async def save(cur: psycopg.AsyncCursor[tuple[object, ...]], orders: list[Order]) -> None:
        await cur.executemany(_ORDER_UPSERT, [_order_row(o) for o in orders])


@dataclass(frozen=True, slots=True)
class UnitOfWorkFactory:
    """Built once in bootstrap; each call opens a unit of work on a pooled connection."""

    pool: AsyncConnectionPool[Conn]
    codec: Codec
    metrics: Metrics | None = None

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self.pool, self.codec, self.metrics)


class UnitOfWork:
    """``async with uow: ...; await uow.commit()``: leaving the block without commit rolls back."""

    def __init__(self, pool: AsyncConnectionPool[Conn], codec: Codec, metrics: Metrics | None = None) -> None:
        self._pool = pool
        self.codec = codec
        self._metrics = metrics
        self._conn: Conn | None = None
        self._tracked: dict[str, Order] = {}
        self.orders = OrderRepository(self)
        self.after_commit: list[Callable[[], None]] = []

    @property
    def connection(self) -> Conn:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open: use `async with uow:`")
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self._pool.getconn()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.rollback()  # a no-op after commit; undoes anything uncommitted
        finally:
            await self._pool.putconn(conn)

    def track(self, aggregate: Order) -> None:
        self._tracked[aggregate.id] = aggregate

    def tracked(self, aggregate_id: str) -> Order | None:
        return self._tracked.get(aggregate_id)

    def pending_events(self) -> list[Event]:
        return [e for agg in self._tracked.values() for e in agg.pending_events]

    async def commit(self) -> list[Event]:
        """Write every tracked aggregate's new events, rows and outbox entries in one transaction."""
        conn = self.connection
        started = time.perf_counter()
        events = self.pending_events()
        changed = [a for a in self._tracked.values() if a.pending_events]
        try:
            if events:
                # one pipelined round trip for every write, then the commit
                async with conn.pipeline(), conn.cursor() as cur:
                    await cur.executemany(eventstore.APPEND_SQL, eventstore.event_rows(events, self.codec))
                    await OrderRepository.save(cur, changed)
                    await cur.executemany(_OUTBOX, self._outbox_rows(events))
            await conn.commit()
        except errors.UniqueViolation as exc:
            await conn.rollback()
            if exc.diag.constraint_name == eventstore.VERSION_CONSTRAINT:
                if self._metrics:
                    self._metrics.concurrency_conflicts.labels(aggregate_type=events[0].aggregate_type).inc()
                raise ConcurrencyError(eventstore.aggregate_of(exc, events)) from exc
            if exc.diag.constraint_name == "uq_orders_account_client_order_id":
                raise DuplicateClientOrderId(str(exc.diag.message_detail)) from exc
            raise
        except BaseException:
            await conn.rollback()
            raise
        for agg in changed:
            agg.pending_events.clear()
            agg.persisted_version = agg.version
        if self._metrics:
            self._metrics.uow_commit_seconds.observe(time.perf_counter() - started)
        for hook in self.after_commit:
            hook()
        return events

    def _outbox_rows(self, events: list[Event]) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        for e in events:
            stream, partition_key = route(e)
            rows.append((e.event_id, stream.value, partition_key, self.codec.encode_envelope(e)))
        return rows

    async def rollback(self) -> None:
        await self.connection.rollback()
