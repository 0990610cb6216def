"""Stream consumer: consumer groups, exactly-once effects, retries, dead letters and claiming from dead peers.

Each message's effect runs in a unit of work together with an insert into ``processed_messages`` keyed by
(consumer group, event id); a redelivered message finds its id there and is skipped, so at-least-once delivery
becomes exactly-once effect. A message is acknowledged only after its transaction commits. Undecodable
messages go straight to the dead-letter stream; a handler that keeps failing sends its message there after
``max_deliveries`` attempts. Messages left pending by a consumer that died are claimed after ``claim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import structlog
from psycopg import AsyncRawCursor
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core.domain.messages import Event
from core.messaging.codec import Codec, MalformedMessage
from core.messaging.reconnect import Reconnects, connection_lost
from core.messaging.streams import Stream, StreamNames
from core.observability.context import correlation_scope
from core.observability.metrics import Metrics
from core.runtime.faults import FaultPlan
from core.uow import UnitOfWork, UnitOfWorkFactory

Handler = Callable[[Event, UnitOfWork], Awaitable[None]]
Entry = tuple[str, str, dict[bytes, bytes]]  # (stream key, message id, fields)

_DEDUPE = "INSERT INTO processed_messages (consumer, event_id) VALUES {} ON CONFLICT DO NOTHING RETURNING event_id"
# One small batch of this group's expired rows per statement (oldest first, by the consumer/processed_at index), so
# pruning never holds many row locks or one long transaction.
_PRUNE = (
    "DELETE FROM processed_messages WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM processed_messages "
    "WHERE consumer = %s AND processed_at < now() - make_interval(secs => %s) ORDER BY processed_at LIMIT %s)"
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    group: str
    streams: Sequence[Stream]
    consumer_name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    batch_size: int = 256
    block_ms: int = 200
    linger_ms: int = 5  # after a small batch, let the next one grow: fewer, larger transactions under load
    max_deliveries: int = 5
    claim_idle_ms: int = 30_000
    retry_delay_s: float = 0.05
    # Dedupe rows are kept far longer than any redelivery: a claim after claim_idle_ms, retries, and a relay that
    # republishes rows it published just before a crash after being down for a long time.
    dedupe_retention_s: float = 7 * 86_400
    prune_interval_s: float = 300.0
    prune_batch: int = 1000


@dataclass(slots=True)
class _Decoded:
    key: str
    message_id: str
    event: Event


class StreamConsumer:
    def __init__(
        self,
        redis: Redis,
        uow_factory: UnitOfWorkFactory,
        names: StreamNames,
        codec: Codec,
        metrics: Metrics,
        handler: Handler,
        config: ConsumerConfig,
        faults: FaultPlan | None = None,
    ) -> None:
        self._redis = redis
        self._uow_factory = uow_factory
        self._names = names
        self._codec = codec
        self._metrics = metrics
        self._handler = handler
        self.config = config
        self._faults = faults or FaultPlan()
        self._keys = [k for s in config.streams for k in names.all_keys(s)]
        self._attempts: dict[tuple[str, str], int] = {}
        self._retry_due: dict[tuple[str, str], tuple[float, Entry]] = {}
        self._last_claim = 0.0
        self._last_prune = time.monotonic()
        self._pruned = metrics.counter(
            "patriot_bus_dedupe_pruned_total", "Dedupe rows removed after the retention", ("consumer",)
        )
        self._reconnects = Reconnects(metrics, f"consumer.{config.group}")

    async def setup(self) -> None:
        """Create the consumer group on every shard (from the stream's start, so nothing before it is missed)."""
        for key in self._keys:
            try:
                await self._redis.xgroup_create(key, self.config.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, reconnecting by itself when PostgreSQL or Redis drops a connection.

        After a reconnect the consumer re-reads what it had read and not acknowledged (an effect whose commit
        reply was lost is found in ``processed_messages`` and skipped), so nothing waits for ``claim_idle_ms``.
        """
        started = False
        while not stop.is_set():
            try:
                await self.setup()
                await self.recover_own_pending()
                if not started:
                    log.info("consumer started", group=self.config.group, consumer=self.config.consumer_name)
                    started = True
                while not stop.is_set():
                    await self.poll_once()
                    self._reconnects.backoff.reset()
            except Exception as exc:
                backend = connection_lost(exc)
                if backend is None:
                    raise
                self._reconnects.count(backend)
                log.warning("consumer lost its connection; reconnecting", backend=backend, error=repr(exc))
                await self._reconnects.wait(stop)

    async def recover_own_pending(self) -> int:
        """After a restart under the same name, re-deliver what this consumer had read but not acknowledged."""
        streams: dict[str, str] = dict.fromkeys(self._keys, "0")
        reply = await self._redis.xreadgroup(self.config.group, self.config.consumer_name, streams, count=10_000)  # type: ignore[arg-type]
        entries = self._entries(reply)
        await self._process(entries)
        return len(entries)

    async def poll_once(self, block_ms: int | None = None) -> int:
        """Claim from dead peers when due, run due retries, then read and process one batch of new messages."""
        handled = await self._run_due_retries()
        now = time.monotonic()
        if (now - self._last_claim) * 1000 >= self.config.claim_idle_ms / 2:
            self._last_claim = now
            handled += await self.claim_abandoned()
        if now - self._last_prune >= self.config.prune_interval_s:
            self._last_prune = now
            await self.prune_processed()
        streams: dict[str, str] = dict.fromkeys(self._keys, ">")
        reply = await self._redis.xreadgroup(
            self.config.group,
            self.config.consumer_name,
            streams,  # type: ignore[arg-type]
            count=self.config.batch_size,
            block=self.config.block_ms if block_ms is None else block_ms,
        )
        entries = self._entries(reply)
        await self._process(entries)
        if 0 < len(entries) < self.config.batch_size // 4 and self.config.linger_ms:
            await asyncio.sleep(self.config.linger_ms / 1000)
        return handled + len(entries)

    async def prune_processed(self, max_batches: int = 10) -> int:
        """Remove this group's dedupe rows older than the retention, a small batch per transaction; returns how
        many (at most ``max_batches`` batches per call, so a large backlog of expired rows is spread over calls)."""
        removed = 0
        for _ in range(max_batches):
            async with self._uow_factory(transactional=True) as uow:
                conn = await uow.connection()
                cur = await conn.execute(
                    _PRUNE, (self.config.group, self.config.dedupe_retention_s, self.config.prune_batch)
                )
                await conn.commit()
            removed += max(cur.rowcount, 0)
            if cur.rowcount < self.config.prune_batch:
                break
        if removed:
            self._pruned.labels(consumer=self.config.group).inc(removed)
        return removed

    async def claim_abandoned(self) -> int:
        """Take over messages another consumer read and never acknowledged within ``claim_idle_ms``."""
        claimed: list[Entry] = []
        for key in self._keys:
            start = "0-0"
            while True:
                reply = await self._redis.xautoclaim(
                    key,
                    self.config.group,
                    self.config.consumer_name,
                    self.config.claim_idle_ms,
                    start,
                    count=500,
                )
                start, messages = reply[0], reply[1]
                claimed += [(key, _s(mid), fields) for mid, fields in messages if fields is not None]
                if _s(start) == "0-0" or not messages:
                    break
        if claimed:
            self._metrics.bus_claimed.labels(consumer=self.config.group).inc(len(claimed))
            log.warning("claimed messages left pending by another consumer", count=len(claimed))
            poison = await self._over_delivered(claimed)
            for entry in poison:
                await self._dead_letter(entry, "delivered too many times without success")
            await self._process([e for e in claimed if e not in poison])
        return len(claimed)

    async def _over_delivered(self, entries: list[Entry]) -> list[Entry]:
        over: list[Entry] = []
        for entry in entries:
            info = await self._redis.xpending_range(entry[0], self.config.group, entry[1], entry[1], 1)
            if info and int(info[0]["times_delivered"]) > self.config.max_deliveries:
                over.append(entry)
        return over

    @staticmethod
    def _entries(reply: object) -> list[Entry]:
        entries: list[Entry] = []
        for key, messages in reply or []:  # type: ignore[attr-defined]
            for mid, fields in messages:
                if fields is not None:  # trimmed away while pending
                    entries.append((_s(key), _s(mid), fields))
        return entries

    async def _process(self, entries: list[Entry]) -> None:
        decoded: list[_Decoded] = []
        for entry in entries:
            try:
                payload = entry[2].get(b"p")
                if payload is None:
                    raise MalformedMessage("message has no payload field 'p'")
                decoded.append(_Decoded(entry[0], entry[1], self._codec.decode_envelope(payload)))
            except MalformedMessage as exc:
                self._metrics.bad_input.labels(source="bus", reason="malformed").inc()
                await self._dead_letter(entry, f"malformed: {exc}")
        if not decoded:
            return
        try:
            await self._apply(decoded)
            self._faults.maybe_crash(f"consumer.{self.config.group}.before_ack")
        except Exception as exc:
            if connection_lost(exc):  # not the handler's fault: no attempt is spent, run() reconnects
                raise
            if len(decoded) == 1:
                await self._failed(decoded[0], exc)
                return
            # One bad message must not hold the others back: apply them one by one to isolate it.
            for item in decoded:
                try:
                    await self._apply([item])
                except Exception as item_exc:
                    if connection_lost(item_exc):
                        raise
                    await self._failed(item, item_exc)
                    continue
                await self._ack([item])
            return
        await self._ack(decoded)

    async def _apply(self, items: list[_Decoded]) -> None:
        """Apply the effects of ``items`` and record them as processed, in one transaction."""
        group = self.config.group
        async with self._uow_factory(transactional=True) as uow:
            conn = await uow.connection()
            cur = AsyncRawCursor(conn)
            await cur.execute(_dedupe_sql(len(items)), [group, *(i.event.event_id for i in items)])
            fresh = {str(r[0]) for r in await cur.fetchall()}
            # Pipelined: the handlers' statements and the commit go out without a round trip each; an error
            # surfaces at the latest on commit and fails the whole batch, which is then retried one by one.
            async with conn.pipeline():
                for item in items:
                    event_id = str(item.event.event_id)
                    if event_id not in fresh:
                        self._metrics.bus_duplicates.labels(consumer=group).inc()
                        continue
                    fresh.discard(event_id)  # a second copy inside the same batch is a duplicate too
                    with correlation_scope(item.event.correlation_id, event_id):
                        await self._handler(item.event, uow)
                await uow.commit()

    async def _ack(self, items: list[_Decoded]) -> None:
        by_key: dict[str, list[str]] = {}
        for item in items:
            by_key.setdefault(item.key, []).append(item.message_id)
            self._attempts.pop((item.key, item.message_id), None)
            self._retry_due.pop((item.key, item.message_id), None)
        pipe = self._redis.pipeline(transaction=False)
        for key, ids in by_key.items():
            pipe.xack(key, self.config.group, *ids)
            self._metrics.bus_consumed.labels(stream=key.rsplit(":", 1)[0], consumer=self.config.group).inc(len(ids))
        await pipe.execute()

    async def _failed(self, item: _Decoded, exc: Exception) -> None:
        identity = (item.key, item.message_id)  # message ids are unique per stream key only
        attempts = self._attempts.get(identity, 0) + 1
        self._attempts[identity] = attempts
        error = type(exc).__name__
        self._metrics.bus_handler_failures.labels(consumer=self.config.group, error=error).inc()
        with correlation_scope(item.event.correlation_id, str(item.event.event_id)):
            log.warning("handler failed", error=repr(exc), attempt=attempts, event_type=item.event.event_type)
        entry: Entry = (item.key, item.message_id, {b"p": self._codec.encode_envelope(item.event)})
        if attempts >= self.config.max_deliveries:
            await self._dead_letter(entry, f"handler failed {attempts} times: {exc!r}")
            return
        self._metrics.bus_retried.labels(consumer=self.config.group).inc()
        delay = self.config.retry_delay_s * 2 ** (attempts - 1)
        self._retry_due[identity] = (time.monotonic() + delay, entry)

    async def _run_due_retries(self) -> int:
        now = time.monotonic()
        due = [entry for at, entry in list(self._retry_due.values()) if at <= now]
        for entry in due:
            self._retry_due.pop((entry[0], entry[1]), None)
        if due:
            await self._process(due)
        return len(due)

    async def _dead_letter(self, entry: Entry, reason: str) -> None:
        """Park a message on the dead-letter stream with the error, then acknowledge it so the group moves on."""
        key, mid, fields = entry
        await self._redis.xadd(
            self._names.dead_letter,
            {
                "stream": key,
                "message_id": mid,
                "group": self.config.group,
                "consumer": self.config.consumer_name,
                "error": reason[:2000],
                "payload": fields.get(b"p", b"") or repr(fields).encode(),
                "failed_at": datetime.now(UTC).isoformat(),
            },
        )
        await self._redis.xack(key, self.config.group, mid)
        self._attempts.pop((key, mid), None)
        label = reason.split(":", 1)[0][:40]
        self._metrics.bus_dead_lettered.labels(
            stream=key.rsplit(":", 1)[0], consumer=self.config.group, reason=label
        ).inc()
        log.error("message dead-lettered", stream=key, message_id=mid, error=reason[:500])

    @property
    def retries_pending(self) -> int:
        return len(self._retry_due)


@lru_cache(maxsize=2048)
def _dedupe_sql(rows: int) -> str:
    return _DEDUPE.format(", ".join(f"($1, ${n})" for n in range(2, rows + 2)))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
