"""A password change ends every session of the user, over real HTTP: access tokens issued before it get 401 at
once, refresh tokens of every family begun before it (rotated or not) no longer renew, whether an administrator
changed it (``PATCH /users/{id}``) or the user did (``POST /auth/password``)."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.api.conftest import PASSWORD, ApiHarness, error_code

pytestmark = pytest.mark.integration

NEW_PASSWORD = "another correct horse battery"


async def _login(api: ApiHarness, username: str, password: str = PASSWORD) -> httpx.Response:
    return await api.client.post("/auth/login", json={"username": username, "password": password})


async def _me(api: ApiHarness, access_token: str) -> httpx.Response:
    return await api.client.get("/auth/me", headers={"Authorization": f"Bearer {access_token}"})


async def _refresh(api: ApiHarness, refresh_token: str) -> httpx.Response:
    return await api.client.post("/auth/refresh", json={"refresh_token": refresh_token})


def _revoked(response: httpx.Response) -> bool:
    return response.status_code == 401 and error_code(response) == "token_revoked"


async def test_admin_password_change_ends_every_session_of_the_user(api: ApiHarness) -> None:
    admin = await api.new_user("admin")
    user = await api.new_user("fund_manager")
    laptop = (await _login(api, user.username)).json()
    phone = (await _login(api, user.username)).json()
    rotated = await _refresh(api, laptop["refresh_token"])  # a session renewed before the change ends too
    assert rotated.status_code == 200, rotated.text
    laptop = rotated.json()
    assert (await _me(api, laptop["access_token"])).status_code == 200

    changed = await api.client.patch(
        f"/users/{user.user_id}", json={"password": NEW_PASSWORD}, headers=api.headers(admin)
    )
    assert changed.status_code == 200, changed.text

    for session in (laptop, phone):
        assert _revoked(await _me(api, session["access_token"]))
        assert _revoked(await _refresh(api, session["refresh_token"]))
    assert (await _login(api, user.username)).status_code == 401  # the old password is gone
    fresh = await _login(api, user.username, NEW_PASSWORD)
    assert fresh.status_code == 200, fresh.text
    assert (await _me(api, fresh.json()["access_token"])).json()["user_id"] == user.user_id
    assert (await _refresh(api, fresh.json()["refresh_token"])).status_code == 200
    # the admin's own session is untouched
    assert (await api.client.get("/users", headers=api.headers(admin))).status_code == 200


async def test_user_changing_their_password_keeps_only_the_session_it_returns(api: ApiHarness) -> None:
    user = await api.new_user("user")
    current = (await _login(api, user.username)).json()
    other_device = (await _login(api, user.username)).json()
    auth = {"Authorization": f"Bearer {current['access_token']}"}

    wrong = await api.client.post(
        "/auth/password", json={"current_password": "not the password", "new_password": NEW_PASSWORD}, headers=auth
    )
    assert wrong.status_code == 401 and error_code(wrong) == "invalid_credentials"
    assert (await _me(api, current["access_token"])).status_code == 200  # a refused change ends nothing

    changed = await api.client.post(
        "/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=auth
    )
    assert changed.status_code == 200, changed.text
    new = changed.json()
    for session in (current, other_device):
        assert _revoked(await _me(api, session["access_token"]))
        assert _revoked(await _refresh(api, session["refresh_token"]))
    assert (await _me(api, new["access_token"])).json()["user_id"] == user.user_id
    renewed = await _refresh(api, new["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert (await _me(api, renewed.json()["access_token"])).status_code == 200
    assert (await _login(api, user.username, NEW_PASSWORD)).status_code == 200


async def test_password_change_needs_a_password_user_and_a_long_new_password(api: ApiHarness) -> None:
    telegram_user = await api.new_user("user", password=None)
    no_password = await api.client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=api.headers(telegram_user),
    )
    assert no_password.status_code == 409 and error_code(no_password) == "no_password"
    staff = await api.new_user("user")
    short = await api.client.post(
        "/auth/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=api.headers(staff)
    )
    assert short.status_code == 422
    service = await api.client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=api.service_headers(),
    )
    assert service.status_code == 403
