"""The simulator app's state: engine, market, accounts' credentials, listen keys, limits and faults.

Built once by ``app.build_app`` and stored on the app under :data:`STATE_KEY`; nothing here is global.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from realtime.exchanges.simulator.binance_guard import Credential, Endpoint, Faults, WeightLimiter
from realtime.exchanges.simulator.engine import MatchingEngine
from realtime.exchanges.simulator.market import CandleFeed, Market

LISTEN_KEY_TTL_MS = 60 * 60_000


@dataclass(slots=True)
class _ListenKey:
    account_id: str
    expires_ms: int


class ListenKeys:
    """User-data stream keys: one live key per account (Binance returns the same key while it is alive)."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self._clock = clock_ms
        self._keys: dict[str, _ListenKey] = {}
        self._issued = 0

    def create(self, account_id: str) -> str:
        now = self._clock()
        for key, entry in self._keys.items():
            if entry.account_id == account_id and entry.expires_ms > now:
                entry.expires_ms = now + LISTEN_KEY_TTL_MS
                return key
        self._issued += 1
        key = hashlib.sha256(f"{account_id}:{self._issued}".encode()).hexdigest()[:60]
        self._keys[key] = _ListenKey(account_id, now + LISTEN_KEY_TTL_MS)
        return key

    def keepalive(self, key: str, account_id: str) -> bool:
        entry = self._keys.get(key)
        if entry is None or entry.account_id != account_id or entry.expires_ms <= self._clock():
            return False
        entry.expires_ms = self._clock() + LISTEN_KEY_TTL_MS
        return True

    def close(self, key: str, account_id: str) -> bool:
        entry = self._keys.get(key)
        if entry is None or entry.account_id != account_id:
            return False
        del self._keys[key]
        return True

    def of_account(self, account_id: str) -> list[str]:
        now = self._clock()
        return [k for k, e in self._keys.items() if e.account_id == account_id and e.expires_ms > now]


@dataclass(slots=True)
class SimulatorState:
    engine: MatchingEngine
    market: Market
    credentials: dict[str, Credential]  # by API key
    limiter: WeightLimiter
    faults: Faults
    listen_keys: ListenKeys
    clock_ms: Callable[[], int]
    feed: CandleFeed | None = None  # the candle feed when this app drives the market itself
    max_recv_window_ms: int = 60_000
    endpoints: dict[tuple[str, str], Endpoint] = field(default_factory=dict)  # (method, path)
    # The WebSocket side's hooks, so /ws/<listenKey> accepts the keys this REST side issues.
    listen_key_opened: Callable[[str], None] = lambda key: None
    listen_key_closed: Callable[[str], None] = lambda key: None
    # When the WebSocket replay paces the market, /depth serves its book so the snapshot's lastUpdateId continues
    # the diff stream clients sync against (the engine's copy holds only the top levels).
    depth_snapshot: Callable[[str, int], dict[str, Any] | None] | None = None


STATE_KEY = web.AppKey("simulator_state", SimulatorState)
