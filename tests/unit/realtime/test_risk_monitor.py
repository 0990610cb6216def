"""The risk monitor's pure parts: a scope's figures (equity, leverage, aggregation) and the limits they breach."""

from __future__ import annotations

from decimal import Decimal

import pytest

from realtime.risk.monitor import Breach, Exposure, breaches

D = Decimal
ZERO = D(0)


def exposure(cash: str = "1000", gross: str = "0", net: str = "0", start_of_day: str | None = None) -> Exposure:
    return Exposure(
        cash=D(cash), gross=D(gross), net=D(net), start_of_day=None if start_of_day is None else D(start_of_day)
    )


def metrics(found: list[Breach]) -> list[str]:
    return [b.metric for b in found]


# --- Exposure ----------------------------------------------------------------------------------------------


def test_equity_is_quote_cash_plus_net_marked_positions() -> None:
    assert exposure(cash="1000", gross="700", net="-300").equity == D("700")
    assert exposure(cash="1000", gross="500", net="500").equity == D("1500")


def test_leverage_is_gross_over_equity() -> None:
    assert exposure(cash="1000", gross="3000", net="1000").leverage == D("1.5")
    assert exposure(cash="1000").leverage == 0


def test_leverage_without_positive_equity_is_zero_when_flat_and_infinite_when_exposed() -> None:
    assert exposure(cash="0").leverage == 0
    assert exposure(cash="-50", gross="0").leverage == 0
    assert exposure(cash="-500", gross="400", net="400").leverage == D("Infinity")
    assert exposure(cash="0", gross="10", net="-10").leverage == D("Infinity")


def test_add_sums_every_figure_and_counts_a_missing_start_of_day_as_unchanged() -> None:
    total = Exposure()
    total.add(Exposure(D("100"), D("50"), D("-50"), D("5"), D("1"), D("120")))
    total.add(Exposure(D("200"), D("30"), D("30"), D("-2"), D("4"), None))
    total.add(Exposure(D("10"), D("0"), D("0"), D("0"), D("0"), D("15")))
    assert (total.cash, total.gross, total.net) == (D("310"), D("80"), D("-20"))
    assert (total.unrealized, total.realized) == (D("3"), D("5"))
    assert total.start_of_day == D("365")  # 120 + (200 + 30: the second one's equity) + 15
    assert total.equity == D("290")


def test_add_of_scopes_without_start_of_day_starts_the_day_at_their_equity() -> None:
    total = Exposure()
    total.add(exposure(cash="100"))
    assert total.start_of_day == D("100") and total.start_of_day - total.equity == 0


# --- breaches ----------------------------------------------------------------------------------------------


def test_no_limits_means_no_breaches_whatever_the_figures() -> None:
    x = exposure(cash="-10", gross="1000000", net="1000000", start_of_day="999999")
    assert breaches("account", "a1", "u1", x, D("999999"), {}) == []


@pytest.mark.parametrize("gross", ["999", "1000"])
def test_gross_exposure_at_or_under_limit_passes(gross: str) -> None:
    x = exposure(cash="5000", gross=gross, net=gross)
    assert breaches("account", "a1", "u1", x, ZERO, {"max_gross_exposure": D("1000")}) == []


def test_gross_exposure_over_limit_is_a_breach_with_value_and_limit() -> None:
    x = exposure(cash="5000", gross="1000.01", net="1000.01")
    assert breaches("account", "a1", "u1", x, ZERO, {"max_gross_exposure": D("1000")}) == [
        Breach("account", "a1", "u1", "gross_exposure", D("1000.01"), D("1000"))
    ]


@pytest.mark.parametrize("gross", ["2000", "3000"])
def test_leverage_at_or_under_limit_passes(gross: str) -> None:
    x = exposure(cash="1000", gross=gross)
    assert breaches("account", "a1", "u1", x, ZERO, {"max_leverage": D("3")}) == []


def test_leverage_over_limit_is_a_breach() -> None:
    x = exposure(cash="1000", gross="3001")
    (found,) = breaches("account", "a1", "u1", x, ZERO, {"max_leverage": D("3")})
    assert found.metric == "leverage" and found.value == D("3.001") and found.limit == D("3")


def test_exposure_with_no_equity_breaches_any_leverage_limit() -> None:
    x = exposure(cash="-100", gross="50", net="50")
    assert metrics(breaches("user", "u1", "u1", x, ZERO, {"max_leverage": D("100")})) == ["leverage"]


@pytest.mark.parametrize("equity", ["900", "950", "1200"])
def test_drawdown_at_or_under_limit_passes(equity: str) -> None:
    x = exposure(cash=equity)
    assert breaches("account", "a1", "u1", x, D("1000"), {"max_drawdown_pct": D("10")}) == []


def test_drawdown_over_limit_is_a_breach_in_percent_of_peak() -> None:
    x = exposure(cash="850")
    (found,) = breaches("account", "a1", "u1", x, D("1000"), {"max_drawdown_pct": D("10")})
    assert found.metric == "drawdown_pct" and found.value == D("15") and found.limit == D("10")


def test_drawdown_is_not_measured_without_a_positive_peak() -> None:
    x = exposure(cash="-100")
    assert breaches("account", "a1", "u1", x, D("0"), {"max_drawdown_pct": D("1")}) == []


@pytest.mark.parametrize("equity", ["950", "1000", "1100"])
def test_daily_loss_at_or_under_limit_passes(equity: str) -> None:
    x = exposure(cash=equity, start_of_day="1000")
    assert breaches("account", "a1", "u1", x, ZERO, {"daily_loss_limit": D("50")}) == []


def test_daily_loss_over_limit_is_a_breach_against_start_of_day_equity() -> None:
    x = exposure(cash="700", gross="200", net="249.99", start_of_day="1000")
    (found,) = breaches("account", "a1", "u1", x, ZERO, {"daily_loss_limit": D("50")})
    assert found.metric == "daily_loss" and found.value == D("50.01") and found.limit == D("50")


def test_daily_loss_is_not_measured_without_start_of_day_equity() -> None:
    x = exposure(cash="1")
    assert breaches("account", "a1", "u1", x, ZERO, {"daily_loss_limit": D("0")}) == []


def test_every_limit_crossed_is_reported_once() -> None:
    x = exposure(cash="100", gross="2000", net="-50", start_of_day="1000")
    limits = {
        "max_gross_exposure": D("1000"),
        "max_leverage": D("5"),
        "max_drawdown_pct": D("20"),
        "daily_loss_limit": D("100"),
        "auto_kill_switch": D("1"),
    }
    found = breaches("fund", "", "", x, D("1000"), limits)
    assert metrics(found) == ["gross_exposure", "leverage", "drawdown_pct", "daily_loss"]
    assert len({b.key for b in found}) == 4


def test_breach_message_names_scope_id_metric_value_and_limit() -> None:
    b = Breach("account", "acc-7", "u1", "gross_exposure", D("1000.5"), D("1000"))
    message = b.message()
    assert "account acc-7" in message and "gross_exposure" in message
    assert "1000.5000" in message and "1000" in message
    assert b.key == ("account", "acc-7", "gross_exposure")


def test_breach_message_of_the_fund_scope_calls_it_the_fund() -> None:
    message = Breach("fund", "", "", "drawdown_pct", D("12.5"), D("10")).message()
    assert "the fund" in message and "drawdown_pct" in message


def test_breach_message_of_infinite_leverage_is_readable() -> None:
    message = Breach("user", "u9", "u9", "leverage", D("Infinity"), D("3")).message()
    assert "user u9" in message and "leverage" in message and "Infinity" in message


def test_user_daily_loss_is_not_hidden_by_an_account_without_start_of_day() -> None:
    user = Exposure()
    user.add(exposure(cash="900", start_of_day="1000"))  # lost 100 today
    user.add(exposure(cash="5000"))  # linked today: no snapshot yet, so no start-of-day
    assert metrics(breaches("user", "u1", "u1", user, ZERO, {"daily_loss_limit": D("50")})) == ["daily_loss"]
