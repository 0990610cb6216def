"""Equity counts every asset: ``portfolio_summary`` values each balance at its mark, not just the stablecoins.

On spot venues (every venue PATRIOT trades) the holdings are the balances: a coin deposited (never bought through
a fill) is part of the equity too. ``cash`` stays the stablecoin balances (at par), ``holdings_value`` is every
other balance at its mark, ``equity = cash + holdings_value``. Positions (built from fills) remain the PnL view
(``positions_value``, ``unrealized_pnl``, ``gross_exposure``) and are not added again. A balance whose asset has
no mark is left out of the equity and named in ``unpriced_assets``, never valued at zero in silence.

An asset's mark is the price of ``<asset><stablecoin>`` (USDT first, then USDC, FDUSD) on the venue the account
trades at (a simulator account trades at the Binance prices it replays), as positions are marked.

Revision ID: 0007_equity_assets
Revises: 0006_processed_retention
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0007_equity_assets"
down_revision = "0006_processed_retention"
branch_labels = None
depends_on = None

_OPEN = "status NOT IN ('filled', 'canceled', 'rejected', 'denied', 'expired')"
_STABLECOINS = "('USDT', 'USDC', 'FDUSD', 'USD')"
_MARK_QUOTES = ("USDT", "USDC", "FDUSD")  # the quote an asset is marked in, first found wins

_POSITIONS = """
WITH marked AS (
    SELECT p.user_id, p.account_id, p.quantity, p.avg_entry_price, p.realized_pnl, p.fees,
           m.price AS mark, p.quantity * m.price AS market_value,
           CASE WHEN m.price IS NULL OR p.avg_entry_price IS NULL THEN 0
                ELSE (m.price - p.avg_entry_price) * p.quantity END AS unrealized_pnl
    FROM positions p
    LEFT JOIN mark_prices m ON m.symbol = p.symbol
        AND m.exchange = CASE WHEN p.exchange = 'simulator' THEN 'binance' ELSE p.exchange END
), by_user AS (
    SELECT user_id, count(*) FILTER (WHERE quantity <> 0) AS open_positions,
           coalesce(sum(abs(market_value)), 0) AS gross_exposure,
           coalesce(sum(market_value), 0) AS net_exposure,
           coalesce(sum(unrealized_pnl), 0) AS unrealized_pnl,
           coalesce(sum(realized_pnl), 0) AS realized_pnl,
           coalesce(sum(fees), 0) AS fees
    FROM marked GROUP BY user_id
)"""

_OPEN_ORDERS = f"""open_orders AS (
    SELECT user_id, count(*) AS open_orders FROM orders WHERE {_OPEN} GROUP BY user_id
)"""

_SELECT = """
SELECT u.id AS user_id,
       coalesce(c.cash, 0) AS cash,
       coalesce(p.net_exposure, 0) AS positions_value,
       {equity} AS equity,
       coalesce(p.gross_exposure, 0) AS gross_exposure,
       coalesce(p.unrealized_pnl, 0) AS unrealized_pnl,
       coalesce(p.realized_pnl, 0) AS realized_pnl,
       coalesce(p.fees, 0) AS fees,
       coalesce(p.open_positions, 0) AS open_positions,
       coalesce(o.open_orders, 0) AS open_orders{extra}
FROM users u
LEFT JOIN by_user p ON p.user_id = u.id
LEFT JOIN {cash} c ON c.user_id = u.id
LEFT JOIN open_orders o ON o.user_id = u.id
"""

_QUOTE_RANK = " ".join(f"WHEN m.symbol = b.asset || '{quote}' THEN {n}" for n, quote in enumerate(_MARK_QUOTES))
_QUOTE_SYMBOLS = ", ".join(f"b.asset || '{quote}'" for quote in _MARK_QUOTES)

PORTFOLIO_SUMMARY = f"""
CREATE VIEW portfolio_summary AS
{_POSITIONS}, holdings AS (
    SELECT a.user_id, b.asset, b.free + b.locked AS amount,
           CASE WHEN b.asset IN {_STABLECOINS} THEN 1 ELSE m.price END AS mark
    FROM balances b
    JOIN user_accounts a ON a.id = b.account_id
    LEFT JOIN LATERAL (
        SELECT m.price FROM mark_prices m
        WHERE m.exchange = CASE WHEN a.exchange = 'simulator' THEN 'binance' ELSE a.exchange END
          AND m.symbol IN ({_QUOTE_SYMBOLS})
        ORDER BY CASE {_QUOTE_RANK} END
        LIMIT 1
    ) m ON b.asset NOT IN {_STABLECOINS}
    WHERE b.free + b.locked <> 0
), by_holdings AS (
    SELECT user_id,
           coalesce(sum(amount) FILTER (WHERE asset IN {_STABLECOINS}), 0) AS cash,
           coalesce(sum(amount * mark) FILTER (WHERE asset NOT IN {_STABLECOINS}), 0) AS holdings_value,
           array_agg(DISTINCT asset ORDER BY asset) FILTER (WHERE mark IS NULL) AS unpriced_assets
    FROM holdings GROUP BY user_id
), {_OPEN_ORDERS}
{{select}}"""
PORTFOLIO_SUMMARY = PORTFOLIO_SUMMARY.replace(
    "{select}",
    _SELECT.format(
        equity="coalesce(c.cash, 0) + coalesce(c.holdings_value, 0)",
        extra=",\n       coalesce(c.holdings_value, 0) AS holdings_value,"
        "\n       coalesce(c.unpriced_assets, ARRAY[]::text[]) AS unpriced_assets",
        cash="by_holdings",
    ),
)

# revision 0002's view, restored on downgrade: cash is the stablecoins, equity = cash + the positions' value
_PREVIOUS_SUMMARY = f"""
CREATE VIEW portfolio_summary AS
{_POSITIONS}, cash AS (
    SELECT a.user_id, coalesce(sum(b.free + b.locked), 0) AS cash
    FROM balances b JOIN user_accounts a ON a.id = b.account_id
    WHERE b.asset IN {_STABLECOINS}
    GROUP BY a.user_id
), {_OPEN_ORDERS}
{_SELECT.format(equity="coalesce(c.cash, 0) + coalesce(p.net_exposure, 0)", extra="", cash="cash")}"""


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS portfolio_summary")
    op.execute(PORTFOLIO_SUMMARY)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS portfolio_summary")
    op.execute(_PREVIOUS_SUMMARY)
