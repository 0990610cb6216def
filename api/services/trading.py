"""What the accounts, orders and risk routers share: key validation against the venue, the caller-scoped reads of
accounts and orders, Idempotency-Key storage, and turning the order service's reply into an HTTP answer.

Every read here is scoped by the caller's user id in SQL: another user's account or order is simply not found.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from api.errors import ApiError
from api.state import ApiState
from core.domain.messages import Command
from core.security.account_secrets import ExchangeCredentials
from realtime.exchanges.base import AuthenticationFailed, ExchangeError, ExchangeUnavailable, RateLimited
from realtime.orders.commands import CommandTimeout
from realtime.orders.venues import AccountRef, VenueEndpoints, adapter_factory

# --- exchange keys ------------------------------------------------------------------------------------------


async def validate_exchange_keys(
    venues: dict[str, Any], redis: Redis, prefix: str, exchange: str, api_key: str, api_secret: str
) -> None:
    """Call the venue's signed account endpoint with the keys; 400 with the venue's reason when it refuses them.

    The secret never appears in an error: venue messages carry only their own code and text."""
    if exchange == "simulator" and not venues.get("simulator"):
        raise ApiError(400, "unsupported_exchange", "this deployment trades on real venues: link binance or bybit")
    if exchange == "bybit" and venues.get("simulator") and not venues.get("bybit_rest_url"):
        raise ApiError(
            400,
            "unsupported_exchange",
            "this deployment runs against the exchange simulator: link simulator or binance",
        )
    endpoints = VenueEndpoints(
        binance_rest_url=venues.get("binance_rest_url"),
        bybit_rest_url=venues.get("bybit_rest_url"),
        simulator=bool(venues.get("simulator")),
    )
    build = adapter_factory(endpoints, redis, prefix)
    adapter = build(AccountRef("validation", "", exchange), ExchangeCredentials(api_key, api_secret))
    try:
        await adapter.fetch_balances()
    except AuthenticationFailed as refused:
        raise ApiError(
            400, "invalid_exchange_keys", f"{exchange} refused these API keys: {refused}", {"exchange": exchange}
        ) from None
    except (RateLimited, ExchangeUnavailable) as down:
        raise ApiError(
            503,
            "exchange_unavailable",
            f"{exchange} could not be reached to check the keys; try again shortly ({type(down).__name__})",
            headers={"Retry-After": "5"},
        ) from None
    except ExchangeError as refused:
        raise ApiError(400, "invalid_exchange_keys", f"{exchange} refused these API keys: {refused}") from None
    finally:
        await adapter.close()


# --- caller-scoped reads ------------------------------------------------------------------------------------

_ACCOUNT_COLUMNS = "id, exchange, label, api_key_masked, active, created_at"
_ORDER_COLUMNS = (
    "id, account_id, client_order_id, exchange_order_id, exchange, symbol, side, order_type, time_in_force, "
    "quantity, price, trigger_price, reduce_only, status, filled_quantity, avg_fill_price, fees, reason, "
    "parent_order_id, oco_group, created_at, updated_at"
)
OPEN_STATUSES_SQL = "('initialized','armed','triggered','submitted','accepted','partially_filled','pending_cancel')"


async def _rows(pool: AsyncConnectionPool[Any], query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query.encode(), params)  # composed from constants only, never from input
        rows: list[dict[str, Any]] = await cur.fetchall()
        return rows


async def own_accounts(pool: AsyncConnectionPool[Any], user_id: str) -> list[dict[str, Any]]:
    return await _rows(
        pool, f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE user_id = %s ORDER BY created_at, id", (user_id,)
    )


async def _own_row(
    pool: AsyncConnectionPool[Any], query: str, user_id: str, row_id: str, not_found: ApiError
) -> dict[str, Any]:
    """The caller's row that ``query`` (``WHERE id = %s AND user_id = %s``) finds, else ``not_found`` (a 404):
    someone else's row is not found, not forbidden."""
    found = await _rows(pool, query, (row_id, user_id))
    if not found:
        raise not_found
    return found[0]


async def own_account(pool: AsyncConnectionPool[Any], user_id: str, account_id: str) -> dict[str, Any]:
    """The caller's account, else 404 (someone else's account is not found, not forbidden)."""
    query = f"SELECT {_ACCOUNT_COLUMNS} FROM user_accounts WHERE id = %s AND user_id = %s"
    return await _own_row(pool, query, user_id, account_id, _account_not_found(account_id))


def _account_not_found(account_id: str) -> ApiError:
    return ApiError(404, "account_not_found", f"you have no exchange account {account_id}")


async def own_order(pool: AsyncConnectionPool[Any], user_id: str, order_id: str) -> dict[str, Any]:
    query = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = %s AND user_id = %s"
    return await _own_row(
        pool, query, user_id, order_id, ApiError(404, "order_not_found", f"you have no order {order_id}")
    )


@dataclass(frozen=True, slots=True)
class OrderFilter:
    status: str | None = None  # an order status, or "open" for every status that is not final
    symbol: str | None = None
    account_id: str | None = None
    client_order_id: str | None = None
    limit: int = 100


async def own_orders(pool: AsyncConnectionPool[Any], user_id: str, where: OrderFilter) -> list[dict[str, Any]]:
    """The caller's orders, newest first, filtered."""
    clauses = ["user_id = %s"]
    params: list[Any] = [user_id]
    if where.status == "open":
        clauses.append(f"status IN {OPEN_STATUSES_SQL}")
    elif where.status is not None:
        clauses.append("status = %s")
        params.append(where.status)
    for column in ("symbol", "account_id", "client_order_id"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    params.append(where.limit)
    query = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id LIMIT %s"
    return await _rows(pool, query, tuple(params))


# --- idempotency --------------------------------------------------------------------------------------------

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]+$")


def client_order_id_from(idempotency_key: str, max_len: int = 36) -> str:
    """The Idempotency-Key as the order's client id (the order service dedupes on it): as given when the venue
    accepts it, else a digest of it."""
    if len(idempotency_key) <= max_len and _CLIENT_ID.match(idempotency_key):
        return idempotency_key
    return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[: max_len - 5]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: Any


class Idempotency:
    """``Idempotency-Key`` per user in Redis: the first request with a key owns it while it runs; its answer is
    kept ``ttl_s`` and replayed for the same key and body; a different body under the same key is a 409."""

    def __init__(self, redis: Redis, prefix: str, ttl_s: int, pending_s: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._pending_ms = int(pending_s * 1000)

    def _key(self, user_id: str, key: str) -> str:
        return f"{self._prefix}idempotency:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"

    @staticmethod
    def fingerprint(route: str, body: Any) -> str:
        return hashlib.sha256(route.encode() + b"\0" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    async def begin(self, user_id: str, key: str, fingerprint: str) -> StoredResponse | None:
        """None: this request owns the key and must ``finish`` or ``abandon`` it. Else the stored answer."""
        redis_key = self._key(user_id, key)
        pending = orjson.dumps({"fp": fingerprint, "status": None})
        if await self._redis.set(redis_key, pending, nx=True, px=self._pending_ms):
            return None
        raw = await self._redis.get(redis_key)
        if raw is None:  # expired in between: take it now
            return await self.begin(user_id, key, fingerprint)
        stored = orjson.loads(raw)
        if stored["fp"] != fingerprint:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request: use a new key for a new order",
            )
        if stored["status"] is None:
            raise ApiError(
                409,
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still being handled: retry in a moment",
                headers={"Retry-After": "1"},
            )
        return StoredResponse(int(stored["status"]), stored["body"])

    async def finish(self, user_id: str, key: str, fingerprint: str, status: int, body: Any) -> None:
        value = orjson.dumps({"fp": fingerprint, "status": status, "body": body})
        await self._redis.set(self._key(user_id, key), value, ex=self._ttl_s)

    async def abandon(self, user_id: str, key: str) -> None:
        """Forget an unfinished key (timeout, failure) so a retry with it runs again."""
        await self._redis.delete(self._key(user_id, key))


# --- the order service's replies ----------------------------------------------------------------------------


async def ask_order_service(
    state: ApiState,
    command: Command,
    partition_key: str,
    wait_s: float,
    unanswered: ApiError,
    refusal: Callable[[dict[str, Any]], ApiError],
) -> dict[str, Any]:
    """Send ``command`` to the order service and wait for its answer: ``unanswered`` when none comes within
    ``wait_s``, ``refusal(reply)`` when it refuses (risk limits, kill switches, exchange accounts)."""
    try:
        reply = await state.commands.send(command, partition_key, wait_s=wait_s)
    except CommandTimeout:
        raise unanswered from None
    assert reply is not None
    if not reply.get("ok", False):
        raise refusal(reply)
    return reply


def raise_for_reply(reply: dict[str, Any]) -> None:
    """Turn a refusal into the client's error: denied (risk, ownership) or rejected by the venue -> 422."""
    if not reply.get("ok", False):
        raise ApiError(
            422,
            "order_invalid",
            f"the order service refused the request: {reply.get('message') or reply.get('error')}",
            {"error": reply.get("error")},
        )
    status = reply.get("status")
    details = {"order_id": reply.get("order_id"), "reason": reply.get("reason")}
    if status == "denied":
        raise ApiError(422, "order_denied", f"order denied: {reply.get('reason')}", details)
    if status == "rejected":
        raise ApiError(422, "order_rejected", f"the exchange rejected the order: {reply.get('reason')}", details)
