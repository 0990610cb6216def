"""Trigger index benchmark: 1,000,000 armed conditional orders across 200 symbols, replayed real price moves.

    python -m bench.triggers [--orders 1000000] [--symbols 200] [--updates 300000]

Prices: the real Binance BTCUSDT 1-minute closes shipped in ``data/`` (2025 window), one path per symbol
(shifted in time and rescaled, so symbols move differently). Orders: stops and take-profits on both sides at
0.1%-25% from the symbol's opening price; each fired order is replaced by a new one around the current price,
so a million stay armed. The index and the naive scan over every order (what the architecture's per-tick loop
does) see the same orders and updates; the last line is one JSON object with updates/s, p99 cost per update
and the ratio.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import random
import time
from decimal import Decimal
from pathlib import Path

from bench.common import percentile
from core.domain.orders import OrderSide
from realtime.orders.conditional import ArmedOrder, Fire, TriggerBook
from realtime.orders.triggers import Direction, TriggerIndex, naive_scan

DATA = Path(__file__).resolve().parent.parent / "data" / "binance-spot-1m" / "2025" / "BTCUSDT_1m.csv.gz"


def load_closes() -> list[float]:
    with gzip.open(DATA, "rt") as fh:
        next(fh)
        return [float(line.rsplit(",", 2)[-2]) for line in fh]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--updates", type=int, default=300_000)
    parser.add_argument("--naive-updates", type=int, default=30)
    parser.add_argument("--no-book", dest="book", action="store_false", help="skip the trigger-book pass")
    parser.add_argument("--trailing-share", type=float, default=0.1, help="share of trailing stops in the book")
    args = parser.parse_args()
    rng = random.Random(42)
    closes = load_closes()
    symbols = [f"SYM{i:03d}USDT" for i in range(args.symbols)]
    offsets = [rng.randrange(len(closes)) for _ in symbols]
    scales = [rng.uniform(0.0001, 2.0) for _ in symbols]

    def price(s: int, step: int) -> float:
        return closes[(offsets[s] + step) % len(closes)] * scales[s]

    def new_order(s: int, around: float) -> tuple[str, Direction, float]:
        direction = rng.choice((Direction.RISES_TO, Direction.FALLS_TO))
        distance = rng.uniform(0.001, 0.25)
        level = around * (1 + distance) if direction is Direction.RISES_TO else around * (1 - distance)
        return symbols[s], direction, level

    index = TriggerIndex()
    orders: dict[str, tuple[str, Direction, float]] = {}
    started = time.perf_counter()
    for n in range(args.orders):
        s = n % args.symbols
        spec = new_order(s, price(s, 0))
        orders[f"o{n}"] = spec
        index.arm(f"o{n}", *spec)
    print(f"armed {len(index):,} orders in {time.perf_counter() - started:.1f}s", flush=True)

    gc.collect()
    gc.freeze()
    costs: list[int] = []
    fired_total = 0
    next_id = args.orders
    clock = time.perf_counter_ns
    for u in range(args.updates):
        s = u % args.symbols
        p = price(s, 1 + u // args.symbols)
        t0 = clock()
        fired = index.on_price(symbols[s], p)
        costs.append(clock() - t0)
        fired_total += len(fired)
        for order_id in fired:  # keep a million armed: each fired order is replaced (not timed)
            del orders[order_id]
            spec = new_order(s, p)
            orders[f"o{next_id}"] = spec
            index.arm(f"o{next_id}", *spec)
            next_id += 1
    total_s = sum(costs) / 1e9
    print(f"index: {args.updates:,} updates, {fired_total:,} fired, {len(index):,} armed", flush=True)

    naive_orders = dict(orders)
    naive_costs = []
    for u in range(args.updates, args.updates + args.naive_updates):
        s = u % args.symbols
        t0 = time.perf_counter()
        naive_scan(naive_orders, symbols[s], price(s, 1 + u // args.symbols))
        naive_costs.append(time.perf_counter() - t0)
    naive_rate = len(naive_costs) / sum(naive_costs)
    rate = args.updates / total_s
    del index, orders, naive_orders  # the book's pass gets the memory (and the caches) to itself
    gc.unfreeze()
    gc.collect()
    book_figures = run_book(args, symbols, price, rng) if args.book else {}
    print(
        json.dumps(
            {
                "orders": args.orders,
                "symbols": args.symbols,
                "updates": args.updates,
                "fired": fired_total,
                "updates_per_s": round(rate),
                "update_p50_us": round(percentile(costs, 50) / 1000, 2),
                "update_p99_us": round(percentile(costs, 99) / 1000, 2),
                "naive_updates_per_s": round(naive_rate, 2),
                "naive_update_ms": round(1000 / naive_rate, 1),
                "ratio_vs_naive": round(rate / naive_rate),
                **book_figures,
            }
        )
    )


def run_book(args: argparse.Namespace, symbols: list[str], price: object, rng: random.Random) -> dict[str, float]:
    """The order service's own path: the trigger book over the index, Decimal prices in, stops, take-profits and
    a share of trailing stops (whose ratchets re-arm as prices make new highs/lows), fired orders replaced."""
    at = price  # (symbol index, step) -> float price

    def new_armed(n: int, s: int, around: float) -> ArmedOrder:
        side = rng.choice((OrderSide.BUY, OrderSide.SELL))
        distance = rng.uniform(0.001, 0.25)
        if rng.random() < args.trailing_share:
            level = around * (1 - distance) if side is OrderSide.SELL else around * (1 + distance)
            return ArmedOrder(
                f"b{n}",
                symbols[s],
                side,
                "stop",
                Decimal(repr(level)),
                None,
                None,
                Decimal(repr(distance * 100)),
                Decimal(repr(around)),
            )
        kind = rng.choice(("stop", "take_profit"))
        rises = (side is OrderSide.BUY) == (kind == "stop")
        level = around * (1 + distance) if rises else around * (1 - distance)
        return ArmedOrder(f"b{n}", symbols[s], side, kind, Decimal(repr(level)))

    book = TriggerBook()
    started = time.perf_counter()
    for n in range(args.orders):
        s = n % args.symbols
        book.arm(new_armed(n, s, at(s, 0)))  # type: ignore[operator]
    print(f"book: armed {len(book):,} orders in {time.perf_counter() - started:.1f}s", flush=True)
    gc.collect()
    gc.freeze()
    costs: list[int] = []
    fired = rearmed = 0
    next_id = args.orders
    clock = time.perf_counter_ns
    for u in range(args.updates):
        s = u % args.symbols
        p = at(s, 1 + u // args.symbols)  # type: ignore[operator]
        t0 = clock()
        actions = book.on_price(symbols[s], p)  # the feed's float; Decimal only for what fires
        costs.append(clock() - t0)
        for action in actions:
            if isinstance(action, Fire):
                fired += 1
                book.arm(new_armed(next_id, s, p))
                next_id += 1
            else:
                rearmed += 1
    total_s = sum(costs) / 1e9
    print(f"book: {args.updates:,} updates, {fired:,} fired, {rearmed:,} ratchets, {len(book):,} armed", flush=True)
    return {
        "book_updates_per_s": round(args.updates / total_s),
        "book_update_p50_us": round(percentile(costs, 50) / 1000, 2),
        "book_update_p99_us": round(percentile(costs, 99) / 1000, 2),
        "book_fired": fired,
        "book_ratchets": rearmed,
    }


if __name__ == "__main__":
    main()
