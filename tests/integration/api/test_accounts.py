"""/accounts over real HTTP against the simulator: keys are checked by the venue, stored sealed, shown masked,
and a user only ever reaches their own accounts."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.integration.api.conftest import ApiHarness, error_code, link_account, venue_account

pytestmark = pytest.mark.integration


async def test_linking_valid_keys_stores_them_sealed_and_answers_only_the_masked_key(api: ApiHarness) -> None:
    user = await api.new_user()
    api_key, secret = await venue_account(api)
    response = await link_account(api, user, api_key, secret)
    assert response.status_code == 201, response.text
    account = response.json()
    assert set(account) == {"id", "exchange", "label", "api_key_masked", "active", "created_at"}
    assert account["api_key_masked"] == f"{api_key[:4]}…{api_key[-4:]}" and account["active"] is True
    assert api_key not in response.text and secret not in response.text
    with psycopg.connect(api.database_url) as conn:
        key_blob, secret_blob, owner = conn.execute(
            "SELECT api_key_encrypted, api_secret_encrypted, user_id::text FROM user_accounts WHERE id = %s",
            (account["id"],),
        ).fetchone()  # type: ignore[misc]
    assert owner == user.user_id
    assert api_key.encode() not in bytes(key_blob) and secret.encode() not in bytes(secret_blob)

    listed = (await api.client.get("/accounts", headers=api.headers(user))).json()
    assert [a["id"] for a in listed] == [account["id"]]
    again = await link_account(api, user, api_key, secret)
    assert again.status_code == 409 and error_code(again) == "account_exists"


async def test_linking_keys_the_venue_refuses_is_400_without_echoing_the_secret(api: ApiHarness) -> None:
    user = await api.new_user()
    api_key, secret = await venue_account(api)
    wrong_secret = f"not-the-secret-{uuid.uuid4().hex}"
    unknown_key = f"key{uuid.uuid4().hex}"
    for key, secret_sent in ((api_key, wrong_secret), (unknown_key, secret)):
        response = await link_account(api, user, key, secret_sent, label="x")
        assert response.status_code == 400 and error_code(response) == "invalid_exchange_keys"
        assert "simulator refused" in response.json()["error"]["message"]
        assert secret_sent not in response.text
    # against the simulator, a bybit account could only reach the real venue
    bybit = await link_account(api, user, api_key, secret, label="x", exchange="bybit")
    assert bybit.status_code == 400 and error_code(bybit) == "unsupported_exchange"
    with psycopg.connect(api.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM user_accounts").fetchone() == (0,)


async def test_another_users_account_is_not_found_and_cannot_be_deactivated(api: ApiHarness) -> None:
    owner = await api.new_user(with_account=True)
    other = await api.new_user()
    assert owner.account_id is not None
    assert (await api.client.get(f"/accounts/{owner.account_id}", headers=api.headers(other))).status_code == 404
    deleted = await api.client.delete(f"/accounts/{owner.account_id}", headers=api.headers(other))
    assert deleted.status_code == 404 and error_code(deleted) == "account_not_found"
    assert (await api.client.get("/accounts", headers=api.headers(other))).json() == []

    mine = await api.client.get(f"/accounts/{owner.account_id}", headers=api.headers(owner))
    assert mine.status_code == 200 and mine.json()["active"] is True
    gone = await api.client.delete(f"/accounts/{owner.account_id}", headers=api.headers(owner))
    assert gone.status_code == 200 and gone.json()["active"] is False
    refused = await api.client.post(
        "/orders",
        json={
            "account_id": owner.account_id,
            "symbol": "BTCUSDT",
            "side": "buy",
            "order_type": "market",
            "quantity": "0.001",
        },
        headers=api.headers(owner),
    )
    assert refused.status_code == 409 and error_code(refused) == "account_inactive"


async def test_accounts_need_a_token(api: ApiHarness) -> None:
    assert (await api.client.get("/accounts")).status_code == 401
    response = await api.client.post(
        "/accounts", json={"exchange": "simulator", "label": "x", "api_key": "k", "api_secret": "s"}
    )
    assert response.status_code == 401
