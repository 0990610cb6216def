"""/admin: how the platform is doing, for operators (system:monitor): stream lengths and consumer groups'
pending counts and lag, dead letters per stream, the outbox backlog, live account-stream heartbeats and the market
data's open trade gaps.

Stream names come from ``core.messaging.streams`` (every stream, every shard); Redis is asked in pipelines
so the whole picture costs a few round trips however many shards there are.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import APIRouter

from api.deps import State, allowed
from api.permissions import Permission
from api.schemas.admin import (
    DeadLettersPublic,
    GroupStatus,
    HeartbeatsPublic,
    OpenTradeGap,
    OutboxStatus,
    StreamStatus,
    SystemPublic,
    TradeGapsStatus,
)
from core.messaging.streams import STREAM_SPECS, StreamNames
from realtime.accounts.service import stream_heartbeat_key

router = APIRouter(prefix="/admin", tags=["admin"])

Monitor = allowed(Permission.SYSTEM_MONITOR)
DEAD_LETTER_SCAN = 10_000
"""How many of the newest dead letters are read to count them per source stream."""
OPEN_GAPS_LISTED = 50


@router.get("/system", response_model=SystemPublic, summary="Streams, consumer groups, dead letters, outbox")
async def system(state: State, _principal: Monitor) -> SystemPublic:
    now = datetime.now(UTC)
    async with state.kernel.pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*), min(created_at) FROM outbox")).fetchone()
        gaps = await open_trade_gaps(conn)
    backlog = int(cast(int, row[0])) if row else 0
    oldest = cast(datetime | None, row[1]) if row else None
    return SystemPublic(
        checked_at=now,
        streams=await stream_status(state),
        dead_letters=await dead_letters_by_stream(state),
        outbox=OutboxStatus(
            backlog=backlog, oldest_at=oldest, oldest_age_s=(now - oldest).total_seconds() if oldest else None
        ),
        heartbeats=HeartbeatsPublic(account_streams_live=await live_account_streams(state)),
        trade_gaps=gaps,
    )


async def open_trade_gaps(conn: Any) -> TradeGapsStatus:
    """The collector's unfilled trade gaps (``trade_gaps`` rows not closed): how many, how many trades, the oldest."""
    totals = await (
        await conn.execute(
            "SELECT count(*), coalesce(sum(last_missing_id - first_missing_id + 1), 0) FROM trade_gaps"
            " WHERE closed_at IS NULL"
        )
    ).fetchone()
    cur = await conn.execute(
        "SELECT venue, symbol, first_missing_id, last_missing_id, opened_at, attempts FROM trade_gaps"
        " WHERE closed_at IS NULL ORDER BY opened_at, id LIMIT %s",
        (OPEN_GAPS_LISTED,),
    )
    oldest = [
        OpenTradeGap(venue=v, symbol=s, first_missing_id=f, last_missing_id=last, opened_at=opened, attempts=attempts)
        for v, s, f, last, opened, attempts in await cur.fetchall()
    ]
    return TradeGapsStatus(open=int(totals[0]), missing_trades=int(totals[1]), oldest=oldest)


@router.get("/dead-letters", response_model=DeadLettersPublic, summary="Dead-lettered messages per source stream")
async def dead_letters(state: State, _principal: Monitor) -> DeadLettersPublic:
    return await dead_letters_by_stream(state)


async def stream_status(state: State) -> list[StreamStatus]:
    redis, names = state.kernel.redis, state.kernel.names
    keys = {stream: names.all_keys(stream) for stream in STREAM_SPECS}
    pipe = redis.pipeline(transaction=False)
    for shard_keys in keys.values():
        for key in shard_keys:
            pipe.xlen(key)
            pipe.xinfo_groups(key)
    replies = iter(await pipe.execute(raise_on_error=False))
    out = []
    for stream, shard_keys in keys.items():
        length = 0
        groups: dict[str, dict[str, Any]] = {}
        for _key in shard_keys:
            xlen, infos = next(replies), next(replies)
            length += xlen if isinstance(xlen, int) else 0
            for info in infos if isinstance(infos, list) else ():  # no such key yet: an error reply, no groups
                name = _text(info.get("name"))
                g = groups.setdefault(name, {"consumers": 0, "pending": 0, "lag": 0})
                g["consumers"] = max(g["consumers"], int(info.get("consumers") or 0))
                g["pending"] += int(info.get("pending") or 0)
                lag = info.get("lag")
                g["lag"] = None if lag is None or g["lag"] is None else g["lag"] + int(lag)
        out.append(
            StreamStatus(
                stream=str(stream),
                length=length,
                groups=[GroupStatus(group=name, **g) for name, g in sorted(groups.items())],
            )
        )
    return out


async def dead_letters_by_stream(state: State) -> DeadLettersPublic:
    redis, names = state.kernel.redis, state.kernel.names
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(names.dead_letter)
    pipe.xrevrange(names.dead_letter, count=DEAD_LETTER_SCAN)
    total, entries = await pipe.execute()
    counts = Counter(source_stream(names, _text(fields.get(b"stream", b"?"))) for _id, fields in entries)
    return DeadLettersPublic(
        total=total, by_stream=dict(sorted(counts.items())), scanned=len(entries), truncated=total > len(entries)
    )


async def live_account_streams(state: State) -> int:
    pattern = stream_heartbeat_key(state.kernel.names.prefix, "*")
    return sum([1 async for _key in state.kernel.redis.scan_iter(match=pattern, count=1000)])


def source_stream(names: StreamNames, key: str) -> str:
    """``<prefix>order.events:3`` -> ``order.events``: the stream a dead letter came from, without its shard."""
    name = key.removeprefix(names.prefix)
    return name.rsplit(":", 1)[0] if name.rsplit(":", 1)[-1].isdigit() else name


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
