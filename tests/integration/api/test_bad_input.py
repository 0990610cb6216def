"""A fixed regression set of bad input over real HTTP (the app in front of the running platform, real PostgreSQL,
Redis and simulator): each once answered 500 or quoted PostgreSQL. Each must now be a 422 (or 413) in the API's
own words, naming the field at fault, and no body may carry database text or echo the bad value. Schemathesis
(test_schema.py) explores the rest of the input space; these inputs stay tested whatever it happens to generate."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.integration.api.conftest import ApiHarness, error_code

pytestmark = pytest.mark.integration

# text that only a database error (or a traceback) puts in an answer
DATABASE_TEXT = ("DETAIL", "psycopg", "numeric field overflow", "SQLSTATE", "Traceback", "UnicodeEncodeError")


@dataclass(frozen=True)
class BadInput:
    method: str
    path: str
    role: str  # who sends it: a role allowed to call the route, so only the body can be at fault
    body: bytes  # raw JSON: the escapes are exactly as a client would send them
    field: list[str]  # where the answer must say the fault is


def _json(text: str) -> bytes:
    return text.encode()


SET = {
    "account_key_nul": BadInput(
        "POST", "/accounts", "user", _json(r'{"exchange": "simulator", "api_key": "k\u0000", "api_secret": "s"}'),
        ["body", "api_key"],
    ),
    "account_key_header_injection": BadInput(
        "POST", "/accounts", "user",
        _json(r'{"exchange": "simulator", "api_key": "k\r\nX-Injected: 1", "api_secret": "s"}'), ["body", "api_key"],
    ),
    "account_secret_header_injection": BadInput(
        "POST", "/accounts", "user",
        _json(r'{"exchange": "simulator", "api_key": "k", "api_secret": "s\r\nX-Injected: 1"}'),
        ["body", "api_secret"],
    ),
    "strategy_params_lone_high_surrogate": BadInput(
        "POST", "/strategies", "admin", _json(r'{"name": "s1", "kind": "sma_cross", "params": {"x": "\ud800"}}'),
        ["body", "params", "x"],
    ),
    "strategy_params_key_lone_surrogate": BadInput(
        "POST", "/strategies", "admin", _json(r'{"name": "s2", "kind": "sma_cross", "params": {"\udfff": 1}}'),
        ["body", "params", "\\udfff"],
    ),
    "strategy_patch_lone_low_surrogate": BadInput(
        "PATCH", f"/strategies/{uuid.uuid4()}", "admin", _json(r'{"params": {"x": ["ok", "\udc00"]}}'),
        ["body", "params", "x", 1],
    ),
    "risk_limit_value_1e400": BadInput(
        "PUT", "/risk/limits", "admin",
        _json('{"scope": "fund", "limit_type": "max_order_notional", "value": "1e400"}'), ["body", "value"],
    ),
    "risk_limit_value_21_digits": BadInput(
        "PUT", "/risk/limits", "admin",
        _json('{"scope": "fund", "limit_type": "max_order_notional", "value": "100000000000000000000"}'),
        ["body", "value"],
    ),
    "kill_switch_reason_nul": BadInput(
        "POST", "/risk/kill-switch", "admin", _json(r'{"scope": "fund", "reason": "x\u0000"}'), ["body", "reason"]
    ),
    "login_password_lone_surrogate": BadInput(
        "POST", "/auth/login", "anyone", _json(r'{"username": "nobody", "password": "\ud83d"}'), ["body", "password"]
    ),
}  # fmt: skip


@pytest.fixture
async def senders(api: ApiHarness) -> AsyncIterator[dict[str, dict[str, str]]]:
    """Headers per role: a user with a linked account, an admin, and no token."""
    user = await api.new_user("user", with_account=True)
    admin = await api.new_user("admin")
    yield {"user": api.headers(user), "admin": api.headers(admin), "anyone": {}}


@pytest.mark.parametrize("case", SET.values(), ids=SET.keys())
async def test_bad_input_gets_422_naming_the_field_without_database_text(
    api: ApiHarness, senders: dict[str, dict[str, str]], case: BadInput
) -> None:
    headers = {**senders[case.role], "Content-Type": "application/json"}
    answer = await api.client.request(case.method, case.path, content=case.body, headers=headers)

    assert answer.status_code == 422, answer.text
    assert error_code(answer) == "validation_error"
    assert case.field in [fault["location"] for fault in answer.json()["error"]["details"]], answer.text
    assert not [text for text in DATABASE_TEXT if text in answer.text], answer.text
    assert "X-Injected" not in answer.text  # a refused secret is never echoed


async def _chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_a_chunked_body_over_the_limit_gets_413_like_one_with_a_content_length(
    api: ApiHarness, senders: dict[str, dict[str, str]]
) -> None:
    limit = api.app.state.settings.api.max_body_bytes
    headers = {**senders["admin"], "Content-Type": "application/json"}
    big: dict[str, Any] = {"name": "big", "kind": "sma_cross", "params": {"pad": "x" * limit}}
    body = orjson.dumps(big)

    declared = await api.client.post("/strategies", content=body, headers=headers)
    chunked = await api.client.post("/strategies", content=_chunks(body), headers=headers)

    assert "content-length" not in chunked.request.headers  # sent without one, as a stream
    assert (declared.status_code, chunked.status_code) == (413, 413), chunked.text
    assert error_code(declared) == error_code(chunked) == "payload_too_large"
    # a chunked body under the limit reaches the route whole
    small = orjson.dumps({"name": "small", "kind": "sma_cross", "params": {"fast": 5}})
    created = await api.client.post("/strategies", content=_chunks(small, 7), headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["params"] == {"fast": 5}
