"""Performance of every scope, daily (365 periods a year) and hourly (8,760), from warehouse.metrics.

The figures are ``warehouse.metrics.performance`` on the scope's time-weighted returns (nav_daily,
nav_hourly), oldest first. Periods without a return (the first period of a scope, or one after a NAV that is
not positive) are dropped on purpose: the metrics refuse NaN. Plus, over the whole history:
``fees`` (quote, weighted like NAV), ``trades`` (number of fills) and ``turnover`` = traded notional / the
mean NAV of the series (NaN if that mean is not positive).
"""

import math
import os
import sys

FREQUENCIES = (("daily", "nav_daily", "day", 365), ("hourly", "nav_hourly", "hour", 8760))


def _metrics():
    """warehouse.metrics, importable from the repository root (PATRIOT_ROOT, else the project's parent)."""
    try:
        from warehouse import metrics
    except ImportError:
        sys.path.insert(0, os.environ.get("PATRIOT_ROOT") or os.path.dirname(os.path.abspath(os.getcwd())))
        from warehouse import metrics
    return metrics


def model(dbt, session):
    dbt.config(materialized="table")
    import pandas as pd

    metrics = _metrics()
    activity = {
        (row[0], row[1]): row[2:]
        for row in dbt.ref("int_scope_activity")
        .project("scope, scope_id, cast(fees as double), cast(traded_notional as double), fills")
        .fetchall()
    }
    navs = {"nav_daily": dbt.ref("nav_daily"), "nav_hourly": dbt.ref("nav_hourly")}

    rows = []
    for frequency, relation, time_column, periods_per_year in FREQUENCIES:
        series = (
            navs[relation]
            .project(f'scope, scope_id, {time_column}, cast(nav as double) as nav, "return"')
            .order(f"scope, scope_id, {time_column}")
            .df()
        )
        for (scope, scope_id), group in series.groupby(["scope", "scope_id"], sort=True):
            returns = group["return"].dropna().to_numpy(dtype="float64")
            figures = metrics.performance(returns, periods_per_year=periods_per_year, risk_free=0.0)
            fees, notional, fills = activity.get((scope, scope_id), (0.0, 0.0, 0))
            mean_nav = float(group["nav"].mean())
            rows.append(
                {
                    "scope": scope,
                    "scope_id": scope_id,
                    "frequency": frequency,
                    **{key: float(figures[key]) for key in metrics.PERFORMANCE_KEYS},
                    "turnover": notional / mean_nav if mean_nav > 0 else math.nan,
                    "fees": float(fees),
                    "trades": int(fills),
                }
            )

    columns = ["scope", "scope_id", "frequency", *metrics.PERFORMANCE_KEYS, "turnover", "fees", "trades"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({key: "float64" for key in [*metrics.PERFORMANCE_KEYS, "turnover", "fees"]}).astype(
        {"trades": "int64", "scope": "string", "scope_id": "string", "frequency": "string"}
    )
