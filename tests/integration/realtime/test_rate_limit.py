"""The Redis token bucket shared by processes using the same venue and API key (real Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from realtime.exchanges.ratelimit import RedisTokenBucket, api_key_fingerprint

API_KEY = "rawApiKeyThatMustNeverAppearInRedis0001"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def bucket(redis: Redis, prefix: str, capacity: int, rate: float, api_key: str = API_KEY) -> RedisTokenBucket:
    return RedisTokenBucket(redis, "binance", api_key, capacity, rate, key_prefix=prefix.rstrip(":"))


async def test_two_limiters_sharing_a_bucket_never_exceed_its_budget(redis: Redis, key_prefix: str) -> None:
    capacity, rate, per_worker = 10, 100.0, 10
    limiters = [bucket(redis, key_prefix, capacity, rate), bucket(redis, key_prefix, capacity, rate)]
    granted: list[float] = []

    async def worker(limiter: RedisTokenBucket) -> None:
        for _ in range(per_worker):
            await limiter.acquire(1)
            granted.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(worker(limiters[i % 2]) for i in range(4)))
    elapsed = time.monotonic() - started
    assert len(granted) == 4 * per_worker
    assert elapsed >= (4 * per_worker - capacity) / rate * 0.9  # the 30 beyond the burst had to wait for refill
    window = 0.1
    granted.sort()
    busiest = max(sum(1 for t in granted if start <= t < start + window) for start in granted)
    assert busiest <= capacity + rate * window + 2  # +2: client-side timestamps lag the grants


async def test_try_take_answers_the_wait_until_the_weight_refills(redis: Redis, key_prefix: str) -> None:
    limiter = bucket(redis, key_prefix, capacity=20, rate=10.0)
    started = time.monotonic()
    assert await limiter.try_take(20) == 0.0
    wait = await limiter.try_take(4)
    between = time.monotonic() - started
    assert 0.4 - between - 0.01 <= wait <= 0.4  # 4 tokens at 10/s, less what refilled since
    with pytest.raises(ValueError, match="exceeds the bucket capacity"):
        await limiter.try_take(21)
    other_key = bucket(redis, key_prefix, capacity=20, rate=10.0, api_key="anotherKey")
    assert await other_key.try_take(20) == 0.0  # another API key has its own budget


async def test_acquire_sleeps_the_computed_wait(redis: Redis, key_prefix: str) -> None:
    limiter = bucket(redis, key_prefix, capacity=5, rate=50.0)
    await limiter.acquire(5)
    started = time.monotonic()
    waited = await limiter.acquire(5)
    assert 0.08 <= waited <= 0.12 and time.monotonic() - started >= 0.08


async def test_penalty_from_a_429_pauses_every_sharer(redis: Redis, key_prefix: str) -> None:
    first, second = bucket(redis, key_prefix, 100, 100.0), bucket(redis, key_prefix, 100, 100.0)
    await first.penalize(0.5)
    wait = await second.try_take(1)
    assert 0.45 <= wait <= 0.52


async def test_bucket_key_holds_a_hash_never_the_raw_api_key(redis: Redis, key_prefix: str) -> None:
    limiter = bucket(redis, key_prefix, 10, 1.0)
    await limiter.acquire(1)
    keys = [k.decode() async for k in redis.scan_iter(match=key_prefix + "*")]
    assert keys == [f"{key_prefix}binance:{api_key_fingerprint(API_KEY)}"]
    assert API_KEY not in keys[0] and API_KEY not in repr(limiter)
    assert 0 < await redis.pttl(keys[0]) <= 80_000
