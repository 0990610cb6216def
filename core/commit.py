"""Group commit: many units of work's writes share one PostgreSQL transaction.

Each commit costs the database a WAL flush and a transaction whatever its size, so under load the committer
gathers the write sets that arrive while a commit is in flight and writes them together in the next one.
Callers wait for their own outcome: a conflict in one write set (stale version, duplicate client order id)
is found by committing that group's sets one by one, so only the offender fails. Latency stays at roughly
one commit when idle; throughput grows with load instead of queueing.

Each writer owns an autocommit connection and sends a group as one statement (see ``core.uow.write``): one
round trip, no BEGIN/COMMIT, atomic because it is one statement.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg
import structlog
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from core.messaging.codec import Codec
from core.observability.metrics import Metrics
from core.uow import Conn, WriteSet, integrity_error, write

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Pending:
    writes: WriteSet
    done: asyncio.Future[None]


class GroupCommitter:
    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        codec: Codec,
        metrics: Metrics | None = None,
        *,
        max_group: int = 256,
        writers: int = 1,
    ) -> None:
        self._pool = pool
        self._codec = codec
        self._metrics = metrics
        self._max_group = max_group
        self._writers = writers
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._group_size = (
            metrics.histogram(
                "patriot_group_commit_size", "Write sets per group commit", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
            )
            if metrics
            else None
        )

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name=f"group-commit-{n}") for n in range(self._writers)]

    async def close(self) -> None:
        """Finish what is queued, then stop the writers."""
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def submit(self, writes: WriteSet) -> None:
        """Commit ``writes`` (in a group); raises the domain error of its own conflict, if any."""
        if not self._tasks:
            self.start()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(writes, done))
        await done

    async def _run(self) -> None:
        conn: Conn | None = None
        try:
            while True:
                group = [await self._queue.get()]
                while len(group) < self._max_group and not self._queue.empty():
                    group.append(self._queue.get_nowait())
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(str(self._pool.conninfo), autocommit=True)
                    await self._commit_group(conn, group)
                except Exception as exc:  # the server or the connection failed: every caller hears it
                    log.error("group commit failed", error=repr(exc), size=len(group))
                    for item in group:
                        _settle(item, exc)
                    if isinstance(exc, psycopg.OperationalError) and conn is not None:
                        await conn.close()
                        conn = None
                finally:
                    for _ in group:
                        self._queue.task_done()
        finally:
            if conn is not None:
                await conn.close()

    async def _commit_group(self, conn: Conn, group: list[_Pending]) -> None:
        if self._group_size:
            self._group_size.observe(len(group))
        combined = WriteSet()
        for item in group:
            combined.extend(item.writes)
        try:
            await write(conn, combined, self._codec)
        except (errors.IntegrityError, errors.CardinalityViolation):
            # Find the offender(s): each write set alone, so the others still commit. (Two write sets of one
            # aggregate in a group always conflict: both were computed from the same committed version.)
            for item in group:
                try:
                    await write(conn, item.writes, self._codec)
                except errors.UniqueViolation as exc:
                    _settle(item, integrity_error(exc, item.writes, self._metrics))
                except Exception as exc:
                    _settle(item, exc)
                else:
                    _settle(item, None)
            return
        for item in group:
            _settle(item, None)


def _settle(item: _Pending, error: BaseException | None) -> None:
    if item.done.done():  # the caller went away (cancelled); nothing to tell
        return
    if error is None:
        item.done.set_result(None)
    else:
        item.done.set_exception(error)
