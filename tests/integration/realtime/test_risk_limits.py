"""Risk limits per scope in PostgreSQL: the most specific wins, exposure is per scope, changes apply at once."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from realtime.risk.limits import InvalidRiskLimit, load_limits, set_limit
from realtime.risk.pretrade import RiskContext, SymbolFilters, evaluate
from tests.support import place_command

pytestmark = pytest.mark.integration


async def test_account_beats_user_beats_fund_and_changes_apply_without_restart(migrated_database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_database_url, autocommit=True) as conn:
        await set_limit(conn, "fund", "", "max_order_notional", Decimal("100000"))
        await set_limit(conn, "user", "u1", "max_order_notional", Decimal("5000"))
        await set_limit(conn, "fund", "", "max_open_orders", Decimal("50"))
        await set_limit(conn, "account", "a1", "max_gross_exposure", Decimal("20000"))
        await set_limit(conn, "fund", "", "max_gross_exposure", Decimal("1000000"))
        limits, killed = await load_limits(conn, "a1", "u1")
        assert limits.max_order_notional == Decimal("5000")
        assert limits.max_open_orders == 50
        assert limits.max_gross_exposure_account == Decimal("20000")
        assert limits.max_gross_exposure_fund == Decimal("1000000")
        assert limits.max_gross_exposure_user is None and killed == frozenset()
        other, _ = await load_limits(conn, "a2", "u2")
        assert other.max_order_notional == Decimal("100000"), "another user gets the fund's limit"

        await set_limit(conn, "account", "a1", "max_order_notional", Decimal("100"))
        await set_limit(conn, "user", "u1", "kill_switch", Decimal(1))
        limits, killed = await load_limits(conn, "a1", "u1")
        assert limits.max_order_notional == Decimal("100") and killed == frozenset({"user"})

        cmd = place_command("u1", "a1", qty="0.01")  # 0.01 at 50,000 = 500 notional
        ctx = RiskContext(
            filters=SymbolFilters(),
            account_owner_user_id="u1",
            limits=limits,
            kill_switches=killed,
            mark_price=Decimal("50000"),
        )
        decision = evaluate(cmd, ctx)
        assert not decision.allowed and "kill switch" in (decision.reason or "").lower()

        await set_limit(conn, "user", "u1", "kill_switch", None)
        await set_limit(conn, "account", "a1", "max_order_notional", None)
        limits, killed = await load_limits(conn, "a1", "u1")
        assert killed == frozenset() and limits.max_order_notional == Decimal("5000")
        ctx = RiskContext(
            filters=SymbolFilters(), account_owner_user_id="u1", limits=limits, mark_price=Decimal("50000")
        )
        assert evaluate(cmd, ctx).allowed


@pytest.mark.parametrize(
    ("scope", "limit_type", "value"),
    [
        ("desk", "max_order_notional", Decimal(1)),
        ("fund", "max_leverage_typo", Decimal(1)),
        ("fund", "max_order_notional", Decimal(-1)),
        ("fund", "max_order_notional", Decimal("NaN")),
    ],
)
async def test_invalid_limits_are_refused_with_a_reason(
    migrated_database_url: str, scope: str, limit_type: str, value: Decimal
) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_database_url, autocommit=True) as conn:
        with pytest.raises(InvalidRiskLimit):
            await set_limit(conn, scope, "x", limit_type, value)
        assert await (await conn.execute("SELECT count(*) FROM risk_limits")).fetchone() == (0,)
