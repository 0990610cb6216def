"""warehouse.metrics.performance_table: every figure of every series equals performance() of that series alone."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from warehouse import metrics
from warehouse.metrics import PERFORMANCE_KEYS, performance, performance_table

EDGE_CASES: list[list[float]] = [
    [],
    [0.1],
    [0.1, -0.2],
    [0.0, 0.0, 0.0],
    [0.01] * 5,  # equal returns: zero volatility, NaN Sharpe, skew and kurtosis
    [-1.0, 0.0, 0.5],  # total loss
    [0.1, -0.05, 0.2, -0.3, 0.1],  # drawdown never recovered
    [-0.5, 1.0, 0.5, -0.2],  # back exactly at the peak
    [0.02, -0.01, 0.04, -0.01],
    [0.0] * 7 + [0.01],
]


def assert_table_equals_performance(series: list[list[float]], periods_per_year: int, risk_free: float) -> None:
    flat = np.concatenate([np.asarray(returns, dtype=np.float64) for returns in series])
    table = performance_table(flat, [len(returns) for returns in series], periods_per_year, risk_free)

    assert set(table) == set(PERFORMANCE_KEYS)
    for n, returns in enumerate(series):
        try:
            expected = performance(returns, periods_per_year, risk_free)
        except OverflowError:  # a CAGR beyond floats (one 10% hour, compounded 8,760 times): the table says inf
            assert table["cagr"][n] == math.inf
            continue
        for key in PERFORMANCE_KEYS:
            value = float(table[key][n])
            if math.isnan(expected[key]) or math.isinf(expected[key]):
                assert value == expected[key] or (math.isnan(value) and math.isnan(expected[key])), (n, key)
            else:
                assert value == pytest.approx(expected[key], rel=1e-9, abs=1e-15), (n, key, returns)


@pytest.mark.parametrize(("periods_per_year", "risk_free"), [(365, 0.0), (365, 0.04), (8760, 0.0), (12, 0.02)])
def test_edge_cases_and_random_series_equal_performance_of_each(periods_per_year: int, risk_free: float) -> None:
    rng = np.random.default_rng(periods_per_year)
    series = EDGE_CASES + [list(rng.normal(0.0004, 0.02, rng.integers(5, 500))) for _ in range(40)]
    series += [list(np.where(rng.random(300) < 0.6, 0.0, rng.normal(0.0, 0.01, 300))) for _ in range(5)]

    assert_table_equals_performance(series, periods_per_year, risk_free)


def test_real_btc_returns_cut_into_series_equal_performance_of_each(
    btc_daily_returns: pd.Series, btc_hourly_returns: pd.Series
) -> None:
    daily = btc_daily_returns.to_numpy()
    assert_table_equals_performance([list(chunk) for chunk in np.array_split(daily, 7)], 365, 0.0)
    hourly = btc_hourly_returns.to_numpy()
    assert_table_equals_performance([list(hourly[:400]), list(hourly[400:]), list(hourly)], 8760, 0.04)


def test_series_padded_in_several_blocks_give_the_same_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of at most 64 cells: series of very different lengths land in different padded matrices.
    monkeypatch.setattr(metrics, "_TABLE_BLOCK_CELLS", 64)
    rng = np.random.default_rng(11)
    series = [list(rng.normal(0.0, 0.01, length)) for length in (3, 200, 0, 17, 64, 5, 300, 1)]

    assert_table_equals_performance(series, 365, 0.0)


def test_lengths_must_add_up_to_the_returns() -> None:
    with pytest.raises(ValueError, match="add up"):
        performance_table([0.1, 0.2, 0.3], [1, 1])
    with pytest.raises(ValueError, match="non-negative integers"):
        performance_table([0.1, 0.2], [3, -1])


def test_bad_returns_are_refused_like_performance() -> None:
    with pytest.raises(ValueError, match="NaN"):
        performance_table([0.1, float("nan")], [2])
    with pytest.raises(ValueError, match="below -100%"):
        performance_table([0.1, -1.5], [1, 1])


def test_no_series_gives_empty_arrays() -> None:
    table = performance_table([], [])

    assert all(values.size == 0 for values in table.values())
