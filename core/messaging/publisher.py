"""Direct publication of events that no database transaction produced (venue reports ingested as they arrive).

Events that come out of a unit of work go through the outbox instead; these have no local write to stay
consistent with, and carry ids derived from the venue's identifiers, so publishing one twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from core.domain.messages import Event
from core.messaging.codec import Codec
from core.messaging.streams import StreamNames, route


async def publish_events(
    redis: Redis, names: StreamNames, codec: Codec, events: Sequence[Event], maxlen: int = 1_000_000
) -> None:
    """XADD each event to its stream shard, in order, in one pipeline."""
    pipe = redis.pipeline(transaction=False)
    for event in events:
        stream, partition_key = route(event)
        pipe.xadd(
            names.key(stream, partition_key),
            {"id": str(event.event_id), "p": codec.encode_envelope(event)},
            maxlen=maxlen,
            approximate=True,
        )
    await pipe.execute()
