"""Live read models per user (positions, balances, open orders, portfolio summary): PostgreSQL, cached in Redis.

Readers (API, Telegram bot) get the cached copy; it is fresh for ``ttl_s`` seconds and deleted as soon as a fill,
a balance or an order of that user changes, so a reader never waits for the TTL to see its own fill. Rows are
plain JSON-ready dicts (Decimal as strings).

Hot readers use :meth:`PortfolioReadModels.cached`: one MGET of the copies and their freshness marks. A copy past
its freshness (marks moved, nothing of the user changed) is still served while one reader refreshes it in the
background (one per key across processes, by a short Redis lock), so a busy user's expiry never sends a burst of
identical queries to PostgreSQL; a copy that is missing (deleted by a change, or never read) is read at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from realtime.portfolio.marks import MARKED_BY

KINDS = ("positions", "balances", "open_orders", "summary")
_MARK = f"LEFT JOIN mark_prices m ON {MARKED_BY}"
_QUERIES = {
    "positions": f"""
        SELECT p.account_id::text, p.symbol, p.exchange, p.quantity, p.avg_entry_price, p.realized_pnl, p.fees,
               m.price AS mark_price,
               CASE WHEN m.price IS NULL OR p.avg_entry_price IS NULL THEN 0
                    ELSE (m.price - p.avg_entry_price) * p.quantity END AS unrealized_pnl,
               p.updated_at
        FROM positions p {_MARK} WHERE p.user_id = %s AND (p.quantity <> 0 OR p.realized_pnl <> 0)
        ORDER BY p.symbol, p.account_id""",
    "balances": """
        SELECT b.account_id::text, b.asset, b.free, b.locked, b.updated_at FROM balances b
        JOIN user_accounts a ON a.id = b.account_id WHERE a.user_id = %s AND (b.free <> 0 OR b.locked <> 0)
        ORDER BY b.asset, b.account_id""",
    "open_orders": """
        SELECT id::text AS order_id, account_id::text, client_order_id, symbol, side, order_type, quantity, price,
               trigger_price, status, filled_quantity, created_at
        FROM orders WHERE user_id = %s
          AND status NOT IN ('filled', 'canceled', 'rejected', 'denied', 'expired')
        ORDER BY created_at""",
    "summary": "SELECT * FROM portfolio_summary WHERE user_id = %s",
}


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value.is_finite() else str(value)
    return str(value)


class PortfolioReadModels:
    def __init__(
        self, pool: AsyncConnectionPool[Any], redis: Redis, prefix: str, ttl_s: float = 2.0, stale_s: float = 30.0
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._stale_ms = int(max(stale_s, ttl_s) * 1000)  # how long a past-fresh copy may still be served
        self._refreshing: dict[str, asyncio.Task[Any]] = {}

    def key(self, user_id: str, kind: str) -> str:
        return f"{self._prefix}cache:portfolio:{user_id}:{kind}"

    def _fresh_key(self, user_id: str, kind: str) -> str:
        return f"{self._prefix}cache:portfolio-fresh:{user_id}:{kind}"

    async def cached(self, user_id: str, kinds: Iterable[str]) -> list[bytes]:
        """The JSON of ``kinds`` for one user: one MGET when cached; stale copies are served and refreshed in the
        background (together, in one task), missing ones are read now (and cached)."""
        kinds = tuple(kinds)
        keys = [self.key(user_id, kind) for kind in kinds] + [self._fresh_key(user_id, kind) for kind in kinds]
        found: list[Any] = await self._redis.mget(keys)
        out: list[bytes] = found[: len(kinds)]
        missing = [kind for n, kind in enumerate(kinds) if out[n] is None]
        stale = [kind for n, kind in enumerate(kinds) if out[n] is not None and found[len(kinds) + n] is None]
        if missing:
            loaded = dict(zip(missing, await self._load(user_id, missing), strict=True))
            out = [loaded[kind] if body is None else body for kind, body in zip(kinds, out, strict=True)]
        if stale:
            self._refresh_soon(user_id, stale)
        return out

    def _refresh_soon(self, user_id: str, kinds: list[str]) -> None:
        """Refresh the stale ``kinds`` of one user in the background: one task, one Redis lock round trip, one
        PostgreSQL connection for all of them (a portfolio read finds its three parts stale together)."""
        keys = {kind: key for kind in kinds if (key := self.key(user_id, kind)) not in self._refreshing}
        if not keys:
            return

        async def refresh() -> None:
            try:  # one refresher per key across processes; the lock lapses on its own if this one dies
                pipe = self._redis.pipeline(transaction=False)
                for key in keys.values():
                    pipe.set(f"{key}:refreshing", b"1", nx=True, px=self._ttl_ms)
                won = [kind for kind, locked in zip(keys, await pipe.execute(), strict=True) if locked]
                if won:
                    await self._load(user_id, won)
            finally:
                for key in keys.values():
                    self._refreshing.pop(key, None)

        task = asyncio.ensure_future(refresh())
        for key in keys.values():
            self._refreshing[key] = task

    async def _load(self, user_id: str, kinds: Iterable[str]) -> list[bytes]:
        """Read models of one user from PostgreSQL (one connection) and cache them (fresh for ``ttl_s``, kept for
        ``stale_s``) in one Redis round trip."""
        bodies: list[bytes] = []
        kinds = tuple(kinds)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            for kind in kinds:
                await cur.execute(_QUERIES[kind], (user_id,))
                rows = await cur.fetchall()
                value: Any = (rows[0] if rows else None) if kind == "summary" else rows
                bodies.append(orjson.dumps(value, default=_json))
        pipe = self._redis.pipeline(transaction=False)
        for kind, body in zip(kinds, bodies, strict=True):
            pipe.set(self.key(user_id, kind), body, px=self._stale_ms)
            pipe.set(self._fresh_key(user_id, kind), b"1", px=self._ttl_ms)
        await pipe.execute()
        return bodies

    async def read(self, user_id: str, kind: str) -> Any:
        """One read model of one user: from the cache, else from PostgreSQL (and cached)."""
        if kind not in _QUERIES:
            raise ValueError(f"unknown read model {kind!r}; expected one of {', '.join(KINDS)}")
        found: list[Any] = await self._redis.mget([self.key(user_id, kind), self._fresh_key(user_id, kind)])
        body, fresh = found
        if body is None or fresh is None:
            body = (await self._load(user_id, (kind,)))[0]
        return orjson.loads(body)

    async def positions(self, user_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.read(user_id, "positions")
        return result

    async def balances(self, user_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.read(user_id, "balances")
        return result

    async def open_orders(self, user_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.read(user_id, "open_orders")
        return result

    async def summary(self, user_id: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.read(user_id, "summary")
        return result

    async def invalidate(self, user_ids: Iterable[str]) -> None:
        keys = [k for u in user_ids for kind in KINDS for k in (self.key(u, kind), self._fresh_key(u, kind))]
        if keys:
            await self._redis.delete(*keys)
