"""/market: candles stored by the market-data service and the mark prices positions are valued at.

Any authenticated caller may read them; they hold no user data.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from psycopg.rows import dict_row

from api.deps import Principal, State
from api.schemas.market import CandlePublic, MarkPricePublic
from api.sql import where_equal

router = APIRouter(prefix="/market", tags=["market"])

Exchange = Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{1,31}$", description="venue, e.g. binance")]
Symbol = Annotated[str, Query(pattern=r"^[A-Z0-9]{2,30}$", description="venue symbol, e.g. BTCUSDT")]

_CANDLES = """
SELECT * FROM (
    SELECT exchange, symbol, interval, open_time, open, high, low, close, volume, quote_volume, trade_count,
           source, closed
    FROM market_candles
    WHERE exchange = %s AND symbol = %s AND interval = %s AND source = %s
    ORDER BY open_time DESC LIMIT %s
) AS latest ORDER BY open_time"""
_PRICES = "SELECT exchange, symbol, price, ts FROM mark_prices"


@router.get("/candles", response_model=list[CandlePublic], summary="The latest candles of one symbol, oldest first")
async def candles(
    state: State,
    _principal: Principal,
    exchange: Exchange,
    symbol: Symbol,
    interval: Annotated[str, Query(pattern=r"^[1-9][0-9]{0,2}[smhdwM]$", description="e.g. 1m, 1h, 1d")] = "1m",
    limit: Annotated[int, Query(ge=1, le=1000, description="how many of the latest candles")] = 100,
    source: Literal["kline", "trades"] = "kline",
) -> list[CandlePublic]:
    async with state.kernel.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_CANDLES, (exchange, symbol, interval, source, limit))
        rows = await cur.fetchall()
    return [CandlePublic.model_validate(row) for row in rows]


@router.get("/prices", response_model=list[MarkPricePublic], summary="Latest mark price per exchange and symbol")
async def prices(
    state: State,
    _principal: Principal,
    exchange: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{1,31}$")] = None,
    symbol: Annotated[str | None, Query(pattern=r"^[A-Z0-9]{2,30}$")] = None,
) -> list[MarkPricePublic]:
    where, params = where_equal({"exchange": exchange, "symbol": symbol})
    async with state.kernel.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_PRICES + where + " ORDER BY exchange, symbol", params)
        rows = await cur.fetchall()
    return [MarkPricePublic.model_validate(row) for row in rows]
