"""warehouse.metrics against small hand-computed examples, independent VaR/CVaR computations and bad input.

The comparisons with quantstats and empyrical live in ``test_metrics_vs_libraries.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from warehouse.metrics import (
    PERFORMANCE_KEYS,
    VAR_METHODS,
    conditional_value_at_risk,
    performance,
    value_at_risk,
    var_table,
)

EXACT = 1e-12

# --- performance: hand-computed examples -------------------------------------------------------------------------


def test_gain_loss_gain_total_return_and_cagr_follow_compounded_nav() -> None:
    # NAV 1.1 -> 0.88 -> 0.924; three periods at six a year are half a year, so CAGR = 0.924^2 - 1.
    result = performance([0.10, -0.20, 0.05], periods_per_year=6)

    assert result["periods"] == 3
    assert result["total_return"] == pytest.approx(-0.076, abs=EXACT)
    assert result["cagr"] == pytest.approx(0.924**2 - 1, abs=EXACT)
    assert performance([0.10, -0.20, 0.05], periods_per_year=3)["cagr"] == pytest.approx(-0.076, abs=EXACT)


def test_drawdown_never_recovered_runs_from_peak_to_last_period() -> None:
    # Peak 1.1 after period 1, trough 0.88, still 0.924 at the end: -20%, two periods from the peak to the end.
    result = performance([0.10, -0.20, 0.05], periods_per_year=3)

    assert result["max_drawdown"] == pytest.approx(-0.20, abs=EXACT)
    assert result["max_drawdown_duration"] == 2
    assert result["calmar"] == pytest.approx(-0.076 / 0.20, abs=EXACT)


def test_first_period_loss_counts_as_drawdown_from_starting_capital() -> None:
    # NAV 0.9, 0.945, 1.0395: the starting 1.0 is the peak, recovered at period 3.
    result = performance([-0.10, 0.05, 0.10])

    assert result["max_drawdown"] == pytest.approx(-0.10, abs=EXACT)
    assert result["max_drawdown_duration"] == 3


def test_longer_recovered_drawdown_beats_shorter_open_one_for_duration() -> None:
    # NAV 1.0 -> 0.5 -> 0.6 -> 1.02 (recovered after 3 periods from the start) -> 0.918 (open, 1 period).
    result = performance([-0.5, 0.2, 0.7, -0.1])

    assert result["max_drawdown"] == pytest.approx(-0.5, abs=EXACT)
    assert result["max_drawdown_duration"] == 3


def test_nav_back_exactly_at_peak_counts_as_recovered() -> None:
    # 1.0 -> 0.5 -> 1.0 (exactly back: recovered after 2 periods) -> 1.5 -> 1.2 (open, 1 period).
    assert performance([-0.5, 1.0, 0.5, -0.2])["max_drawdown_duration"] == 2


def test_volatility_sharpe_and_sortino_match_hand_arithmetic() -> None:
    # mean 0.01; deviations .01 -.02 .03 -.02 -> sample variance 18e-4 / 3 = 6e-4; 4 periods a year -> sqrt(4) = 2.
    result = performance([0.02, -0.01, 0.04, -0.01], periods_per_year=4)

    assert result["volatility"] == pytest.approx(math.sqrt(6e-4) * 2, abs=EXACT)
    assert result["sharpe"] == pytest.approx(0.01 / math.sqrt(6e-4) * 2, abs=EXACT)
    # Downside deviation over ALL four periods: sqrt((1e-4 + 1e-4) / 4); over the two losers only it would be 0.01.
    assert result["sortino"] == pytest.approx(0.01 / math.sqrt(2e-4 / 4) * 2, abs=EXACT)
    assert result["sortino"] != pytest.approx(0.01 / 0.01 * 2, abs=1e-3)


def test_annual_risk_free_is_deannualised_geometrically() -> None:
    # rf chosen so that (1 + rf)^(1/4) - 1 = 0.005 exactly; excess returns .015 -.015 .035 -.015, mean 0.005.
    annual_rf = 1.005**4 - 1
    result = performance([0.02, -0.01, 0.04, -0.01], periods_per_year=4, risk_free=annual_rf)

    assert result["sharpe"] == pytest.approx(0.005 / math.sqrt(6e-4) * 2, abs=EXACT)
    assert result["sortino"] == pytest.approx(0.005 / math.sqrt(2 * 0.015**2 / 4) * 2, abs=EXACT)
    # An arithmetic rf / P (0.00503762...) would give a visibly different Sharpe.
    assert result["sharpe"] != pytest.approx((0.01 - annual_rf / 4) / math.sqrt(6e-4) * 2, abs=1e-6)
    # The risk-free rate touches only the two excess-return ratios.
    no_rf = performance([0.02, -0.01, 0.04, -0.01], periods_per_year=4)
    assert result["cagr"] == no_rf["cagr"]
    assert result["expectancy"] == no_rf["expectancy"]


def test_win_loss_statistics_count_active_periods_only() -> None:
    result = performance([0.02, 0.0, -0.01, 0.04, -0.01, 0.0])

    assert result["win_rate"] == pytest.approx(2 / 4, abs=EXACT)
    assert result["exposure"] == pytest.approx(4 / 6, abs=EXACT)
    assert result["profit_factor"] == pytest.approx(0.06 / 0.02, abs=EXACT)
    assert result["expectancy"] == pytest.approx(0.04 / 6, abs=EXACT)
    assert result["avg_win"] == pytest.approx(0.03, abs=EXACT)
    assert result["avg_loss"] == pytest.approx(-0.01, abs=EXACT)
    assert (result["best"], result["worst"]) == (0.04, -0.01)


def test_one_jump_in_four_has_skew_two_and_excess_kurtosis_four() -> None:
    # For (0, 0, 0, x) the bias-corrected estimators are exactly G1 = 2 and G2 = 4, whatever x > 0.
    result = performance([0.0, 0.0, 0.0, 0.01])

    assert result["skew"] == pytest.approx(2.0, abs=1e-9)
    assert result["kurtosis"] == pytest.approx(4.0, abs=1e-9)


# --- performance: edge cases --------------------------------------------------------------------------------------


def test_empty_returns_give_zero_periods_and_nan_everywhere_else() -> None:
    result = performance([])

    assert list(result) == list(PERFORMANCE_KEYS)
    assert result["periods"] == 0
    assert all(math.isnan(value) for key, value in result.items() if key != "periods")


def test_constant_gains_give_nan_ratios_and_infinite_profit_factor() -> None:
    result = performance([0.01] * 5)

    assert result["volatility"] == 0.0
    assert math.isnan(result["sharpe"])
    assert math.isnan(result["sortino"])
    assert math.isnan(result["calmar"])
    assert result["max_drawdown"] == 0.0 and result["max_drawdown_duration"] == 0
    assert result["profit_factor"] == math.inf
    assert math.isnan(result["avg_loss"])
    assert math.isnan(result["skew"]) and math.isnan(result["kurtosis"])


def test_all_flat_periods_leave_win_rate_and_profit_factor_undefined() -> None:
    result = performance([0.0, 0.0, 0.0])

    assert math.isnan(result["win_rate"])
    assert math.isnan(result["profit_factor"])
    assert result["exposure"] == 0.0


def test_only_losses_give_zero_profit_factor_and_zero_win_rate() -> None:
    result = performance([-0.01, -0.02])

    assert result["profit_factor"] == 0.0
    assert result["win_rate"] == 0.0


def test_single_period_has_no_sample_dispersion() -> None:
    result = performance([0.03])

    assert result["total_return"] == pytest.approx(0.03, abs=EXACT)
    assert math.isnan(result["volatility"])
    assert math.isnan(result["sharpe"])


def test_total_loss_gives_minus_one_growth_and_full_drawdown() -> None:
    result = performance([-1.0, 0.5])

    assert result["total_return"] == -1.0
    assert result["cagr"] == -1.0
    assert result["max_drawdown"] == -1.0
    assert result["max_drawdown_duration"] == 2


class _ToNumpyOnly:
    """Stands in for a polars Series: the only thing the metrics may rely on is ``to_numpy()``."""

    def __init__(self, values: list[float]) -> None:
        self._values = values

    def to_numpy(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array(self._values, dtype=np.float64)


@pytest.mark.parametrize(
    "container",
    [
        tuple,
        np.array,
        lambda v: pd.Series(v, index=pd.date_range("2024-01-01", periods=len(v), freq="D")),
        _ToNumpyOnly,
        lambda v: (x for x in v),
    ],
    ids=["tuple", "numpy", "pandas", "to_numpy", "generator"],
)
def test_any_supported_container_gives_the_list_result(container: Any) -> None:
    values = [0.02, -0.01, 0.04, -0.01, 0.0]
    expected = performance(values)

    assert performance(container(values)) == expected
    assert value_at_risk(container(values), 0.8, "cornish_fisher") == value_at_risk(values, 0.8, "cornish_fisher")


# --- VaR / CVaR ---------------------------------------------------------------------------------------------------


def test_historical_var_interpolates_linearly_between_order_statistics() -> None:
    returns = [0.03, -0.05, 0.0, -0.03, 0.01]
    # Sorted -0.05 -0.03 0 0.01 0.03; the 20% quantile sits at position 4 * 0.2 = 0.8: -0.05 + 0.8 * 0.02.
    assert value_at_risk(returns, level=0.8) == pytest.approx(-0.034, abs=EXACT)
    assert conditional_value_at_risk(returns, level=0.8) == pytest.approx(-0.05, abs=EXACT)
    # 25% lands on -0.03 itself, which is "at or below" and so in the tail.
    assert conditional_value_at_risk(returns, level=0.75) == pytest.approx(-0.04, abs=EXACT)


def test_historical_cvar_includes_every_tie_at_the_var() -> None:
    returns = [-0.10, -0.02, -0.02, -0.02] + [0.01] * 17
    # 21 points, 5% quantile at position 1.0 -> -0.02; all three -0.02 are in the tail.
    assert value_at_risk(returns) == pytest.approx(-0.02, abs=EXACT)
    assert conditional_value_at_risk(returns) == pytest.approx((-0.10 - 3 * 0.02) / 4, abs=EXACT)


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_gaussian_var_and_cvar_match_scipy_normal(btc_daily_returns: pd.Series, level: float) -> None:
    r = btc_daily_returns.to_numpy()
    mean, std, alpha = r.mean(), r.std(ddof=1), 1 - level
    expected_var = stats.norm.ppf(alpha, loc=mean, scale=std)
    expected_cvar = integrate.quad(lambda u: stats.norm.ppf(u, loc=mean, scale=std), 0, alpha)[0] / alpha

    assert value_at_risk(r, level, "gaussian") == pytest.approx(expected_var, abs=1e-12)
    assert conditional_value_at_risk(r, level, "gaussian") == pytest.approx(expected_cvar, abs=1e-9)


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_cornish_fisher_var_and_cvar_match_numeric_integration(btc_hourly_returns: pd.Series, level: float) -> None:
    r = btc_hourly_returns.to_numpy()
    mean, std, alpha = r.mean(), r.std(ddof=1), 1 - level
    s, k = stats.skew(r, bias=False), stats.kurtosis(r, fisher=True, bias=False)

    def z_cf(z: float) -> float:
        return float(z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36)

    z_alpha = stats.norm.ppf(alpha)
    tail_mean_z = integrate.quad(lambda z: z_cf(z) * stats.norm.pdf(z), -np.inf, z_alpha)[0] / alpha

    assert value_at_risk(r, level, "cornish_fisher") == pytest.approx(mean + z_cf(z_alpha) * std, abs=1e-12)
    assert conditional_value_at_risk(r, level, "cornish_fisher") == pytest.approx(mean + tail_mean_z * std, abs=1e-9)
    # Fat tails make the corrected figures differ from the plain normal ones.
    assert value_at_risk(r, level, "cornish_fisher") != pytest.approx(value_at_risk(r, level, "gaussian"), abs=1e-5)


@pytest.mark.parametrize("method", VAR_METHODS)
@pytest.mark.parametrize("series", ["btc_daily_returns", "btc_hourly_returns"])
def test_deeper_level_and_shortfall_are_never_less_severe(
    method: str, series: str, request: pytest.FixtureRequest
) -> None:
    r = request.getfixturevalue(series)
    var95, var99 = value_at_risk(r, 0.95, method), value_at_risk(r, 0.99, method)

    assert var99 <= var95 < 0
    assert conditional_value_at_risk(r, 0.95, method) <= var95
    assert conditional_value_at_risk(r, 0.99, method) <= var99


def test_var_table_labels_every_method_and_level(btc_daily_returns: pd.Series) -> None:
    rows = var_table(btc_daily_returns, levels=(0.95, 0.99))

    assert [(row["method"], row["level"]) for row in rows] == [(m, lv) for m in VAR_METHODS for lv in (0.95, 0.99)]
    for row in rows:
        assert row["var"] == value_at_risk(btc_daily_returns, row["level"], row["method"])
        assert row["cvar"] == conditional_value_at_risk(btc_daily_returns, row["level"], row["method"])


def test_var_of_empty_returns_is_nan() -> None:
    assert math.isnan(value_at_risk([]))
    assert math.isnan(conditional_value_at_risk([], method="gaussian"))


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        ([0.01, float("nan"), 0.02], r"1 NaN .* position 1"),
        ([0.01, 0.02, float("inf")], r"1 infinite .* position 2"),
        ([0.01, -1.5], r"below -100%"),
        (["a", "b"], r"must be numbers"),
        ([[0.01, 0.02], [0.03, 0.04]], r"one-dimensional"),
    ],
    ids=["nan", "inf", "below-minus-one", "text", "two-dimensional"],
)
def test_bad_returns_raise_value_error_naming_the_problem(returns: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        performance(returns)
    with pytest.raises(ValueError, match=message):
        value_at_risk(returns)


def test_pandas_gap_is_refused_not_skipped() -> None:
    with pytest.raises(ValueError, match="NaN"):
        performance(pd.Series([0.01, None, 0.02], dtype="float64"))


@pytest.mark.parametrize("periods_per_year", [0, -365, 365.0, True])
def test_non_positive_integer_periods_per_year_is_refused(periods_per_year: Any) -> None:
    with pytest.raises(ValueError, match="periods_per_year must be a positive integer"):
        performance([0.01, 0.02], periods_per_year=periods_per_year)


@pytest.mark.parametrize("risk_free", [float("nan"), -1.0, float("inf")])
def test_impossible_risk_free_rate_is_refused(risk_free: float) -> None:
    with pytest.raises(ValueError, match="risk_free"):
        performance([0.01, 0.02], risk_free=risk_free)


@pytest.mark.parametrize("level", [0.0, 1.0, 95, -0.5])
def test_level_outside_zero_one_is_refused(level: float) -> None:
    with pytest.raises(ValueError, match="level must be a confidence between 0 and 1"):
        value_at_risk([0.01, -0.02], level=level)
    with pytest.raises(ValueError, match="level must be a confidence between 0 and 1"):
        var_table([0.01, -0.02], levels=(0.95, level))


def test_unknown_var_method_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown VaR method 'parametric'; expected one of: historical, gaussian"):
        conditional_value_at_risk([0.01, -0.02], method="parametric")
