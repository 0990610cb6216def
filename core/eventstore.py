"""Append-only event store in PostgreSQL: one row per event, ``UNIQUE(aggregate_id, event_version)``.

Appending a version that already exists means another writer got there first: the unit of work turns that
violation into :class:`ConcurrencyError`.
``global_position`` orders the whole store for readers that rebuild projections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import errors

from core.domain.messages import Event
from core.messaging.codec import Codec

_LOAD = (
    "SELECT event_type, event_data::text FROM event_store WHERE aggregate_id = %s AND event_version > %s "
    "ORDER BY event_version"
)
_READ_ALL = (
    "SELECT global_position, event_type, event_data::text FROM event_store WHERE global_position > %s "
    "ORDER BY global_position LIMIT %s"
)
VERSION_CONSTRAINT = "uq_event_store_aggregate_version"


class ConcurrencyError(Exception):
    """Another writer appended to the same aggregate since it was loaded; reload and retry the command."""

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(f"aggregate {aggregate_id} was changed concurrently; reload and retry")
        self.aggregate_id = aggregate_id


@dataclass(frozen=True, slots=True)
class StoredEvent:
    global_position: int
    event: Event


def aggregate_of(exc: errors.UniqueViolation, events: Sequence[Event]) -> str:
    """Which aggregate's version clashed, from the violation's detail text."""
    detail = exc.diag.message_detail or ""
    for e in events:
        if f"({e.aggregate_id}," in detail:
            return e.aggregate_id
    return events[0].aggregate_id


async def load(
    conn: psycopg.AsyncConnection[tuple[object, ...]], aggregate_id: str, codec: Codec, after_version: int = 0
) -> list[Event]:
    """Every stored event of one aggregate, oldest first."""
    cur = await conn.execute(_LOAD, (aggregate_id, after_version))
    return [codec.decode_event(str(t), str(d)) for t, d in await cur.fetchall()]


async def read_all(
    conn: psycopg.AsyncConnection[tuple[object, ...]], after_position: int, limit: int, codec: Codec
) -> list[StoredEvent]:
    """A page of the whole store in global order (projection rebuilds, audits)."""
    cur = await conn.execute(_READ_ALL, (after_position, limit))
    return [StoredEvent(int(p), codec.decode_event(str(t), str(d))) for p, t, d in await cur.fetchall()]  # type: ignore[call-overload]
