"""The local exchange simulator's web application: Binance spot REST (+ the WebSocket side when present).

``build_app`` wires the matching engine, test accounts, the market fed by real candles, the REST routes and, if the
WebSocket modules are there, their routes and replay; ``serve``/``run`` start it for ``patriot simulator``.
With ``replay`` on, one replay paces the candles (or a WebSocket capture) for both sides, so the engine fills against
exactly what the streams print; with it off, nothing moves until a test steps ``state.feed``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from realtime.exchanges.simulator import binance_rest
from realtime.exchanges.simulator.binance_guard import Credential, Faults, WeightLimiter
from realtime.exchanges.simulator.binance_wire import account_position, execution_report
from realtime.exchanges.simulator.candles import CandleRow, SimTrade, load_candles
from realtime.exchanges.simulator.engine import MatchingEngine, wall_clock_ms
from realtime.exchanges.simulator.engine_types import (
    EngineEvent,
    FeeSchedule,
    OrderUpdated,
    SymbolRules,
    default_symbol_rules,
)
from realtime.exchanges.simulator.market import CandleFeed, Market
from realtime.exchanges.simulator.state import STATE_KEY, ListenKeys, SimulatorState

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SimAccount:
    """A test account: the API key/secret clients sign with, and what it starts with."""

    account_id: str
    api_key: str
    secret: str
    balances: Mapping[str, Decimal]


def demo_accounts() -> tuple[SimAccount, ...]:
    return (
        SimAccount(
            "demo",
            "simDemoApiKey0000000000000000000000000000000000000000000000000001",
            "simDemoSecret000000000000000000000000000000000000000000000000001",
            {"USDT": Decimal(100_000), "BTC": Decimal(1), "ETH": Decimal(10)},
        ),
    )


def default_candle_files(
    data_dir: Path, window: str = "2025", symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT")
) -> dict[str, Path]:
    """The shipped candles: ``data/binance-spot-1m/<window>/<SYMBOL>_1m.csv.gz``."""
    return {s: data_dir / "binance-spot-1m" / window / f"{s}_1m.csv.gz" for s in symbols}


def parse_speed(text: str | float) -> float | None:
    """``"max"`` -> None (as fast as possible), else a positive multiple of real time (``"10"`` -> 10.0)."""
    if isinstance(text, str) and text.strip().lower() == "max":
        return None
    speed = float(text)
    if speed <= 0:
        raise ValueError(f"speed must be positive or 'max', got {text!r}")
    return speed


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 58080  # 0: any free port (see ``bound_port``)
    candle_files: Mapping[str, Path] = field(default_factory=dict)  # symbol -> CSV(.gz) of 1-minute candles
    capture_files: tuple[Path, ...] = ()  # replay these WebSocket captures instead of the candles (needs binance_ws)
    speed: float | None = 10.0  # multiple of real time; None = as fast as possible
    replay: bool = True  # False: the market moves only when ``state.feed`` is stepped (tests)
    replay_start: str = "now"  # or "first_subscriber", or "manual" (POST /admin/replay/start releases it)
    warmup_candles: int = 1440  # candles before the replay starts: kline/trade history and the opening book
    max_candles: int | None = None
    level_qty: Decimal = Decimal("0.25")  # synthetic book: level k holds level_qty * (k + 1)
    book_levels: int = 20
    accounts: tuple[SimAccount, ...] = field(default_factory=demo_accounts)
    symbols: tuple[SymbolRules, ...] = field(default_factory=lambda: tuple(default_symbol_rules()))
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    fill_at_touch: bool = False
    weight_limit: int = 6000  # request weight per IP per minute, Binance spot's
    refusals_before_ban: int = 3  # 429s a client may ignore within a minute before a 418 ban
    ban_seconds: int = 120
    max_recv_window_ms: int = 60_000
    trade_history: int = 100_000
    ws_routes: bool = True  # add the WebSocket side's routes when its modules are present


def build_app(config: SimulatorConfig, clock_ms: Callable[[], int] | None = None) -> web.Application:
    """The simulator application; ``app[STATE_KEY]`` holds the engine, market, accounts and feed."""
    clock = clock_ms or wall_clock_ms
    engine = MatchingEngine(config.symbols, config.fees, clock, config.fill_at_touch)
    for account in config.accounts:
        engine.open_account(account.account_id, account.balances)
    market = Market(engine, config.trade_history)
    candles = {s: load_candles(p) for s, p in config.candle_files.items() if s in engine.rules}
    start_index = _start_index(candles, config.warmup_candles)
    for symbol, rows in candles.items():
        market.load_history(symbol, rows[: start_index[symbol]], config.level_qty, config.book_levels)
    state = SimulatorState(
        engine=engine,
        market=market,
        credentials={a.api_key: Credential(a.account_id, a.api_key, a.secret) for a in config.accounts},
        limiter=WeightLimiter(config.weight_limit, clock, config.refusals_before_ban, config.ban_seconds * 1000),
        faults=Faults(),
        listen_keys=ListenKeys(clock),
        clock_ms=clock,
        max_recv_window_ms=config.max_recv_window_ms,
    )
    app = web.Application()
    app[STATE_KEY] = state
    binance_rest.add_routes(app)
    if config.ws_routes:
        _add_ws_routes(app, state)
    if config.replay and (candles or config.capture_files) and _attach_ws_replay(app, config, state, candles):
        return app
    state.feed = CandleFeed(market, candles, start_index, config.level_qty, config.book_levels)
    if config.replay and candles:
        app.cleanup_ctx.append(_run_feed(state.feed, config.speed))
    return app


def _start_index(candles: Mapping[str, list[CandleRow]], warmup: int) -> dict[str, int]:
    """Where the replay starts in each file: the same minute for every symbol, after ``warmup`` candles."""
    first = next(iter(candles.values()), [])
    if not first:
        return dict.fromkeys(candles, 0)
    start_ms = first[min(warmup, len(first) - 1)].open_time_ms
    return {s: sum(1 for r in rows if r.open_time_ms < start_ms) for s, rows in candles.items()}


def _run_feed(feed: CandleFeed, speed: float | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run_while_app_runs(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run(speed), name="simulator-candle-feed")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return run_while_app_runs


def _add_ws_routes(app: web.Application, state: SimulatorState) -> None:
    """The WebSocket side's routes and its listen-key/user-event hooks, when those modules exist."""
    try:
        from realtime.exchanges.simulator import binance_ws
    except ImportError:
        binance_ws = None  # type: ignore[assignment]
    if binance_ws is not None and hasattr(binance_ws, "add_routes"):
        binance_ws.add_routes(app)
        if hasattr(binance_ws, "register_listen_key"):
            state.listen_key_opened = lambda key: binance_ws.register_listen_key(app, key)
            state.listen_key_closed = lambda key: binance_ws.expire_listen_key(app, key)
        if hasattr(binance_ws, "publish_user_event"):
            state.engine.subscribe(_user_events(app, state, binance_ws.publish_user_event))
    try:
        from realtime.exchanges.simulator import bybit_ws
    except ImportError:
        return
    if hasattr(bybit_ws, "add_routes"):
        bybit_ws.add_routes(app)
    from realtime.exchanges.simulator.bybit_private import attach_bybit_private

    attach_bybit_private(app, state.engine, state.credentials.get)


def _user_events(
    app: web.Application, state: SimulatorState, publish: Callable[[web.Application, str, dict[str, Any]], int]
) -> Callable[[EngineEvent], None]:
    """Engine events -> executionReport / outboundAccountPosition on every live listen key of the account."""

    def on_event(event: EngineEvent) -> None:
        payload = execution_report(event) if isinstance(event, OrderUpdated) else account_position(event)
        for key in state.listen_keys.of_account(event.account_id):
            publish(app, key, payload)

    return on_event


def _attach_ws_replay(
    app: web.Application, config: SimulatorConfig, state: SimulatorState, candles: Mapping[str, list[CandleRow]]
) -> bool:
    """Let the WebSocket side's replay pace the market and feed the engine from its bus; False if it is absent."""
    try:
        from realtime.exchanges.simulator.candle_replay import CandleSource
        from realtime.exchanges.simulator.replay import CaptureSource, attach_replay, market_bus
        from realtime.exchanges.simulator.replay_state import ReplayEvent
    except ImportError:
        return False
    source: CandleSource | CaptureSource
    if config.capture_files:
        source = CaptureSource(list(config.capture_files))
    else:
        first = next(iter(candles.values()))
        start = first[min(config.warmup_candles, len(first) - 1)].open_time_ms
        tick = next(iter(state.engine.rules.values())).tick_size
        source = CandleSource(
            [config.candle_files[s] for s in candles],
            start_ms=start,
            max_candles=config.max_candles,
            tick_size=str(tick),
            level_qty=str(config.level_qty),
            book_levels=config.book_levels,
        )
    replay = attach_replay(app, source, speed=config.speed, start=config.replay_start)  # type: ignore[arg-type]
    market, levels = state.market, config.book_levels

    def feed_engine(event: ReplayEvent) -> None:
        if event.symbol not in market.tapes:
            return
        if event.kind == "trade":
            d = event.data()
            trade = SimTrade(int(d["t"]), Decimal(d["p"]), Decimal(d["q"]), int(d["T"]), bool(d["m"]))
            market.publish_trade(event.symbol, trade)
        elif event.kind in ("depth", "snapshot"):
            book = replay.book(event.symbol)
            if book is None or book.last_update_id is None:
                return
            bids, asks = book.top(levels)
            market.publish_book(
                event.symbol,
                [(Decimal(bids[p][0]), Decimal(bids[p][1])) for p in sorted(bids, reverse=True)],
                [(Decimal(asks[p][0]), Decimal(asks[p][1])) for p in sorted(asks)],
            )

    market_bus(app).add_listener(feed_engine)
    state.depth_snapshot = replay.depth
    return True


async def serve(config: SimulatorConfig, clock_ms: Callable[[], int] | None = None) -> web.AppRunner:
    """Start the simulator on ``config.host:config.port``; the caller stops it with ``await runner.cleanup()``."""
    runner = web.AppRunner(build_app(config, clock_ms))
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    log.info("exchange simulator listening", host=config.host, port=bound_port(runner))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port the runner listens on (useful with ``port=0``)."""
    address = runner.addresses[0]
    return int(address[1])


def run(config: SimulatorConfig) -> None:
    """Blocking entry for ``patriot simulator``: serve until SIGINT/SIGTERM."""

    async def main() -> None:
        runner = await serve(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    from core.runtime.processes import run_service

    run_service(main())
