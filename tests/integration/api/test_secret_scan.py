"""Exchange secrets linked through the API never appear in plain form: not in any response, not in the database
dump, not in any log line written while they were linked, used for orders, listed and unlinked."""

from __future__ import annotations

import asyncio
import io

import pytest

from core.observability.logging import configure_logging
from tests.integration.api.conftest import ApiHarness, link_account, venue_account
from tests.integration.test_key_rotation import _assert_absent, _forbidden_forms, _pg_dump

pytestmark = pytest.mark.integration


async def test_database_dump_logs_and_responses_hold_no_plaintext_exchange_secret(api: ApiHarness) -> None:
    logs = io.StringIO()
    configure_logging("test", level="DEBUG", stream=logs)
    responses: list[str] = []
    try:
        user = await api.new_user()
        api_key, secret = await venue_account(api)
        linked = await link_account(api, user, api_key, secret, label="scan")
        assert linked.status_code == 201, linked.text
        account_id = linked.json()["id"]
        # a refused link logs the venue's answer: it must not carry the secret
        refused = await link_account(api, user, api_key, secret + "x", label="bad")
        assert refused.status_code == 400
        await api.platform.follow_accounts()
        order = await api.client.post(
            "/orders",
            json={
                "account_id": account_id,
                "symbol": "BTCUSDT",
                "side": "buy",
                "order_type": "market",
                "quantity": "0.001",
            },
            headers=api.headers(user),
        )
        assert order.status_code == 201, order.text
        await asyncio.sleep(1.0)  # the venue call, its report and the lifecycle's writes
        for path in ("/accounts", f"/accounts/{account_id}", "/orders", "/portfolio"):
            responses.append((await api.client.get(path, headers=api.headers(user))).text)
        responses += [linked.text, refused.text, order.text]
        assert (await api.client.delete(f"/accounts/{account_id}", headers=api.headers(user))).status_code in (200, 204)
    finally:
        configure_logging("test")
    forms = _forbidden_forms({account_id: (api_key, secret)})
    assert logs.getvalue().count("\n") > 10  # the logs really were captured
    _assert_absent(forms, _pg_dump(api.database_url), logs.getvalue(), *responses)
