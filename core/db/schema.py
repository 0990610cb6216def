"""Relational schema of the platform (SQLAlchemy Core). Money and quantities are NUMERIC, times are timestamptz.

Time-series tables (market data, snapshots, metrics) live in :mod:`core.db.timeseries`: they are hypertables
when TimescaleDB exists and native range-partitioned tables otherwise, so their DDL is built there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.types import UserDefinedType

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

MONEY = Numeric(38, 18)
"""Prices, quantities, balances and fees: exact decimals, wide enough for any venue's precision."""


class XID8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id: the outbox relay orders rows by it (see core.messaging.relay)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


def _created() -> Column[Any]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated() -> Column[Any]:
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("telegram_id", BigInteger, nullable=True, unique=True),
    Column("username", Text, nullable=False, unique=True),
    Column("role", Text, nullable=False, server_default="user"),
    Column("status", Text, nullable=False, server_default="active"),
    Column("password_hash", Text, nullable=True),
    # sessions (refresh families) begun at or before this instant are over: set when the password changes
    Column("sessions_valid_after", DateTime(timezone=True), nullable=True),
    _created(),
    _updated(),
    CheckConstraint("role IN ('user', 'fund_manager', 'admin')", name="role"),
    CheckConstraint("status IN ('pending', 'active', 'suspended', 'closed')", name="status"),
)

user_accounts = Table(
    "user_accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("users.id"), nullable=False, index=True),
    Column("exchange", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("api_key_encrypted", LargeBinary, nullable=False),
    Column("api_secret_encrypted", LargeBinary, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("api_key_masked", Text, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _created(),
    _updated(),
    UniqueConstraint("user_id", "exchange", "label", name="uq_user_accounts_user_exchange_label"),
    # target of the (account_id, user_id) foreign keys: a row's user is always its account's owner
    UniqueConstraint("id", "user_id", name="uq_user_accounts_id_user"),
    CheckConstraint("exchange IN ('binance', 'bybit', 'simulator')", name="exchange"),
)

strategies = Table(
    "strategies",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("params", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", Text, nullable=False, server_default="inactive"),
    _created(),
    _updated(),
    CheckConstraint("status IN ('inactive', 'active', 'paused', 'retired')", name="status"),
)

strategy_assignments = Table(
    "strategy_assignments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("strategy_id", UUID(as_uuid=True), ForeignKey("strategies.id"), nullable=False),
    Column("account_id", UUID(as_uuid=True), ForeignKey("user_accounts.id"), nullable=False, index=True),
    Column("allocation", MONEY, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _created(),
    UniqueConstraint("strategy_id", "account_id", name="uq_strategy_assignments_strategy_account"),
    CheckConstraint("allocation >= 0", name="allocation_non_negative"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("strategy_id", UUID(as_uuid=True), ForeignKey("strategies.id"), nullable=True),
    Column("client_order_id", Text, nullable=False),
    Column("exchange_order_id", Text, nullable=True),
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("order_type", Text, nullable=False),
    Column("time_in_force", Text, nullable=False, server_default="GTC"),
    Column("quantity", MONEY, nullable=False),
    Column("price", MONEY, nullable=True),
    Column("trigger_price", MONEY, nullable=True),
    Column("reduce_only", Boolean, nullable=False, server_default=text("false")),
    Column("status", Text, nullable=False),
    Column("filled_quantity", MONEY, nullable=False, server_default="0"),
    Column("avg_fill_price", MONEY, nullable=True),
    Column("fees", MONEY, nullable=False, server_default="0"),
    Column("reason", Text, nullable=True),
    Column("version", Integer, nullable=False),
    _created(),
    _updated(),
    # added by 0002_order_lifecycle: bracket/OCO links; details: trigger state, the order it replaces
    Column("parent_order_id", UUID(as_uuid=True), nullable=True),
    Column("oco_group", Text, nullable=True),
    Column("details", JSONB, nullable=True),
    ForeignKeyConstraint(
        ["account_id", "user_id"], ["user_accounts.id", "user_accounts.user_id"], name="fk_orders_account_owner"
    ),
    UniqueConstraint("account_id", "client_order_id", name="uq_orders_account_client_order_id"),
    CheckConstraint("side IN ('buy', 'sell')", name="side"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint("filled_quantity >= 0 AND filled_quantity <= quantity", name="filled_within_quantity"),
    Index("ix_orders_user_status", "user_id", "status"),
    Index("ix_orders_account_symbol_status", "account_id", "symbol", "status"),
)

fills = Table(
    "fills",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("order_id", UUID(as_uuid=True), ForeignKey("orders.id"), nullable=False, index=True),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("trade_id", Text, nullable=False),
    Column("quantity", MONEY, nullable=False),
    Column("price", MONEY, nullable=False),
    Column("fee", MONEY, nullable=False, server_default="0"),
    Column("fee_asset", Text, nullable=True),
    Column("liquidity", Text, nullable=True),
    Column("filled_at", DateTime(timezone=True), nullable=False),
    Column("exchange_ts_ms", BigInteger, nullable=True),
    _created(),
    ForeignKeyConstraint(
        ["account_id", "user_id"], ["user_accounts.id", "user_accounts.user_id"], name="fk_fills_account_owner"
    ),
    UniqueConstraint("account_id", "exchange", "trade_id", name="uq_fills_account_exchange_trade"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint("price > 0", name="price_positive"),
    Index("ix_fills_user_filled_at", "user_id", "filled_at"),
)

positions = Table(
    "positions",
    metadata,
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("symbol", Text, nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("exchange", Text, nullable=False),
    Column("quantity", MONEY, nullable=False, server_default="0"),
    Column("avg_entry_price", MONEY, nullable=True),
    Column("realized_pnl", MONEY, nullable=False, server_default="0"),
    Column("fees", MONEY, nullable=False, server_default="0"),
    Column("version", Integer, nullable=False, server_default="0"),
    _updated(),
    ForeignKeyConstraint(
        ["account_id", "user_id"], ["user_accounts.id", "user_accounts.user_id"], name="fk_positions_account_owner"
    ),
    PrimaryKeyConstraint("account_id", "symbol", name="pk_positions"),
)

balances = Table(
    "balances",
    metadata,
    Column("account_id", UUID(as_uuid=True), ForeignKey("user_accounts.id"), nullable=False),
    Column("asset", Text, nullable=False),
    Column("free", MONEY, nullable=False, server_default="0"),
    Column("locked", MONEY, nullable=False, server_default="0"),
    _updated(),
    PrimaryKeyConstraint("account_id", "asset", name="pk_balances"),
)

risk_limits = Table(
    "risk_limits",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("scope", Text, nullable=False),
    Column("scope_id", Text, nullable=False, server_default=""),
    Column("limit_type", Text, nullable=False),
    Column("value", MONEY, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _updated(),
    UniqueConstraint("scope", "scope_id", "limit_type", name="uq_risk_limits_scope_limit"),
    CheckConstraint("scope IN ('fund', 'user', 'account')", name="scope"),
)

event_store = Table(
    "event_store",
    metadata,
    Column("global_position", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("aggregate_id", Text, nullable=False),
    Column("aggregate_type", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("event_version", Integer, nullable=False),
    Column("event_data", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("aggregate_id", "event_version", name="uq_event_store_aggregate_version"),
    CheckConstraint("event_version > 0", name="version_positive"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(always=True), nullable=False),
    Column("txid", XID8(), nullable=False, server_default=text("pg_current_xact_id()")),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("stream", Text, nullable=False),
    Column("partition_key", Text, nullable=False, server_default=""),
    Column("payload", LargeBinary, nullable=False),
    _created(),
    # the relay's read and delete order: one index serves both, and keeps inserts cheap
    PrimaryKeyConstraint("txid", "id", name="pk_outbox"),
)

capital_flows = Table(
    "capital_flows",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("asset", Text, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("note", Text, nullable=True),
    _created(),
    ForeignKeyConstraint(
        ["account_id", "user_id"], ["user_accounts.id", "user_accounts.user_id"], name="fk_capital_flows_account_owner"
    ),
    CheckConstraint("amount <> 0", name="amount_non_zero"),
    Index("ix_capital_flows_account_ts", "account_id", "ts"),
)
"""Deposits (+) and withdrawals (-) of an account: NAV counts them as capital, returns leave them out."""

mark_prices = Table(
    "mark_prices",
    metadata,
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("price", MONEY, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("exchange", "symbol", name="pk_mark_prices"),
    CheckConstraint("price > 0", name="price_positive"),
)
"""Latest trade price per symbol, kept by the risk monitor: positions are marked to it."""

processed_messages = Table(
    "processed_messages",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id", name="pk_processed_messages"),
    # the consumer's retention prune: its own group's oldest rows first
    Index("ix_processed_messages_consumer_processed_at", "consumer", "processed_at"),
)

trade_gaps = Table(
    "trade_gaps",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("venue", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("first_missing_id", BigInteger, nullable=False),
    Column("last_missing_id", BigInteger, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("venue", "symbol", "first_missing_id", name="uq_trade_gaps_venue_symbol_first"),
    CheckConstraint("last_missing_id >= first_missing_id", name="range_ordered"),
    Index("ix_trade_gaps_open", "venue", "symbol", postgresql_where=text("closed_at IS NULL")),
)
"""Trade-id holes the market-data collector found and has not yet filled: closed only once the trades are stored,
so a hole outlives a failed backfill and a restart."""
