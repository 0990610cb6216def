"""Open trade gaps: holes in a symbol's trade ids, kept (in ``trade_gaps``) until their trades are stored.

A gap is opened when the collector sees a trade id jump, retried with backoff while the venue refuses or lacks the
trades, and closed only after the backfilled trades were flushed to the database; one still open when the process
stops is picked up again by the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import psycopg


@dataclass(slots=True)
class TradeGap:
    """Trades ``first_missing_id..last_missing_id`` of ``symbol`` are not stored yet."""

    venue: str
    symbol: str
    first_missing_id: int
    last_missing_id: int
    attempts: int = 0
    gap_id: int | None = None

    @property
    def size(self) -> int:
        return self.last_missing_id - self.first_missing_id + 1


class TradeGapStore(Protocol):
    async def open(self, gap: TradeGap) -> TradeGap: ...

    async def open_gaps(self, venue: str) -> list[TradeGap]: ...

    async def attempted(self, gap: TradeGap, error: str | None) -> None: ...

    async def close(self, gap: TradeGap) -> None: ...


class MemoryGapStore:
    """Gaps kept in the process only: for collectors that have no database (tests of other behaviour, tools)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, int], TradeGap] = {}
        self.closed: list[TradeGap] = []

    async def open(self, gap: TradeGap) -> TradeGap:
        return self._open.setdefault((gap.venue, gap.symbol, gap.first_missing_id), gap)

    async def open_gaps(self, venue: str) -> list[TradeGap]:
        return [g for g in self._open.values() if g.venue == venue]

    async def attempted(self, gap: TradeGap, error: str | None) -> None:
        gap.attempts += 1

    async def close(self, gap: TradeGap) -> None:
        if self._open.pop((gap.venue, gap.symbol, gap.first_missing_id), None) is not None:
            self.closed.append(gap)


class PostgresGapStore:
    """Gaps in the ``trade_gaps`` table; one short connection per change (gaps are rare, a few a day)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    async def open(self, gap: TradeGap) -> TradeGap:
        """Record the gap (again after a restart: the same first id is the same gap) and return it with its id."""
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            cur = await conn.execute(
                "INSERT INTO trade_gaps (venue, symbol, first_missing_id, last_missing_id) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (venue, symbol, first_missing_id) DO UPDATE"
                " SET last_missing_id = greatest(trade_gaps.last_missing_id, EXCLUDED.last_missing_id),"
                " closed_at = NULL RETURNING id, attempts",
                (gap.venue, gap.symbol, gap.first_missing_id, gap.last_missing_id),
            )
            row = await cur.fetchone()
            assert row is not None
            gap.gap_id, gap.attempts = int(row[0]), int(row[1])
        return gap

    async def open_gaps(self, venue: str) -> list[TradeGap]:
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            cur = await conn.execute(
                "SELECT id, symbol, first_missing_id, last_missing_id, attempts FROM trade_gaps"
                " WHERE venue = %s AND closed_at IS NULL ORDER BY symbol, first_missing_id",
                (venue,),
            )
            rows = await cur.fetchall()
        return [TradeGap(venue, str(s), int(f), int(last), int(a), int(i)) for i, s, f, last, a in rows]

    async def attempted(self, gap: TradeGap, error: str | None) -> None:
        gap.attempts += 1
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            await conn.execute(
                "UPDATE trade_gaps SET attempts = attempts + 1, last_error = %s WHERE id = %s",
                (None if error is None else error[:500], gap.gap_id),
            )

    async def close(self, gap: TradeGap) -> None:
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            await conn.execute("UPDATE trade_gaps SET closed_at = now() WHERE id = %s", (gap.gap_id,))


async def count_open_gaps(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    """How many gaps are open across venues (for ``/admin/system``)."""
    cur = await conn.execute("SELECT count(*) FROM trade_gaps WHERE closed_at IS NULL")
    row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]
