"""The market-data service's REST door to Binance: every call takes its request weight from one shared budget.

Depth snapshots and trade backfills come from the same IP as every other process of the fund, so each call first
takes its weight from the shared Redis token bucket (``realtime.exchanges.ratelimit``). A 429 or 418 is Binance
telling us to stop: its ``Retry-After`` empties the shared bucket for that long (every process waits) and no call
of this client goes out before it has passed, so a refusal is never followed by the requests that turn it into
an IP ban.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
import orjson
import structlog

from core.observability.metrics import Metrics

log = structlog.get_logger(__name__)

DEPTH_WEIGHT = {100: 5, 500: 25, 1000: 50, 5000: 250}
"""Binance spot's ``GET /api/v3/depth`` weight by the largest ``limit`` of each band."""
HISTORICAL_TRADES_WEIGHT = 25
_DEFAULT_RETRY_AFTER_S = {429: 60.0, 418: 120.0}


class WeightBudget(Protocol):
    """What the shared bucket offers (``RedisTokenBucket``, or ``UnlimitedBudget`` where none is shared)."""

    async def acquire(self, weight: int = 1) -> float: ...

    async def penalize(self, seconds: float) -> None: ...


class VenueRefused(Exception):
    """The venue refused the call for its rate limit (429) or banned the IP (418) for ``retry_after_s``."""

    def __init__(self, status: int, retry_after_s: float) -> None:
        super().__init__(f"venue refused the request with {status}; retry after {retry_after_s:g} s")
        self.status = status
        self.retry_after_s = retry_after_s


class VenueError(Exception):
    """Any other non-200 answer (an outage, a bad parameter): retried later by the caller, with backoff."""


def depth_weight(limit: int) -> int:
    """The request weight of a depth snapshot of ``limit`` levels."""
    for band, weight in DEPTH_WEIGHT.items():
        if limit <= band:
            return weight
    raise ValueError(f"depth limit {limit} exceeds Binance's 5000")


def retry_after_s(status: int, headers: Mapping[str, str]) -> float:
    """Seconds the venue asked us to wait (``Retry-After``), or Binance's usual window when it did not say."""
    raw = headers.get("Retry-After", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return _DEFAULT_RETRY_AFTER_S.get(status, 60.0)


class MarketDataRest:
    """GETs against the venue's public REST API, paid for from ``budget`` and paused while the venue says so."""

    def __init__(
        self,
        base_url: str,
        budget: WeightBudget,
        metrics: Metrics,
        api_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._budget = budget
        self._headers = {"X-MBX-APIKEY": api_key} if api_key else {}
        self._clock = clock
        self._blocked_until = 0.0
        self.requests = 0
        self.refusals: dict[int, int] = {}
        self._refused = metrics.counter(
            "patriot_marketdata_rest_refused_total", "Market-data REST calls refused by the venue", ("status",)
        )

    async def get_json(self, session: aiohttp.ClientSession, path: str, params: dict[str, str], weight: int) -> Any:
        """The decoded body of ``GET path``; raises VenueRefused (429/418) or VenueError (anything else)."""
        body = await self.get_raw(session, path, params, weight)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise VenueError(f"{path} answered a body that is not JSON: {body[:120]!r}") from exc

    async def get_raw(self, session: aiohttp.ClientSession, path: str, params: dict[str, str], weight: int) -> bytes:
        """The body of a 200 answer to ``GET path``, after paying ``weight``; raises as ``get_json`` does."""
        await self._wait_if_blocked()
        await self._budget.acquire(weight)
        await self._wait_if_blocked()  # another call of ours may have been refused while we waited for weight
        self.requests += 1
        async with session.get(f"{self._base_url}{path}", params=params, headers=self._headers) as resp:
            body = await resp.read()
            if resp.status in (418, 429):
                await self._refused_for(resp.status, retry_after_s(resp.status, resp.headers))
            if resp.status != 200:
                raise VenueError(f"{path} answered {resp.status}: {body[:200].decode(errors='replace')}")
        return body

    async def _refused_for(self, status: int, wait_s: float) -> None:
        self.refusals[status] = self.refusals.get(status, 0) + 1
        self._refused.labels(status=str(status)).inc()
        self._blocked_until = max(self._blocked_until, self._clock() + wait_s)
        await self._budget.penalize(wait_s)
        log.warning("venue refused a market-data request; pausing REST", status=status, retry_after_s=wait_s)
        raise VenueRefused(status, wait_s)

    async def _wait_if_blocked(self) -> None:
        wait = self._blocked_until - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
