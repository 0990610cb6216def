"""Authentication over real HTTP: password login and its throttle, refresh rotation and reuse detection, logout,
the Telegram link flow as the bot drives it, service tokens, /auth/me, and administrators managing users."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.api.conftest import PASSWORD, ApiHarness, ApiUser, error_code

pytestmark = pytest.mark.integration


async def _login(api: ApiHarness, username: str, password: str | None = PASSWORD) -> httpx.Response:
    return await api.client.post("/auth/login", json={"username": username, "password": password})


async def _me(api: ApiHarness, access_token: str) -> httpx.Response:
    return await api.client.get("/auth/me", headers={"Authorization": f"Bearer {access_token}"})


async def _refresh(api: ApiHarness, refresh_token: str) -> httpx.Response:
    return await api.client.post("/auth/refresh", json={"refresh_token": refresh_token})


async def _inside_one_window(margin_s: float) -> None:
    """Login limits count per wall-clock minute: start a burst far enough from a window boundary not to straddle it."""
    into = time.time() % 60
    if into > 60 - margin_s:
        await asyncio.sleep(60 - into + 0.05)


def _set_status(api: ApiHarness, user: ApiUser, status: str) -> None:
    with psycopg.connect(api.database_url) as conn:
        conn.execute("UPDATE users SET status = %s WHERE id = %s", (status, user.user_id))
        conn.commit()


def _without_secrets(body: Any) -> bool:
    text = str(body)
    return "password_hash" not in text and "$argon2" not in text


async def test_login_with_the_right_password_gives_a_pair_that_names_the_user(api: ApiHarness) -> None:
    admin = await api.new_user("admin")
    response = await _login(api, admin.username)
    assert response.status_code == 200, response.text
    pair = response.json()
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == api.app.state.settings.api.access_ttl_s
    me = await _me(api, pair["access_token"])
    assert me.status_code == 200
    assert me.json()["user_id"] == admin.user_id and me.json()["username"] == admin.username
    assert me.json()["role"] == "admin" and "users:manage" in me.json()["permissions"]
    user = await api.new_user("user")
    user_me = (await _me(api, (await _login(api, user.username)).json()["access_token"])).json()
    assert user_me["role"] == "user" and "users:manage" not in user_me["permissions"]
    assert "orders:create" in user_me["permissions"]


async def test_wrong_password_unknown_user_and_no_password_get_the_same_401(api: ApiHarness) -> None:
    staff = await api.new_user("fund_manager")
    telegram_only = await api.new_user("user", password=None)
    answers = [
        await _login(api, staff.username, "not the password"),
        await _login(api, f"nobody-{uuid.uuid4().hex[:8]}", PASSWORD),
        await _login(api, telegram_only.username, PASSWORD),
    ]
    assert [r.status_code for r in answers] == [401, 401, 401]
    assert {r.json()["error"]["code"] for r in answers} == {"invalid_credentials"}
    assert len({r.json()["error"]["message"] for r in answers}) == 1

    _set_status(api, staff, "suspended")
    wrong = await _login(api, staff.username, "not the password")
    assert wrong.status_code == 401  # a user's status is told only to someone who knows the password
    right = await _login(api, staff.username)
    assert right.status_code == 403 and error_code(right) == "user_disabled"


async def test_login_attempts_over_the_per_username_limit_get_429_with_retry_after(api: ApiHarness) -> None:
    staff = await api.new_user("fund_manager")
    limit = api.app.state.settings.api.rate_limit_login_per_min
    guesses = await asyncio.gather(*(_login(api, staff.username, "guess") for _ in range(limit)))
    assert [r.status_code for r in guesses] == [401] * limit
    throttled = await _login(api, staff.username)  # even the right password waits now
    assert throttled.status_code == 429 and error_code(throttled) == "rate_limited"
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    other = await api.new_user("fund_manager")
    assert (await _login(api, other.username)).status_code == 200


async def test_failed_logins_from_one_address_never_refuse_the_right_password_from_another(api: ApiHarness) -> None:
    staff = await api.new_user("fund_manager")
    limit = api.app.state.settings.api.rate_limit_login_per_min
    await _inside_one_window(30)  # password checks take seconds on a loaded machine: keep the burst in one window
    guesses = await asyncio.gather(*(_login(api, staff.username, "guess") for _ in range(limit)))
    assert [r.status_code for r in guesses] == [401] * limit
    assert (await _login(api, staff.username)).status_code == 429  # the guessing address is throttled

    # the same user, the right password, another address (loopback has all of 127/8): served
    elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=api.base_url, transport=elsewhere, timeout=30) as other:
        answer = await other.post("/auth/login", json={"username": staff.username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text


async def test_login_attempts_over_the_per_address_limit_get_429_whatever_the_username(api: ApiHarness) -> None:
    limit = api.app.state.settings.api.rate_limit_login_ip_per_min
    names = [f"nobody-{n}" for n in range(limit - 1)]  # one attempt each: no username reaches its own limit
    tried = await asyncio.gather(*(_login(api, name, "guess") for name in names))
    assert {r.status_code for r in tried} == {401}
    staff = await api.new_user("fund_manager")
    assert (await _login(api, staff.username)).status_code == 200  # the address's last allowed attempt
    throttled = await _login(api, staff.username)
    assert throttled.status_code == 429 and "this address" in throttled.json()["error"]["message"]


async def test_refresh_rotates_and_reusing_a_spent_token_revokes_the_whole_family(api: ApiHarness) -> None:
    user = await api.new_user("fund_manager")
    first = (await _login(api, user.username)).json()
    rotated = await _refresh(api, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await _me(api, second["access_token"])).json()["user_id"] == user.user_id

    reused = await _refresh(api, first["refresh_token"])
    assert reused.status_code == 401 and error_code(reused) == "token_reused"
    after_theft = await _refresh(api, second["refresh_token"])  # the legitimate holder's newer token dies too
    assert after_theft.status_code == 401 and error_code(after_theft) == "token_revoked"
    # another login is another family, untouched
    other = (await _login(api, user.username)).json()
    assert (await _refresh(api, other["refresh_token"])).status_code == 200


async def test_refresh_carries_the_current_role_and_stops_for_a_suspended_user(api: ApiHarness) -> None:
    admin = await api.new_user("admin")
    user = await api.new_user("user")
    pair = (await _login(api, user.username)).json()
    promoted = await api.client.patch(
        f"/users/{user.user_id}", json={"role": "fund_manager"}, headers=api.headers(admin)
    )
    assert promoted.status_code == 200 and promoted.json()["role"] == "fund_manager"
    stale = await _me(api, pair["access_token"])  # the access token issued before the change ends at once
    assert stale.status_code == 401 and error_code(stale) == "token_revoked"
    pair = (await _refresh(api, pair["refresh_token"])).json()
    assert (await _me(api, pair["access_token"])).json()["role"] == "fund_manager"

    suspended = await api.client.patch(
        f"/users/{user.user_id}", json={"status": "suspended"}, headers=api.headers(admin)
    )
    assert suspended.status_code == 200
    refused = await _refresh(api, pair["refresh_token"])
    assert refused.status_code == 403 and error_code(refused) == "user_disabled"


async def test_logout_ends_the_session_and_its_refresh_tokens(api: ApiHarness) -> None:
    user = await api.new_user("fund_manager")
    first = (await _login(api, user.username)).json()
    second = (await _refresh(api, first["refresh_token"])).json()
    out = await api.client.post("/auth/logout", json={"refresh_token": second["refresh_token"]})
    assert out.status_code == 204
    after = await _refresh(api, second["refresh_token"])
    assert after.status_code == 401 and error_code(after) == "token_revoked"
    garbage = await api.client.post("/auth/logout", json={"refresh_token": "not-a-token"})
    assert garbage.status_code == 401


async def test_telegram_link_flow_binds_once_and_the_bot_gets_tokens_for_the_user(api: ApiHarness) -> None:
    admin = await api.new_user("admin")
    created = await api.client.post(
        "/users", json={"username": f"tg-{uuid.uuid4().hex[:8]}"}, headers=api.headers(admin)
    )
    assert created.status_code == 201 and created.json()["has_password"] is False
    member = created.json()
    minted = await api.client.post("/auth/service-tokens", json={"service": "telegram-bot"}, headers=api.headers(admin))
    assert minted.status_code == 201
    bot = {"Authorization": f"Bearer {minted.json()['token']}"}
    telegram_id = 7_000_000_000 + uuid.uuid4().int % 1_000_000

    stale = (await api.client.post(f"/users/{member['id']}/telegram-link-code", headers=api.headers(admin))).json()
    issued = await api.client.post(f"/users/{member['id']}/telegram-link-code", headers=api.headers(admin))
    assert issued.status_code == 201 and issued.json()["expires_in"] == api.app.state.settings.api.link_code_ttl_s
    code = issued.json()["code"]
    replaced = await api.client.post(
        "/auth/telegram/link", json={"code": stale["code"], "telegram_id": telegram_id}, headers=bot
    )
    assert replaced.status_code == 400 and error_code(replaced) == "invalid_link_code"

    not_yet = await api.client.post("/auth/telegram/token", json={"telegram_id": telegram_id}, headers=bot)
    assert not_yet.status_code == 404 and error_code(not_yet) == "telegram_not_linked"
    typed = f"{code[:4].lower()}-{code[4:].lower()}"  # as a user might type it
    linked = await api.client.post("/auth/telegram/link", json={"code": typed, "telegram_id": telegram_id}, headers=bot)
    assert linked.status_code == 200, linked.text
    assert linked.json() == {"user_id": member["id"], "username": member["username"], "telegram_id": telegram_id}
    again = await api.client.post("/auth/telegram/link", json={"code": code, "telegram_id": telegram_id}, headers=bot)
    assert again.status_code == 400 and error_code(again) == "invalid_link_code"

    pair = await api.client.post("/auth/telegram/token", json={"telegram_id": telegram_id}, headers=bot)
    assert pair.status_code == 200
    me = (await _me(api, pair.json()["access_token"])).json()
    assert me["user_id"] == member["id"] and me["role"] == "user"
    assert (await _refresh(api, pair.json()["refresh_token"])).status_code == 200

    # a Telegram id bound to someone else is refused, and the refused code still works for a free id
    other = await api.new_user("user", password=None)
    other_code = (
        await api.client.post(f"/users/{other.user_id}/telegram-link-code", headers=api.headers(other))
    ).json()
    taken = await api.client.post(
        "/auth/telegram/link", json={"code": other_code["code"], "telegram_id": telegram_id}, headers=bot
    )
    assert taken.status_code == 409 and error_code(taken) == "telegram_id_taken"
    free = await api.client.post(
        "/auth/telegram/link", json={"code": other_code["code"], "telegram_id": telegram_id + 1}, headers=bot
    )
    assert free.status_code == 200 and free.json()["user_id"] == other.user_id


async def test_service_tokens_work_as_bearer_only_until_revoked(api: ApiHarness) -> None:
    admin = await api.new_user("admin")
    minted = (
        await api.client.post("/auth/service-tokens", json={"service": "dashboards"}, headers=api.headers(admin))
    ).json()
    bearer = {"Authorization": f"Bearer {minted['token']}"}
    me = (await api.client.get("/auth/me", headers=bearer)).json()
    assert me["service"] == "dashboards" and me["role"] == "service" and me["user_id"] is None
    assert "telegram:link" in me["permissions"]

    as_refresh = await _refresh(api, minted["token"])
    assert as_refresh.status_code == 401 and error_code(as_refresh) == "invalid_token"
    access_as_refresh = await _refresh(api, api.token(admin))
    assert access_as_refresh.status_code == 401 and error_code(access_as_refresh) == "invalid_token"

    revoked = await api.client.delete(f"/auth/service-tokens/{minted['token_id']}", headers=api.headers(admin))
    assert revoked.status_code == 204
    after = await api.client.get("/auth/me", headers=bearer)
    assert after.status_code == 401 and error_code(after) == "token_revoked"
    by_service = await api.client.post("/auth/service-tokens", json={"service": "x"}, headers=api.service_headers())
    assert by_service.status_code == 403  # a service cannot mint more services


async def test_admin_creates_lists_reads_and_updates_users_and_no_hash_leaves(api: ApiHarness) -> None:
    admin = await api.new_user("admin")
    headers = api.headers(admin)
    name = f"staff-{uuid.uuid4().hex[:8]}"
    created = await api.client.post(
        "/users", json={"username": name, "role": "fund_manager", "password": PASSWORD}, headers=headers
    )
    assert created.status_code == 201, created.text
    staff = created.json()
    assert staff["role"] == "fund_manager" and staff["status"] == "active" and staff["has_password"] is True
    assert (await _login(api, name)).status_code == 200
    duplicate = await api.client.post("/users", json={"username": name}, headers=headers)
    assert duplicate.status_code == 409 and error_code(duplicate) == "username_taken"
    short = await api.client.post("/users", json={"username": "shorty", "password": "short"}, headers=headers)
    assert short.status_code == 422

    page = await api.client.get("/users", params={"limit": 1, "role": "fund_manager"}, headers=headers)
    assert page.status_code == 200
    assert page.json()["total"] == 1 and [u["id"] for u in page.json()["items"]] == [staff["id"]]
    everyone = (await api.client.get("/users", params={"limit": 200}, headers=headers)).json()
    assert {admin.user_id, staff["id"]} <= {u["id"] for u in everyone["items"]}

    one = await api.client.get(f"/users/{staff['id']}", headers=headers)
    assert one.status_code == 200 and one.json()["username"] == name
    missing = await api.client.get(f"/users/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404 and error_code(missing) == "user_not_found"

    changed = await api.client.patch(
        f"/users/{staff['id']}", json={"status": "suspended", "password": "another long password"}, headers=headers
    )
    assert changed.status_code == 200 and changed.json()["status"] == "suspended"
    assert (await _login(api, name, "another long password")).status_code == 403  # new password, but suspended
    own = await api.client.patch(f"/users/{admin.user_id}", json={"role": "user"}, headers=headers)
    assert own.status_code == 409 and error_code(own) == "own_role_or_status"
    for body in (created.json(), page.json(), everyone, one.json(), changed.json()):
        assert _without_secrets(body)

    # each change is a command that left its event, naming the administrator; no password or hash in any event
    with psycopg.connect(api.database_url) as conn:
        events = conn.execute(
            "SELECT event_type, event_data FROM event_store WHERE aggregate_type = 'user'"
            " AND event_data->>'user_id' = %s ORDER BY global_position",
            (staff["id"],),
        ).fetchall()
    assert [(kind, data["by_user_id"]) for kind, data in events] == [
        ("UserCreated", admin.user_id),
        ("UserChanged", admin.user_id),
    ]
    assert events[1][1]["status"] == "suspended" and events[1][1]["password_changed"] is True
    stored = str(events)
    assert "argon2" not in stored and PASSWORD not in stored and "another long password" not in stored


async def test_create_admin_command_makes_an_admin_who_can_log_in(api: ApiHarness, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": api.database_url,
        "REDIS_URL": api.app.state.settings.redis.url,
        "PATRIOT_DATA_DIR": str(tmp_path),
        "PATRIOT_ADMIN_PASSWORD": "first-admin-password",
    }
    name = f"boss-{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "create-admin", name], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the one useful line, not Alembic's INFO line per migration step before it
    assert f"admin {name!r} ready" in done.stdout and "alembic" not in (done.stdout + done.stderr).lower()
    login = await api.client.post("/auth/login", json={"username": name, "password": "first-admin-password"})
    assert login.status_code == 200, login.text
    me = await api.client.get("/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert me.json()["role"] == "admin" and "users:manage" in me.json()["permissions"]
    short = subprocess.run(
        [sys.executable, "-m", "cli.main", "create-admin", name],
        env={**env, "PATRIOT_ADMIN_PASSWORD": "short"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert short.returncode == 2 and "12 characters" in short.stderr
