"""A request-weight token bucket in Redis, shared by every process trading with the same venue and API key.

Venues count weight per key (and per IP), not per process, so the bucket lives in Redis and one Lua script refills,
checks and takes atomically, using Redis' clock so hosts with drifting clocks still agree.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

# KEYS[1] bucket; ARGV: capacity, refill per second, weight. Returns the ms to wait (0: the weight was taken).
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
if tokens >= weight then
  tokens = tokens - weight
else
  wait = math.ceil((weight - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 2000 / rate) + 60000)
return wait
"""

# KEYS[1] bucket; ARGV: capacity, refill per second, seconds. Empties the bucket so it refills only after that long.
_PENALIZE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = -tonumber(ARGV[3]) * rate
local current = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if current ~= nil and current < tokens then
  tokens = current
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) * 1000 / rate) + 60000)
return 0
"""


def api_key_fingerprint(api_key: str) -> str:
    """A stable, non-reversible name for an API key: the raw key never appears in Redis."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


class RedisTokenBucket:
    """``acquire(weight)`` waits until the shared bucket of (exchange, key) holds ``weight`` and takes it."""

    def __init__(
        self,
        redis: Redis,
        exchange: str,
        api_key: str,
        capacity: int,
        refill_per_s: float,
        key_prefix: str = "patriot:ratelimit",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if capacity <= 0 or refill_per_s <= 0:
            raise ValueError("capacity and refill_per_s must be positive")
        self._redis = redis
        self.key = f"{key_prefix}:{exchange}:{api_key_fingerprint(api_key)}"
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._take = redis.register_script(_TAKE)
        self._penalize = redis.register_script(_PENALIZE)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"RedisTokenBucket(key={self.key!r}, capacity={self.capacity}, refill_per_s={self.refill_per_s})"

    async def try_take(self, weight: int = 1) -> float:
        """Take ``weight`` now if the bucket holds it (returns 0.0), else the seconds until it would."""
        if weight > self.capacity:
            raise ValueError(f"weight {weight} exceeds the bucket capacity {self.capacity}")
        wait_ms = await self._take(keys=[self.key], args=[self.capacity, self.refill_per_s, weight])
        return int(wait_ms) / 1000

    async def acquire(self, weight: int = 1) -> float:
        """Wait until ``weight`` is taken; returns the seconds spent waiting."""
        waited = 0.0
        while (wait := await self.try_take(weight)) > 0:
            await self._sleep(wait)
            waited += wait
        return waited

    async def penalize(self, seconds: float) -> None:
        """The venue said to back off ``seconds``: every process sharing the bucket waits that long."""
        await self._penalize(keys=[self.key], args=[self.capacity, self.refill_per_s, max(0.0, seconds)])


class UnlimitedBudget:
    """No shared budget: for the paper adapter and for tests that aim at something else."""

    async def acquire(self, weight: int = 1) -> float:
        return 0.0

    async def penalize(self, seconds: float) -> None:
        return None
