"""The order service's front door: commands on the ``order.commands`` stream, answers on a reply list.

Any process (API, Telegram bot, strategies, tests) sends a command with :class:`CommandClient`; the order service
(:class:`CommandServer`) handles it on its bus and pushes the result to the command's reply key. A command is
acknowledged on the stream only after it was handled, so a crash re-delivers it; every order command is
idempotent (client order ids, cancels of cancelled orders), so handling it again answers the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import orjson
import psycopg
import structlog
from opentelemetry import propagate
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from core.domain.messages import Command
from core.messaging.bus import MessageBus
from core.messaging.codec import Codec, MalformedMessage
from core.messaging.streams import Stream, StreamNames
from core.observability.context import correlation_scope
from core.observability.metrics import Metrics
from core.observability.tracing import get_tracer

log = structlog.get_logger(__name__)
_tracer = get_tracer(__name__)

REPLY_TTL_S = 300


class CommandTimeout(TimeoutError):
    """No answer from the order service in time; the command may still be handled (it is idempotent)."""


class CommandClient:
    def __init__(self, redis: Redis, names: StreamNames, codec: Codec | None = None, maxlen: int = 1_000_000) -> None:
        self._redis = redis
        self._names = names
        self._codec = codec or Codec.create()
        self._maxlen = maxlen

    async def send(self, command: Command, partition_key: str, wait_s: float | None = 10.0) -> dict[str, Any] | None:
        """Queue ``command`` (partitioned by ``partition_key``, the user id); with ``wait_s``, wait for its result."""
        reply_key = f"{self._names.prefix}reply:{command.command_id}"
        fields: dict[str, Any] = {"p": self._codec.encode_command(command), "r": reply_key}
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the caller's trace continues in the order service (W3C traceparent)
        if "traceparent" in carrier:
            fields["t"] = carrier["traceparent"]
        await self._redis.xadd(
            self._names.key(Stream.ORDER_COMMANDS, partition_key),
            fields,  # type: ignore[arg-type]
            maxlen=self._maxlen,
            approximate=True,
        )
        if not wait_s:
            return None
        return await self.result(reply_key, wait_s)

    async def result(self, reply_key: str, wait_s: float) -> dict[str, Any]:
        found = await self._redis.blpop([reply_key], timeout=wait_s)  # type: ignore[arg-type]
        if found is None:
            raise CommandTimeout(f"no answer on {reply_key} within {wait_s}s")
        reply: dict[str, Any] = orjson.loads(found[1])
        return reply


class CommandServer:
    def __init__(
        self,
        redis: Redis,
        names: StreamNames,
        codec: Codec,
        bus: MessageBus,
        metrics: Metrics,
        *,
        group: str = "order-service",
        consumer: str = "order-service-1",
        batch: int = 256,
        concurrency: int = 128,
        retry_pending_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self._names = names
        self._codec = codec
        self._bus = bus
        self._group = group
        self._consumer = consumer
        self._batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._keys = names.all_keys(Stream.ORDER_COMMANDS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[tuple[str, str]] = set()
        self._retry_pending_s = retry_pending_s
        self._bad = metrics.counter("patriot_bad_commands_total", "Commands that could not be decoded", ("reason",))
        self.handled = 0

    async def setup(self) -> None:
        for key in self._keys:
            try:
                await self._redis.xgroup_create(key, self._group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        await self.setup()
        await self._read("0")  # what this consumer read before a crash and never acknowledged
        last_retry = time.monotonic()
        while not stop.is_set():
            try:
                await self._read(">", block_ms=200)
                if time.monotonic() - last_retry > self._retry_pending_s:
                    last_retry = time.monotonic()
                    await self._read("0")  # commands whose answer or acknowledgement failed: handle them again
            except (ConnectionError, OSError, RedisError) as exc:
                log.warning("command stream read failed; retrying", error=repr(exc))
                await asyncio.sleep(0.5)
        await self.drain()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _read(self, start: str, block_ms: int | None = None) -> None:
        reply = await self._redis.xreadgroup(
            self._group,
            self._consumer,
            dict.fromkeys(self._keys, start),  # type: ignore[arg-type]
            count=self._batch if start == ">" else 100_000,
            block=block_ms,
        )
        for key, messages in reply or []:
            for message_id, fields in messages:
                entry = (_s(key), _s(message_id))
                if fields is None or entry in self._in_flight:
                    continue
                await self._slots.acquire()
                self._in_flight.add(entry)
                task = asyncio.create_task(self._handle_safely(*entry, fields))
                self._tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle_safely(self, key: str, message_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            await self._handle(key, message_id, fields)
        except Exception as exc:  # left pending: handled again (idempotently) on the next pending round
            log.error("command handling failed; it stays pending", error=repr(exc), message_id=message_id)
        finally:
            self._in_flight.discard((key, message_id))

    async def _handle(self, key: str, message_id: str, fields: dict[bytes, bytes]) -> None:
        reply_key = _s(fields.get(b"r", b""))
        try:
            command = self._codec.decode_command(fields.get(b"p", b""))
        except MalformedMessage as exc:
            self._bad.labels(reason="malformed").inc()
            log.warning("malformed command dropped", error=str(exc)[:300])
            await self._answer(reply_key, {"ok": False, "error": "MalformedCommand", "message": str(exc)[:500]})
            await self._redis.xack(key, self._group, message_id)
            return
        parent = propagate.extract({"traceparent": _s(fields[b"t"])}) if b"t" in fields else None
        with (
            correlation_scope(command.correlation_id, str(command.command_id)),
            _tracer.start_as_current_span(
                f"command {type(command).__name__}",
                context=parent,
                attributes={"correlation_id": command.correlation_id or "", "command_id": str(command.command_id)},
            ),
        ):
            started = time.perf_counter()
            try:
                result = await self._bus.handle(command)
                body: dict[str, Any] = {"ok": True, **(dataclasses.asdict(result) if result is not None else {})}
            except Exception as exc:  # counted by the bus; the caller hears what went wrong
                body = {"ok": False, **_public_error(exc)}
            log.info(
                "command handled",
                command=type(command).__name__,
                ok=body["ok"],
                status=body.get("status"),
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        await self._answer(reply_key, body)
        await self._redis.xack(key, self._group, message_id)
        self.handled += 1

    async def _answer(self, reply_key: str, body: dict[str, Any]) -> None:
        if not reply_key:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(reply_key, orjson.dumps(body, default=str))
        pipe.expire(reply_key, REPLY_TTL_S)
        await pipe.execute()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _public_error(exc: Exception) -> dict[str, str]:
    """What the caller hears about a failed command: a refusal's own words, but never a database error's text
    (its message and DETAIL quote the statement's values and the schema; it is logged here, with its SQLSTATE)."""
    if isinstance(exc, psycopg.Error):
        log.error("command failed in the database", error_type=type(exc).__name__, sqlstate=exc.sqlstate)
        return {"error": "DatabaseError", "message": "the command could not be stored; the order service logged why"}
    return {"error": type(exc).__name__, "message": str(exc)[:500]}
