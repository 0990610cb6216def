"""Live read models per user (positions, balances, open orders, portfolio summary): PostgreSQL, cached in Redis.

Readers (API, Telegram bot) get the cached copy when it is fresh; the cache lives ``ttl_s`` seconds and is
deleted as soon as a fill, a balance or an order of that user changes, so a reader never waits for the TTL to
see its own fill. Rows are plain JSON-ready dicts (Decimal as strings).
"""

from __future__ import annotations

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
    def __init__(self, pool: AsyncConnectionPool[Any], redis: Redis, prefix: str, ttl_s: float = 2.0) -> None:
        self._pool = pool
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)

    def key(self, user_id: str, kind: str) -> str:
        return f"{self._prefix}cache:portfolio:{user_id}:{kind}"

    async def read(self, user_id: str, kind: str) -> Any:
        """One read model of one user: from the cache, else from PostgreSQL (and cached)."""
        if kind not in _QUERIES:
            raise ValueError(f"unknown read model {kind!r}; expected one of {', '.join(KINDS)}")
        key = self.key(user_id, kind)
        cached = await self._redis.get(key)
        if cached is not None:
            return orjson.loads(cached)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_QUERIES[kind], (user_id,))
            rows = await cur.fetchall()
        value: Any = (rows[0] if rows else None) if kind == "summary" else rows
        body = orjson.dumps(value, default=_json)
        await self._redis.set(key, body, px=self._ttl_ms)
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
        keys = [self.key(u, kind) for u in user_ids for kind in KINDS]
        if keys:
            await self._redis.delete(*keys)
