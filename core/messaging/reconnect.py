"""Reconnecting after PostgreSQL or Redis drops a connection: which errors mean that, and how long to wait.

The relay and the consumers recover by themselves (a supervisor restart would also drop the relay's lock and a
consumer's in-memory retries): a lost connection is counted in ``patriot_reconnects_total``, then the loop waits
an exponentially growing, jittered delay (interrupted by shutdown) and connects again.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import PoolTimeout
from redis import exceptions as redis_errors

from core.observability.metrics import Metrics

# SQLSTATE classes/codes that mean the session is gone: connection exceptions, and the server ending the session
# (pg_terminate_backend: 57P01; crash and restart: 57P02; starting up or shutting down: 57P03).
_LOST_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03")


def connection_lost(exc: BaseException) -> str | None:
    """``"postgres"`` or ``"redis"`` when ``exc`` means that server's connection was lost, else None."""
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return "redis"
    if isinstance(exc, PoolTimeout):
        return "postgres"
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        if state is None or state.startswith(_LOST_SQLSTATE_PREFIXES):
            return "postgres"
    return None


@dataclass(slots=True)
class Backoff:
    """Exponential delays with full jitter, reset after a success (so one blip costs one short wait)."""

    initial_s: float = 0.05
    max_s: float = 5.0
    _attempt: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, init=False)

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2**self._attempt)
        self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class Reconnects:
    """Counts a component's lost connections by server, and waits before the next attempt."""

    def __init__(self, metrics: Metrics, component: str, backoff: Backoff | None = None) -> None:
        self._counter = metrics.counter(
            "patriot_reconnects_total",
            "Connections to PostgreSQL or Redis lost and re-established by a kernel component",
            ("component", "backend"),
        )
        self._component = component
        self.backoff = backoff or Backoff()

    def count(self, backend: str) -> None:
        self._counter.labels(component=self._component, backend=backend).inc()

    async def wait(self, stop: asyncio.Event) -> None:
        """Sleep the next backoff delay, or less if ``stop`` is set meanwhile."""
        try:
            await asyncio.wait_for(stop.wait(), self.backoff.next_delay())
        except TimeoutError:
            pass
