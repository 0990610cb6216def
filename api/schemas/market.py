"""Response bodies of /market: stored candles and the latest mark prices. Prices are exact decimal strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, PlainSerializer

Money = Annotated[Decimal, PlainSerializer(lambda d: format(d.normalize(), "f"), return_type=str, when_used="json")]
"""A NUMERIC value as an exact decimal string without the column's trailing zeros ("42000.5", not a float)."""


class CandlePublic(BaseModel):
    exchange: str
    symbol: str
    interval: str
    open_time: datetime
    open: Money
    high: Money
    low: Money
    close: Money
    volume: Money
    quote_volume: Money | None
    trade_count: int | None
    source: str = Field(description="kline (the venue's candle stream) or trades (built from trades)")
    closed: bool


class MarkPricePublic(BaseModel):
    exchange: str
    symbol: str
    price: Money = Field(description="the latest trade price, as the risk monitor last stored it")
    ts: datetime
