"""Outbox relay: publishes committed outbox rows to Redis Streams in commit order, at least once.

A row is read only once every transaction older than it has finished (``txid < pg_snapshot_xmin``), so a slow
transaction can never be skipped: rows are published ordered by (transaction id, row id). Rows are deleted
only after Redis has accepted them; a crash in between republishes them and consumers drop the duplicates by
event id. One relay per database publishes at a time (an advisory lock); others wait as standbys.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import cast

import psycopg
import structlog
from redis.asyncio import Redis

from core.messaging.reconnect import Reconnects, connection_lost
from core.messaging.streams import StreamNames
from core.observability.metrics import Metrics
from core.runtime.faults import FaultPlan

RELAY_LOCK_ID = 0x50415452494F54  # "PATRIOT"
_CONNECT_TIMEOUT_S = 5

# ``outbox.txid``, qualified: a bare ``txid`` in ORDER BY names the output column ``txid::text`` (an output name wins
# over an input column there), which sorted the transaction ids as text ("1000" before "999").
_FETCH = (
    "SELECT id, stream, partition_key, event_id, payload, created_at, txid::text FROM outbox "
    "WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY outbox.txid, outbox.id LIMIT %s"
)
# Exactly the rows just published, by primary key: never a range, which would also remove any row inside it the
# fetch did not return.
_DELETE = (
    "DELETE FROM outbox o USING unnest(%s::xid8[], %s::bigint[]) AS published(txid, id) "
    "WHERE o.txid = published.txid AND o.id = published.id"
)

log = structlog.get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        database_url: str,
        redis: Redis,
        names: StreamNames,
        metrics: Metrics,
        *,
        batch_size: int = 1000,
        poll_interval_s: float = 0.005,
        stream_maxlen: int = 1_000_000,
        faults: FaultPlan | None = None,
    ) -> None:
        self._url = database_url
        self._redis = redis
        self._names = names
        self._metrics = metrics
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._maxlen = stream_maxlen
        self._faults = faults or FaultPlan()
        self._reconnects = Reconnects(metrics, "relay")

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; waits as a standby while another relay holds the lock.

        A lost PostgreSQL or Redis connection is counted and reconnected after a backoff; the lock went with the
        old session, so the relay competes for it again (rows published but not yet deleted are published again
        and dropped by the consumers as duplicates).
        """
        while not stop.is_set():
            try:
                await self._run_session(stop)
            except Exception as exc:
                backend = connection_lost(exc)
                if backend is None:
                    raise
                self._reconnects.count(backend)
                log.warning("outbox relay lost its connection; reconnecting", backend=backend, error=repr(exc))
                await self._reconnects.wait(stop)

    async def _run_session(self, stop: asyncio.Event) -> None:
        """One database session: take the lock, then publish until stopped or the connection fails."""
        connecting = psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        async with await connecting as conn:
            await self._become_leader(conn, stop)
            if stop.is_set():
                return
            log.info("outbox relay publishing", batch_size=self._batch_size)
            while not stop.is_set():
                published = await self.publish_batch(conn)
                self._reconnects.backoff.reset()
                if published < self._batch_size:
                    try:
                        await asyncio.wait_for(stop.wait(), self._poll_interval_s)
                    except TimeoutError:
                        pass

    async def _become_leader(self, conn: psycopg.AsyncConnection[tuple[object, ...]], stop: asyncio.Event) -> None:
        announced = False
        while not stop.is_set():
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_ID,))
            row = await cur.fetchone()
            if row and row[0]:
                return
            if not announced:
                log.info("another outbox relay is publishing; standing by")
                announced = True
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass

    async def publish_batch(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
        """Publish one batch of committed rows; returns how many were published."""
        cur = await conn.execute(_FETCH, (self._batch_size,))
        rows = await cur.fetchall()
        if not rows:
            return 0
        self._faults.maybe_crash("relay.before_publish")
        pipe = self._redis.pipeline(transaction=False)
        for _id, stream, partition_key, event_id, payload, _created, _txid in rows:
            pipe.xadd(
                self._names.key(str(stream), str(partition_key)),
                {"id": str(event_id), "p": cast(bytes, payload)},
                maxlen=self._maxlen,
                approximate=True,
            )
        await pipe.execute()
        self._faults.maybe_crash("relay.after_publish")
        await conn.execute(_DELETE, ([r[6] for r in rows], [r[0] for r in rows]))
        self._record(rows)
        return len(rows)

    def _record(self, rows: list[tuple[object, ...]]) -> None:
        now = datetime.now(UTC)
        self._metrics.outbox_relay_batches.inc()
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r[1])] = counts.get(str(r[1]), 0) + 1
        for stream, n in counts.items():
            self._metrics.outbox_published.labels(stream=stream).inc(n)
        oldest = rows[0][5]
        if isinstance(oldest, datetime):
            self._metrics.outbox_lag_seconds.observe(max((now - oldest).total_seconds(), 0.0))


async def outbox_backlog(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    """Rows still waiting to be published (health checks, tests)."""
    cur = await conn.execute("SELECT count(*) FROM outbox")
    row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]
