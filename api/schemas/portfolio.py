"""Response bodies of /portfolio: the live read models of ``realtime.portfolio.readmodels``, as cached.

Money and quantities are decimal strings (exact, as stored); times are ISO 8601 UTC.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

Decimal_ = str  # a decimal number as a string, e.g. "0.01": exact, never a float


class PortfolioSummaryPublic(BaseModel):
    user_id: str
    cash: Decimal_ = Field(description="stablecoin balances (USDT, USDC, FDUSD, USD), free + locked, at par")
    holdings_value: Decimal_ = Field(
        description="every other balance (BTC, ETH, ...: bought or deposited), free + locked, at its mark"
    )
    equity: Decimal_ = Field(
        description="cash + holdings_value: every balance at its mark (on spot venues the balances are the holdings;"
        " positions are not added again); assets in unpriced_assets are left out"
    )
    unpriced_assets: list[str] = Field(
        description="assets with a balance but no mark, left out of holdings_value and equity (never valued at 0)"
    )
    positions_value: Decimal_ = Field(
        description="net market value of the positions built from fills, at their marks: the PnL view, part of"
        " holdings_value already"
    )
    gross_exposure: Decimal_
    unrealized_pnl: Decimal_
    realized_pnl: Decimal_
    fees: Decimal_
    open_positions: int
    open_orders: int


class PositionPublic(BaseModel):
    account_id: str
    symbol: str
    exchange: str
    quantity: Decimal_
    avg_entry_price: Decimal_ | None
    realized_pnl: Decimal_
    fees: Decimal_
    mark_price: Decimal_ | None = Field(description="the latest trade price the position is marked to, if known")
    unrealized_pnl: Decimal_
    updated_at: datetime


class BalancePublic(BaseModel):
    account_id: str
    asset: str
    free: Decimal_
    locked: Decimal_
    updated_at: datetime


class OpenOrderPublic(BaseModel):
    order_id: str
    account_id: str
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    quantity: Decimal_
    price: Decimal_ | None
    trigger_price: Decimal_ | None
    status: str
    filled_quantity: Decimal_
    created_at: datetime


class PortfolioPublic(BaseModel):
    """The portfolio screen in one response: summary, positions and balances of one user."""

    user_id: str
    summary: PortfolioSummaryPublic
    positions: list[PositionPublic]
    balances: list[BalancePublic]
