"""warehouse.trades: the vectorised FIFO against a plain lot-by-lot FIFO over Decimals, hand cases, fixed points."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from warehouse.trades import Continued, FixedPoint, OpenLots, RoundTrips, continue_fifo, fifo_round_trips

ZERO = Decimal(0)


@dataclass(frozen=True)
class Fill:
    book: int
    quantity: Decimal  # signed, a buy > 0
    price: Decimal
    fee: Decimal


@dataclass(frozen=True)
class Trip:
    opening: int
    closing: int
    quantity: Decimal
    direction: int
    pnl: Decimal


def reference_round_trips(fills: list[Fill]) -> list[Trip]:
    """The straightforward FIFO: a queue of open lots per book, walked fill by fill in Decimal arithmetic."""
    trips: list[Trip] = []
    lots: dict[int, deque[list[Decimal | int]]] = {}
    for index, fill in enumerate(fills):
        book = lots.setdefault(fill.book, deque())
        size = abs(fill.quantity)
        remaining = size
        while remaining > ZERO and book and (book[0][0] > ZERO) != (fill.quantity > ZERO):
            lot = book[0]  # [signed open quantity, entry price, entry fee, entry quantity, opening fill]
            open_quantity, entry_price, entry_fee, entry_quantity, opening = lot
            assert isinstance(open_quantity, Decimal) and isinstance(entry_fee, Decimal)
            assert isinstance(entry_quantity, Decimal) and isinstance(entry_price, Decimal)
            matched = min(abs(open_quantity), remaining)
            direction = 1 if open_quantity > ZERO else -1
            fees = entry_fee * matched / entry_quantity + fill.fee * matched / size
            pnl = (fill.price - entry_price) * matched * direction - fees
            trips.append(Trip(int(opening), index, matched, direction, pnl))
            remaining -= matched
            if matched == abs(open_quantity):
                book.popleft()
            else:
                lot[0] = open_quantity - matched * direction
        if remaining > ZERO:
            direction = 1 if fill.quantity > ZERO else -1
            book.append([remaining * direction, fill.price, fill.fee * remaining / size, remaining, index])
    return trips


def vectorised(fills: list[Fill]) -> RoundTrips:
    return fifo_round_trips(
        np.array([fill.book for fill in fills], dtype=np.int64),
        FixedPoint.from_decimals(fill.quantity for fill in fills),
        FixedPoint.from_decimals(fill.price for fill in fills),
        FixedPoint.from_decimals(fill.fee for fill in fills),
    )


def assert_same_round_trips(fills: list[Fill]) -> None:
    expected = reference_round_trips(fills)
    trips = vectorised(fills)
    quantity_decimals = FixedPoint.from_decimals(fill.quantity for fill in fills).decimals

    assert len(trips) == len(expected)
    for n, trip in enumerate(expected):
        assert (int(trips.opening[n]), int(trips.closing[n])) == (trip.opening, trip.closing)
        assert Decimal(f"{int(trips.quantity[n])}E-{quantity_decimals}") == trip.quantity
        assert int(trips.direction[n]) == trip.direction
        assert np.sign(trips.pnl[n]) == np.sign(float(trip.pnl)), f"round trip {n}: {trips.pnl[n]} vs {trip.pnl}"
        assert trips.pnl[n] == pytest.approx(float(trip.pnl), rel=1e-12, abs=1e-12)


def random_fills(rng: random.Random, books: int, fills_per_book: int) -> list[Fill]:
    """Books traded long and short through flat, with partial closes, zero quantities and round-number prices."""
    fills = []
    for book in range(books):
        for _ in range(rng.randint(0, fills_per_book)):
            size = Decimal(rng.choice([0, 1, 2, 3, 5, 7, 10, 25])) * Decimal(rng.choice(["1", "0.1", "0.001", "0.25"]))
            price = Decimal(rng.randint(9_000, 11_000)) / 100
            fee = Decimal(rng.choice([0, 0, 1, 3, 7])) / 1000 * size * price / 10
            fills.append(Fill(book, size * rng.choice([1, -1]), price, fee.quantize(Decimal("0.00000001"))))
    return fills


@pytest.mark.parametrize("seed", range(40))
def test_random_fills_give_the_round_trips_of_the_lot_by_lot_fifo(seed: int) -> None:
    assert_same_round_trips(random_fills(random.Random(seed), books=4, fills_per_book=60))


def test_partial_close_leaves_the_rest_of_the_lot_open() -> None:
    fills = [Fill(0, Decimal(3), Decimal(100), Decimal("0.3")), Fill(0, Decimal(-1), Decimal(110), Decimal("0.1"))]

    trips = vectorised(fills)

    assert (len(trips), int(trips.quantity[0])) == (1, 1)
    assert trips.pnl[0] == pytest.approx(10 - 0.1 - 0.1)  # a third of the entry fee, all of the exit fee
    assert_same_round_trips(fills)


def test_oldest_lot_closes_first() -> None:
    fills = [
        Fill(0, Decimal(1), Decimal(100), ZERO),
        Fill(0, Decimal(1), Decimal(200), ZERO),
        Fill(0, Decimal(-1), Decimal(150), ZERO),
    ]

    trips = vectorised(fills)

    assert (list(trips.opening), list(trips.closing), list(trips.pnl)) == ([0], [2], [50.0])


def test_fill_crossing_flat_closes_the_long_and_opens_a_short_with_its_fee_share() -> None:
    fills = [
        Fill(0, Decimal(1), Decimal(100), ZERO),
        Fill(0, Decimal(-3), Decimal(110), Decimal("0.3")),  # closes 1 (fee 0.1), opens 2 short (fee 0.2)
        Fill(0, Decimal(2), Decimal(100), ZERO),
    ]

    trips = vectorised(fills)

    assert list(trips.direction) == [1, -1]
    assert list(trips.opening) == [0, 1] and list(trips.closing) == [1, 2]
    assert trips.pnl == pytest.approx([10 - 0.1, (100 - 110) * 2 * -1 - 0.2])
    assert_same_round_trips(fills)


def test_fees_are_shared_pro_rata_across_several_closes() -> None:
    fills = [
        Fill(0, Decimal(4), Decimal(10), Decimal("0.4")),
        Fill(0, Decimal(-1), Decimal(10), Decimal("0.05")),
        Fill(0, Decimal(-3), Decimal(10), Decimal("0.3")),
    ]

    assert vectorised(fills).pnl == pytest.approx([-0.1 - 0.05, -0.3 - 0.3])


def test_break_even_round_trip_is_exactly_zero_not_float_dust() -> None:
    # In floats (100.2 - 100) - 0.1 - 0.1 is 2.8e-15, a win; in decimals it is 0, neither a win nor a loss.
    fills = [Fill(0, Decimal(1), Decimal(100), Decimal("0.1")), Fill(0, Decimal(-1), Decimal("100.2"), Decimal("0.1"))]

    assert list(vectorised(fills).pnl) == [0.0]


def test_exit_at_the_entry_price_without_fees_is_zero() -> None:
    fills = [Fill(0, Decimal(-2), Decimal("0.1"), ZERO), Fill(0, Decimal("0.5"), Decimal("0.1"), ZERO)]

    assert list(vectorised(fills).pnl) == [0.0]
    assert_same_round_trips(fills)


def test_fills_that_only_open_make_no_round_trip() -> None:
    fills = [Fill(0, Decimal(1), Decimal(100), ZERO), Fill(0, Decimal(2), Decimal(101), ZERO)]

    assert len(vectorised(fills)) == 0


def test_books_are_matched_separately() -> None:
    # Book 0 stays long; book 1 sells from flat: a short, never a close of book 0's lot.
    fills = [Fill(0, Decimal(1), Decimal(100), ZERO), Fill(1, Decimal(-1), Decimal(100), ZERO)]

    assert len(vectorised(fills)) == 0
    assert_same_round_trips([*fills, Fill(1, Decimal(1), Decimal(90), ZERO)])


def test_book_split_in_two_runs_is_refused() -> None:
    fills = [Fill(0, Decimal(1), Decimal(1), ZERO), Fill(1, Decimal(1), Decimal(1), ZERO)]
    fills.append(Fill(0, Decimal(-1), Decimal(1), ZERO))

    with pytest.raises(ValueError, match="grouped by book"):
        vectorised(fills)


def test_quantities_too_large_for_int64_units_are_matched_exactly_as_python_ints() -> None:
    rng = random.Random(7)
    fills = [
        Fill(0, rng.choice([1, -1]) * (rng.randint(1, 10**6) + Decimal(rng.randint(0, 999)) / 10**12), price, ZERO)
        for price in (Decimal(rng.randint(1, 99)) for _ in range(200))
    ]

    assert FixedPoint.from_decimals(fill.quantity for fill in fills).units.dtype == object
    assert_same_round_trips(fills)


def test_running_totals_beyond_int64_are_matched_exactly() -> None:
    # Each quantity fits int64 units, their running total (9,000 x 1.1e15 units, above 2**63) does not.
    fills = [Fill(0, Decimal("1.1"), Decimal(100), ZERO) for _ in range(9_000)]
    fills += [Fill(0, Decimal("-0.000000000000001"), Decimal(101), ZERO)]
    fills += [Fill(0, Decimal("-1.1"), Decimal(99), ZERO) for _ in range(9_000)]

    assert FixedPoint.from_decimals(fill.quantity for fill in fills).units.dtype == np.int64
    assert_same_round_trips(fills)


def test_empty_input_gives_no_round_trip() -> None:
    assert len(vectorised([])) == 0


# --- FixedPoint ---------------------------------------------------------------------------------------------------


def decimal128(values: list[str | None], scale: int = 18) -> pa.Array:
    return pa.array([None if value is None else Decimal(value) for value in values], pa.decimal128(38, scale))


def test_from_arrow_keeps_the_fewest_decimals_that_hold_every_value() -> None:
    fixed = FixedPoint.from_arrow(decimal128(["35.2327", "-0.00001", "264.1018", "0"]))

    assert fixed.decimals == 5
    assert list(fixed.units) == [3_523_270, -1, 26_410_180, 0]
    assert fixed.units.dtype == np.int64


def test_from_arrow_reads_every_decimal_of_the_column_scale() -> None:
    fixed = FixedPoint.from_arrow(decimal128(["1.000000000000000001", "-2.5"]))

    assert (fixed.decimals, list(fixed.units)) == (18, [10**18 + 1, -25 * 10**17])


def test_from_arrow_of_values_beyond_int64_units_stays_exact() -> None:
    fixed = FixedPoint.from_arrow(decimal128(["12345678901234567890.123456789012345678", "-1"]))

    assert fixed.units.dtype == object
    assert fixed.decimal(0) == Decimal("12345678901234567890.123456789012345678")
    assert fixed.decimal(1) == Decimal(-1)


def test_from_arrow_of_a_sliced_chunked_column_reads_the_right_values() -> None:
    column = pa.chunked_array([decimal128(["1.5", "2.25"]), decimal128(["3", "4.125", "5"]).slice(1)])

    assert FixedPoint.from_arrow(column).to_float().tolist() == [1.5, 2.25, 4.125, 5.0]


def test_from_arrow_refuses_nulls() -> None:
    with pytest.raises(ValueError, match="null"):
        FixedPoint.from_arrow(decimal128(["1", None]))


def test_from_decimals_ignores_trailing_zeros_and_refuses_nan() -> None:
    assert FixedPoint.from_decimals([Decimal("1.500"), Decimal("2")]).decimals == 1
    with pytest.raises(ValueError, match="finite"):
        FixedPoint.from_decimals([Decimal("NaN")])


def test_to_float_is_the_nearest_float_of_each_decimal() -> None:
    values = ["0.1", "122.41", "13879.89", "-0.00001023", "4.31283481"]

    assert FixedPoint.from_decimals(values).to_float().tolist() == [float(value) for value in values]


def _pass(lots: OpenLots, fills: list[Fill]) -> Continued:
    return continue_fifo(
        lots,
        np.array([fill.book for fill in fills], dtype=np.int64),
        FixedPoint.from_decimals(fill.quantity for fill in fills),
        FixedPoint.from_decimals(fill.price for fill in fills),
        FixedPoint.from_decimals(fill.fee for fill in fills),
    )


def _decimal_units(units: object, decimals: int) -> Decimal:
    return Decimal(f"{int(units)}E-{decimals}")  # type: ignore[call-overload]


@pytest.mark.parametrize("seed", range(30))
def test_continuing_from_open_lots_gives_the_round_trips_of_one_pass_bit_for_bit(seed: int) -> None:
    """Fills cut into three runs at random points: the round trips of each run, continued from the lots the run
    before left open, are one pass's (PnL floats identical), and so are the lots open at the end."""
    rng = random.Random(seed)
    fills = random_fills(rng, books=4, fills_per_book=60)
    whole = vectorised(fills)
    cuts = sorted(rng.sample(range(len(fills) + 1), 2))
    runs = [fills[: cuts[0]], fills[cuts[0] : cuts[1]], fills[cuts[1] :]]
    # a run holds fills of every book in time order; order the runs' fills by book (the input must be grouped)
    lots, offset, trips = OpenLots.none(), 0, []
    for run in runs:
        positions = sorted(range(len(run)), key=lambda i: run[i].book)
        grouped = [run[i] for i in positions]
        result = _pass(lots, grouped)
        for n in range(len(result.trips)):
            closing = offset + positions[int(result.fill[result.trips.closing[n]])]
            matched = _decimal_units(result.trips.quantity[n], result.decimals)
            trips.append((closing, matched, int(result.trips.direction[n]), float(result.trips.pnl[n])))
        lots, offset = result.lots, offset + len(run)

    decimals = FixedPoint.from_decimals(fill.quantity for fill in fills).decimals
    expected = [
        (int(whole.closing[n]), _decimal_units(whole.quantity[n], decimals), int(whole.direction[n]), whole.pnl[n])
        for n in range(len(whole))
    ]
    assert sorted(trips, key=lambda t: t[0]) == sorted(expected, key=lambda t: t[0])  # stable: FIFO within a fill
    final = _pass(OpenLots.none(), sorted(fills, key=lambda f: f.book)).lots
    assert [lots.quantity.decimal(i) for i in range(len(lots))] == [
        final.quantity.decimal(i) for i in range(len(final))
    ]
    assert list(lots.book) == list(final.book)


def test_a_lot_carried_over_keeps_its_opening_fills_fee_share() -> None:
    # bought 3 for a fee of 0.3; a third sold; the 2 left are carried into the next run and sold there
    first = _pass(
        OpenLots.none(), [Fill(0, Decimal(3), Decimal(100), Decimal("0.3")), Fill(0, Decimal(-1), Decimal(110), ZERO)]
    )
    assert [first.lots.quantity.decimal(0), first.lots.fee.decimal(0), first.lots.fee_quantity.decimal(0)] == [
        Decimal(2),
        Decimal("0.3"),
        Decimal(3),
    ]
    second = _pass(first.lots, [Fill(0, Decimal(-2), Decimal(120), ZERO)])
    assert second.trips.pnl == pytest.approx([20 * 2 - 0.2])  # two thirds of the entry fee
    assert len(second.lots) == 0


@pytest.mark.parametrize(
    ("values", "texts"),
    [
        (["2", "2.50", "-0.0001", "0", "120"], ["2", "2.5", "-0.0001", "0", "120"]),
        (["1.000000000000000001", "-3"], ["1.000000000000000001", "-3"]),
    ],
)
def test_fixed_point_text_is_the_same_whatever_the_decimals(values: list[str], texts: list[str]) -> None:
    numbers = FixedPoint.from_decimals(values)
    assert [numbers.text(i) for i in range(len(values))] == texts
    wider = numbers.with_decimals(numbers.decimals + 3)
    assert [wider.text(i) for i in range(len(values))] == texts
    assert all(Decimal(text) == Decimal(value) for text, value in zip(texts, values, strict=True))
