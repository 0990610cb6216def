"""Order lifecycle: bracket/OCO links and trigger state on orders, open-order and order-rate indexes, mark prices,
and the portfolio summary view.

Revision 0001 builds its tables from ``core.db.schema``, which now declares the new ``orders`` columns too, so a
fresh database already has them: the column changes here are ``IF NOT EXISTS`` and only touch databases created
at 0001.

Revision ID: 0002_order_lifecycle
Revises: 0001_initial
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from core.db import schema

revision = "0002_order_lifecycle"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_OPEN = "status NOT IN ('filled', 'canceled', 'rejected', 'denied', 'expired')"

PORTFOLIO_SUMMARY = (
    """
CREATE VIEW portfolio_summary AS
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
), cash AS (
    SELECT a.user_id, coalesce(sum(b.free + b.locked), 0) AS cash
    FROM balances b JOIN user_accounts a ON a.id = b.account_id
    WHERE b.asset IN ('USDT', 'USDC', 'FDUSD', 'USD')
    GROUP BY a.user_id
), open_orders AS (
    SELECT user_id, count(*) AS open_orders FROM orders WHERE """
    + _OPEN
    + """ GROUP BY user_id
)
SELECT u.id AS user_id,
       coalesce(c.cash, 0) AS cash,
       coalesce(p.net_exposure, 0) AS positions_value,
       coalesce(c.cash, 0) + coalesce(p.net_exposure, 0) AS equity,
       coalesce(p.gross_exposure, 0) AS gross_exposure,
       coalesce(p.unrealized_pnl, 0) AS unrealized_pnl,
       coalesce(p.realized_pnl, 0) AS realized_pnl,
       coalesce(p.fees, 0) AS fees,
       coalesce(p.open_positions, 0) AS open_positions,
       coalesce(o.open_orders, 0) AS open_orders
FROM users u
LEFT JOIN by_user p ON p.user_id = u.id
LEFT JOIN cash c ON c.user_id = u.id
LEFT JOIN open_orders o ON o.user_id = u.id
"""
)


def upgrade() -> None:
    op.execute("ALTER TABLE orders ADD COLUMN IF NOT EXISTS parent_order_id uuid")
    op.execute("ALTER TABLE orders ADD COLUMN IF NOT EXISTS oco_group text")
    op.execute("ALTER TABLE orders ADD COLUMN IF NOT EXISTS details jsonb")
    op.execute(f"CREATE INDEX ix_orders_open ON orders (account_id, symbol) WHERE {_OPEN}")
    op.execute("CREATE INDEX ix_orders_account_created ON orders (account_id, created_at)")
    op.execute("CREATE INDEX ix_orders_parent ON orders (parent_order_id) WHERE parent_order_id IS NOT NULL")
    op.execute("CREATE INDEX ix_orders_armed ON orders (id, version) WHERE status = 'armed'")
    op.execute("CREATE INDEX ix_orders_oco ON orders (oco_group) WHERE oco_group IS NOT NULL")
    schema.mark_prices.create(op.get_bind())
    op.execute(PORTFOLIO_SUMMARY)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS portfolio_summary")
    schema.mark_prices.drop(op.get_bind())
    op.execute("DROP INDEX IF EXISTS ix_orders_oco")
    op.execute("DROP INDEX IF EXISTS ix_orders_armed")
    op.execute("DROP INDEX IF EXISTS ix_orders_parent")
    op.execute("DROP INDEX IF EXISTS ix_orders_account_created")
    op.execute("DROP INDEX IF EXISTS ix_orders_open")
    for column in ("details", "oco_group", "parent_order_id"):
        op.execute(f"ALTER TABLE orders DROP COLUMN IF EXISTS {column}")
