"""Pre-trade risk checks: every check passes a good order and denies a bad one with a reason naming the detail."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

from core.domain.orders import Order, OrderDenied, OrderSide, OrderType, PlaceOrder
from realtime.risk.pretrade import (
    PASS,
    PRE_TRADE_CHECKS,
    RiskCheck,
    RiskContext,
    RiskDecision,
    RiskLimits,
    SymbolFilters,
    check_account_owner,
    check_daily_loss,
    check_gross_exposure,
    check_kill_switch,
    check_known_symbol,
    check_lot_size,
    check_max_open_orders,
    check_max_order_notional,
    check_max_position,
    check_min_notional,
    check_order_rate,
    check_price_band,
    check_tick_size,
    check_valid_numbers,
    deny,
    evaluate,
)

D = Decimal


def make_cmd(**overrides: Any) -> PlaceOrder:
    fields: dict[str, Any] = {
        "account_id": "acc-1",
        "user_id": "u1",
        "client_order_id": "c1",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "side": OrderSide.BUY,
        "order_type": OrderType.LIMIT,
        "quantity": D("0.01"),
        "price": D("50000"),
    }
    fields.update(overrides)
    return PlaceOrder(**fields)


def make_ctx(
    limits: dict[str, Any] | None = None, filters: dict[str, Any] | None = None, **overrides: Any
) -> RiskContext:
    base_filters = {"tick_size": D("0.1"), "step_size": D("0.001"), "min_qty": D("0.001"), "min_notional": D("10")}
    base_limits = {
        "max_order_notional": D("10000"),
        "max_position_per_symbol": D("1"),
        "max_gross_exposure_account": D("100000"),
        "max_gross_exposure_user": D("200000"),
        "max_gross_exposure_fund": D("1000000"),
        "max_open_orders": 10,
        "max_orders_per_minute": 60,
        "price_band_pct": D("5"),
        "daily_loss_limit": D("1000"),
    }
    fields: dict[str, Any] = {
        "filters": SymbolFilters(**{**base_filters, **(filters or {})}),
        "limits": RiskLimits(**{**base_limits, **(limits or {})}),
        "account_owner_user_id": "u1",
        "mark_price": D("50000"),
        "start_of_day_equity": D("10000"),
        "equity": D("10000"),
    }
    fields.update(overrides)
    return RiskContext(**fields)


# (check, command overrides, context overrides, expected substrings of the reason)
DENY_CASES: list[tuple[RiskCheck, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    (check_valid_numbers, {"quantity": D(0)}, {}, ("quantity 0", "positive")),
    (check_valid_numbers, {"quantity": D("-1")}, {}, ("quantity -1", "positive")),
    (check_valid_numbers, {"quantity": D("NaN")}, {}, ("quantity NaN", "finite")),
    (check_valid_numbers, {"quantity": D("Infinity")}, {}, ("quantity Infinity", "finite")),
    (check_valid_numbers, {"price": D(0)}, {}, ("price 0", "positive")),
    (check_valid_numbers, {"price": D("-50000")}, {}, ("price -50000", "positive")),
    (check_valid_numbers, {"price": D("NaN")}, {}, ("price NaN", "finite")),
    (check_valid_numbers, {"price": D("-Infinity")}, {}, ("price -Infinity", "finite")),
    (check_valid_numbers, {"price": None}, {}, ("price is required", "limit")),
    (
        check_valid_numbers,
        {"order_type": OrderType.STOP_MARKET, "price": None, "trigger_price": D("sNaN")},
        {},
        ("trigger price", "finite"),
    ),
    (
        check_valid_numbers,
        {"order_type": OrderType.STOP_MARKET, "price": None},
        {},
        ("trigger price is required", "stop_market"),
    ),
    (check_known_symbol, {"symbol": "FOOBAR"}, {"filters": {"known": False}}, ("unknown symbol FOOBAR",)),
    (check_account_owner, {"user_id": "mallory"}, {}, ("mallory", "does not own account acc-1")),
    (check_kill_switch, {}, {"kill_switches": frozenset({"account"})}, ("account kill switch",)),
    (check_kill_switch, {}, {"kill_switches": frozenset({"user"})}, ("user kill switch",)),
    (check_kill_switch, {}, {"kill_switches": frozenset({"fund"})}, ("fund kill switch",)),
    (check_tick_size, {"price": D("50000.05")}, {}, ("price 50000.05", "tick size 0.1", "BTCUSDT")),
    (
        check_tick_size,
        {"order_type": OrderType.STOP_LIMIT, "trigger_price": D("49000.01")},
        {},
        ("trigger price 49000.01", "tick size 0.1"),
    ),
    (check_lot_size, {"quantity": D("0.0001")}, {}, ("quantity 0.0001 is below the minimum 0.001 for BTCUSDT",)),
    (check_lot_size, {"quantity": D("0.0015")}, {}, ("quantity 0.0015", "step size 0.001")),
    (check_min_notional, {"quantity": D("0.0001")}, {}, ("notional 5", "minimum 10")),
    (
        check_min_notional,
        {"order_type": OrderType.MARKET, "price": None},
        {"mark_price": None},
        ("no mark price for BTCUSDT", "minimum notional"),
    ),
    (check_max_order_notional, {"quantity": D("0.3")}, {}, ("notional 15000", "maximum 10000")),
    (
        check_max_order_notional,
        {"order_type": OrderType.MARKET, "price": None, "quantity": D("0.3")},
        {"mark_price": D("40000")},
        ("notional 12000", "maximum 10000"),
    ),
    (
        check_max_order_notional,
        {"order_type": OrderType.MARKET, "price": None},
        {"mark_price": None},
        ("no mark price for BTCUSDT",),
    ),
    (check_max_position, {"quantity": D("0.5")}, {"position_qty": D("0.8")}, ("BTCUSDT would be 1.3", "limit of 1")),
    (
        check_max_position,
        {"side": OrderSide.SELL, "quantity": D("0.5")},
        {"position_qty": D("-0.8")},
        ("would be -1.3", "limit of 1"),
    ),
    (check_gross_exposure, {}, {"gross_exposure_account": D("99800")}, ("account gross exposure would be 100300",)),
    (check_gross_exposure, {}, {"gross_exposure_user": D("199800")}, ("user gross exposure would be 200300",)),
    (check_gross_exposure, {}, {"gross_exposure_fund": D("999800")}, ("fund gross exposure would be 1000300",)),
    (check_max_open_orders, {}, {"open_orders": 10}, ("10 open orders", "limit is 10")),
    (check_order_rate, {}, {"orders_last_minute": 60}, ("60 orders in the last minute", "60 per minute")),
    (check_price_band, {"price": D("53000")}, {}, ("price 53000", "±5%", "mark 50000")),
    (check_price_band, {"price": D("47000")}, {}, ("price 47000", "outside")),
    (check_price_band, {}, {"mark_price": None}, ("no mark price", "price band")),
    (check_daily_loss, {}, {"equity": D("9000")}, ("daily loss limit 1000", "equity 9000", "reduce-only")),
    (check_daily_loss, {}, {"equity": D("8500")}, ("daily loss limit 1000",)),
]

PASS_CASES: list[tuple[RiskCheck, dict[str, Any], dict[str, Any]]] = [
    (check_valid_numbers, {}, {}),
    (check_valid_numbers, {"order_type": OrderType.MARKET, "price": None}, {}),
    (check_valid_numbers, {"order_type": OrderType.STOP_LIMIT, "trigger_price": D("49000")}, {}),
    (check_known_symbol, {}, {}),
    (check_account_owner, {}, {}),
    (check_kill_switch, {}, {}),
    (check_tick_size, {"price": D("50000.1")}, {}),
    (check_tick_size, {"price": D("50000.05")}, {"filters": {"tick_size": None}}),
    (check_lot_size, {"quantity": D("0.001")}, {}),
    (check_min_notional, {"quantity": D("0.001")}, {}),
    (check_min_notional, {"order_type": OrderType.MARKET, "price": None}, {}),
    (check_max_order_notional, {"quantity": D("0.2")}, {}),
    (check_max_order_notional, {"quantity": D("100")}, {"limits": {"max_order_notional": None}}),
    (check_max_position, {"quantity": D("0.2")}, {"position_qty": D("0.8")}),
    (check_max_position, {"side": OrderSide.SELL, "quantity": D("0.5")}, {"position_qty": D("1.5")}),
    (check_gross_exposure, {}, {"gross_exposure_account": D("99000")}),
    (check_gross_exposure, {"reduce_only": True}, {"gross_exposure_account": D("99800")}),
    (check_max_open_orders, {}, {"open_orders": 9}),
    (check_order_rate, {}, {"orders_last_minute": 59}),
    (check_price_band, {"price": D("52500")}, {}),
    (check_price_band, {"price": D("47500")}, {}),
    (check_price_band, {"order_type": OrderType.MARKET, "price": None}, {}),
    (check_daily_loss, {}, {"equity": D("9000.01")}),
    (check_daily_loss, {"reduce_only": True, "side": OrderSide.SELL}, {"equity": D("5000")}),
]


def _build(cmd_over: dict[str, Any], ctx_over: dict[str, Any]) -> tuple[PlaceOrder, RiskContext]:
    return make_cmd(**cmd_over), make_ctx(**ctx_over)


@pytest.mark.parametrize(("check", "cmd_over", "ctx_over"), PASS_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_valid_order_each_check_passes(check: RiskCheck, cmd_over: dict[str, Any], ctx_over: dict[str, Any]) -> None:
    cmd, ctx = _build(cmd_over, ctx_over)
    assert check(cmd, ctx) == PASS


@pytest.mark.parametrize(
    ("check", "cmd_over", "ctx_over", "expected"), DENY_CASES, ids=lambda v: getattr(v, "__name__", None)
)
def test_bad_order_each_check_denies_with_reason(
    check: RiskCheck, cmd_over: dict[str, Any], ctx_over: dict[str, Any], expected: tuple[str, ...]
) -> None:
    cmd, ctx = _build(cmd_over, ctx_over)
    decision = check(cmd, ctx)
    assert not decision.allowed
    assert decision.reason is not None
    for detail in expected:
        assert detail in decision.reason


def test_every_check_has_pass_and_deny_cases() -> None:
    assert {c for c, *_ in PASS_CASES} == set(PRE_TRADE_CHECKS)
    assert {c for c, *_ in DENY_CASES} == set(PRE_TRADE_CHECKS)


def test_valid_order_evaluate_passes() -> None:
    assert evaluate(make_cmd(), make_ctx()) == PASS


def test_no_limits_configured_evaluate_passes() -> None:
    ctx = make_ctx(limits={f.name: None for f in dataclasses.fields(RiskLimits)}, mark_price=None)
    assert evaluate(make_cmd(quantity=D("1000")), ctx) == PASS


def test_several_violations_evaluate_returns_first_denial() -> None:
    cmd = make_cmd(user_id="mallory", quantity=D("0.0001"))
    decision = evaluate(cmd, make_ctx(kill_switches=frozenset({"fund"})))
    assert decision == deny("user mallory does not own account acc-1")


def test_nan_quantity_evaluate_denies_before_arithmetic_checks() -> None:
    decision = evaluate(make_cmd(quantity=D("NaN")), make_ctx())
    assert not decision.allowed
    assert decision.reason == "quantity NaN is not a finite number"


def test_custom_check_order_evaluate_uses_given_sequence() -> None:
    cmd = make_cmd(user_id="mallory", quantity=D("0.0001"))
    decision = evaluate(cmd, make_ctx(), checks=(check_lot_size, check_account_owner))
    assert decision.reason is not None and "below the minimum" in decision.reason


def test_reduce_only_after_daily_loss_evaluate_passes() -> None:
    cmd = make_cmd(side=OrderSide.SELL, reduce_only=True)
    ctx = make_ctx(position_qty=D("0.5"), equity=D("8000"))
    assert evaluate(cmd, ctx) == PASS
    assert not evaluate(make_cmd(), ctx).allowed


def test_denial_reason_becomes_order_denied_event() -> None:
    cmd = make_cmd(quantity=D("0.0001"))
    decision = evaluate(cmd, make_ctx())
    assert isinstance(decision, RiskDecision) and decision.reason is not None
    order = Order.place(cmd, order_id="o1")
    order.deny(decision.reason)
    event = order.pending_events[-1]
    assert isinstance(event, OrderDenied)
    assert event.reason == "quantity 0.0001 is below the minimum 0.001 for BTCUSDT"
