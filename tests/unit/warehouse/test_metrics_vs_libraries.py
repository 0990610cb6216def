"""warehouse.metrics against quantstats and empyrical-reloaded on the same real return series.

Where the definitions agree the figures must match to 1e-9, with the libraries given our annualisation factor and
risk-free rate. Where they differ (docs/metrics.md, "Where we differ"), each test shows the difference exists and
that our figure is the documented formula computed here independently. Nothing here downloads anything: only
quantstats.stats functions that take the series they are given are called.
"""

from __future__ import annotations

import math
import warnings

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
import quantstats as qs

from warehouse.metrics import conditional_value_at_risk, performance, value_at_risk

TOLERANCE = 1e-9
SERIES = [("btc_daily_returns", 365), ("btc_hourly_returns", 8_760)]
SERIES_IDS = ["daily-365", "hourly-8760"]
LEVELS = [0.95, 0.99]


def _rf_per_period(annual_rf: float, periods_per_year: int) -> float:
    return float((1 + annual_rf) ** (1 / periods_per_year) - 1)


@pytest.fixture(params=SERIES, ids=SERIES_IDS)
def series_and_periods(request: pytest.FixtureRequest) -> tuple[pd.Series, int]:
    name, periods_per_year = request.param
    return request.getfixturevalue(name), periods_per_year


# --- agreement ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("annual_rf", [0.0, 0.04])
def test_sharpe_and_sortino_agree_with_both_libraries(
    series_and_periods: tuple[pd.Series, int], annual_rf: float
) -> None:
    r, p = series_and_periods
    ours = performance(r, periods_per_year=p, risk_free=annual_rf)
    rf_p = _rf_per_period(annual_rf, p)

    assert ours["sharpe"] == pytest.approx(qs.stats.sharpe(r, rf=annual_rf, periods=p), abs=TOLERANCE)
    assert ours["sortino"] == pytest.approx(qs.stats.sortino(r, rf=annual_rf, periods=p), abs=TOLERANCE)
    assert ours["sharpe"] == pytest.approx(ep.sharpe_ratio(r, risk_free=rf_p, annualization=p), abs=TOLERANCE)
    assert ours["sortino"] == pytest.approx(ep.sortino_ratio(r, required_return=rf_p, annualization=p), abs=TOLERANCE)


def test_growth_volatility_and_drawdown_agree_with_both_libraries(series_and_periods: tuple[pd.Series, int]) -> None:
    r, p = series_and_periods
    ours = performance(r, periods_per_year=p)

    assert ours["cagr"] == pytest.approx(qs.stats.cagr(r, periods=p), abs=TOLERANCE)
    assert ours["cagr"] == pytest.approx(ep.annual_return(r, annualization=p), abs=TOLERANCE)
    assert ours["total_return"] == pytest.approx(ep.cum_returns_final(r), abs=TOLERANCE)
    assert ours["volatility"] == pytest.approx(qs.stats.volatility(r, periods=p), abs=TOLERANCE)
    assert ours["volatility"] == pytest.approx(ep.annual_volatility(r, annualization=p), abs=TOLERANCE)
    assert ours["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(r), abs=TOLERANCE)
    assert ours["max_drawdown"] == pytest.approx(ep.max_drawdown(r), abs=TOLERANCE)
    assert ours["calmar"] == pytest.approx(qs.stats.calmar(r, periods=p), abs=TOLERANCE)
    assert ours["calmar"] == pytest.approx(ep.calmar_ratio(r, annualization=p), abs=TOLERANCE)


def test_first_period_loss_drawdown_agrees_with_both_libraries() -> None:
    r = pd.Series([-0.10, 0.05, 0.10, -0.02], index=pd.date_range("2024-01-01", periods=4, freq="D"))

    assert performance(r)["max_drawdown"] == pytest.approx(-0.10, abs=TOLERANCE)
    assert qs.stats.max_drawdown(r) == pytest.approx(-0.10, abs=TOLERANCE)
    assert ep.max_drawdown(r) == pytest.approx(-0.10, abs=TOLERANCE)


def test_period_statistics_agree_with_quantstats(series_and_periods: tuple[pd.Series, int]) -> None:
    r, p = series_and_periods
    ours = performance(r, periods_per_year=p)

    assert ours["win_rate"] == pytest.approx(qs.stats.win_rate(r), abs=TOLERANCE)
    assert ours["profit_factor"] == pytest.approx(qs.stats.profit_factor(r), abs=TOLERANCE)
    assert ours["avg_win"] == pytest.approx(qs.stats.avg_win(r), abs=TOLERANCE)
    assert ours["avg_loss"] == pytest.approx(qs.stats.avg_loss(r), abs=TOLERANCE)
    assert ours["best"] == pytest.approx(qs.stats.best(r), abs=TOLERANCE)
    assert ours["worst"] == pytest.approx(qs.stats.worst(r), abs=TOLERANCE)
    assert ours["skew"] == pytest.approx(qs.stats.skew(r), abs=TOLERANCE)
    assert ours["kurtosis"] == pytest.approx(qs.stats.kurtosis(r), abs=TOLERANCE)


@pytest.mark.parametrize("level", LEVELS)
def test_var_and_cvar_agree_with_both_libraries(series_and_periods: tuple[pd.Series, int], level: float) -> None:
    r, _ = series_and_periods

    assert value_at_risk(r, level, "gaussian") == pytest.approx(qs.stats.var(r, confidence=level), abs=TOLERANCE)
    assert conditional_value_at_risk(r, level, "gaussian") == pytest.approx(
        qs.stats.cvar(r, confidence=level, method="parametric"), abs=TOLERANCE
    )
    assert conditional_value_at_risk(r, level, "historical") == pytest.approx(
        qs.stats.cvar(r, confidence=level, method="historical"), abs=TOLERANCE
    )
    assert value_at_risk(r, level, "historical") == pytest.approx(ep.value_at_risk(r, cutoff=1 - level), abs=TOLERANCE)
    # No ties at the cut-off in real prices, so empyrical's fixed-count tail and our "at or below VaR" tail coincide.
    assert conditional_value_at_risk(r, level, "historical") == pytest.approx(
        ep.conditional_value_at_risk(r, cutoff=1 - level), abs=TOLERANCE
    )


# --- known differences --------------------------------------------------------------------------------------------


def test_library_defaults_annualise_with_252_not_our_365(btc_daily_returns: pd.Series) -> None:
    r = btc_daily_returns
    ours = performance(r)
    mean, std, n = r.mean(), r.std(ddof=1), len(r)

    assert ours["sharpe"] == pytest.approx(mean / std * math.sqrt(365), abs=TOLERANCE)
    assert ours["cagr"] == pytest.approx(float(np.prod(1 + r)) ** (365 / n) - 1, abs=TOLERANCE)
    assert ep.sharpe_ratio(r) == pytest.approx(mean / std * math.sqrt(252), abs=TOLERANCE)
    assert qs.stats.sharpe(r) == pytest.approx(mean / std * math.sqrt(252), abs=TOLERANCE)
    assert ep.annual_return(r) == pytest.approx(float(np.prod(1 + r)) ** (252 / n) - 1, abs=TOLERANCE)
    assert abs(ep.sharpe_ratio(r) - ours["sharpe"]) > 0.1


def test_empyrical_risk_free_is_per_period_not_annual(btc_daily_returns: pd.Series) -> None:
    r = btc_daily_returns
    ours = performance(r, risk_free=0.04)["sharpe"]
    excess = r - (1.04 ** (1 / 365) - 1)

    assert ours == pytest.approx(excess.mean() / excess.std(ddof=1) * math.sqrt(365), abs=TOLERANCE)
    # Handed the annual 4% as it is, empyrical charges 4% every day.
    assert ep.sharpe_ratio(r, risk_free=0.04, annualization=365) < ours - 10


def test_empyrical_cvar_takes_fixed_count_tail_where_we_take_every_tie() -> None:
    returns = np.array([-0.10, -0.02, -0.02, -0.02] + [0.01] * 17)
    at_or_below_var = returns[returns <= np.quantile(returns, 0.05)]

    assert conditional_value_at_risk(returns) == pytest.approx(at_or_below_var.mean(), abs=TOLERANCE)
    # empyrical averages the int((21 - 1) * 0.05) + 1 = 2 lowest values only.
    assert ep.conditional_value_at_risk(returns, cutoff=0.05) == pytest.approx((-0.10 - 0.02) / 2, abs=TOLERANCE)
    assert conditional_value_at_risk(returns) == pytest.approx(-0.04, abs=TOLERANCE)


def test_zero_denominators_give_nan_where_libraries_give_inf_or_raise() -> None:
    r = pd.Series([0.01] * 5, index=pd.date_range("2024-01-01", periods=5, freq="D"))
    ours = performance(r)

    assert math.isnan(ours["sharpe"]) and math.isnan(ours["sortino"]) and math.isnan(ours["calmar"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert qs.stats.sharpe(r, periods=365) == math.inf
    assert ep.sharpe_ratio(r, annualization=365) == math.inf
    assert ep.sortino_ratio(r, annualization=365) == math.inf
    with pytest.raises(ZeroDivisionError):
        qs.stats.calmar(r, periods=365)


def test_quantstats_rounds_exposure_up_to_whole_percent(btc_daily_returns: pd.Series) -> None:
    r = btc_daily_returns
    active_share = float((r != 0).sum() / len(r))

    assert 0.99 < active_share < 1.0
    assert performance(r)["exposure"] == pytest.approx(active_share, abs=TOLERANCE)
    assert qs.stats.exposure(r) == 1.0


def test_flat_series_win_rate_and_profit_factor_are_nan_where_quantstats_says_zero() -> None:
    r = pd.Series([0.0] * 4, index=pd.date_range("2024-01-01", periods=4, freq="D"))
    ours = performance(r)

    assert math.isnan(ours["win_rate"]) and math.isnan(ours["profit_factor"])
    with pytest.warns(UserWarning, match="No non-zero returns"):
        assert qs.stats.win_rate(r) == 0.0
    assert qs.stats.profit_factor(r) == 0.0


def test_drawdown_duration_counts_periods_where_quantstats_counts_calendar_days(
    btc_daily_returns: pd.Series,
) -> None:
    r = btc_daily_returns
    nav = np.concatenate(([1.0], np.cumprod(1 + r.to_numpy())))
    dates = [r.index[0] - pd.Timedelta(days=1), *r.index]
    spans: list[tuple[int, int]] = []  # (peak position, recovery-or-end position), found by brute force
    peak = 0
    for i in range(1, len(nav)):
        if nav[i] >= nav[peak]:
            if i - peak > 1:
                spans.append((peak, i))
            peak = i
    if peak < len(nav) - 1:
        spans.append((peak, len(nav) - 1))
    longest_peak, longest_end = max(spans, key=lambda span: span[1] - span[0])

    assert performance(r)["max_drawdown_duration"] == longest_end - longest_peak == 750
    details = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r))
    # The open 2017-12-16 drawdown: 750 daily returns, but 762 calendar days because of the April 2019 gap.
    assert details["days"].max() == (dates[longest_end] - dates[longest_peak]).days == 762
    # A recovered one: quantstats counts the underwater days only, we count the peak-to-recovery periods.
    recovered_2015 = details.loc[details["start"] == "2014-12-03", "days"].item()
    assert (recovered_2015, max(e - p for p, e in spans if dates[p] == pd.Timestamp("2014-12-02"))) == (335, 336)


def test_quantstats_reads_non_negative_series_above_one_as_prices() -> None:
    r = pd.Series([0.5, 1.5, 0.2, 0.1, 0.3], index=pd.date_range("2024-01-01", periods=5, freq="D"))

    assert performance(r)["volatility"] == pytest.approx(r.std(ddof=1) * math.sqrt(365), abs=TOLERANCE)
    assert qs.stats.volatility(r, periods=365) == pytest.approx(
        r.pct_change().std(ddof=1) * math.sqrt(365), abs=TOLERANCE
    )


def test_gaps_are_refused_where_libraries_skip_them(btc_daily_returns: pd.Series) -> None:
    gappy = btc_daily_returns.copy()
    gappy.iloc[10] = np.nan

    with pytest.raises(ValueError, match="NaN"):
        performance(gappy)
    skipped = performance(gappy.dropna())["sharpe"]
    assert qs.stats.sharpe(gappy, periods=365) == pytest.approx(skipped, abs=TOLERANCE)
    assert ep.sharpe_ratio(gappy, annualization=365) == pytest.approx(skipped, abs=TOLERANCE)


def test_quantstats_expected_return_is_geometric_where_our_expectancy_is_arithmetic(
    btc_daily_returns: pd.Series,
) -> None:
    r = btc_daily_returns
    ours = performance(r)["expectancy"]

    assert ours == pytest.approx(r.mean(), abs=TOLERANCE)
    assert qs.stats.expected_return(r) == pytest.approx(float(np.prod(1 + r)) ** (1 / len(r)) - 1, abs=TOLERANCE)
    assert abs(qs.stats.expected_return(r) - ours) > 1e-4


def test_default_var_method_is_historical_where_quantstats_var_is_gaussian(btc_daily_returns: pd.Series) -> None:
    r = btc_daily_returns

    assert value_at_risk(r) == pytest.approx(float(np.quantile(r, 0.05)), abs=TOLERANCE)
    assert qs.stats.var(r) == pytest.approx(value_at_risk(r, method="gaussian"), abs=TOLERANCE)
    # BTC's fat tail shows at 99%: the normal quantile understates the empirical one by two percentage points.
    assert value_at_risk(r, 0.99) < qs.stats.var(r, confidence=0.99) - 0.01
    assert qs.stats.cvar(r) == pytest.approx(conditional_value_at_risk(r, method="gaussian"), abs=TOLERANCE)
