"""Whether accounts are still active, read after an order's commit, many orders' accounts in one read.

An order released to the venue (or the trigger book) must see the account's flag as it is after its own
commit (see ``realtime.orders.handlers._after_commit``). One read per order would double the order path's
statements, so the reads of orders released together are gathered like the group committer gathers writes:
a request that arrives while a read is in flight waits for the next read, which starts after it arrived, so
every answer is at least as fresh as the request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

_ACTIVE = "SELECT id::text FROM user_accounts WHERE id = ANY(%s::uuid[]) AND active"


@dataclass
class ActiveAccounts:
    pool: AsyncConnectionPool[Any]
    _waiting: dict[str, list[asyncio.Future[bool]]] = field(default_factory=dict)
    _reading: asyncio.Task[None] | None = None

    async def active(self, account_id: str) -> bool:
        """Whether the account is active, read after this call began (never from a cache)."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(account_id, []).append(answer)
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_while_waiting(), name="active-accounts")
        return await answer

    async def _read_while_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                async with self.pool.connection() as conn:
                    rows = await (await conn.execute(_ACTIVE, (list(batch),))).fetchall()
            except Exception as exc:  # every caller of this read hears it
                for answers in batch.values():
                    for answer in answers:
                        if not answer.done():
                            answer.set_exception(exc)
                continue
            active = {str(r[0]) for r in rows}
            for account_id, answers in batch.items():
                for answer in answers:
                    if not answer.done():
                        answer.set_result(account_id in active)
