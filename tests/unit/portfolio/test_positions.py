"""Position arithmetic from fills: quantity, average entry, realized PnL, fees; total PnL is conserved."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from realtime.portfolio.positions import ZERO, Position, apply_fill, fee_in_quote

D = Decimal


def fills(*steps: tuple[str, str, str], fee: str = "0") -> Position:
    position = Position()
    for side, quantity, price in steps:
        position = apply_fill(position, side, D(quantity), D(price), D(fee))
    return position


def test_first_buy_opens_long_at_the_fill_price() -> None:
    position = fills(("buy", "2", "100"))
    assert position == Position(D("2"), D("100"), ZERO, ZERO)


def test_first_sell_opens_short_at_the_fill_price() -> None:
    position = fills(("sell", "1.5", "100"))
    assert position.quantity == D("-1.5") and position.avg_entry_price == D("100")
    assert position.realized_pnl == 0


def test_adding_to_a_long_moves_average_entry_to_the_weighted_mean() -> None:
    position = fills(("buy", "1", "100"), ("buy", "3", "120"))
    assert position.quantity == D("4")
    assert position.avg_entry_price == D("115")
    assert position.realized_pnl == 0


def test_adding_to_a_short_moves_average_entry_to_the_weighted_mean() -> None:
    position = fills(("sell", "2", "100"), ("sell", "2", "90"))
    assert position.quantity == D("-4") and position.avg_entry_price == D("95")


def test_partial_reduce_of_long_realizes_gain_and_keeps_average_entry() -> None:
    position = fills(("buy", "4", "100"), ("sell", "1", "130"))
    assert position.quantity == D("3")
    assert position.avg_entry_price == D("100")
    assert position.realized_pnl == D("30")


def test_partial_reduce_of_long_at_a_loss_realizes_negative_pnl() -> None:
    position = fills(("buy", "4", "100"), ("sell", "2", "90"))
    assert position.quantity == D("2") and position.avg_entry_price == D("100")
    assert position.realized_pnl == D("-20")


def test_closing_to_flat_clears_average_entry_and_keeps_realized() -> None:
    position = fills(("buy", "2", "100"), ("sell", "2", "110"))
    assert position.quantity == 0
    assert position.avg_entry_price is None
    assert position.realized_pnl == D("20")
    assert position.unrealized_pnl(D("500")) == 0


def test_reopening_after_flat_starts_a_fresh_average_entry() -> None:
    position = fills(("buy", "2", "100"), ("sell", "2", "110"), ("buy", "1", "200"))
    assert position.quantity == D("1") and position.avg_entry_price == D("200")
    assert position.realized_pnl == D("20")


def test_flip_long_to_short_realizes_closed_part_and_opens_rest_at_fill_price() -> None:
    position = fills(("buy", "2", "100"), ("sell", "5", "90"))
    assert position.quantity == D("-3")
    assert position.avg_entry_price == D("90")
    assert position.realized_pnl == D("-20")


def test_flip_short_to_long_realizes_closed_part_and_opens_rest_at_fill_price() -> None:
    position = fills(("sell", "2", "100"), ("buy", "3", "80"))
    assert position.quantity == D("1")
    assert position.avg_entry_price == D("80")
    assert position.realized_pnl == D("40")


def test_short_reduced_below_entry_realizes_gain() -> None:
    position = fills(("sell", "3", "100"), ("buy", "1", "90"))
    assert position.quantity == D("-2") and position.avg_entry_price == D("100")
    assert position.realized_pnl == D("10")


def test_short_reduced_above_entry_realizes_loss() -> None:
    position = fills(("sell", "3", "100"), ("buy", "2", "110"))
    assert position.realized_pnl == D("-20")


def test_unrealized_pnl_has_the_sign_of_the_position() -> None:
    long = fills(("buy", "2", "100"))
    short = fills(("sell", "2", "100"))
    assert long.unrealized_pnl(D("110")) == D("20")
    assert short.unrealized_pnl(D("110")) == D("-20")
    assert short.unrealized_pnl(D("95")) == D("10")


def test_unrealized_pnl_without_a_mark_is_zero() -> None:
    assert fills(("buy", "2", "100")).unrealized_pnl(None) == 0
    assert Position().unrealized_pnl(D("100")) == 0


def test_fees_accumulate_across_opening_reducing_and_flipping_fills() -> None:
    position = fills(("buy", "2", "100"), ("buy", "1", "100"), ("sell", "5", "100"), fee="0.25")
    assert position.fees == D("0.75")
    assert position.realized_pnl == 0, "fees are kept apart from realized PnL"


def test_fee_in_base_asset_is_valued_at_the_fill_price() -> None:
    assert fee_in_quote(D("0.001"), "BTC", D("50000"), "BTC") == D("50.000")


def test_fee_in_quote_or_unknown_asset_is_taken_as_is() -> None:
    assert fee_in_quote(D("1.5"), "USDT", D("50000"), "BTC") == D("1.5")
    assert fee_in_quote(D("1.5"), None, D("50000"), "BTC") == D("1.5")
    assert fee_in_quote(D("1.5"), "BTC", D("50000"), None) == D("1.5")


def test_fee_charged_in_base_asset_accumulates_in_quote_on_the_position() -> None:
    position = Position()
    for price in ("100", "200"):
        fee = fee_in_quote(D("0.01"), "ETH", D(price), "ETH")
        position = apply_fill(position, "buy", D("1"), D(price), fee)
    assert position.fees == D("3")


@pytest.mark.parametrize(
    ("quantity", "price"),
    [("0", "100"), ("-1", "100"), ("1", "0"), ("1", "-100")],
)
def test_fill_with_non_positive_quantity_or_price_is_refused(quantity: str, price: str) -> None:
    held = fills(("buy", "1", "100"))
    with pytest.raises(ValueError):
        apply_fill(held, "sell", D(quantity), D(price), ZERO)


def test_random_fills_conserve_quantity_fees_and_total_pnl_at_any_mark() -> None:
    rng = random.Random(2024)
    for _ in range(200):
        position = Position()
        net = ZERO
        fees = ZERO
        flows: list[tuple[Decimal, Decimal]] = []  # (signed quantity, price)
        for _ in range(rng.randint(1, 40)):
            side = rng.choice(["buy", "sell"])
            quantity = D(rng.randint(1, 5000)) / 1000
            if position.quantity != 0 and rng.random() < 0.2:  # close exactly to flat now and then
                side, quantity = ("sell" if position.quantity > 0 else "buy"), abs(position.quantity)
            price = D(rng.randint(1000, 200000)) / 100
            fee = D(rng.randint(0, 100)) / 10000
            position = apply_fill(position, side, quantity, price, fee)
            signed = quantity if side == "buy" else -quantity
            net += signed
            fees += fee
            flows.append((signed, price))

            assert position.quantity == net
            assert position.fees == fees
            assert (position.avg_entry_price is None) == (position.quantity == 0)
            for mark in (price, D(rng.randint(1000, 200000)) / 100):
                total = position.realized_pnl + position.unrealized_pnl(mark)
                expected = sum((q * (mark - p) for q, p in flows), ZERO)
                # the only inexactness is the division in the weighted average entry (28 significant digits)
                assert abs(total - expected) <= D("1e-12"), (flows, mark, total, expected)
