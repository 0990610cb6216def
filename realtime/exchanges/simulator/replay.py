"""Market-data replay for the exchange simulator: real captured (or candle-derived) messages, paced, fanned out.

A source yields Binance wire messages in time order; the replay paces them by their timestamps (``speed`` times real
time, or as fast as subscribers read with ``speed=None``), keeps the state a venue's REST side would serve (recent
trades for ``historicalTrades``, the order book for ``depth``, the latest book ticker), derives 1-minute klines from
the trades, and hands every event to the app's ``MarketBus``: the matching engine and the Binance and Bybit WebSocket
hubs listen there. Captured messages keep their exact bytes.
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
from aiohttp import web

from realtime.exchanges.simulator.candle_replay import CandleSource
from realtime.exchanges.simulator.replay_state import (
    KlineBuilder,
    OrderBook,
    ReplayEvent,
    TradeHistory,
    split_stream_message,
    stream_kind,
    stream_message,
)

StartMode = Literal["now", "first_subscriber", "manual"]
Listener = Callable[[ReplayEvent], None]
_BATCH = 512  # events read per trip to the reader thread
_YIELD_EVERY = 64  # events published between chances for session writers to run


class ReplaySource(Protocol):
    def events(self) -> Iterator[ReplayEvent]:
        """Events in time order; called once per replay, may read lazily."""
        ...


def parse_speed(text: str | float) -> float | None:
    """``"max"`` -> None (no pacing), otherwise a positive multiple of real time."""
    if isinstance(text, str) and text.strip().lower() == "max":
        return None
    speed = float(text)
    if speed <= 0:
        raise ValueError(f"replay speed must be positive or 'max', got {text!r}")
    return speed


class CaptureSource:
    """Replay source over ``<receive ns> <json>`` capture files (one symbol each); several files merge by time."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def events(self) -> Iterator[ReplayEvent]:
        return heapq.merge(*(read_capture(path) for path in self.paths), key=lambda event: event.at_ns)


def source_from_files(paths: Sequence[Path]) -> ReplaySource:
    """A candle source for ``<SYMBOL>_1m.csv[.gz]`` files, otherwise a capture source (``<ns> <json>`` lines)."""
    paths = [Path(p) for p in paths]
    candle_files = [p for p in paths if p.name.endswith((".csv", ".csv.gz"))]
    if candle_files and len(candle_files) != len(paths):
        raise ValueError("replay either capture files or candle files, not both")
    return CandleSource(paths) if candle_files else CaptureSource(paths)


def read_capture(path: Path) -> Iterator[ReplayEvent]:
    """A capture file's messages; the REST snapshot line belongs to the symbol the file name starts with."""
    file_symbol = path.name.split("_")[0].upper()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line in f:
            stamp, _, message = line.rstrip(b"\r\n").partition(b" ")
            if not message:
                continue
            at_ns = int(stamp)
            if message.startswith(b'{"lastUpdateId"'):
                yield ReplayEvent(at_ns, "snapshot", file_symbol, "", message, message)
                continue
            split = split_stream_message(message)
            if split is None:
                continue  # not a market message (e.g. a subscription reply): nothing a venue would push
            stream, payload = split
            symbol = stream.partition("@")[0].upper()
            yield ReplayEvent(at_ns, stream_kind(stream), symbol, stream, message, payload)


class MarketBus:
    """Where replayed events go; set up by whichever of ``attach_replay`` and the WebSocket routes comes first.

    Listeners (the venue's own state, e.g. the matching engine) get every event; client listeners (the WebSocket
    hubs) get what the filters let through, so an injected gap is a gap only on the wire.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._client_listeners: list[Listener] = []
        self._filters: list[Callable[[ReplayEvent], bool]] = []
        self._drains: list[Callable[[], Awaitable[None]]] = []
        self.subscribed = asyncio.Event()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_client_listener(self, listener: Listener) -> None:
        self._client_listeners.append(listener)

    def add_filter(self, keep: Callable[[ReplayEvent], bool]) -> None:
        """A filter that can withhold an event from client listeners (fault injection: skipped messages)."""
        self._filters.append(keep)

    def add_drain(self, drain: Callable[[], Awaitable[None]]) -> None:
        """An awaitable that returns once consumers have caught up; ``speed=None`` waits on it (backpressure)."""
        self._drains.append(drain)

    def note_subscriber(self) -> None:
        self.subscribed.set()

    def publish(self, event: ReplayEvent) -> None:
        for listener in self._listeners:
            listener(event)
        if all(keep(event) for keep in self._filters):
            for listener in self._client_listeners:
                listener(event)

    async def drained(self) -> None:
        for drain in self._drains:
            await drain()


MARKET_BUS = web.AppKey("simulator_market_bus", MarketBus)


def market_bus(app: web.Application) -> MarketBus:
    """The app's bus, created on first use (configuration time, before the app is frozen)."""
    if MARKET_BUS not in app:
        app[MARKET_BUS] = MarketBus()
    return app[MARKET_BUS]


class MarketReplay:
    """Paces a source's events onto the bus and keeps what the REST side serves from them."""

    def __init__(
        self,
        source: ReplaySource,
        bus: MarketBus,
        *,
        speed: float | None = 1.0,
        start: StartMode = "now",
        history_size: int = 100_000,
    ) -> None:
        self.source = source
        self.speed = speed
        self.start_mode = start
        self.published = 0
        self.started = asyncio.Event()
        self.started_wall_ns: int | None = None
        self.first_event_ns: int | None = None
        self.finished = asyncio.Event()
        self._bus = bus
        self._go = asyncio.Event()
        self._history_size = history_size
        self._histories: dict[str, TradeHistory] = {}
        self._books: dict[str, OrderBook] = {}
        self._tickers: dict[str, bytes] = {}
        self._last_trades: dict[str, dict[str, Any]] = {}
        self._klines: dict[str, KlineBuilder] = {}
        self._venue_klines: set[str] = set()  # symbols whose source carries klines: none derived for them

    # --- what the REST side reads ------------------------------------------------------------------------

    def trades_since(self, symbol: str, from_id: int | None, limit: int = 500) -> list[dict[str, Any]]:
        """``GET /api/v3/historicalTrades`` rows: trades with id >= ``from_id``, or the latest ``limit``."""
        history = self._histories.get(symbol.upper())
        return history.since(from_id, limit) if history is not None else []

    def depth(self, symbol: str, limit: int = 100) -> dict[str, Any] | None:
        """``GET /api/v3/depth`` body from the book rebuilt so far; None before the source's snapshot."""
        book = self._books.get(symbol.upper())
        return book.rest_depth(limit) if book is not None else None

    def book(self, symbol: str) -> OrderBook | None:
        return self._books.get(symbol.upper())

    def book_ticker(self, symbol: str) -> dict[str, Any] | None:
        """The latest bookTicker payload (best bid/ask), e.g. for the matching engine's market orders."""
        payload = self._tickers.get(symbol.upper())
        return orjson.loads(payload) if payload is not None else None

    def last_trade(self, symbol: str) -> dict[str, Any] | None:
        return self._last_trades.get(symbol.upper())

    def symbols(self) -> list[str]:
        return sorted(self._histories.keys() | self._books.keys())

    # --- running -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Release a replay created with ``start="manual"`` (also ``POST /admin/replay/start``)."""
        self._go.set()

    async def run(self) -> None:
        if self.start_mode == "manual":
            await self._go.wait()
        elif self.start_mode == "first_subscriber":
            await self._bus.subscribed.wait()
        self.started.set()
        loop = asyncio.get_running_loop()
        events = iter(self.source.events())
        first_ns: int | None = None
        wall_start = loop.time()
        self.started_wall_ns = time.time_ns()
        count = 0
        while batch := await asyncio.to_thread(_take, events, _BATCH):
            for event in batch:
                count += 1
                if self.speed is not None:
                    first_ns = event.at_ns if first_ns is None else first_ns
                    self.first_event_ns = first_ns
                    delay = wall_start + (event.at_ns - first_ns) / 1e9 / self.speed - loop.time()
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                self._publish(event)
                if count % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                    if self.speed is None:
                        await self._bus.drained()
        for builder in self._klines.values():
            if (payload := builder.close()) is not None:
                self._emit_kline(builder.symbol, payload, time.time_ns())
        self.finished.set()

    def _publish(self, event: ReplayEvent) -> None:
        symbol = event.symbol
        if event.kind == "snapshot":
            self._books.setdefault(symbol, OrderBook()).reset(orjson.loads(event.message))
        elif event.kind == "depth":
            self._books.setdefault(symbol, OrderBook()).apply(event.data())
        elif event.kind == "bookTicker":
            self._tickers[symbol] = event.payload
        elif event.kind == "kline":
            self._venue_klines.add(symbol)
        elif event.kind == "trade":
            trade = event.data()
            history = self._histories.get(symbol)
            if history is None:
                history = self._histories[symbol] = TradeHistory(self._history_size)
            history.add(trade)
            self._last_trades[symbol] = trade
        self.published += 1
        self._bus.publish(event)
        if event.kind == "trade" and symbol not in self._venue_klines:
            builder = self._klines.get(symbol)
            if builder is None:
                builder = self._klines[symbol] = KlineBuilder(symbol)
            for payload in builder.on_trade(event.data()):
                self._emit_kline(symbol, payload, event.at_ns)

    def _emit_kline(self, symbol: str, payload: bytes, at_ns: int) -> None:
        stream = f"{symbol.lower()}@kline_1m"
        self._bus.publish(ReplayEvent(at_ns, "kline", symbol, stream, stream_message(stream, payload), payload))


def _take(events: Iterator[ReplayEvent], n: int) -> list[ReplayEvent]:
    return list(itertools.islice(events, n))


REPLAY = web.AppKey("simulator_replay", MarketReplay)


def attach_replay(
    app: web.Application,
    source: ReplaySource,
    *,
    speed: float | None = 1.0,
    start: StartMode = "now",
    history_size: int = 100_000,
) -> MarketReplay:
    """Replay ``source`` while the app runs: the pacing task starts with the app and is cancelled on cleanup.

    Adds ``GET /admin/replay`` (progress) and ``POST /admin/replay/start`` (releases ``start="manual"``).
    """
    replay = MarketReplay(source, market_bus(app), speed=speed, start=start, history_size=history_size)
    app[REPLAY] = replay

    async def run_while_app_runs(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(replay.run(), name="simulator-replay")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(run_while_app_runs)
    app.router.add_get("/admin/replay", _replay_status)
    app.router.add_post("/admin/replay/start", _replay_start)
    return replay


async def _replay_status(request: web.Request) -> web.Response:
    replay = request.app[REPLAY]
    status = {
        "started": replay.started.is_set(),
        "finished": replay.finished.is_set(),
        "published": replay.published,
        # the replay clock: an event captured at ``at`` is sent at started_wall_ns + (at - first_event_ns) / speed
        "started_wall_ns": replay.started_wall_ns,
        "first_event_ns": replay.first_event_ns,
        "speed": "max" if replay.speed is None else replay.speed,
        "symbols": replay.symbols(),
    }
    return web.json_response(body=orjson.dumps(status))


async def _replay_start(request: web.Request) -> web.Response:
    request.app[REPLAY].start()
    return await _replay_status(request)
