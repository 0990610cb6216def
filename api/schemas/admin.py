"""Response bodies of /admin: the bus's streams, dead letters, the outbox backlog and live heartbeats."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class GroupStatus(BaseModel):
    group: str
    consumers: int = Field(description="most consumers seen on one shard")
    pending: int = Field(description="delivered, not yet acknowledged (all shards)")
    lag: int | None = Field(description="entries not yet delivered to the group (all shards); null if unknown")


class StreamStatus(BaseModel):
    stream: str
    length: int = Field(description="entries kept across all shards")
    groups: list[GroupStatus]


class DeadLettersPublic(BaseModel):
    total: int = Field(description="entries on the dead-letter stream")
    by_stream: dict[str, int] = Field(description="dead letters per source stream (of the newest ones scanned)")
    scanned: int
    truncated: bool = Field(description="true when only the newest entries were scanned for by_stream")


class OutboxStatus(BaseModel):
    backlog: int = Field(description="events committed but not yet published by the relay")
    oldest_at: datetime | None
    oldest_age_s: float | None


class HeartbeatsPublic(BaseModel):
    account_streams_live: int = Field(description="exchange account streams whose heartbeat key is current")


class OpenTradeGap(BaseModel):
    venue: str
    symbol: str
    first_missing_id: int
    last_missing_id: int
    opened_at: datetime
    attempts: int = Field(description="backfills tried so far")


class TradeGapsStatus(BaseModel):
    open: int = Field(description="trade-id holes found by the market-data collector and not yet filled")
    missing_trades: int = Field(description="trades those gaps still lack")
    oldest: list[OpenTradeGap] = Field(description="the oldest open gaps (at most 50)")


class SystemPublic(BaseModel):
    checked_at: datetime
    streams: list[StreamStatus]
    dead_letters: DeadLettersPublic
    outbox: OutboxStatus
    heartbeats: HeartbeatsPublic
    trade_gaps: TradeGapsStatus
