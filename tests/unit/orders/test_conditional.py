"""Platform-held conditional orders: stops, take-profits, trailing stops and profit-lock ladders fire and move
exactly where their levels say, and a book of plain stops fires what a scan of every order would."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from core.domain.orders import Order, OrderSide, OrderType, TimeInForce
from realtime.orders.conditional import (
    ArmedOrder,
    Fire,
    Rearm,
    TriggerBook,
    initial_trigger,
    on_tick,
    trailing_level,
)
from realtime.orders.triggers import Direction, direction_for, naive_scan

D = Decimal
SYMBOL = "BTCUSDT"


def armed(
    side: OrderSide,
    trigger: str,
    kind: str = "stop",
    order_id: str = "o1",
    symbol: str = SYMBOL,
    **extra: object,
) -> ArmedOrder:
    return ArmedOrder(order_id=order_id, symbol=symbol, side=side, kind=kind, trigger=D(trigger), **extra)  # type: ignore[arg-type]


def book_with(*orders: ArmedOrder) -> TriggerBook:
    book = TriggerBook()
    for order in orders:
        book.arm(order)
    return book


def order(
    order_type: OrderType,
    side: OrderSide = OrderSide.SELL,
    trigger_price: str | None = None,
    **extra: object,
) -> Order:
    return Order(
        id="o1",
        user_id="u1",
        account_id="acc",
        client_order_id="c1",
        exchange="binance",
        symbol=SYMBOL,
        side=side,
        order_type=order_type,
        quantity=D("1"),
        price=None,
        trigger_price=None if trigger_price is None else D(trigger_price),
        time_in_force=TimeInForce.GTC,
        reduce_only=True,
        strategy_id=None,
        **extra,  # type: ignore[arg-type]
    )


# --- plain stops and take-profits ---------------------------------------------------------------------------


def test_sell_stop_above_its_level_does_not_fire_and_fires_when_price_falls_to_it() -> None:
    book = book_with(armed(OrderSide.SELL, "95"))
    assert book.on_price(SYMBOL, D("95.01")) == []
    assert book.on_price(SYMBOL, D("120")) == []
    assert "o1" in book
    assert book.on_price(SYMBOL, D("95")) == [Fire("o1", D("95"))]
    assert "o1" not in book and len(book) == 0


def test_sell_stop_gapped_through_fires_once_at_the_gap_price() -> None:
    book = book_with(armed(OrderSide.SELL, "95"))
    assert book.on_price(SYMBOL, D("80")) == [Fire("o1", D("80"))]
    assert book.on_price(SYMBOL, D("70")) == [], "a fired order never fires again"


def test_buy_stop_below_its_level_does_not_fire_and_fires_when_price_rises_to_it() -> None:
    book = book_with(armed(OrderSide.BUY, "105"))
    assert book.on_price(SYMBOL, D("104.99")) == []
    assert book.on_price(SYMBOL, D("50")) == []
    assert book.on_price(SYMBOL, D("105")) == [Fire("o1", D("105"))]
    assert len(book) == 0


def test_sell_take_profit_fires_on_rise_not_on_fall() -> None:
    book = book_with(armed(OrderSide.SELL, "110", kind="take_profit"))
    assert book.on_price(SYMBOL, D("90")) == []
    assert book.on_price(SYMBOL, D("109.99")) == []
    assert book.on_price(SYMBOL, D("110")) == [Fire("o1", D("110"))]


def test_buy_take_profit_fires_on_fall_not_on_rise() -> None:
    book = book_with(armed(OrderSide.BUY, "90", kind="take_profit"))
    assert book.on_price(SYMBOL, D("150")) == []
    assert book.on_price(SYMBOL, D("90.01")) == []
    assert book.on_price(SYMBOL, D("89")) == [Fire("o1", D("89"))]


def test_price_of_another_symbol_fires_nothing() -> None:
    book = book_with(armed(OrderSide.SELL, "95"))
    assert book.on_price("ETHUSDT", D("1")) == []
    assert "o1" in book


def test_disarmed_stop_never_fires() -> None:
    book = book_with(armed(OrderSide.SELL, "95"), armed(OrderSide.SELL, "96", order_id="o2"))
    assert book.disarm("o1") is True
    assert book.disarm("o1") is False
    assert book.get("o1") is None
    assert book.on_price(SYMBOL, D("90")) == [Fire("o2", D("90"))]


def test_disarmed_trailing_ladder_stop_leaves_no_ratchet_or_rung_entries() -> None:
    book = book_with(
        armed(
            OrderSide.SELL,
            "90",
            tick=D("1"),
            trailing_offset=D("10"),
            peak=D("100"),
            lock_steps=((D(50), D(40)),),
            reference=D("100"),
        )
    )
    assert len(book.index) == 3  # the stop, its ratchet and its next rung
    book.disarm("o1")
    assert len(book.index) == 0
    assert book.on_price(SYMBOL, D("200")) == []
    assert book.on_price(SYMBOL, D("1")) == []


def test_rearming_an_order_replaces_its_previous_level() -> None:
    book = book_with(armed(OrderSide.SELL, "95"))
    book.arm(armed(OrderSide.SELL, "90"))
    assert len(book) == 1
    assert book.on_price(SYMBOL, D("94")) == []
    assert book.on_price(SYMBOL, D("90")) == [Fire("o1", D("90"))]


# --- trailing stops -----------------------------------------------------------------------------------------


def test_trailing_level_sits_below_peak_for_sell_and_above_for_buy() -> None:
    assert trailing_level(OrderSide.SELL, D("200"), D("15"), None) == D("185")
    assert trailing_level(OrderSide.BUY, D("200"), D("15"), None) == D("215")
    assert trailing_level(OrderSide.SELL, D("200"), None, D("5")) == D("190")
    assert trailing_level(OrderSide.BUY, D("200"), None, D("5")) == D("210")


def test_trailing_sell_stop_with_price_distance_ratchets_up_on_new_highs_and_fires_on_the_fall() -> None:
    book = book_with(armed(OrderSide.SELL, "90", tick=D("1"), trailing_offset=D("10"), peak=D("100")))
    assert book.on_price(SYMBOL, D("105")) == [Rearm("o1", D("95"), D("105"), 0)]
    assert book.on_price(SYMBOL, D("112")) == [Rearm("o1", D("102"), D("112"), 0)]
    current = book.get("o1")
    assert current is not None and current.trigger == D("102") and current.peak == D("112")
    assert book.index.level("o1") == (SYMBOL, Direction.FALLS_TO, 102.0)
    assert book.on_price(SYMBOL, D("103")) == []
    assert book.on_price(SYMBOL, D("102")) == [Fire("o1", D("102"))]
    assert len(book) == 0 and len(book.index) == 0


def test_trailing_sell_stop_never_moves_down_when_price_falls() -> None:
    book = book_with(armed(OrderSide.SELL, "90", tick=D("1"), trailing_offset=D("10"), peak=D("100")))
    book.on_price(SYMBOL, D("120"))
    for price in ("119", "115", "111", "110.5"):
        assert book.on_price(SYMBOL, D(price)) == []
        current = book.get("o1")
        assert current is not None and current.trigger == D("110") and current.peak == D("120")
    assert book.on_price(SYMBOL, D("110")) == [Fire("o1", D("110"))]


def test_trailing_sell_stop_with_percent_callback_ratchets_and_fires() -> None:
    book = book_with(armed(OrderSide.SELL, "90", tick=D("0.01"), trailing_offset_pct=D("10"), peak=D("100")))
    assert book.on_price(SYMBOL, D("200")) == [Rearm("o1", D("180"), D("200"), 0)]
    assert book.on_price(SYMBOL, D("180.01")) == []
    assert book.on_price(SYMBOL, D("250")) == [Rearm("o1", D("225"), D("250"), 0)]
    assert book.on_price(SYMBOL, D("225.01")) == []
    assert book.on_price(SYMBOL, D("225")) == [Fire("o1", D("225"))]


def test_trailing_stop_ratchet_smaller_than_one_tick_records_no_rearm() -> None:
    # 10% of 100 -> 100.5 moves the level from 90 to 90.45, which floors back onto the tick at 90.
    book = book_with(armed(OrderSide.SELL, "90", tick=D("1"), trailing_offset_pct=D("10"), peak=D("100")))
    assert book.on_price(SYMBOL, D("101")) == []
    current = book.get("o1")
    assert current is not None and current.trigger == D("90")
    assert book.index.level("o1") == (SYMBOL, Direction.FALLS_TO, 90.0)
    # the best price still moved, so a further rise that clears a tick is recorded against it
    assert book.on_price(SYMBOL, D("112")) == [Rearm("o1", D("100"), D("112"), 0)]


def test_trailing_stop_price_inside_one_tick_of_the_peak_does_not_ratchet() -> None:
    book = book_with(armed(OrderSide.SELL, "90", tick=D("1"), trailing_offset=D("10"), peak=D("100")))
    assert book.on_price(SYMBOL, D("100.99")) == []
    current = book.get("o1")
    assert current is not None and current.peak == D("100") and current.trigger == D("90")


def test_trailing_buy_stop_ratchets_down_on_new_lows_never_up_and_fires_on_the_rise() -> None:
    book = book_with(armed(OrderSide.BUY, "110", tick=D("1"), trailing_offset=D("10"), peak=D("100")))
    assert book.on_price(SYMBOL, D("95")) == [Rearm("o1", D("105"), D("95"), 0)]
    assert book.on_price(SYMBOL, D("80")) == [Rearm("o1", D("90"), D("80"), 0)]
    assert book.on_price(SYMBOL, D("85")) == []
    current = book.get("o1")
    assert current is not None and current.trigger == D("90") and current.peak == D("80")
    assert book.index.level("o1") == (SYMBOL, Direction.RISES_TO, 90.0)
    assert book.on_price(SYMBOL, D("89.99")) == []
    assert book.on_price(SYMBOL, D("90")) == [Fire("o1", D("90"))]


def test_trailing_buy_stop_with_percent_callback_rounds_level_up_onto_the_tick() -> None:
    book = book_with(armed(OrderSide.BUY, "110", tick=D("1"), trailing_offset_pct=D("3"), peak=D("100")))
    # 3% above 90 is 92.7: a buy stop rounds away from the market, up to 93
    assert book.on_price(SYMBOL, D("90")) == [Rearm("o1", D("93"), D("90"), 0)]
    assert book.on_price(SYMBOL, D("93")) == [Fire("o1", D("93"))]


def test_trailing_sell_stop_level_rounds_down_onto_the_tick() -> None:
    book = book_with(armed(OrderSide.SELL, "90", tick=D("0.5"), trailing_offset_pct=D("3"), peak=D("100")))
    # 3% below 110 is 106.7: a sell stop rounds away from the market, down to 106.5
    assert book.on_price(SYMBOL, D("110")) == [Rearm("o1", D("106.5"), D("110"), 0)]
    assert book.on_price(SYMBOL, D("106.6")) == []
    assert book.on_price(SYMBOL, D("106.5")) == [Fire("o1", D("106.5"))]


# --- profit-lock ladders ------------------------------------------------------------------------------------

LADDER = ((D(50), D(50)), (D(80), D(80)))


def test_ladder_at_a_rung_with_lock_equal_to_gain_locks_and_fires_on_the_same_price() -> None:
    book = book_with(armed(OrderSide.SELL, "90", lock_steps=LADDER, reference=D("100")))
    assert book.on_price(SYMBOL, D("149.99")) == []
    assert book.on_price(SYMBOL, D("150")) == [Rearm("o1", D("150"), None, 1), Fire("o1", D("150"))]
    assert len(book) == 0 and len(book.index) == 0


def test_ladder_rungs_lock_the_stop_in_order() -> None:
    ladder = ((D(50), D(40)), (D(80), D(70)))
    book = book_with(armed(OrderSide.SELL, "90", lock_steps=ladder, reference=D("100")))
    assert book.on_price(SYMBOL, D("150")) == [Rearm("o1", D("140"), None, 1)]
    assert book.on_price(SYMBOL, D("179")) == []
    assert book.on_price(SYMBOL, D("141")) == []
    assert book.on_price(SYMBOL, D("180")) == [Rearm("o1", D("170"), None, 2)]
    assert book.on_price(SYMBOL, D("300")) == [], "no rung left to reach"
    assert book.on_price(SYMBOL, D("170")) == [Fire("o1", D("170"))]


def test_ladder_price_jumping_past_two_rungs_locks_the_higher_one() -> None:
    book = book_with(armed(OrderSide.SELL, "90", lock_steps=LADDER, reference=D("100")))
    assert book.on_price(SYMBOL, D("185")) == [Rearm("o1", D("180"), None, 2)]
    assert book.on_price(SYMBOL, D("181")) == []
    assert book.on_price(SYMBOL, D("180")) == [Fire("o1", D("180"))]


def test_ladder_lock_never_lowers_a_stop_already_above_it() -> None:
    book = book_with(armed(OrderSide.SELL, "145", lock_steps=((D(50), D(40)),), reference=D("100")))
    assert book.on_price(SYMBOL, D("150")) == [Rearm("o1", D("145"), None, 1)]
    current = book.get("o1")
    assert current is not None and current.trigger == D("145") and current.lock_step == 1


def test_buy_stop_ladder_locks_below_the_reference_as_price_falls() -> None:
    ladder = ((D(20), D(10)), (D(40), D(30)))
    book = book_with(armed(OrderSide.BUY, "110", lock_steps=ladder, reference=D("100")))
    assert book.on_price(SYMBOL, D("81")) == []
    assert book.on_price(SYMBOL, D("80")) == [Rearm("o1", D("90"), None, 1)]
    assert book.on_price(SYMBOL, D("55")) == [Rearm("o1", D("70"), None, 2)]
    assert book.on_price(SYMBOL, D("69")) == []
    assert book.on_price(SYMBOL, D("70")) == [Fire("o1", D("70"))]


def test_ladder_lock_level_is_rounded_onto_the_tick_away_from_the_market() -> None:
    # reference 101 locking 33%: 134.33 floors to 134 for a sell stop
    book = book_with(armed(OrderSide.SELL, "90", tick=D("1"), lock_steps=((D(50), D(33)),), reference=D("101")))
    assert book.on_price(SYMBOL, D("151.5")) == [Rearm("o1", D("134"), None, 1)]


def test_ladder_on_a_trailing_stop_keeps_the_higher_of_trail_and_lock() -> None:
    book = book_with(
        armed(
            OrderSide.SELL,
            "90",
            tick=D("1"),
            trailing_offset=D("30"),
            peak=D("100"),
            lock_steps=((D(50), D(40)),),
            reference=D("100"),
        )
    )
    # trail would put the stop at 120, the rung locks 140: the lock wins
    assert book.on_price(SYMBOL, D("150")) == [Rearm("o1", D("140"), D("150"), 1)]
    # later the trail passes the lock
    assert book.on_price(SYMBOL, D("200")) == [Rearm("o1", D("170"), D("200"), 1)]
    assert book.on_price(SYMBOL, D("170")) == [Fire("o1", D("170"))]


# --- rounding, arming from orders ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tick", "side", "expected"),
    [
        ("95.37", "0.5", OrderSide.SELL, "95.0"),
        ("95.37", "0.5", OrderSide.BUY, "95.5"),
        ("95.5", "0.5", OrderSide.SELL, "95.5"),
        ("95.5", "0.5", OrderSide.BUY, "95.5"),
        ("0.123456", "0.0001", OrderSide.SELL, "0.1234"),
        ("0.123456", "0.0001", OrderSide.BUY, "0.1235"),
        ("95.37", None, OrderSide.SELL, "95.37"),
        ("95.37", "0", OrderSide.BUY, "95.37"),
    ],
)
def test_on_tick_rounds_away_from_the_market(value: str, tick: str | None, side: OrderSide, expected: str) -> None:
    assert on_tick(D(value), None if tick is None else D(tick), side) == D(expected)


def test_armed_order_of_maps_order_type_to_kind_and_carries_trailing_and_ladder_fields() -> None:
    tp = ArmedOrder.of(order(OrderType.TAKE_PROFIT_LIMIT, trigger_price="120"))
    assert tp.kind == "take_profit" and tp.trigger == D("120") and not tp.trailing
    stop = ArmedOrder.of(
        order(
            OrderType.STOP_MARKET,
            trigger_price="90",
            lock_steps=LADDER,
            reference_price=D("100"),
            lock_step=1,
        ),
        tick=D("0.1"),
    )
    assert stop.kind == "stop" and stop.tick == D("0.1")
    assert stop.lock_steps == LADDER and stop.reference == D("100") and stop.lock_step == 1
    trail = ArmedOrder.of(
        order(OrderType.TRAILING_STOP_MARKET, trigger_price="95", trailing_offset_pct=D("5"), peak_price=D("100"))
    )
    assert trail.kind == "stop" and trail.trailing and trail.peak == D("100")


def test_initial_trigger_of_a_trailing_stop_without_trigger_starts_from_the_mark_on_the_tick() -> None:
    trail = order(OrderType.TRAILING_STOP_MARKET, trailing_offset_pct=D("3"))
    assert initial_trigger(trail, D("110"), D("0.5")) == (D("106.5"), D("110"))
    buy = order(OrderType.TRAILING_STOP_MARKET, side=OrderSide.BUY, trailing_offset=D("7.25"))
    assert initial_trigger(buy, D("100"), D("0.5")) == (D("107.5"), D("100"))


def test_initial_trigger_of_a_trailing_stop_without_trigger_or_mark_is_none() -> None:
    assert initial_trigger(order(OrderType.TRAILING_STOP_MARKET, trailing_offset=D("5")), None, D("1")) is None


def test_initial_trigger_of_a_plain_stop_is_its_own_trigger_without_peak() -> None:
    assert initial_trigger(order(OrderType.STOP_MARKET, trigger_price="95.37"), D("100"), D("1")) == (D("95.37"), None)
    assert initial_trigger(order(OrderType.STOP_MARKET), D("100"), D("1")) is None


def test_initial_trigger_of_a_trailing_stop_with_trigger_keeps_it_and_starts_peak_at_mark() -> None:
    trail = order(OrderType.TRAILING_STOP_MARKET, trigger_price="95", trailing_offset=D("5"))
    assert initial_trigger(trail, D("101"), D("1")) == (D("95"), D("101"))


# --- property: a book of plain stops fires what a scan would ------------------------------------------------


def test_book_of_plain_conditionals_matches_naive_scan_on_a_random_walk() -> None:
    rng = random.Random(7)
    book = TriggerBook()
    orders: dict[str, tuple[str, Direction, float]] = {}
    symbols = [f"S{i}" for i in range(4)]
    prices = dict.fromkeys(symbols, D("100.00"))
    cent = D("0.01")
    for n in range(1500):
        sym = rng.choice(symbols)
        side = rng.choice(list(OrderSide))
        kind = rng.choice(["stop", "take_profit"])
        level = (prices[sym] * D(str(rng.uniform(0.9, 1.1)))).quantize(cent)
        book.arm(armed(side, str(level), kind=kind, order_id=f"o{n}", symbol=sym))
        orders[f"o{n}"] = (sym, direction_for(side.value, kind), float(level))
    fired_total = 0
    for step in range(3000):
        sym = rng.choice(symbols)
        prices[sym] = max(cent, (prices[sym] * D(str(1 + rng.gauss(0, 0.004)))).quantize(cent))
        if step % 7 == 0 and orders:
            victim = rng.choice(sorted(orders))
            assert book.disarm(victim)
            del orders[victim]
        actions = book.on_price(sym, prices[sym])
        assert all(isinstance(a, Fire) and a.last_price == prices[sym] for a in actions)
        expected = naive_scan(orders, sym, float(prices[sym]))
        assert sorted(a.order_id for a in actions) == sorted(expected)
        fired_total += len(expected)
    assert set(book.armed()) == set(orders)
    assert book.index.armed() == orders
    assert fired_total > 100, "the walk must actually exercise firing"


def test_trailing_stop_armed_without_best_price_starts_trailing_from_the_first_higher_price() -> None:
    book = book_with(armed(OrderSide.SELL, "90", tick=D("1"), trailing_offset=D("10")))
    assert book.on_price(SYMBOL, D("150")) == [Rearm("o1", D("140"), D("150"), 0)]
    assert book.on_price(SYMBOL, D("140")) == [Fire("o1", D("140"))]
