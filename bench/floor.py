"""The physical floor of a durable commit on this server and disk, measured in the run it is compared with.

The fsync tail of a shared disk swings from day to day, so an absolute commit-latency target says more about the
disk than about the code. Each latency benchmark first measures minimal durable transactions (one single-row
INSERT, committed on its own, autocommit, as the group committer sends its one statement) at the same offered
rate and over the same number of connections, open loop (a transaction's latency counts from when it was due,
waiting for a free connection included), and reports its own figures as ratios to this floor.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import psycopg

from bench.common import percentile

_TABLE = "CREATE TABLE IF NOT EXISTS bench_floor (n bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())"
_INSERT = "INSERT INTO bench_floor (n) VALUES (%s)"


@dataclass(frozen=True)
class Floor:
    """Commit latency of minimal durable transactions at the benchmark's rate and connection count."""

    commit_p50_ms: float
    commit_p99_ms: float
    transactions: int
    connections: int

    def figures(self) -> dict[str, float | int]:
        return {
            "floor_commit_p50_ms": self.commit_p50_ms,
            "floor_commit_p99_ms": self.commit_p99_ms,
            "floor_transactions": self.transactions,
            "floor_connections": self.connections,
        }

    def ratio(self, p99_ms: float) -> float:
        """``p99_ms`` as a multiple of the floor's p99 (what the targets are set in)."""
        return round(p99_ms / self.commit_p99_ms, 2) if self.commit_p99_ms > 0 else float("nan")


async def measure_floor(database_url: str, rate: float, seconds: float, connections: int) -> Floor:
    """Offer ``rate`` single-row INSERT transactions per second for ``seconds`` over ``connections`` connections."""
    idle: asyncio.Queue[psycopg.AsyncConnection[tuple[object, ...]]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await psycopg.AsyncConnection.connect(database_url, autocommit=True))
    conn = await idle.get()
    await conn.execute(_TABLE)
    await conn.execute(_INSERT, (-1,))  # the first insert creates the table's first page; not part of the floor
    idle.put_nowait(conn)
    latencies: list[float] = []
    total = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.05

    async def one(n: int) -> None:
        due = start + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = await idle.get()
        try:
            await conn.execute(_INSERT, (n,))
        finally:
            idle.put_nowait(conn)
        latencies.append(time.perf_counter() - due)

    try:
        await asyncio.gather(*(one(n) for n in range(total)))
    finally:
        while not idle.empty():
            await idle.get_nowait().close()
    return Floor(
        commit_p50_ms=round(percentile(latencies, 50) * 1000, 3),
        commit_p99_ms=round(percentile(latencies, 99) * 1000, 3),
        transactions=total,
        connections=connections,
    )
