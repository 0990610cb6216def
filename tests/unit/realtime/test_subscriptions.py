"""Reference-counted subscriptions and the control-message rate limit."""

from __future__ import annotations

import time

from realtime.marketdata.subscriptions import ControlRateLimiter, SubscriptionRegistry


def test_second_subscriber_shares_the_stream_and_last_one_out_unsubscribes() -> None:
    reg = SubscriptionRegistry()
    assert reg.acquire("btcusdt@trade") == 0
    assert reg.acquire("btcusdt@trade") is None
    assert reg.subscribers("btcusdt@trade") == 2
    assert reg.release("btcusdt@trade") is None
    assert reg.release("btcusdt@trade") == 0
    assert reg.streams(0) == []
    assert reg.release("btcusdt@trade") is None  # releasing what nobody holds is harmless


def test_streams_fill_one_shard_before_opening_another() -> None:
    reg = SubscriptionRegistry(max_streams_per_shard=3)
    shards = [reg.acquire(f"s{i}@trade") for i in range(7)]
    assert shards == [0, 0, 0, 1, 1, 1, 2]
    assert reg.shards() == [0, 1, 2]
    reg.release("s0@trade")
    assert reg.acquire("new@trade") == 0  # the freed slot is reused


async def test_control_messages_never_exceed_five_per_second() -> None:
    limiter = ControlRateLimiter(rate=5)
    started = time.monotonic()
    stamps = []
    for _ in range(11):
        await limiter.wait()
        stamps.append(time.monotonic() - started)
    for i in range(len(stamps) - 5):
        assert stamps[i + 5] - stamps[i] >= 0.99
