"""Trade gaps: trade-id holes of the market-data collector, kept until their trades are stored.

Revision ID: 0004_trade_gaps
Revises: 0003_capital_flows
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

from core.db import schema

revision = "0004_trade_gaps"
down_revision = "0003_capital_flows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema.trade_gaps.create(op.get_bind())


def downgrade() -> None:
    schema.trade_gaps.drop(op.get_bind())
