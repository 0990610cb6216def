"""The trigger index fires exactly what a scan of every order would, and nothing twice."""

from __future__ import annotations

import math
import random

import pytest

from realtime.orders.triggers import Direction, TriggerIndex, direction_for, naive_scan


def test_directions_follow_side_and_kind() -> None:
    assert direction_for("sell", "stop") is Direction.FALLS_TO
    assert direction_for("buy", "stop") is Direction.RISES_TO
    assert direction_for("sell", "take_profit") is Direction.RISES_TO
    assert direction_for("buy", "take_profit") is Direction.FALLS_TO
    with pytest.raises(ValueError):
        direction_for("sell", "ladder")


def test_sell_stop_fires_on_fall_and_take_profit_on_rise() -> None:
    index = TriggerIndex()
    index.arm("stop", "BTCUSDT", Direction.FALLS_TO, 95.0)
    index.arm("tp", "BTCUSDT", Direction.RISES_TO, 110.0)
    assert index.on_price("BTCUSDT", 100.0) == []
    assert index.on_price("ETHUSDT", 1.0) == []
    assert index.on_price("BTCUSDT", 95.0) == ["stop"]
    assert index.on_price("BTCUSDT", 90.0) == [], "a fired order never fires again"
    assert index.on_price("BTCUSDT", 111.0) == ["tp"]
    assert len(index) == 0


def test_disarmed_and_rearmed_orders_fire_only_at_their_current_level() -> None:
    index = TriggerIndex()
    index.arm("a", "S", Direction.FALLS_TO, 90.0)
    index.arm("b", "S", Direction.FALLS_TO, 92.0)
    assert index.disarm("b") and not index.disarm("b")
    index.arm("a", "S", Direction.FALLS_TO, 95.0)  # a trailing stop ratcheting up
    assert index.level("a") == ("S", Direction.FALLS_TO, 95.0)
    assert index.on_price("S", 94.0) == ["a"]
    assert index.on_price("S", 80.0) == []


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_non_positive_or_nan_levels_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        TriggerIndex().arm("x", "S", Direction.RISES_TO, bad)


def test_index_matches_naive_scan_on_a_random_walk() -> None:
    rng = random.Random(11)
    index, orders = TriggerIndex(), {}
    symbols = [f"S{i}" for i in range(5)]
    prices = dict.fromkeys(symbols, 100.0)
    for n in range(3000):
        sym = rng.choice(symbols)
        direction = rng.choice(list(Direction))
        level = prices[sym] * rng.uniform(0.9, 1.1)
        index.arm(f"o{n}", sym, direction, level)
        orders[f"o{n}"] = (sym, direction, level)
    for step in range(4000):
        sym = rng.choice(symbols)
        prices[sym] *= math.exp(rng.gauss(0, 0.004))
        if step % 7 == 0 and orders:
            victim = rng.choice(sorted(orders))
            index.disarm(victim)
            del orders[victim]
        assert sorted(index.on_price(sym, prices[sym])) == sorted(naive_scan(orders, sym, prices[sym]))
    assert index.armed() == orders
