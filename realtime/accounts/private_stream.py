"""What every venue's private account stream shares: reconnecting with capped backoff and jitter, the staleness
gauge, and handing parsed reports on. A venue subclass connects, logs in, reads and parses."""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import aiohttp
import structlog

from core.domain.accounts import AccountEvent
from core.observability.metrics import Metrics

log = structlog.get_logger(__name__)

Publish = Callable[[Sequence[AccountEvent]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    account_id: str
    user_id: str
    api_key: str
    exchange: str = "binance"


@dataclass(frozen=True, slots=True)
class UserStreamConfig:
    rest_url: str
    ws_url: str
    keepalive_s: float = 30 * 60
    ping_interval_s: float = 0.5
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 30.0


class MalformedReport(ValueError):
    """A venue report that cannot be read; counted and dropped, never fatal."""


def report_decimal(value: object, error: type[MalformedReport] = MalformedReport) -> Decimal:
    """A venue's decimal text as a Decimal; anything else raises ``error``."""
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise error(f"not a number: {value!r}") from exc


class LoginRefused(Exception):
    """The venue refused the stream's login (bad key or signature); retried with backoff like a lost connection."""


class PrivateStream(ABC):
    """Base of one account's private stream; ``_connect(session)`` runs one connection until it ends."""

    def __init__(self, account: LinkedAccount, config: UserStreamConfig, publish: Publish, metrics: Metrics) -> None:
        self._account = account
        self._config = config
        self._publish = publish
        self._last_alive = time.monotonic()
        self._stop = asyncio.Event()
        self.connected = asyncio.Event()
        self.reports = 0
        self._staleness = metrics.gauge(
            "patriot_account_stream_staleness_seconds",
            "Seconds since the account stream last proved alive",
            ("account",),
        ).labels(account=account.account_id)
        self._bad = metrics.counter(
            "patriot_account_stream_bad_messages_total", "Unreadable account reports", ("account",)
        ).labels(account=account.account_id)

    @property
    def staleness(self) -> float:
        """Seconds since the stream last proved alive (any frame, pongs included); also sets the gauge."""
        value = time.monotonic() - self._last_alive
        self._staleness.set(value)
        return value

    def stop(self) -> None:
        self._stop.set()

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    @abstractmethod
    async def _connect(self, session: aiohttp.ClientSession) -> bool:
        """One connection, until it ends; True if it got far enough to reset the backoff."""

    def _failed(self, exc: Exception) -> None:
        log.warning("account stream failed", account=self._account.account_id, error=repr(exc))

    async def run(self) -> None:
        attempt = 0
        async with self._session() as session:
            while not self._stop.is_set():
                try:
                    if await self._connect(session):
                        attempt = 0
                except (aiohttp.ClientError, OSError, TimeoutError, LoginRefused) as exc:
                    self._failed(exc)
                self.connected.clear()
                if self._stop.is_set():
                    return
                delay = min(self._config.reconnect_max_s, self._config.reconnect_initial_s * 2**attempt)
                attempt += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _deliver(self, events: Sequence[AccountEvent]) -> None:
        if events:
            await self._publish(events)
            self.reports += len(events)
