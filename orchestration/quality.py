"""Great Expectations validations of each extract, run as blocking Dagster asset checks.

GX validates a pandas frame of the rows the extract just wrote (GX cannot read DuckDB through SQLAlchemy
here); a failed expectation fails the check and, the check being blocking, stops every downstream asset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

_EXPECTATIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fills": [
        ("ExpectColumnValuesToNotBeNull", {"column": "trade_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "order_id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "quantity", "min_value": 0, "strict_min": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "price", "min_value": 0, "strict_min": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "fee", "min_value": 0}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["account_id", "exchange", "trade_id"]}),
        ("ExpectColumnValuesToBeInSet", {"column": "side", "value_set": ["buy", "sell"]}),
    ],
    "orders": [
        ("ExpectColumnValuesToBeUnique", {"column": "id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "quantity", "min_value": 0, "strict_min": True}),
        ("ExpectColumnValuesToBeBetween", {"column": "filled_quantity", "min_value": 0}),
        (
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "quantity", "column_B": "filled_quantity", "or_equal": True},
        ),
        ("ExpectColumnValuesToBeInSet", {"column": "side", "value_set": ["buy", "sell"]}),
    ],
    "capital_flows": [
        ("ExpectColumnValuesToNotBeNull", {"column": "amount"}),
        ("ExpectColumnValuesToNotBeInSet", {"column": "amount", "value_set": [0]}),
    ],
    "market_candles": [
        ("ExpectColumnValuesToBeBetween", {"column": "close", "min_value": 0, "strict_min": True}),
        ("ExpectColumnPairValuesAToBeGreaterThanB", {"column_A": "high", "column_B": "low", "or_equal": True}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["exchange", "symbol", "interval", "open_time"]}),
    ],
    "event_store": [
        ("ExpectColumnValuesToBeUnique", {"column": "event_id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "event_version", "min_value": 1}),
    ],
    "balances": [
        ("ExpectColumnValuesToBeBetween", {"column": "free", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "locked", "min_value": 0}),
    ],
    "position_snapshots": [("ExpectColumnValuesToNotBeNull", {"column": "quantity"})],
    "users": [("ExpectColumnValuesToBeUnique", {"column": "id"})],
    "user_accounts": [("ExpectColumnValuesToBeUnique", {"column": "id"})],
    "strategies": [("ExpectColumnValuesToBeUnique", {"column": "id"})],
    "strategy_assignments": [("ExpectColumnValuesToBeBetween", {"column": "allocation", "min_value": 0})],
}
VALIDATED_TABLES = tuple(_EXPECTATIONS)


def validated_columns(table: str) -> list[str]:
    """The columns the table's expectations read (the rest need not be loaded into pandas)."""
    found: list[str] = []
    for _, kwargs in _EXPECTATIONS.get(table, []):
        for key in ("column", "column_A", "column_B"):
            if key in kwargs and kwargs[key] not in found:
                found.append(kwargs[key])
        for column in kwargs.get("column_list", []):
            if column not in found:
                found.append(column)
    return found


@dataclass(frozen=True, slots=True)
class Validation:
    success: bool
    rows: int
    failures: list[str]


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Decimals (object columns) as floats, so comparisons run vectorised; ids and text stay as they are."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        present = out[column].dropna()
        if len(present) and type(present.iloc[0]).__name__ == "Decimal":
            out[column] = out[column].astype(float)
    return out


def validate(table: str, frame: pd.DataFrame) -> Validation:
    """Run the table's expectations on ``frame``; each failure is described by its expectation and count."""
    import great_expectations as gx

    expectations = _EXPECTATIONS.get(table, [])
    if frame.empty or not expectations:
        return Validation(True, len(frame), [])
    context = gx.get_context(mode="ephemeral")
    try:  # no progress bars in the pipeline's logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    except (ImportError, AttributeError):
        pass
    batch = (
        context.data_sources.add_pandas(f"raw_{table}")
        .add_dataframe_asset(table)
        .add_batch_definition_whole_dataframe("extract")
        .get_batch(batch_parameters={"dataframe": _numeric(frame)})
    )
    suite = gx.ExpectationSuite(name=f"raw_{table}")
    for name, kwargs in expectations:
        suite.add_expectation(getattr(gx.expectations, name)(**kwargs))
    result = batch.validate(suite)
    failures = [
        f"{r.expectation_config.type} {dict(r.expectation_config.kwargs)}: "
        f"{r.result.get('unexpected_count', '?')} unexpected"
        for r in result.results
        if not r.success
    ]
    return Validation(bool(result.success), len(frame), failures)
