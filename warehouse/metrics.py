"""Performance and risk metrics of a series of simple periodic returns.

One implementation that research notebooks, tests and the warehouse marts all call, so a Sharpe ratio means the
same thing everywhere. Every definition, and every place where quantstats or empyrical compute something else, is
written down in ``docs/metrics.md``; the code and that page must agree.

Conventions shared by every function here:

* ``returns`` are simple (not log) returns, one per period, oldest first; any index or timestamps are ignored.
* NaN, infinite values and returns below -100% are rejected with ``ValueError``: a gap must be filled or dropped
  by the caller on purpose, never silently.
* A ratio whose denominator is a dispersion or a drawdown that is zero (or undefined) is NaN, not infinity.
* VaR and CVaR are returns, so a loss is negative (-0.031 is a 3.1% one-period loss).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist
from typing import Any, Protocol, TypeAlias, TypedDict

import numpy as np
import numpy.typing as npt

__all__ = [
    "PERFORMANCE_KEYS",
    "VAR_METHODS",
    "ReturnsInput",
    "VarRow",
    "conditional_value_at_risk",
    "performance",
    "performance_table",
    "value_at_risk",
    "var_table",
]

VAR_METHODS: tuple[str, ...] = ("historical", "gaussian", "cornish_fisher")
"""The estimators accepted by ``value_at_risk``, ``conditional_value_at_risk`` and ``var_table``."""

_STANDARD_NORMAL = NormalDist()
_FloatArray: TypeAlias = npt.NDArray[np.float64]
_IntArray: TypeAlias = npt.NDArray[np.int64]
_BoolArray: TypeAlias = npt.NDArray[np.bool_]
_TABLE_BLOCK_CELLS = 1 << 22
"""performance_table pads series of similar length into blocks of at most this many cells (memory bound)."""


class _HasToNumpy(Protocol):
    """Anything that converts itself to numpy, as polars and pandas Series do."""

    def to_numpy(self) -> Any: ...


ReturnsInput: TypeAlias = npt.ArrayLike | _HasToNumpy | Iterable[float]


PERFORMANCE_KEYS: tuple[str, ...] = (
    "periods",
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration",
    "win_rate",
    "profit_factor",
    "expectancy",
    "avg_win",
    "avg_loss",
    "best",
    "worst",
    "skew",
    "kurtosis",
    "exposure",
)
"""The keys of the ``performance`` dictionary, in the order it returns them."""


class VarRow(TypedDict):
    """One line of ``var_table``: both risk figures of one estimator at one confidence level."""

    method: str
    level: float
    var: float
    cvar: float


def performance(returns: ReturnsInput, periods_per_year: int = 365, risk_free: float = 0.0) -> dict[str, float]:
    """Summarise a return series: growth, volatility, risk-adjusted ratios, drawdown and trade-style statistics.

    ``periods_per_year`` annualises (365 for daily crypto, 8,760 for hourly); ``risk_free`` is an annual rate,
    de-annualised geometrically, and enters only the Sharpe and Sortino ratios. Empty input gives ``periods`` 0 and
    NaN for every other figure.
    """
    r = _as_returns(returns)
    p = _check_periods_per_year(periods_per_year)
    _check_risk_free(risk_free)
    n = r.size
    if n == 0:
        return {key: (0.0 if key == "periods" else math.nan) for key in PERFORMANCE_KEYS}

    nav_end = float(np.prod(1.0 + r))
    cagr = nav_end ** (p / n) - 1.0
    max_dd, max_dd_duration = _drawdown(r)
    rf_per_period = (1.0 + risk_free) ** (1.0 / p) - 1.0
    excess = r - rf_per_period
    excess_mean = float(np.mean(excess))
    excess_std = _sample_std(excess)
    downside_deviation = math.sqrt(float(np.sum(np.minimum(excess, 0.0) ** 2)) / n)
    wins, losses = r[r > 0.0], r[r < 0.0]
    active = wins.size + losses.size
    gross_loss = -float(np.sum(losses))

    return {
        "periods": float(n),
        "total_return": nav_end - 1.0,
        "cagr": cagr,
        "volatility": _sample_std(r) * math.sqrt(p),
        "sharpe": _ratio(excess_mean, excess_std) * math.sqrt(p),
        "sortino": _ratio(excess_mean, downside_deviation) * math.sqrt(p),
        "calmar": _ratio(cagr, abs(max_dd)),
        "max_drawdown": max_dd,
        "max_drawdown_duration": float(max_dd_duration),
        "win_rate": wins.size / active if active else math.nan,
        "profit_factor": _profit_factor(float(np.sum(wins)), gross_loss),
        "expectancy": float(np.mean(r)),
        "avg_win": float(np.mean(wins)) if wins.size else math.nan,
        "avg_loss": float(np.mean(losses)) if losses.size else math.nan,
        "best": float(np.max(r)),
        "worst": float(np.min(r)),
        "skew": _sample_skew(r),
        "kurtosis": _sample_excess_kurtosis(r),
        "exposure": active / n,
    }


def performance_table(
    returns: ReturnsInput, lengths: npt.ArrayLike, periods_per_year: int = 365, risk_free: float = 0.0
) -> dict[str, _FloatArray]:
    """``performance`` of many series in one pass, for marts with a series per scope.

    ``returns`` holds the series one after another and ``lengths`` the number of returns of each (0 for an empty
    series). Every key of ``PERFORMANCE_KEYS`` maps to an array with one figure per series, equal to what
    ``performance`` gives for that series up to float rounding (sums are added in another order); where
    ``performance`` raises OverflowError for a CAGR beyond floats, the CAGR here is inf.
    """
    r = _as_returns(returns)
    p = _check_periods_per_year(periods_per_year)
    _check_risk_free(risk_free)
    n = np.asarray(lengths)
    if n.ndim != 1 or (n.size and (n.dtype.kind not in "iu" or int(n.min()) < 0)):
        raise ValueError("lengths must be a one-dimensional sequence of non-negative integers")
    n = n.astype(np.int64)
    if int(n.sum()) != r.size:
        raise ValueError(f"lengths add up to {int(n.sum())} returns, but there are {r.size}")

    table = {key: np.full(n.size, math.nan) for key in PERFORMANCE_KEYS}
    starts = np.cumsum(n) - n
    for block in _blocks_of_similar_length(n):
        width = int(n[block].max())
        if width == 0:
            continue
        valid = np.arange(width) < n[block, None]
        matrix = np.zeros((block.size, width))
        matrix[valid] = r[(starts[block, None] + np.arange(width))[valid]]
        for key, values in _performance_block(matrix, valid, n[block], p, risk_free).items():
            table[key][block] = values
    empty = n == 0
    for key in PERFORMANCE_KEYS:
        table[key][empty] = 0.0 if key == "periods" else math.nan
    return table


def value_at_risk(returns: ReturnsInput, level: float = 0.95, method: str = "historical") -> float:
    """One-period Value at Risk: the ``1 - level`` quantile of the return, so a loss is a negative return.

    ``historical`` is the empirical quantile with linear interpolation between order statistics (numpy's default,
    Hyndman-Fan type 7); ``gaussian`` is mean + z * sample std; ``cornish_fisher`` corrects z for sample skew and
    excess kurtosis. NaN for empty input (and, for the parametric methods, too few points for their moments).
    """
    r = _as_returns(returns)
    alpha = 1.0 - _check_level(level)
    _check_method(method)
    if r.size == 0:
        return math.nan
    if method == "historical":
        return float(np.quantile(r, alpha))
    z = _STANDARD_NORMAL.inv_cdf(alpha)
    if method == "gaussian":
        return float(np.mean(r)) + z * _sample_std(r)
    skew, kurt = _sample_skew(r), _sample_excess_kurtosis(r)
    z_cf = z + (z**2 - 1) * skew / 6 + (z**3 - 3 * z) * kurt / 24 - (2 * z**3 - 5 * z) * skew**2 / 36
    return float(np.mean(r)) + z_cf * _sample_std(r)


def conditional_value_at_risk(returns: ReturnsInput, level: float = 0.95, method: str = "historical") -> float:
    """One-period expected shortfall: the mean return in the worst ``1 - level`` tail, negative for a loss.

    ``historical`` averages every return at or below the historical VaR (ties included); ``gaussian`` is the normal
    closed form mean - std * pdf(z) / (1 - level); ``cornish_fisher`` is the exact average of the Cornish-Fisher
    quantile over the tail probabilities, mean - std * pdf(z) / (1 - level) * (1 + zS/6 + (z^2-1)K/24
    - (2z^2-1)S^2/36), which reduces to the gaussian figure when S = K = 0.
    """
    r = _as_returns(returns)
    alpha = 1.0 - _check_level(level)
    _check_method(method)
    if r.size == 0:
        return math.nan
    if method == "historical":
        tail = r[r <= np.quantile(r, alpha)]
        # Interpolation never falls below the smallest return, but guard against a last-bit rounding below it.
        return float(np.mean(tail)) if tail.size else float(np.min(r))
    z = _STANDARD_NORMAL.inv_cdf(alpha)
    tail_mean_of_z = -_STANDARD_NORMAL.pdf(z) / alpha
    if method == "cornish_fisher":
        skew, kurt = _sample_skew(r), _sample_excess_kurtosis(r)
        tail_mean_of_z *= 1 + z * skew / 6 + (z**2 - 1) * kurt / 24 - (2 * z**2 - 1) * skew**2 / 36
    return float(np.mean(r)) + tail_mean_of_z * _sample_std(r)


def var_table(returns: ReturnsInput, levels: Iterable[float] = (0.95, 0.99)) -> list[VarRow]:
    """Every estimator at every confidence level, one labelled row each, for risk reports that compare them."""
    r = _as_returns(returns)
    checked_levels = [_check_level(level) for level in levels]
    return [
        VarRow(
            method=method,
            level=level,
            var=value_at_risk(r, level, method),
            cvar=conditional_value_at_risk(r, level, method),
        )
        for method in VAR_METHODS
        for level in checked_levels
    ]


def _as_returns(returns: ReturnsInput) -> _FloatArray:
    """Convert any supported container to a 1-D float array and reject values no return series can hold."""
    raw: Any = returns.to_numpy() if hasattr(returns, "to_numpy") else returns
    if not hasattr(raw, "__len__") and isinstance(raw, Iterable):
        raw = list(raw)
    try:
        r = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"returns must be numbers (simple periodic returns): {exc}") from exc
    if r.ndim != 1:
        raise ValueError(f"returns must be one-dimensional, got an array of shape {r.shape}")
    bad = ~np.isfinite(r)
    if bad.any():
        nan_count = int(np.isnan(r).sum())
        raise ValueError(
            f"returns contain {nan_count} NaN and {int(bad.sum()) - nan_count} infinite value(s), the first at "
            f"position {int(np.argmax(bad))}; fill or drop missing periods before computing metrics"
        )
    if (r < -1.0).any():
        first = int(np.argmax(r < -1.0))
        raise ValueError(f"returns below -100% are impossible for a simple return: {r[first]!r} at position {first}")
    return r


def _check_periods_per_year(periods_per_year: int) -> int:
    """Reject an annualisation factor that is not a positive whole number of periods."""
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, int | np.integer):
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year!r}")
    if periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year!r}")
    return int(periods_per_year)


def _check_risk_free(risk_free: float) -> None:
    """Reject an annual risk-free rate that is not finite or loses everything."""
    if not math.isfinite(risk_free) or risk_free <= -1.0:
        raise ValueError(f"risk_free must be a finite annual rate above -100%, got {risk_free!r}")


def _check_level(level: float) -> float:
    """Reject a confidence level outside (0, 1); 95 meaning 95% is refused rather than guessed."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be a confidence between 0 and 1 exclusive (e.g. 0.95), got {level!r}")
    return float(level)


def _check_method(method: str) -> None:
    """Reject a VaR estimator name we do not implement, naming the ones we do."""
    if method not in VAR_METHODS:
        raise ValueError(f"unknown VaR method {method!r}; expected one of: {', '.join(VAR_METHODS)}")


def _ratio(numerator: float, denominator: float) -> float:
    """Divide, or NaN when the denominator is zero or undefined (the documented policy for every ratio)."""
    if math.isnan(denominator) or denominator == 0.0:
        return math.nan
    return numerator / denominator


def _profit_factor(gross_profit: float, gross_loss: float) -> float:
    """Gross profit over gross loss; infinite with gains and no losses, NaN with neither."""
    if gross_loss == 0.0:
        return math.inf if gross_profit > 0.0 else math.nan
    return gross_profit / gross_loss


def _sample_std(x: _FloatArray) -> float:
    """Sample (n - 1) standard deviation; exactly 0 for equal values, NaN below two points."""
    if x.size < 2:
        return math.nan
    if np.ptp(x) == 0.0:
        # The float mean of equal values can miss them by one ulp; a residue of 1e-18 would make ratios explode.
        return 0.0
    return float(np.std(x, ddof=1))


def _central_moments(x: _FloatArray) -> tuple[float, float, float]:
    """Population central moments m2, m3, m4, the inputs of the sample skew and kurtosis estimators."""
    deviations = x - np.mean(x)
    return (float(np.mean(deviations**2)), float(np.mean(deviations**3)), float(np.mean(deviations**4)))


def _sample_skew(x: _FloatArray) -> float:
    """Adjusted Fisher-Pearson skewness G1 (pandas, Excel SKEW); NaN below three points or with no variance."""
    n = x.size
    if n < 3 or np.ptp(x) == 0.0:
        return math.nan
    m2, m3, _ = _central_moments(x)
    return m3 / (m2 * math.sqrt(m2)) * math.sqrt(n * (n - 1)) / (n - 2)


def _sample_excess_kurtosis(x: _FloatArray) -> float:
    """Bias-corrected excess kurtosis G2 (pandas, Excel KURT); NaN below four points or with no variance."""
    n = x.size
    if n < 4 or np.ptp(x) == 0.0:
        return math.nan
    m2, _, m4 = _central_moments(x)
    g2 = m4 / m2**2 - 3.0
    return ((n + 1) * g2 + 6.0) * (n - 1) / ((n - 2) * (n - 3))


def _drawdown(r: _FloatArray) -> tuple[float, int]:
    """Deepest fall of compounded NAV below its running peak, and the longest peak-to-recovery span in periods.

    The starting capital 1.0 is the first peak, so a loss in the first period is a drawdown. A span runs from the
    period of the peak to the first period whose NAV is back at or above it, or to the last period if it never is.
    """
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    drawdown = wealth / np.maximum.accumulate(wealth) - 1.0
    underwater = np.concatenate(([False], drawdown < 0.0, [False]))
    edges = np.flatnonzero(np.diff(underwater.astype(np.int8)))
    first_under, last_under = edges[0::2], edges[1::2] - 1
    if first_under.size == 0:
        return 0.0, 0
    last_index = r.size
    # peak = first_under - 1; the end is the recovery (last_under + 1) or, if never recovered, the last period.
    ends = np.where(last_under < last_index, last_under + 1, last_index)
    return float(np.min(drawdown)), int(np.max(ends - (first_under - 1)))


def _blocks_of_similar_length(lengths: _IntArray) -> list[_IntArray]:
    """Series indices grouped by length, so that padding each group to one matrix wastes at most half of it (or
    fewer than _TABLE_BLOCK_CELLS cells) and no matrix exceeds four times that."""
    order = np.argsort(lengths, kind="stable")
    blocks: list[_IntArray] = []
    first, data = 0, 0
    for position, series in enumerate(order):
        length = int(lengths[series])
        cells = (position + 1 - first) * length  # sorted by length: this series is the block's widest
        if position > first and (
            cells > max(_TABLE_BLOCK_CELLS, 2 * (data + length)) or cells > 4 * _TABLE_BLOCK_CELLS
        ):
            blocks.append(np.sort(order[first:position]))
            first, data = position, 0
        data += length
    if order.size:
        blocks.append(np.sort(order[first:]))
    return blocks


def _performance_block(
    r: _FloatArray, valid: _BoolArray, lengths: _IntArray, p: int, risk_free: float
) -> dict[str, _FloatArray]:
    """``performance`` of each row of ``r``, whose first ``lengths`` cells are returns and the rest 0.0 padding.

    The same formulas as ``performance``, along axis 1; rows must not be empty.
    """
    n = lengths.astype(np.float64)
    with np.errstate(all="ignore"):  # the NaN and inf of the documented edge cases
        nav_end = np.prod(1.0 + r, axis=1)  # padding multiplies by exactly 1.0
        cagr = np.power(nav_end, p / n) - 1.0
        max_dd, max_dd_duration = _drawdown_rows(r, lengths)
        moments = _RowMoments(r, valid, n)
        rf_per_period = (1.0 + risk_free) ** (1.0 / p) - 1.0
        excess = np.where(valid, r - rf_per_period, 0.0)
        excess_moments = moments if rf_per_period == 0.0 else _RowMoments(excess, valid, n)
        downside_deviation = np.sqrt(np.sum(np.minimum(excess, 0.0) ** 2, axis=1) / n)
        win_count, loss_count = np.count_nonzero(r > 0.0, axis=1), np.count_nonzero(r < 0.0, axis=1)
        active = win_count + loss_count
        gross_profit, gross_loss = np.sum(np.maximum(r, 0.0), axis=1), -np.sum(np.minimum(r, 0.0), axis=1)
        return {
            "periods": n,
            "total_return": nav_end - 1.0,
            "cagr": cagr,
            "volatility": moments.sample_std() * math.sqrt(p),
            "sharpe": _ratio_rows(excess_moments.mean, excess_moments.sample_std()) * math.sqrt(p),
            "sortino": _ratio_rows(excess_moments.mean, downside_deviation) * math.sqrt(p),
            "calmar": _ratio_rows(cagr, np.abs(max_dd)),
            "max_drawdown": max_dd,
            "max_drawdown_duration": max_dd_duration.astype(np.float64),
            "win_rate": np.where(active > 0, win_count / active, math.nan),
            "profit_factor": np.where(
                gross_loss == 0.0, np.where(gross_profit > 0.0, math.inf, math.nan), gross_profit / gross_loss
            ),
            "expectancy": moments.mean,
            "avg_win": np.where(win_count > 0, gross_profit / win_count, math.nan),
            "avg_loss": np.where(loss_count > 0, -gross_loss / loss_count, math.nan),
            "best": moments.largest,
            "worst": moments.smallest,
            "skew": moments.skew(),
            "kurtosis": moments.excess_kurtosis(),
            "exposure": active / n,
        }


class _RowMoments:
    """Mean, extremes and central moments of each row of ``x`` over its ``valid`` cells (``n`` of them; the rest
    are 0.0 padding)."""

    def __init__(self, x: _FloatArray, valid: _BoolArray, n: _FloatArray) -> None:
        self.n = n
        self.mean: _FloatArray = np.sum(x, axis=1) / n
        self.largest: _FloatArray = np.max(np.where(valid, x, -math.inf), axis=1)
        self.smallest: _FloatArray = np.min(np.where(valid, x, math.inf), axis=1)
        self.equal = self.largest == self.smallest  # np.ptp == 0: the moments are exactly 0, not float dust
        deviations = np.where(valid, x - self.mean[:, None], 0.0)
        squares = deviations * deviations  # products, not **3 and **4: pow() is several times slower
        self.sum_of_squares: _FloatArray = np.sum(squares, axis=1)
        self.m3: _FloatArray = np.sum(squares * deviations, axis=1) / n
        self.m4: _FloatArray = np.sum(squares * squares, axis=1) / n

    def sample_std(self) -> _FloatArray:
        """``_sample_std``: sample std, exactly 0 for equal values, NaN below two points."""
        std = np.sqrt(self.sum_of_squares / (self.n - 1.0))
        return np.where(self.n < 2, math.nan, np.where(self.equal, 0.0, std))

    def skew(self) -> _FloatArray:
        """``_sample_skew``: NaN below three points or for equal values."""
        n, m2 = self.n, self.sum_of_squares / self.n
        skew = self.m3 / (m2 * np.sqrt(m2)) * np.sqrt(n * (n - 1)) / (n - 2)
        return np.where((n < 3) | self.equal, math.nan, skew)

    def excess_kurtosis(self) -> _FloatArray:
        """``_sample_excess_kurtosis``: NaN below four points or for equal values."""
        n, m2 = self.n, self.sum_of_squares / self.n
        kurtosis = ((n + 1) * (self.m4 / m2**2 - 3.0) + 6.0) * (n - 1) / ((n - 2) * (n - 3))
        return np.where((n < 4) | self.equal, math.nan, kurtosis)


def _ratio_rows(numerator: _FloatArray, denominator: _FloatArray) -> _FloatArray:
    """``_ratio`` element-wise: NaN where the denominator is zero or NaN."""
    undefined = np.isnan(denominator) | (denominator == 0.0)
    return np.where(undefined, math.nan, numerator / np.where(undefined, 1.0, denominator))


def _drawdown_rows(r: _FloatArray, lengths: _IntArray) -> tuple[_FloatArray, _IntArray]:
    """``_drawdown`` of each row: deepest drawdown, and longest peak-to-recovery span in periods.

    Padding returns are 0.0, so the NAV stays flat after a row's last period: the deepest drawdown is unchanged,
    and a run still underwater at the last period ends there whether or not it goes on into the padding.
    """
    rows, width = r.shape
    wealth = np.ones((rows, width + 1))
    wealth[:, 1:] = np.cumprod(1.0 + r, axis=1)
    drawdown = wealth / np.maximum.accumulate(wealth, axis=1) - 1.0
    underwater = np.zeros((rows, width + 3), dtype=np.int8)  # one flat period on both sides of each row
    underwater[:, 1:-1] = drawdown < 0.0
    edges = np.flatnonzero(np.diff(underwater, axis=1))
    row, column = np.divmod(edges, width + 2)
    run_row, first_under, last_under = row[0::2], column[0::2], column[1::2] - 1
    last_index = lengths[run_row]
    ends = np.where(last_under < last_index, last_under + 1, last_index)
    duration = np.zeros(rows, dtype=np.int64)
    np.maximum.at(duration, run_row, ends - (first_under - 1))
    return np.min(drawdown, axis=1), duration
