"""Reference-counted stream subscriptions, packed into shards of one WebSocket connection each.

Many users and strategies want the same symbols: the platform opens one connection per exchange shard and
counts who wants each stream, so the venue sees one subscription however many subscribers there are, and
unsubscribing happens only when the last one leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class SubscriptionRegistry:
    """Who wants which stream (e.g. ``btcusdt@trade``); streams are assigned to shards of bounded size."""

    max_streams_per_shard: int = 1024
    _counts: Counter[str] = field(default_factory=Counter)
    _shard_of: dict[str, int] = field(default_factory=dict)

    def acquire(self, stream: str) -> int | None:
        """Count one more subscriber; returns the shard to subscribe on when the stream is new, else None."""
        self._counts[stream] += 1
        if self._counts[stream] > 1:
            return None
        shard = self._free_shard()
        self._shard_of[stream] = shard
        return shard

    def release(self, stream: str) -> int | None:
        """Count one subscriber less; returns the shard to unsubscribe on when nobody wants it any more."""
        if self._counts[stream] <= 0:
            return None
        self._counts[stream] -= 1
        if self._counts[stream]:
            return None
        del self._counts[stream]
        return self._shard_of.pop(stream)

    def streams(self, shard: int) -> list[str]:
        return sorted(s for s, n in self._shard_of.items() if n == shard)

    def shards(self) -> list[int]:
        return sorted(set(self._shard_of.values()))

    def subscribers(self, stream: str) -> int:
        return self._counts.get(stream, 0)

    def _free_shard(self) -> int:
        load = Counter(self._shard_of.values())
        shard = 0
        while load.get(shard, 0) >= self.max_streams_per_shard:
            shard += 1
        return shard


@dataclass(slots=True)
class ControlRateLimiter:
    """At most ``rate`` control messages per second (Binance disconnects a client that sends more than 5)."""

    rate: float = 5.0
    _sent: list[float] = field(default_factory=list)

    async def wait(self) -> None:
        while True:
            now = time.monotonic()
            self._sent = [t for t in self._sent if now - t < 1.0]
            if len(self._sent) < self.rate:
                self._sent.append(now)
                return
            await asyncio.sleep(1.0 - (now - self._sent[0]) + 0.001)
