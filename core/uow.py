"""Unit of work: one PostgreSQL transaction writes aggregate rows, event-store rows and outbox rows together.

Reads happen while the handler runs; every write is deferred to :meth:`UnitOfWork.commit`. Commands commit
through the process's group committer (many units of work, one transaction, see :mod:`core.commit`);
transactional units of work (consumers) write on their own connection in one pipelined round trip. Either way
the writing transaction starts after everything it read, so its id (which the outbox relay orders by) is
younger than that of the transaction that wrote what it read: one aggregate's events publish in version order.
Concurrency is optimistic: the event store's unique (aggregate, version) rejects a stale writer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import count
from types import TracebackType
from typing import Protocol

import orjson
import psycopg
from psycopg import AsyncRawCursor, errors
from psycopg_pool import AsyncConnectionPool

from core import eventstore
from core.domain.messages import Event
from core.domain.orders import Order
from core.eventstore import ConcurrencyError
from core.messaging.codec import Codec
from core.messaging.streams import route
from core.observability.metrics import Metrics

Conn = psycopg.AsyncConnection[tuple[object, ...]]

_EVENT_INSERT = (
    "INSERT INTO event_store (event_id, aggregate_id, aggregate_type, event_type, event_version, event_data, "
    "metadata, occurred_at) VALUES "
)
_EVENT_ROW = "(${}, ${}, ${}, ${}, ${}, ${}::jsonb, ${}::jsonb, ${})"
_OUTBOX_INSERT = "INSERT INTO outbox (event_id, stream, partition_key, payload) VALUES "
_OUTBOX_ROW = "(${}, ${}, ${}, ${})"
_ORDER_INSERT = (
    "INSERT INTO orders (id, account_id, user_id, strategy_id, client_order_id, exchange_order_id, exchange, "
    "symbol, side, order_type, time_in_force, quantity, price, trigger_price, reduce_only, status, "
    "filled_quantity, avg_fill_price, fees, reason, version, parent_order_id, oco_group, details) VALUES "
)
_ORDER_ROW = "(" + ", ".join(["${}"] * 23) + ", ${}::jsonb)"
_ORDER_UPSERT = (
    " ON CONFLICT (id) DO UPDATE SET exchange_order_id = EXCLUDED.exchange_order_id, "
    "trigger_price = EXCLUDED.trigger_price, status = EXCLUDED.status, filled_quantity = EXCLUDED.filled_quantity, "
    "avg_fill_price = EXCLUDED.avg_fill_price, fees = EXCLUDED.fees, reason = EXCLUDED.reason, "
    "quantity = EXCLUDED.quantity, details = EXCLUDED.details, version = EXCLUDED.version, updated_at = now()"
)


@lru_cache(maxsize=4096)
def _write_sql(events: int, orders: int) -> str:
    """One statement writing ``events`` event-store rows, ``orders`` order rows and the events' outbox rows.

    A single statement is atomic on its own, so an autocommit connection writes a whole group in one round
    trip with no BEGIN/COMMIT. Numbered placeholders go through a raw cursor, which skips psycopg's client-side
    query parsing (that parsing, not the database, was the cost of large multi-row statements).
    """
    numbers = count(1)

    def rows(template: str, n: int) -> str:
        per_row = template.count("{}")
        return ", ".join(template.format(*(next(numbers) for _ in range(per_row))) for _ in range(n))

    sql = f"WITH appended AS ({_EVENT_INSERT}{rows(_EVENT_ROW, events)})"
    if orders:
        sql += f", saved AS ({_ORDER_INSERT}{rows(_ORDER_ROW, orders)}{_ORDER_UPSERT})"
    return f"{sql} {_OUTBOX_INSERT}{rows(_OUTBOX_ROW, events)}"


CLIENT_ORDER_ID_CONSTRAINT = "uq_orders_account_client_order_id"


class DuplicateClientOrderId(Exception):
    """The account already has an order with this client order id (PlaceOrder is idempotent on it)."""


@dataclass(slots=True)
class WriteSet:
    """Everything one unit of work writes at commit: new events and the rows of the aggregates they changed."""

    events: list[Event] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)

    def extend(self, other: WriteSet) -> None:
        self.events += other.events
        self.orders += other.orders


async def write(conn: Conn, writes: WriteSet, codec: Codec) -> None:
    """Send one write set as one statement; atomic by itself, and part of the caller's transaction if any.

    The event-store rows carry the unique (aggregate, version) that rejects a stale writer.
    """
    if not writes.events:
        return
    params: list[object] = []
    outbox: list[object] = []
    for e in writes.events:
        data = codec.encode_event(e)
        meta = b'{"correlation_id":%s,"causation_id":%s}' % (_json_str(e.correlation_id), _json_str(e.causation_id))
        params += (
            e.event_id,
            e.aggregate_id,
            e.aggregate_type,
            e.event_type,
            e.version,
            data.decode(),
            meta.decode(),
            e.occurred_at,
        )
        stream, partition_key = route(e)
        outbox += (e.event_id, stream.value, partition_key, codec.wrap_envelope(e, data))
    for o in writes.orders:
        params += _order_row(o)
    params += outbox
    await AsyncRawCursor(conn).execute(_write_sql(len(writes.events), len(writes.orders)), params)


def _json_str(value: str | None) -> bytes:
    return b"null" if value is None else orjson.dumps(value)


def integrity_error(exc: errors.UniqueViolation, writes: WriteSet, metrics: Metrics | None) -> Exception:
    """The domain error a unique violation at commit means, or the violation itself."""
    if exc.diag.constraint_name == eventstore.VERSION_CONSTRAINT:
        if metrics:
            metrics.concurrency_conflicts.labels(aggregate_type=writes.events[0].aggregate_type).inc()
        return ConcurrencyError(eventstore.aggregate_of(exc, writes.events))
    if exc.diag.constraint_name == CLIENT_ORDER_ID_CONSTRAINT:
        return DuplicateClientOrderId(str(exc.diag.message_detail))
    return exc


def _order_row(order: Order) -> tuple[object, ...]:
    return (
        order.id,
        order.account_id,
        order.user_id,
        order.strategy_id,
        order.client_order_id,
        order.exchange_order_id,
        order.exchange,
        order.symbol,
        order.side.value,
        order.order_type.value,
        order.time_in_force.value,
        order.quantity,
        order.price,
        order.trigger_price,
        order.reduce_only,
        order.status.value,
        order.filled_quantity,
        order.avg_fill_price,
        order.fees,
        order.reason,
        order.version,
        order.parent_order_id,
        order.oco_group,
        order_details(order),
    )


def order_details(order: Order) -> str | None:
    """A platform-held order's trigger state and the order it replaces, as JSON (what a restart resumes from)."""
    if not order.is_conditional and order.parent_order_id is None and order.replaces is None:
        return None
    state = {
        "replaces": order.replaces,
        "trailing_offset": order.trailing_offset,
        "trailing_offset_pct": order.trailing_offset_pct,
        "lock_steps": [[g, k] for g, k in order.lock_steps],
        "reference_price": order.reference_price,
        "peak_price": order.peak_price,
        "lock_step": order.lock_step,
    }
    return orjson.dumps(state, default=str).decode()


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
        events = await eventstore.load(await self._uow.connection(), order_id, self._uow.codec)
        if not events:
            return None
        order = Order.from_events(events)
        self._uow.track(order)
        return order

    async def id_by_client_order_id(self, account_id: str, client_order_id: str) -> str | None:
        cur = await (await self._uow.connection()).execute(
            "SELECT id FROM orders WHERE account_id = %s AND client_order_id = %s",
            (account_id, client_order_id),
        )
        row = await cur.fetchone()
        return str(row[0]) if row else None


class Committer(Protocol):
    """Where a grouped unit of work sends its writes (see core.commit.GroupCommitter)."""

    async def submit(self, writes: WriteSet) -> None: ...


@dataclass(frozen=True, slots=True)
class UnitOfWorkFactory:
    """Built once in bootstrap. Units of work commit through the group committer when there is one;
    ``transactional=True`` gives one whose reads, raw SQL and writes share its own transaction (consumers)."""

    pool: AsyncConnectionPool[Conn]
    codec: Codec
    metrics: Metrics | None = None
    committer: Committer | None = None

    def __call__(self, transactional: bool = False) -> UnitOfWork:
        return UnitOfWork(self.pool, self.codec, self.metrics, None if transactional else self.committer)


class UnitOfWork:
    """``async with uow: ...; await uow.commit()``: leaving the block without commit writes nothing.

    A connection is taken from the pool only when the handler first reads; a command that only creates
    aggregates never holds one.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        codec: Codec,
        metrics: Metrics | None = None,
        committer: Committer | None = None,
    ) -> None:
        self._pool = pool
        self.codec = codec
        self._metrics = metrics
        self._committer = committer
        self._conn: Conn | None = None
        self._open = False
        self._tracked: dict[str, Order] = {}
        self._recorded: list[Event] = []
        self.orders = OrderRepository(self)

    async def connection(self) -> Conn:
        """This unit of work's connection (its transaction when it is transactional)."""
        if not self._open:
            raise RuntimeError("the unit of work is not open: use `async with uow:`")
        if self._conn is None:
            conn = await self._pool.getconn()
            # A grouped unit of work writes through the committer: its own connection may only read.
            await conn.set_read_only(self._committer is not None)
            self._conn = conn
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        conn, self._conn = self._conn, None
        if conn is None:
            return
        await self._release(conn)

    async def _release(self, conn: Conn) -> None:
        try:
            await conn.rollback()  # a no-op after commit; undoes anything uncommitted
            await conn.set_read_only(False)
        finally:
            await self._pool.putconn(conn)

    def track(self, aggregate: Order) -> None:
        self._tracked[aggregate.id] = aggregate

    def tracked(self, aggregate_id: str) -> Order | None:
        return self._tracked.get(aggregate_id)

    def record(self, event: Event) -> None:
        """An event of no tracked aggregate (a risk alert): stored and published with this commit."""
        self._recorded.append(event)

    def _write_set(self) -> WriteSet:
        changed = [a for a in self._tracked.values() if a.pending_events]
        return WriteSet([e for a in changed for e in a.pending_events] + self._recorded, changed)

    async def commit(self) -> list[Event]:
        """Write every tracked aggregate's new events, rows and outbox entries atomically."""
        started = time.perf_counter()
        writes = self._write_set()
        if self._committer is not None:
            if self._conn is not None:  # end the read transaction before the writes are grouped
                conn, self._conn = self._conn, None
                await self._release(conn)
            if writes.events:
                await self._committer.submit(writes)
        else:
            await self._commit_own_transaction(writes)
        for agg in writes.orders:
            agg.pending_events.clear()
            agg.persisted_version = agg.version
        self._recorded = []
        if self._metrics:
            self._metrics.uow_commit_seconds.observe(time.perf_counter() - started)
        return writes.events

    async def _commit_own_transaction(self, writes: WriteSet) -> None:
        conn = await self.connection()
        try:
            async with conn.pipeline():  # every write and the commit in one round trip
                await write(conn, writes, self.codec)
                await conn.commit()
        except errors.UniqueViolation as exc:
            await conn.rollback()
            raise integrity_error(exc, writes, self._metrics) from exc
        except BaseException:
            await conn.rollback()
            raise
