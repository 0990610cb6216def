"""The account data service process: one private stream per active linked account, followed as accounts
are linked, deactivated or removed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
import structlog
from redis.asyncio import Redis

from core.domain.accounts import AccountEvent
from core.messaging.codec import Codec
from core.messaging.publisher import publish_events
from core.messaging.streams import StreamNames
from core.observability.metrics import Metrics, build_metrics, serve_metrics
from core.security.account_secrets import read_account_secrets
from core.security.crypto import KeyRing
from core.security.master_key import load_keyring
from core.settings import Settings
from realtime.accounts.bybit_stream import BybitPrivateStream
from realtime.accounts.private_stream import LinkedAccount, UserStreamConfig
from realtime.accounts.user_stream import BinanceUserStream
from realtime.marketdata.service import venue_urls

log = structlog.get_logger(__name__)

PrivateStream = BinanceUserStream | BybitPrivateStream

_ACTIVE = "SELECT id::text, user_id::text, exchange FROM user_accounts WHERE active"


@dataclass(frozen=True, slots=True)
class ActiveAccount:
    account: LinkedAccount
    api_secret: str = field(repr=False)  # Bybit signs its stream login with it; held in memory only


def active_accounts(database_url: str, keyring: KeyRing) -> list[ActiveAccount]:
    """Active linked accounts with their decrypted credentials (kept in memory only, never logged)."""
    found = []
    with psycopg.connect(database_url) as conn:
        for account_id, user_id, exchange in conn.execute(_ACTIVE).fetchall():
            credentials = read_account_secrets(conn, keyring, account_id)
            found.append(
                ActiveAccount(LinkedAccount(account_id, user_id, credentials.api_key, exchange), credentials.api_secret)
            )
    return found


class AccountStreams:
    """Keeps exactly one running stream per active account."""

    def __init__(
        self,
        config: UserStreamConfig,
        redis: Redis,
        names: StreamNames,
        metrics: Metrics,
        bybit_ws_url: str | None = None,
    ) -> None:
        self._config = config
        self._bybit_ws_url = bybit_ws_url or config.ws_url
        self._redis = redis
        self._names = names
        self._codec = Codec.create()
        self._metrics = metrics
        self._running: dict[str, tuple[PrivateStream, asyncio.Task[None]]] = {}

    async def _publish(self, events: Sequence[AccountEvent]) -> None:
        await publish_events(self._redis, self._names, self._codec, events)

    def streams(self) -> dict[str, PrivateStream]:
        return {account_id: stream for account_id, (stream, _) in self._running.items()}

    async def reconcile(self, accounts: Sequence[ActiveAccount]) -> None:
        wanted = {a.account.account_id: a for a in accounts}
        for account_id in set(self._running) - set(wanted):
            await self._stop(account_id)
        for account_id, active in wanted.items():
            if account_id not in self._running:
                stream = self._stream_for(active)
                self._running[account_id] = (stream, asyncio.create_task(stream.run()))
                log.info("following account stream", account=account_id, exchange=active.account.exchange)

    def _stream_for(self, active: ActiveAccount) -> PrivateStream:
        if active.account.exchange == "bybit":
            config = UserStreamConfig(rest_url=self._config.rest_url, ws_url=self._bybit_ws_url)
            return BybitPrivateStream(active.account, active.api_secret, config, self._publish, self._metrics)
        return BinanceUserStream(active.account, self._config, self._publish, self._metrics)

    async def _stop(self, account_id: str) -> None:
        stream, task = self._running.pop(account_id)
        stream.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        for account_id in list(self._running):
            await self._stop(account_id)

    async def heartbeat(self, ttl_s: float = 3.0) -> int:
        """Mark each live stream in Redis for ``ttl_s``: the lifecycle polls the venue over REST for an account
        whose mark has lapsed (its stream is down). Returns how many streams are live."""
        pipe = self._redis.pipeline(transaction=False)
        live = 0
        for account_id, stream in self.streams().items():
            if stream.connected.is_set() and stream.staleness < ttl_s:
                pipe.set(stream_heartbeat_key(self._names.prefix, account_id), b"1", px=int(ttl_s * 1000))
                live += 1
        if live:
            await pipe.execute()
        return live


def stream_heartbeat_key(prefix: str, account_id: str) -> str:
    return f"{prefix}account-stream:{account_id}"


async def run_account_streams(
    settings: Settings, database_url: str, redis_url: str, stop: asyncio.Event, poll_s: float = 5.0
) -> None:
    """Follow every active linked account until ``stop`` is set, picking up newly linked ones."""
    metrics = build_metrics("accounts")
    if settings.observability.metrics_port:
        serve_metrics(metrics, settings.observability.metrics_port)
    keyring = load_keyring(settings.security, settings.runtime)
    ws_url, rest_url = venue_urls(settings)
    redis = Redis.from_url(redis_url)
    streams = AccountStreams(
        UserStreamConfig(rest_url=rest_url, ws_url=ws_url),
        redis,
        StreamNames(settings.redis.key_prefix, settings.bus.partitions),
        metrics,
        bybit_ws_url=settings.market_data.bybit_private_ws_url,
    )

    async def beat() -> None:
        while not stop.is_set():
            await streams.heartbeat()
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass

    beating = asyncio.create_task(beat())
    try:
        while not stop.is_set():
            await streams.reconcile(await asyncio.to_thread(active_accounts, database_url, keyring))
            try:
                await asyncio.wait_for(stop.wait(), poll_s)
            except TimeoutError:
                pass
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await streams.close()
        await redis.aclose()
