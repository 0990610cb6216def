"""One-day Value at Risk and expected shortfall of every scope, from warehouse.metrics.var_table.

Historical, gaussian and Cornish-Fisher estimators at 0.95 and 0.99 on the scope's daily time-weighted
returns (nav_daily, oldest first, periods without a return dropped): 6 rows per scope. VaR and CVaR are
returns, a loss is negative; NaN where an estimator has too few returns (docs/metrics.md).
"""

import os
import sys

LEVELS = (0.95, 0.99)


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
    daily = dbt.ref("nav_daily").project('scope, scope_id, day, "return"').order("scope, scope_id, day").df()

    rows = []
    for (scope, scope_id), group in daily.groupby(["scope", "scope_id"], sort=True):
        returns = group["return"].dropna().to_numpy(dtype="float64")
        for line in metrics.var_table(returns, levels=LEVELS):
            rows.append({"scope": scope, "scope_id": scope_id, **line})

    frame = pd.DataFrame(rows, columns=["scope", "scope_id", "method", "level", "var", "cvar"])
    return frame.astype(
        {"scope": "string", "scope_id": "string", "method": "string", "level": "float64", "var": "float64",
         "cvar": "float64"}
    )
