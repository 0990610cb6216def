"""Response bodies of /analytics: the published warehouse's marts (``warehouse.queries``) as JSON.

Numbers are floats (the marts' analytics figures, not ledger money); a figure the warehouse could not compute
(NaN, infinite: e.g. a Sharpe ratio of a flat series) is null. Times are ISO 8601 (dates for daily rows).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["account", "user", "strategy", "fund"]
Frequency = Literal["daily", "hourly"]


class NavPoint(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: str = Field(description="the day (daily, YYYY-MM-DD) or the hour's start (hourly, ISO 8601 UTC)")
    nav: float | None
    net_flows: float | None = Field(description="deposits minus withdrawals in the period")
    return_: float | None = Field(alias="return", description="time-weighted return of the period")
    cash: float | None = Field(None, description="hourly rows only")
    positions_value: float | None = Field(None, description="hourly rows only")


class NavSeriesPublic(BaseModel):
    scope: Scope
    scope_id: str
    frequency: Frequency
    points: list[NavPoint]


class PerformanceRow(BaseModel):
    """One scope's figures at one frequency; the metric columns are ``warehouse.metrics.PERFORMANCE_KEYS``."""

    model_config = ConfigDict(extra="allow")

    scope: Scope
    scope_id: str
    frequency: Frequency


class PerformancePublic(BaseModel):
    rows: list[PerformanceRow]


class VarRow(BaseModel):
    method: str = Field(description="historical, gaussian or cornish_fisher")
    level: float = Field(description="confidence level, e.g. 0.95")
    var: float | None = Field(description="one-day value at risk, as a return")
    cvar: float | None = Field(description="one-day conditional VaR (expected shortfall), as a return")


class RiskPublic(BaseModel):
    scope: Scope
    scope_id: str
    var: list[VarRow]


class ExposureRow(BaseModel):
    exchange: str
    symbol: str
    gross: float | None
    net: float | None
    share_of_gross: float | None


class RiskSummaryPublic(BaseModel):
    gross_exposure: float | None
    net_exposure: float | None
    nav: float | None
    leverage: float | None
    concentration_hhi: float | None
    largest_position_share: float | None


class ExposuresPublic(BaseModel):
    scope: Scope
    scope_id: str
    summary: RiskSummaryPublic | None = Field(description="exposure, leverage and concentration of the scope")
    exposures: list[ExposureRow] = Field(description="per exchange and symbol, largest gross first")
