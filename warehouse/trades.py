"""FIFO round trips of fills, matched with numpy over exact fixed-point quantities.

Each fill of a book (one account and symbol) either opens lots (same direction as the open position, or from flat)
or closes the oldest open lots first; a fill that crosses flat closes what is open and opens the rest. Every
(opening fill, closing fill) match is one round trip of quantity q, with PnL = (exit - entry) x q x direction - both
fills' fees pro rata to q (quote currency, net of fees). Open lots are not round trips.

How it is vectorised: the position after each fill is a running sum, and the part of a fill that moves the
position away from zero opens while the part towards zero closes. A position is on one side at a time and only
reaches the other through flat, where everything opened has been closed, so FIFO pairs the k-th unit a book
closes with the k-th unit it opened: the matches are the overlaps of the cumulative opened-quantity intervals
with the cumulative closed-quantity intervals, found with ``np.searchsorted``. Quantities are integers of
``10**-decimals`` units (:class:`FixedPoint`), so matching is exact and leaves no dust lot.

Continuing from open lots: :func:`continue_fifo` matches new fills against the lots an earlier pass left open
(:class:`OpenLots`, what ``fifo_round_trips`` over the earlier fills would still hold). Each lot keeps its opening
fill's price, whole fee, size and opened quantity, so every round trip, PnL included, comes out bit for bit as
one pass over all the fills would give it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = ["FixedPoint", "OpenLots", "RoundTrips", "continue_fifo", "fifo_round_trips"]

_IntArray: TypeAlias = npt.NDArray[np.int64]
_FloatArray: TypeAlias = npt.NDArray[np.float64]

# int64 units up to 2**50: floats hold them exactly and the float estimate in from_arrow is off by far less than 1.
_INT64_UNITS_LIMIT = 2**50
# Cumulative quantities must stay inside int64; beyond this the matching runs on Python ints.
_INT64_SUM_LIMIT = 2.0**62
# A float PnL this close to zero, relative to the size of its terms, may have the wrong sign; it is recomputed.
_SIGN_TOLERANCE = 1e-12


@dataclass(frozen=True)
class FixedPoint:
    """Exact decimal numbers as integer ``units`` of ``10**-decimals``.

    ``units`` is int64 when every value fits comfortably, else an object array of Python ints (slower, still exact).
    """

    units: npt.NDArray[Any]
    decimals: int

    def __len__(self) -> int:
        return len(self.units)

    @classmethod
    def from_decimals(cls, values: Iterable[Decimal | int | str]) -> FixedPoint:
        """The fewest decimals that hold every value exactly; NaN and infinities are refused."""
        numbers = [Decimal(value) for value in values]
        if any(not number.is_finite() for number in numbers):
            raise ValueError("fixed-point values must be finite numbers")
        decimals = max((_decimals_needed(number) for number in numbers), default=0)
        return cls(_pack([_units(number, decimals) for number in numbers]), decimals)

    @classmethod
    def from_arrow(cls, column: pa.Array | pa.ChunkedArray) -> FixedPoint:
        """An Arrow decimal128 or integer column (as DuckDB returns DECIMAL and integer columns), without nulls.

        decimal128 is read from its raw 128-bit buffer, so a million values convert in milliseconds.
        """
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if array.null_count:
            raise ValueError(f"fixed-point column has {array.null_count} null value(s)")
        if pa.types.is_integer(array.type):
            return cls(_pack(array.to_pylist()), 0)
        if pa.types.is_decimal128(array.type):
            return cls(*_decimal128_units(array))
        if pa.types.is_decimal(array.type):
            return cls.from_decimals(array.to_pylist())
        raise TypeError(f"fixed-point column must be decimal or integer, got {array.type}")

    def take(self, indices: _IntArray) -> FixedPoint:
        return FixedPoint(self.units[indices], self.decimals)

    def with_decimals(self, decimals: int) -> FixedPoint:
        """The same values with ``decimals`` (at least as many as now) decimals."""
        if decimals < self.decimals:
            raise ValueError(f"cannot drop decimals: {self.decimals} -> {decimals}")
        if decimals == self.decimals:
            return self
        factor = 10 ** (decimals - self.decimals)
        if self.units.dtype != object and float(np.abs(self.units).max(initial=0)) * factor < _INT64_UNITS_LIMIT:
            return FixedPoint(self.units * factor, decimals)
        return FixedPoint(_pack([int(units) * factor for units in self.units]), decimals)

    @staticmethod
    def concat(parts: Iterable[FixedPoint]) -> FixedPoint:
        """One FixedPoint of every part's values in order, with the most decimals any part has."""
        scaled = _common_decimals(*parts)
        decimals = scaled[0].decimals if scaled else 0
        if any(part.units.dtype == object for part in scaled):
            return FixedPoint(_pack([int(u) for part in scaled for u in part.units]), decimals)
        return FixedPoint(
            np.concatenate([part.units for part in scaled]) if scaled else np.zeros(0, dtype=np.int64), decimals
        )

    def to_float(self) -> _FloatArray:
        """The nearest float of every value."""
        if self.units.dtype == object:
            scale = 10**self.decimals
            return np.array([int(units) / scale for units in self.units], dtype=np.float64)
        return self.units.astype(np.float64) / 10.0**self.decimals

    def decimal(self, index: int) -> Decimal:
        return Decimal(f"{int(self.units[index])}E-{self.decimals}")

    def text(self, index: int) -> str:
        """The value as plain decimal text without trailing zeros: one text per value, whatever the decimals."""
        units = int(self.units[index])
        digits = str(abs(units)).rjust(self.decimals + 1, "0")
        whole, fraction = digits[: len(digits) - self.decimals], digits[len(digits) - self.decimals :].rstrip("0")
        return ("-" if units < 0 else "") + whole + ("." + fraction if fraction else "")


@dataclass(frozen=True)
class RoundTrips:
    """Closed round trips in the order they close (closing fill, then oldest lot first); indices are fill positions."""

    opening: _IntArray
    closing: _IntArray
    quantity: npt.NDArray[Any]  # units of the fills' quantity FixedPoint
    direction: npt.NDArray[np.int8]  # +1 a long lot closed by a sell, -1 a short lot closed by a buy
    pnl: _FloatArray
    opened: npt.NDArray[Any]  # per fill: the units it opened (moving the position away from zero)

    def __len__(self) -> int:
        return len(self.closing)


def fifo_round_trips(
    book: npt.ArrayLike,
    quantity: FixedPoint,
    price: FixedPoint,
    fee: FixedPoint,
    fee_quantity: FixedPoint | None = None,
    fee_opened: npt.NDArray[Any] | None = None,
) -> RoundTrips:
    """FIFO round trips of fills grouped by ``book`` (any id of account and symbol) and in time order within it.

    ``quantity`` is signed (buy > 0), ``fee`` in quote currency. The PnL is a float; where float rounding could
    flip its sign (a PnL within 1e-12 of its terms' size) it is recomputed with Decimal, as Decimal arithmetic
    would compute it, so wins and losses are counted exactly.

    A fill's fee is shared pro rata to its size. ``fee_quantity`` (the size the fee was charged on, in
    ``quantity``'s decimals) and ``fee_opened`` (units it opened then; 0 = what it opens here) override that for
    the lots :func:`continue_fifo` carries over, which stand for a part of an earlier fill.
    """
    books = np.asarray(book)
    if not len(quantity) == len(price) == len(fee) == len(books):
        raise ValueError(
            f"book, quantity, price and fee differ in length: {len(books)}, {len(quantity)}, {len(price)}, {len(fee)}"
        )
    book_start = _book_starts(books)
    signed = _summable(quantity.units)
    after = np.cumsum(signed)
    position_after = after - (after[book_start] - signed[book_start])
    position_before = position_after - signed

    size_before, size_after = np.abs(position_before), np.abs(position_after)
    crossing = ((position_before > 0) & (position_after < 0)) | ((position_before < 0) & (position_after > 0))
    opened = np.where(crossing, size_after, np.maximum(size_after - size_before, 0))
    closed = np.where(crossing, size_before, np.maximum(size_before - size_after, 0))
    opening, closing, matched = _overlaps(opened, closed, book_start)
    directions = np.where(position_after[opening] > 0, 1, -1).astype(np.int8)

    sizes = fee_quantity if fee_quantity is not None else FixedPoint(np.abs(quantity.units), quantity.decimals)
    if sizes.decimals != quantity.decimals or len(sizes) != len(quantity):
        raise ValueError("fee_quantity must have quantity's length and decimals")
    opened_basis = opened if fee_opened is None else np.where(fee_opened > 0, fee_opened, opened)
    pnl, uncertain = _float_pnl(opening, closing, matched, directions, quantity, price, fee, sizes)
    for trip in uncertain:
        entry, exit_ = int(opening[trip]), int(closing[trip])
        trip_units = (int(matched[trip]), int(opened_basis[entry]))
        pnl[trip] = float(_decimal_pnl(sizes, price, fee, entry, exit_, *trip_units, int(directions[trip])))
    return RoundTrips(opening.astype(np.int64), closing.astype(np.int64), matched, directions, pnl, opened)


@dataclass(frozen=True)
class OpenLots:
    """Lots left open, grouped by book and in the order they opened; each is (a part of) one opening fill.

    ``quantity`` is the signed quantity still open; ``price`` and ``fee`` are the opening fill's (its whole fee),
    ``fee_quantity`` its absolute size and ``fee_opened`` the quantity it opened (less than its size when it
    crossed flat): the fee share of a later match is ``fee x matched / fee_quantity``, as in one pass.
    """

    book: _IntArray
    quantity: FixedPoint
    price: FixedPoint
    fee: FixedPoint
    fee_quantity: FixedPoint
    fee_opened: FixedPoint

    def __len__(self) -> int:
        return len(self.book)

    @classmethod
    def none(cls) -> OpenLots:
        empty = FixedPoint(np.zeros(0, dtype=np.int64), 0)
        return cls(np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty)


@dataclass(frozen=True)
class Continued:
    """What :func:`continue_fifo` found: the round trips (fill positions index the combined sequence: each book's
    open lots, then its new fills), the book of every position, which positions are new fills (and which new
    fill: its index in the input, -1 for a lot), the lots left open after the new fills, and the decimals of the
    round trips' quantities."""

    trips: RoundTrips
    book: _IntArray
    fill: _IntArray
    lots: OpenLots
    decimals: int


def continue_fifo(
    lots: OpenLots, book: npt.ArrayLike, quantity: FixedPoint, price: FixedPoint, fee: FixedPoint
) -> Continued:
    """FIFO round trips of new fills (grouped by ``book``, in time order within it) after the open ``lots``.

    With no lots this is :func:`fifo_round_trips` over the fills. The round trips, PnLs included, are those one
    pass over the earlier fills and these would give for these fills, and the lots left open are those it would
    hold after them.
    """
    books = np.asarray(book, dtype=np.int64)
    n_lots = len(lots)
    combined_book = np.concatenate([lots.book, books])
    # each book's lots first (in their order), then its fills (in theirs): a stable sort on the book
    order = np.argsort(combined_book, kind="stable")
    # the quantities, the fee sizes and the opened quantities are compared unit for unit: one scale for all three
    quantities, sizes, opened_by = _common_decimals(
        FixedPoint.concat([lots.quantity, quantity]),
        FixedPoint.concat([lots.fee_quantity, FixedPoint(np.abs(quantity.units), quantity.decimals)]),
        FixedPoint.concat([lots.fee_opened, FixedPoint(np.zeros(len(quantity), dtype=np.int64), 0)]),
    )
    prices, fees = FixedPoint.concat([lots.price, price]), FixedPoint.concat([lots.fee, fee])
    quantities, prices, fees = quantities.take(order), prices.take(order), fees.take(order)
    sizes, opened_by = sizes.take(order), opened_by.take(order)
    ordered_book = combined_book[order]
    trips = fifo_round_trips(ordered_book, quantities, prices, fees, sizes, opened_by.units)

    still_open = np.array(trips.opened, copy=True)
    np.subtract.at(still_open, trips.opening, trips.quantity)
    keep = np.flatnonzero(np.asarray(still_open != 0, dtype=bool))
    direction = np.sign(_as_float(quantities.units[keep])).astype(np.int64)
    opened_here = np.asarray(opened_by.units[keep])
    left = OpenLots(
        ordered_book[keep],
        FixedPoint(still_open[keep] * direction, quantities.decimals),
        prices.take(keep),
        fees.take(keep),
        sizes.take(keep),
        FixedPoint(np.where(opened_here > 0, opened_here, trips.opened[keep]), quantities.decimals),
    )
    fill = np.where(order >= n_lots, order - n_lots, -1)
    return Continued(trips, ordered_book, fill, left, quantities.decimals)


def _common_decimals(*columns: FixedPoint) -> list[FixedPoint]:
    """The columns, each with the most decimals any of them has."""
    decimals = max((column.decimals for column in columns), default=0)
    return [column.with_decimals(decimals) for column in columns]


def _float_pnl(
    opening: _IntArray,
    closing: _IntArray,
    matched: npt.NDArray[Any],
    direction: npt.NDArray[np.int8],
    quantity: FixedPoint,
    price: FixedPoint,
    fee: FixedPoint,
    sizes: FixedPoint,
) -> tuple[_FloatArray, _IntArray]:
    """Every round trip's PnL in floats, and the round trips whose sign those floats cannot be trusted with."""
    size = _as_float(sizes.units)
    matched_units = _as_float(matched)
    matched_quantity = matched_units / 10.0**quantity.decimals
    prices, fees = price.to_float(), fee.to_float()
    entry, exit_ = prices[opening], prices[closing]
    entry_fee = fees[opening] * (matched_units / size[opening])
    exit_fee = fees[closing] * (matched_units / size[closing])
    values = (exit_ - entry) * matched_quantity * direction - (entry_fee + exit_fee)
    scale = (np.abs(entry) + np.abs(exit_)) * matched_quantity + np.abs(entry_fee) + np.abs(exit_fee)
    # An exit at the entry price without fees is exactly zero in floats too: no need to recompute those.
    flat = (price.units[opening] == price.units[closing]) & (fee.units[opening] == 0) & (fee.units[closing] == 0)
    return values, np.flatnonzero((np.abs(values) <= _SIGN_TOLERANCE * scale) & ~flat)


def _decimal_pnl(
    sizes: FixedPoint,
    price: FixedPoint,
    fee: FixedPoint,
    opening: int,
    closing: int,
    matched_units: int,
    opened_units: int,
    direction: int,
) -> Decimal:
    """One round trip's PnL with the Decimal operations, in the order, of a lot-by-lot FIFO over Decimals
    (``sizes``: the absolute quantity each fill's fee is charged on)."""
    matched = Decimal(f"{matched_units}E-{sizes.decimals}")
    opened = Decimal(f"{opened_units}E-{sizes.decimals}")
    lot_fee = fee.decimal(opening) * opened / sizes.decimal(opening)
    fees = lot_fee * matched / opened + fee.decimal(closing) * matched / sizes.decimal(closing)
    return (price.decimal(closing) - price.decimal(opening)) * matched * direction - fees


def _overlaps(
    opened: npt.NDArray[Any], closed: npt.NDArray[Any], book_start: _IntArray
) -> tuple[_IntArray, _IntArray, npt.NDArray[Any]]:
    """(opening fill, closing fill, quantity) of every overlap of the opened units with the closed units, FIFO.

    Opened units are numbered across all books; closed units of a book are numbered from the first unit that book
    opened, so they can only meet opened units of the same book (a book never closes more than it opened).
    """
    open_end = np.cumsum(opened)
    open_start = open_end - opened
    closed_through = np.cumsum(closed)
    close_end = closed_through + (open_start[book_start] - (closed_through[book_start] - closed[book_start]))
    close_start = close_end - closed

    openers, closers = np.flatnonzero(opened > 0), np.flatnonzero(closed > 0)
    opener_start, opener_end = open_start[openers], open_end[openers]
    first = np.searchsorted(opener_end, close_start[closers], side="right")
    stop = np.searchsorted(opener_start, close_end[closers], side="left")
    counts = stop - first
    closing = np.repeat(closers, counts)
    offsets = np.cumsum(counts) - counts
    opening = openers[np.arange(counts.sum()) - np.repeat(offsets - first, counts)]
    matched = np.minimum(open_end[opening], close_end[closing]) - np.maximum(open_start[opening], close_start[closing])
    return opening, closing, matched


def _book_starts(books: npt.NDArray[Any]) -> _IntArray:
    """For every fill, the position of the first fill of its book; refuses a book split in several runs."""
    size = len(books)
    is_start = np.ones(size, dtype=bool)
    is_start[1:] = books[1:] != books[:-1]
    if np.unique(books[is_start]).size != int(is_start.sum()):
        raise ValueError("fills must be grouped by book (a book appears in more than one run)")
    return np.maximum.accumulate(np.where(is_start, np.arange(size), 0))


def _summable(units: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The units, as Python ints if their running sums could leave int64."""
    if units.dtype != object and float(np.abs(units).astype(np.float64).sum()) >= _INT64_SUM_LIMIT:
        return units.astype(object)
    return units


def _as_float(units: npt.NDArray[Any]) -> _FloatArray:
    if units.dtype == object:
        return np.array([float(int(unit)) for unit in units], dtype=np.float64)
    return units.astype(np.float64)


def _decimals_needed(number: Decimal) -> int:
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros)) if any(digits) else 0


def _units(number: Decimal, decimals: int) -> int:
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    coefficient = int("".join(map(str, digits)))
    shift = exponent + decimals
    units: int = coefficient * pow(10, shift) if shift >= 0 else coefficient // pow(10, -shift)
    return -units if sign else units


def _pack(units: list[int]) -> npt.NDArray[Any]:
    if all(-_INT64_UNITS_LIMIT < unit < _INT64_UNITS_LIMIT for unit in units):
        return np.array(units, dtype=np.int64)
    packed = np.empty(len(units), dtype=object)
    packed[:] = units
    return packed


def _decimal128_units(array: pa.Array) -> tuple[npt.NDArray[Any], int]:
    """The units of a decimal128 array: int64 with the fewest decimals that hold every value, else Python ints.

    A value is ``high * 2**64 + low`` units of ``10**-scale``. With ``decimals`` decimals its units are the nearest
    integer u to (a float estimate of) value / 10**(scale - decimals), and they are exact iff
    ``u * 10**(scale - decimals)`` equals the value; both differ by far less than 2**64, so comparing the low 64
    bits (int64 arithmetic wraps around) decides it.
    """
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64), 0
    words = np.frombuffer(array.buffers()[1], dtype=np.int64)[2 * array.offset : 2 * (array.offset + len(array))]
    low, high = words[0::2].copy(), words[1::2].copy()
    estimate = high.astype(np.float64) * 2.0**64 + low.view(np.uint64).astype(np.float64)
    scale = array.type.scale

    def exact_units(decimals: int, values: slice = slice(None)) -> _IntArray | None:
        divisor = 10 ** (scale - decimals)
        units = np.rint(estimate[values] / float(divisor))
        if units.size and float(np.max(np.abs(units))) >= _INT64_UNITS_LIMIT:
            return None
        integers = units.astype(np.int64)
        return integers if np.array_equal(integers * np.int64(divisor), low[values]) else None

    # The decimals a sample needs are a lower bound for the column, and usually all it needs.
    floor = next((d for d in range(scale + 1) if exact_units(d, slice(0, 1024)) is not None), scale)
    units = exact_units(floor)
    if units is not None:
        return units, floor
    low_bound, high_bound = floor + 1, scale
    while low_bound < high_bound:  # exactness is monotone in the number of decimals, until the units overflow
        middle = (low_bound + high_bound) // 2
        if exact_units(middle) is not None:
            high_bound = middle
        else:
            low_bound = middle + 1
    units = exact_units(low_bound) if low_bound <= scale else None
    if units is not None:
        return units, low_bound
    # Too many digits for int64 units: Python ints at the column's own scale, straight from the two words.
    return high.astype(object) * (1 << 64) + low.view(np.uint64).astype(object), scale
