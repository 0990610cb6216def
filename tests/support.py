"""Helpers shared by integration tests: seed users and accounts, build orders."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg

from core.domain.orders import OrderSide, OrderType, PlaceOrder


async def seed_users(conn: psycopg.AsyncConnection[tuple[object, ...]], count: int) -> list[tuple[str, str]]:
    """``count`` users with one simulator account each; returns [(user_id, account_id)]."""
    pairs = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(count)]
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO users (id, username, role) VALUES (%s, %s, 'user')",
            [(u, f"user-{u[:8]}") for u, _ in pairs],
        )
        await cur.executemany(
            "INSERT INTO user_accounts (id, user_id, exchange, label, api_key_encrypted, api_secret_encrypted,"
            " key_version, api_key_masked) VALUES (%s, %s, 'simulator', 'main', '\\x00', '\\x00', 1, '****')",
            [(a, u) for u, a in pairs],
        )
    return pairs


def place_command(
    user_id: str,
    account_id: str,
    client_order_id: str | None = None,
    qty: str = "0.01",
    correlation_id: str | None = None,
) -> PlaceOrder:
    return PlaceOrder(
        account_id=account_id,
        user_id=user_id,
        client_order_id=client_order_id or uuid.uuid4().hex,
        exchange="simulator",
        symbol="BTCUSDT",
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal(qty),
        price=Decimal("50000"),
        correlation_id=correlation_id,
    )
