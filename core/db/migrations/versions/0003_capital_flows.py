"""Capital flows: deposits and withdrawals per account, so NAV and time-weighted returns can tell capital from
performance.

Revision ID: 0003_capital_flows
Revises: 0002_order_lifecycle
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from core.db import schema

revision = "0003_capital_flows"
down_revision = "0002_order_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema.capital_flows.create(op.get_bind())


def downgrade() -> None:
    schema.capital_flows.drop(op.get_bind())
