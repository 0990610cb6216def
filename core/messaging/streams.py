"""Every Redis stream of the platform, named in one place, with how each is partitioned.

Account and order streams are partitioned by user, market streams by symbol: one key's messages always land on
the same shard (``<prefix><name>:<shard>``), so a consumer sees them in order, while shards spread the load.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from core.domain.accounts import AccountEvent
from core.domain.exchange_accounts import ExchangeAccountEvent
from core.domain.messages import Event
from core.domain.orders import OrderEvent
from core.domain.risk import RiskEvent
from core.domain.strategies import StrategyEvent
from core.domain.users import UserEvent

PartitionBy = Literal["user", "symbol"]


class Stream(StrEnum):
    MARKET_TRADES = "market.trades"
    MARKET_BOOK_TICKER = "market.book_ticker"
    MARKET_CANDLES = "market.candles"
    ORDER_COMMANDS = "order.commands"
    ORDER_EVENTS = "order.events"
    ACCOUNT_EVENTS = "account.events"
    USER_EVENTS = "user.events"
    STRATEGY_EVENTS = "strategy.events"
    RISK_ALERTS = "risk.alerts"
    RISK_METRICS = "risk.metrics"


DEAD_LETTER = "dead-letter"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    stream: Stream
    partition_by: PartitionBy


STREAM_SPECS: dict[Stream, StreamSpec] = {
    Stream.MARKET_TRADES: StreamSpec(Stream.MARKET_TRADES, "symbol"),
    Stream.MARKET_BOOK_TICKER: StreamSpec(Stream.MARKET_BOOK_TICKER, "symbol"),
    Stream.MARKET_CANDLES: StreamSpec(Stream.MARKET_CANDLES, "symbol"),
    Stream.ORDER_COMMANDS: StreamSpec(Stream.ORDER_COMMANDS, "user"),
    Stream.ORDER_EVENTS: StreamSpec(Stream.ORDER_EVENTS, "user"),
    Stream.ACCOUNT_EVENTS: StreamSpec(Stream.ACCOUNT_EVENTS, "user"),
    Stream.USER_EVENTS: StreamSpec(Stream.USER_EVENTS, "user"),
    Stream.STRATEGY_EVENTS: StreamSpec(Stream.STRATEGY_EVENTS, "user"),
    Stream.RISK_ALERTS: StreamSpec(Stream.RISK_ALERTS, "user"),
    Stream.RISK_METRICS: StreamSpec(Stream.RISK_METRICS, "user"),
}


@dataclass(frozen=True, slots=True)
class StreamNames:
    """Concrete Redis keys for one deployment: a key prefix and a shard count."""

    prefix: str
    partitions: int

    def shard(self, partition_key: str) -> int:
        return zlib.crc32(partition_key.encode()) % self.partitions

    def key(self, stream: Stream | str, partition_key: str) -> str:
        return f"{self.prefix}{stream}:{self.shard(partition_key)}"

    def all_keys(self, stream: Stream | str) -> list[str]:
        return [f"{self.prefix}{stream}:{n}" for n in range(self.partitions)]

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}{DEAD_LETTER}"


def route(event: Event) -> tuple[Stream, str]:
    """Which stream an event is published on, and its partition key."""
    if isinstance(event, OrderEvent):
        return Stream.ORDER_EVENTS, event.user_id
    if isinstance(event, AccountEvent):
        return Stream.ACCOUNT_EVENTS, event.user_id
    if isinstance(event, RiskEvent):
        return Stream.RISK_ALERTS, event.user_id or event.scope_id
    if isinstance(event, ExchangeAccountEvent):
        return Stream.USER_EVENTS, event.user_id
    if isinstance(event, StrategyEvent):
        return Stream.STRATEGY_EVENTS, event.strategy_id
    if isinstance(event, UserEvent):
        return Stream.USER_EVENTS, event.user_id
    raise LookupError(f"no stream is defined for {type(event).__name__}; add it to core.messaging.streams.route")
