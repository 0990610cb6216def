"""Local L2 order book kept in step with a venue's snapshot + incremental updates, never published while gapped.

Sequencing rules, from the venues' documentation:

- ``binance_spot``: buffer diff-depth events until a REST snapshot arrives; drop events with ``u <= lastUpdateId``;
  the first applied event must straddle it (``U <= lastUpdateId + 1 <= u``); each later event must start at the
  previous ``u + 1``.
- ``binance_usdm``: the same, except events are dropped only when ``u < lastUpdateId``, the first applied event has
  ``U <= lastUpdateId <= u``, and each later event's ``pu`` must equal the previous event's ``u``.
- ``bybit``: a ``snapshot`` message resets the book (also the ``u = 1`` snapshot sent after a service restart);
  each delta's ``u`` must be the previous ``u + 1``.

Any break, or a crossed book (best bid >= best ask), clears the book and returns ``BookStatus.RESYNC``: the caller
fetches a new snapshot (Binance) or resubscribes (Bybit). Binance events after a break are buffered again, so the next
snapshot is bridged without losing them. Each side is a dict price -> size plus a heap that gives the best price
(about 2x cheaper per level than a bisect-sorted list on Binance's full-depth diffs, where inserts land anywhere);
sorted ``top(n)`` is computed on read.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable
from enum import StrEnum
from heapq import heapify, heappop, heappush, nlargest, nsmallest
from typing import Literal

from realtime.marketdata.errors import BookNotSynced
from realtime.marketdata.models import BookDelta, PriceLevel

Sequencing = Literal["binance_spot", "binance_usdm", "bybit"]


class BookStatus(StrEnum):
    APPLIED = "applied"  # the book changed and is consistent: safe to publish
    STALE = "stale"  # older than the book (already contained in it): dropped, nothing to do
    BUFFERED = "buffered"  # no snapshot yet: kept and replayed when the snapshot arrives
    RESYNC = "resync"  # gap or crossed book: book cleared, a new snapshot (or resubscription) is needed


class _Side:
    """One side of the book: price -> size, plus a heap of ``sign * price`` whose top is the best price.

    Removals only touch the dict; heap entries whose price is gone are dropped when they reach the top (lazy
    deletion), and the heap is rebuilt when stale entries outnumber live ones.
    """

    __slots__ = ("heap", "levels", "sign")

    def __init__(self, sign: float) -> None:
        self.sign = sign  # -1.0 for bids (a max-heap through negation), 1.0 for asks
        self.levels: dict[float, float] = {}
        self.heap: list[float] = []

    def load(self, levels: Iterable[PriceLevel]) -> None:
        self.levels = {price: size for price, size in levels if size > 0.0}
        self._rebuild()

    def clear(self) -> None:
        self.levels = {}
        self.heap = []

    def update(self, changes: Iterable[PriceLevel]) -> None:
        levels, heap, sign = self.levels, self.heap, self.sign
        for price, size in changes:
            if size:
                if price not in levels:
                    heappush(heap, sign * price)
                levels[price] = size
            else:
                levels.pop(price, None)
        if len(heap) > 2 * len(levels) + 64:
            self._rebuild()

    def best_price(self) -> float | None:
        heap, levels, sign = self.heap, self.levels, self.sign
        while heap:
            price = sign * heap[0]
            if price in levels:
                return price
            heappop(heap)
        return None

    def top(self, depth: int | None) -> list[PriceLevel]:
        """Best ``depth`` levels (all when None), best first; O(levels), for reads rather than every update."""
        levels, best_first_desc = self.levels, self.sign < 0
        if depth is None:
            prices = sorted(levels, reverse=best_first_desc)
        else:
            prices = nlargest(depth, levels) if best_first_desc else nsmallest(depth, levels)
        return [(price, levels[price]) for price in prices]

    def _rebuild(self) -> None:
        sign = self.sign
        self.heap = [sign * price for price in self.levels]
        heapify(self.heap)


class OrderBook:
    """L2 book of one symbol, fed by ``apply_snapshot`` and ``apply``; each call says whether it may be published."""

    def __init__(self, symbol: str, sequencing: Sequencing, max_buffered: int = 10_000) -> None:
        self.symbol = symbol
        self.sequencing: Sequencing = sequencing
        self.exchange: str | None = None
        self.last_update_id: int | None = None
        self.exchange_ts_ms: int | None = None
        self._bids = _Side(-1.0)
        self._asks = _Side(1.0)
        self._synced = False
        self._awaiting_first = False
        self._buffer: deque[BookDelta] = deque(maxlen=max_buffered)  # oldest go first: a snapshot is newer anyway

    @property
    def synced(self) -> bool:
        """True when the book reflects a snapshot plus every update since, so it may be read and published."""
        return self._synced

    def apply_snapshot(self, snapshot: BookDelta) -> BookStatus:
        """Replace the book with a full snapshot, then replay buffered Binance events that follow it."""
        self.exchange = snapshot.exchange
        self._bids.load(snapshot.bids)
        self._asks.load(snapshot.asks)
        self.last_update_id = snapshot.last_update_id
        self.exchange_ts_ms = snapshot.exchange_ts_ms
        self._synced = True
        self._awaiting_first = self.sequencing != "bybit"
        if self._crossed():
            return self._resync(None)
        buffered = list(self._buffer)
        self._buffer.clear()
        if buffered and self._too_old_for(buffered[0]):
            # The snapshot predates the oldest buffered event, so the events between them are lost: ask again
            self._clear()
            self._buffer.extend(buffered)
            return BookStatus.RESYNC
        for delta in buffered:
            if self._apply_delta(delta) is BookStatus.RESYNC:
                return BookStatus.RESYNC
        return BookStatus.APPLIED

    def apply(self, delta: BookDelta) -> BookStatus:
        """Apply one update (or a snapshot message); RESYNC means the book was cleared and must be rebuilt."""
        if delta.snapshot:
            return self.apply_snapshot(delta)
        if not self._synced:
            if self.sequencing == "bybit":
                return self._resync(None)  # Bybit sends a snapshot first: a delta before it means one was missed
            self._buffer.append(delta)
            return BookStatus.BUFFERED
        return self._apply_delta(delta)

    def best_bid(self) -> PriceLevel | None:
        """Highest bid (price, size), None when the side is empty; raises BookNotSynced while gapped."""
        self._check_synced()
        price = self._bids.best_price()
        return None if price is None else (price, self._bids.levels[price])

    def best_ask(self) -> PriceLevel | None:
        """Lowest ask (price, size), None when the side is empty; raises BookNotSynced while gapped."""
        self._check_synced()
        price = self._asks.best_price()
        return None if price is None else (price, self._asks.levels[price])

    def top(self, depth: int) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """Best ``depth`` levels of each side, best first: (bids descending, asks ascending)."""
        self._check_synced()
        return self._bids.top(depth), self._asks.top(depth)

    def levels(self) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """Every level of each side, best first."""
        self._check_synced()
        return self._bids.top(None), self._asks.top(None)

    def digest(self, depth: int = 25) -> int:
        """CRC32 of the best ``depth`` levels as ``price:size`` text: equal books (to that depth) give equal digests."""
        bids, asks = self.top(depth)
        text = "|".join(f"{price!r}:{size!r}" for price, size in bids) + "#"
        text += "|".join(f"{price!r}:{size!r}" for price, size in asks)
        return zlib.crc32(text.encode())

    def snapshot(self, received_ns: int, depth: int | None = None) -> BookDelta:
        """The book (optionally its best ``depth`` levels) as a ``BookDelta(snapshot=True)`` at ``last_update_id``."""
        self._check_synced()
        update_id = self.last_update_id or 0
        return BookDelta(
            self.exchange or "",
            self.symbol,
            update_id,
            update_id,
            self._bids.top(depth),
            self._asks.top(depth),
            self.exchange_ts_ms,
            received_ns,
            None,
            True,
        )

    def _apply_delta(self, delta: BookDelta) -> BookStatus:
        last = self.last_update_id or 0
        if self.sequencing == "binance_spot":
            if delta.last_update_id <= last:
                return BookStatus.STALE
            if self._awaiting_first:
                if delta.first_update_id > last + 1:
                    return self._resync(delta)
            elif delta.first_update_id != last + 1:
                return self._resync(delta)
        elif self.sequencing == "binance_usdm":
            if delta.last_update_id < last:
                return BookStatus.STALE
            if self._awaiting_first:
                if delta.first_update_id > last:
                    return self._resync(delta)
            elif delta.prev_last_update_id != last:
                return self._resync(delta)
        else:
            if delta.last_update_id <= last:
                return BookStatus.STALE
            if delta.last_update_id != last + 1:
                return self._resync(None)
        self._bids.update(delta.bids)
        self._asks.update(delta.asks)
        self.last_update_id = delta.last_update_id
        self.exchange_ts_ms = delta.exchange_ts_ms
        self._awaiting_first = False
        if self._crossed():
            return self._resync(None)
        return BookStatus.APPLIED

    def _too_old_for(self, first_buffered: BookDelta) -> bool:
        last = self.last_update_id or 0
        if self.sequencing == "binance_spot":
            return first_buffered.first_update_id > last + 1
        return first_buffered.first_update_id > last

    def _crossed(self) -> bool:
        bid, ask = self._bids.best_price(), self._asks.best_price()
        return bid is not None and ask is not None and bid >= ask

    def _resync(self, restart_from: BookDelta | None) -> BookStatus:
        """Clear the book; on Binance the event that broke the sequence starts the buffer for the next snapshot."""
        self._clear()
        if restart_from is not None:
            self._buffer.append(restart_from)
        return BookStatus.RESYNC

    def _clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._synced = False
        self._awaiting_first = False
        self._buffer.clear()

    def _check_synced(self) -> None:
        if not self._synced:
            raise BookNotSynced(f"{self.symbol} book is waiting for a snapshot or a resync")
