"""/analytics over real HTTP against a warehouse the real pipeline built: a generated fund in PostgreSQL,
materialized by Dagster (extract -> dbt -> publish). The endpoints must give the numbers ``warehouse.queries``
gives on the same published file; users read only their own scopes; nothing published is a 503.

The pipeline runs once per module (about 20 s) into a database and directory of the module's own; each test
publishes a copy of that warehouse into its app's store and adds the fund's users and accounts to its database.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dagster import DagsterInstance

from tests.conftest import Servers, scratch_database
from tests.integration.api.conftest import ApiHarness, ApiUser, error_code
from tests.integration.warehouse.test_pipeline import Pipeline
from warehouse import queries
from warehouse.demo import Fund, FundSpec, generate_fund
from warehouse.store import WarehouseStore

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Built:
    fund: Fund
    published: Path


@pytest.fixture(scope="module")
def built(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    with scratch_database(servers.database_url) as url:
        fund = generate_fund(url, FundSpec(users=2, days=3, fills=120, strategies=2))
        pipeline = Pipeline(url, tmp_path_factory.mktemp("analytics") / "warehouse", fund)
        with DagsterInstance.ephemeral() as instance:
            assert pipeline.run(instance) == (True, True)
        published = WarehouseStore(pipeline.root).current_path()
        assert published is not None
        yield Built(fund, published)


def publish_into_app(api: ApiHarness, built: Built) -> WarehouseStore:
    """The built warehouse, published in the app's own store; the fund's users and accounts in its database."""
    store = api.state.warehouse
    store.working_path()  # creates the store's directory
    shutil.copyfile(built.published, store.marts_path())
    store.publish()
    with psycopg.connect(api.database_url) as conn:
        for n, (user_id, account_id) in enumerate(zip(built.fund.users, built.fund.accounts, strict=True)):
            conn.execute("INSERT INTO users (id, username) VALUES (%s, %s)", (user_id, f"fund-trader-{n}"))
            conn.execute(
                "INSERT INTO user_accounts (id, user_id, exchange, label, api_key_encrypted, api_secret_encrypted,"
                " key_version, api_key_masked) VALUES (%s, %s, 'simulator', 'main', '\\x00', '\\x00', 1, '****')",
                (account_id, user_id),
            )
        conn.commit()
    return store


def same(api_value: Any, frame_value: Any) -> bool:
    """The API's JSON value is the frame's: numbers as floats, NaN/inf as null, times as ISO text."""
    if frame_value is None:
        return api_value is None
    if isinstance(frame_value, (int, float)) or hasattr(frame_value, "is_finite"):
        number = float(frame_value)
        return api_value is None if not math.isfinite(number) else api_value == number
    if hasattr(frame_value, "isoformat"):
        return str(api_value)[:10] == frame_value.isoformat()[:10]
    return bool(api_value == frame_value)


def assert_rows_match(rows: list[dict[str, Any]], frame: Any, rename: dict[str, str] | None = None) -> None:
    rename = rename or {}
    expected = frame.to_dicts()
    assert len(rows) == len(expected) > 0
    for got, want in zip(rows, expected, strict=True):
        for column, value in want.items():
            key = rename.get(column, column)
            assert same(got[key], value), (column, got[key], value)


async def test_analytics_before_anything_is_published_answer_503_warehouse_not_ready(api: ApiHarness) -> None:
    manager = await api.new_user("fund_manager")
    for path, params in (
        ("/analytics/nav", {"scope": "fund"}),
        ("/analytics/performance", {}),
        ("/analytics/risk", {"scope": "fund"}),
        ("/analytics/exposures", {"scope": "fund"}),
    ):
        response = await api.client.get(path, params=params, headers=api.headers(manager))
        assert response.status_code == 503 and error_code(response) == "warehouse_not_ready", path
        assert "pipeline" in response.json()["error"]["message"]


async def test_fund_manager_gets_the_warehouse_queries_numbers_for_every_scope(api: ApiHarness, built: Built) -> None:
    store = publish_into_app(api, built)
    manager = await api.new_user("fund_manager")
    headers = api.headers(manager)
    account = built.fund.accounts[0]

    daily = (await api.client.get("/analytics/nav", params={"scope": "fund"}, headers=headers)).json()
    assert daily["frequency"] == "daily"
    assert_rows_match(daily["points"], queries.nav_series(store, "fund", ""), {"day": "at"})
    hourly = await api.client.get(
        "/analytics/nav", params={"scope": "account", "scope_id": account, "frequency": "hourly"}, headers=headers
    )
    frame = queries.nav_series(store, "account", account, frequency="hourly")
    assert_rows_match(hourly.json()["points"], frame, {"hour": "at"})
    assert hourly.json()["points"][-1]["nav"] == float(frame["nav"][-1]) > 0

    performance = (await api.client.get("/analytics/performance", headers=headers)).json()["rows"]
    assert_rows_match(performance, queries.performance_table(store))
    one = await api.client.get(
        "/analytics/performance", params={"scope": "account", "scope_id": account}, headers=headers
    )
    assert {r["scope_id"] for r in one.json()["rows"]} == {account}

    risk = (await api.client.get("/analytics/risk", params={"scope": "fund"}, headers=headers)).json()
    assert_rows_match(risk["var"], queries.risk_table(store, "fund", ""))
    assert len(risk["var"]) == 6

    exposures = await api.client.get(
        "/analytics/exposures", params={"scope": "account", "scope_id": account}, headers=headers
    )
    body = exposures.json()
    expected = queries.exposures(store, "account", account)
    if expected.height:
        assert_rows_match(body["exposures"], expected)
    summary = queries.risk_summary(store, "account").filter(scope_id=account).to_dicts()[0]
    assert all(same(body["summary"][k], v) for k, v in summary.items() if k not in ("scope", "scope_id"))

    bad = await api.client.get("/analytics/nav", params={"scope": "fund", "scope_id": account}, headers=headers)
    assert bad.status_code == 422 and error_code(bad) == "invalid_scope"
    wrong = await api.client.get("/analytics/nav", params={"scope": "fund", "frequency": "weekly"}, headers=headers)
    assert wrong.status_code == 422 and error_code(wrong) == "validation_error"


async def test_user_reads_only_their_own_user_and_account_scopes(api: ApiHarness, built: Built) -> None:
    store = publish_into_app(api, built)
    (me, other), (mine, theirs) = built.fund.users, built.fund.accounts
    user = ApiUser(me, "fund-trader-0", "user")
    headers = api.headers(user)

    own = await api.client.get("/analytics/nav", params={"scope": "user", "scope_id": me}, headers=headers)
    assert own.status_code == 200
    assert_rows_match(own.json()["points"], queries.nav_series(store, "user", me), {"day": "at"})
    account = await api.client.get("/analytics/risk", params={"scope": "account", "scope_id": mine}, headers=headers)
    assert account.status_code == 200
    assert_rows_match(account.json()["var"], queries.risk_table(store, "account", mine))
    performance = await api.client.get(
        "/analytics/performance", params={"scope": "user", "scope_id": me}, headers=headers
    )
    assert {r["scope_id"] for r in performance.json()["rows"]} == {me}

    for path, params in (
        ("/analytics/nav", {"scope": "user", "scope_id": other}),
        ("/analytics/nav", {"scope": "account", "scope_id": theirs}),
        ("/analytics/risk", {"scope": "fund"}),
        ("/analytics/exposures", {"scope": "strategy", "scope_id": built.fund.strategies[0]}),
        ("/analytics/performance", {}),
        ("/analytics/performance", {"scope": "account", "scope_id": theirs}),
    ):
        refused = await api.client.get(path, params=params, headers=headers)
        assert refused.status_code == 403 and error_code(refused) == "forbidden", (path, params)
