"""/accounts over real HTTP against the simulator: keys are checked by the venue, stored sealed, shown masked,
and a user only ever reaches their own accounts; linking and deactivating are commands to the order service,
recorded as events, and deactivating cancels the account's open orders."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from core.domain.exchange_accounts import LinkExchangeAccount
from core.domain.orders import OrderType
from core.messaging.streams import Stream
from core.security.account_secrets import seal_account, store_account
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


async def test_a_made_up_key_against_the_simulator_is_told_where_its_keys_come_from(api: ApiHarness) -> None:
    user = await api.new_user()
    for exchange in ("simulator", "binance"):  # a deployment on the simulator points binance at it too
        response = await link_account(api, user, "madeUpKey123", "made-up-secret", label=exchange, exchange=exchange)
        assert response.status_code == 400 and error_code(response) == "invalid_exchange_keys"
        message = response.json()["error"]["message"]
        assert "-2015" in message and "POST /admin/accounts" in message and "patriot simulator --help" in message


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


def _account_events(database_url: str, account_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_type, event_version, event_data FROM event_store WHERE aggregate_id = %s"
            " ORDER BY event_version",
            (account_id,),
        ).fetchall()
    return [(kind, version, data) for kind, version, data in rows]


async def test_linking_is_a_command_whose_event_and_stream_entry_hold_no_secret(api: ApiHarness) -> None:
    user = await api.new_user()
    api_key, secret = await venue_account(api)
    linked = await link_account(api, user, api_key, secret, label="events")
    assert linked.status_code == 201, linked.text
    account_id = linked.json()["id"]
    [(kind, version, data)] = _account_events(api.database_url, account_id)
    assert (kind, version) == ("ExchangeAccountLinked", 1)
    assert data["user_id"] == user.user_id and data["api_key_masked"] == linked.json()["api_key_masked"]
    entries = []
    for key in api.state.kernel.names.all_keys(Stream.ORDER_COMMANDS):
        entries += [value for _, fields in await api.state.kernel.redis.xrange(key) for value in fields.values()]
    commands = b"".join(entries)
    assert b"LinkExchangeAccount" in commands  # the request went to the order service as a command ...
    assert api_key.encode() not in commands and secret.encode() not in commands  # ... holding only ciphertext


async def test_an_account_command_handled_again_answers_the_same_and_records_its_event_once(api: ApiHarness) -> None:
    user = await api.new_user()
    api_key, secret = await venue_account(api)
    account_id = str(uuid.uuid4())
    sealed = seal_account(api.state.keyring, account_id, api_key, secret)
    command = LinkExchangeAccount(
        account_id=account_id,
        user_id=user.user_id,
        exchange="simulator",
        label="twice",
        api_key_masked=sealed.api_key_masked,
        api_key_encrypted=sealed.api_key_encrypted,
        api_secret_encrypted=sealed.api_secret_encrypted,
        key_version=sealed.key_version,
    )
    commands = api.state.commands
    first = await commands.send(command, user.user_id)
    second = await commands.send(command, user.user_id)  # a redelivery: the same command id
    assert first == {**first, "ok": True, "duplicate": False} and second == {**second, "ok": True, "duplicate": True}
    assert [e[:2] for e in _account_events(api.database_url, account_id)] == [("ExchangeAccountLinked", 1)]

    # a crash after the row was written and before the event: handled again, the event is recorded then
    crashed = str(uuid.uuid4())
    with psycopg.connect(api.database_url) as conn:
        store_account(conn, api.state.keyring, account_id=crashed, user_id=user.user_id, exchange="simulator",
                      label="crashed", api_key=api_key, api_secret=secret)  # fmt: skip
        conn.commit()
    resealed = seal_account(api.state.keyring, crashed, api_key, secret)
    retried = dataclasses.replace(
        command, account_id=crashed, label="crashed", api_key_encrypted=resealed.api_key_encrypted,
        api_secret_encrypted=resealed.api_secret_encrypted, command_id=uuid.uuid4(),
    )  # fmt: skip
    assert (await commands.send(retried, user.user_id)) == {**first, "duplicate": False}
    assert [e[:2] for e in _account_events(api.database_url, crashed)] == [("ExchangeAccountLinked", 1)]


async def test_deactivating_cancels_open_orders_and_the_order_service_denies_the_next_at_once(api: ApiHarness) -> None:
    owner = await api.new_user(with_account=True)
    trader = api.platform.users[-1]
    assert owner.account_id is not None
    resting = await api.platform.place(trader, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    await api.platform.wait_status(resting["order_id"], "accepted")
    placed = await api.platform.place(trader)  # the order service caches the account as active
    await api.platform.wait_status(placed["order_id"], "filled")

    gone = await api.client.delete(f"/accounts/{owner.account_id}", headers=api.headers(owner))
    assert gone.status_code == 200 and gone.json()["active"] is False
    await api.platform.wait_status(resting["order_id"], "canceled")
    denied = await api.platform.place(trader)  # straight to the order service, past the API's own check
    assert denied["status"] == "denied" and "deactivated" in denied["reason"], denied
    again = await api.client.delete(f"/accounts/{owner.account_id}", headers=api.headers(owner))
    assert again.status_code == 200 and again.json()["active"] is False
    [(kind, version, data)] = _account_events(api.database_url, owner.account_id)
    assert (kind, version, data["orders_canceled"]) == ("ExchangeAccountDeactivated", 2, 1)
