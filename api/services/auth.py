"""Who may call the API: users' records, password logins, refresh rotation, the Telegram link flow.

Users are rows of ``users`` (read and written here, the one place the API touches them); an administrator's
changes are commands on the API's own bus, each recorded as an event with the row (``core.domain.users``).
Staff log in with a password (argon2); Telegram users are bound to their Telegram id through a one-time link
code that lives in Redis for ``link_code_ttl_s``, and the bot (a service token with ``telegram:link``) then gets
tokens for them. A refresh is answered with the user's current role, and refused once the user is no longer
active, so demoting or suspending someone takes effect at their next refresh; their access tokens stop at once
through the user's token cut-off in Redis. A password change (by an administrator or the user) ends every
session: the cut-off ends the access tokens, and ``users.sessions_valid_after`` (in PostgreSQL, so it outlives
any Redis key) refuses every refresh token issued before it, revoking its family.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import errors
from psycopg.rows import dict_row

from api.errors import ApiError
from api.passwords import hash_password, needs_rehash, verify_password
from api.ratelimit import check_login
from api.state import ApiState
from api.tokens import TokenPair
from core.domain.messages import Command
from core.domain.users import ChangeUser, CreateUser, UserChanged, UserCreated
from core.messaging.bus import CommandHandler
from core.observability.context import get_correlation_id
from core.observability.logging import get_logger
from core.uow import UnitOfWork

log = get_logger("api.auth")

ACTIVE = "active"
# Crockford's base32 without I, L, O, U: nothing to misread when a user types the code to the bot
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CODE_LENGTH = 8  # 40 bits, alive for minutes and redeemable only by a service token
_COLUMNS = "id::text, username, role, status, telegram_id, password_hash, sessions_valid_after, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    username: str
    role: str
    status: str
    telegram_id: int | None
    password_hash: str | None
    sessions_valid_after: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_active(self) -> bool:
        return self.status == ACTIVE

    def session_ended(self, started_ms: int) -> bool:
        """Whether a session (refresh family) started at ``started_ms`` predates the user's last password change."""
        cutoff = self.sessions_valid_after
        return cutoff is not None and started_ms <= int(cutoff.timestamp() * 1000)

    def public(self) -> dict[str, Any]:
        """The fields a response may carry: everything but the password hash."""
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "status": self.status,
            "telegram_id": self.telegram_id,
            "has_password": self.password_hash is not None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# -- user records --------------------------------------------------------------------------------------------------
async def _one(state: ApiState, sql: str, params: tuple[Any, ...]) -> UserRecord | None:
    async with state.kernel.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
    return UserRecord(**row) if row else None


async def get_user(state: ApiState, user_id: str) -> UserRecord | None:
    return await _one(state, f"SELECT {_COLUMNS} FROM users WHERE id = %s", (user_id,))


async def get_user_by_username(state: ApiState, username: str) -> UserRecord | None:
    return await _one(state, f"SELECT {_COLUMNS} FROM users WHERE username = %s", (username,))


async def get_user_by_telegram_id(state: ApiState, telegram_id: int) -> UserRecord | None:
    return await _one(state, f"SELECT {_COLUMNS} FROM users WHERE telegram_id = %s", (telegram_id,))


async def list_users(
    state: ApiState, *, limit: int, offset: int, role: str | None = None, status: str | None = None
) -> tuple[list[UserRecord], int]:
    """One page of users (oldest first) and how many match the filters in all."""
    where = "WHERE (%(role)s::text IS NULL OR role = %(role)s) AND (%(status)s::text IS NULL OR status = %(status)s)"
    params = {"role": role, "status": status, "limit": limit, "offset": offset}
    async with state.kernel.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM users {where} ORDER BY created_at, id LIMIT %(limit)s OFFSET %(offset)s", params
        )
        rows = await cur.fetchall()
        await cur.execute(f"SELECT count(*) AS total FROM users {where}", params)
        total = await cur.fetchone()
    return [UserRecord(**row) for row in rows], int(total["total"]) if total else 0


async def create_user(
    state: ApiState, *, username: str, role: str, password: str | None, by_user_id: str = ""
) -> UserRecord:
    """A new user, through the ``CreateUser`` command (the row and ``UserCreated`` in one transaction)."""
    password_hash = await _hash(password) if password is not None else None
    command = CreateUser(
        user_id=str(uuid.uuid4()), username=username, role=role, password_hash=password_hash, by_user_id=by_user_id,
        correlation_id=get_correlation_id(),
    )  # fmt: skip
    record: UserRecord = await state.bus.handle(command)
    log.info("user created", user_id=record.id, role=role)
    return record


async def update_user(
    state: ApiState,
    user_id: str,
    *,
    role: str | None,
    status: str | None,
    password: str | None,
    by_user_id: str = "",
) -> UserRecord | None:
    """Change the given fields through the ``ChangeUser`` command; None when there is no such user.

    A changed role, status or password ends the user's access tokens (the cut-off is set before the change, so
    Redis being away refuses the change rather than leaving old tokens working, and again after it, so no token
    issued in between survives); a changed password also ends every refresh family (``sessions_valid_after``)."""
    password_hash = await _hash(password) if password is not None else None
    ends_tokens = role is not None or status is not None or password is not None
    if ends_tokens:
        await state.tokens.cut_off_user(user_id)
    command = ChangeUser(
        user_id=user_id, role=role, status=status, password_hash=password_hash, by_user_id=by_user_id,
        correlation_id=get_correlation_id(),
    )  # fmt: skip
    record: UserRecord | None = await state.bus.handle(command)
    if record is not None:
        if ends_tokens:
            await state.tokens.cut_off_user(user_id)
        log.info("user updated", user_id=user_id, role=role, status=status, password_changed=password is not None)
    return record


async def change_own_password(
    state: ApiState, user_id: str, current_password: str, new_password: str, client_ip: str | None = None
) -> TokenPair:
    """The user changes their password (knowing the current one): every session ends, and this caller gets a new
    one. Attempts count against the same limits as logins (a password check is a guess)."""
    user = await get_user(state, user_id)
    if user is None or user.password_hash is None:
        raise ApiError(409, "no_password", "this user logs in without a password (Telegram)")
    await check_login(state, client_ip, user.username)
    if not await asyncio.to_thread(verify_password, user.password_hash, current_password):
        raise ApiError(401, "invalid_credentials", "the current password is wrong")
    changed = await update_user(state, user_id, role=None, status=None, password=new_password, by_user_id=user_id)
    if changed is None:
        raise ApiError(404, "user_not_found", "this user no longer exists")
    cutoff_ms = await state.tokens.cut_off_user(user_id)
    # the new session must start after the cut-off's millisecond, or the cut-off would end it too
    await asyncio.sleep(max(0.0, (cutoff_ms + 1) / 1000 - time.time()))
    log.info("password changed by the user", user_id=user_id)
    return state.tokens.issue_pair(changed.id, changed.role, changed.username)


async def _returning(uow: UnitOfWork, sql: str, params: tuple[Any, ...]) -> UserRecord | None:
    conn = await uow.connection()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
    return UserRecord(**row) if row else None


async def handle_create_user(cmd: CreateUser, uow: UnitOfWork) -> UserRecord:
    try:
        record = await _returning(
            uow,
            f"INSERT INTO users (id, username, role, password_hash) VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}",
            (cmd.user_id, cmd.username, cmd.role, cmd.password_hash),
        )
    except errors.UniqueViolation:
        raise ApiError(409, "username_taken", f"a user named {cmd.username!r} exists: choose another name") from None
    assert record is not None
    event = UserCreated(aggregate_id=str(cmd.command_id), version=1, user_id=cmd.user_id, by_user_id=cmd.by_user_id,
                        username=cmd.username, role=cmd.role, correlation_id=cmd.correlation_id)  # fmt: skip
    uow.record(event)
    await uow.commit()
    return record


async def handle_change_user(cmd: ChangeUser, uow: UnitOfWork) -> UserRecord | None:
    # a new password ends every session begun before it (the API's clock, the one that stamps tokens)
    sessions_end = datetime.now(UTC) if cmd.password_hash is not None else None
    record = await _returning(
        uow,
        f"UPDATE users SET role = coalesce(%s, role), status = coalesce(%s, status), "
        f"password_hash = coalesce(%s, password_hash), sessions_valid_after = coalesce(%s, sessions_valid_after), "
        f"updated_at = now() WHERE id = %s RETURNING {_COLUMNS}",
        (cmd.role, cmd.status, cmd.password_hash, sessions_end, cmd.user_id),
    )
    if record is None:
        return None
    uow.record(
        UserChanged(
            aggregate_id=str(cmd.command_id), version=1, user_id=cmd.user_id, by_user_id=cmd.by_user_id,
            role=cmd.role, status=cmd.status, password_changed=cmd.password_hash is not None,
            correlation_id=cmd.correlation_id,
        )
    )  # fmt: skip
    await uow.commit()
    return record


USER_HANDLERS: dict[type[Command], CommandHandler] = {CreateUser: handle_create_user, ChangeUser: handle_change_user}


# -- logins and sessions -------------------------------------------------------------------------------------------
async def login(state: ApiState, username: str, password: str, client_ip: str | None = None) -> TokenPair:
    """A new session for a user with a password. Unknown user and wrong password answer the same.

    Attempts are limited before this is called (``api.ratelimit.check_login``: per username and address, and per
    address, so a flood of logins cannot starve the API and nobody can lock a user out from elsewhere)."""
    user = await get_user_by_username(state, username)
    # an unknown user is verified against a dummy hash, so both failures cost the same time
    if not await asyncio.to_thread(verify_password, user.password_hash if user else None, password) or user is None:
        log.info("login refused", reason="invalid_credentials")
        raise ApiError(401, "invalid_credentials", "the username or password is wrong")
    if not user.is_active:
        raise ApiError(403, "user_disabled", f"this user is {user.status}: ask an administrator")
    if user.password_hash is not None and needs_rehash(user.password_hash):
        # argon2's parameters were raised since this hash was made: store one at today's cost
        async with state.kernel.pool.connection() as conn:
            await conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (await _hash(password), user.id))
    log.info("login", user_id=user.id, role=user.role)
    return state.tokens.issue_pair(user.id, user.role, user.username)


async def _hash(password: str) -> str:
    # argon2 takes a few hundred milliseconds of CPU by design: off the event loop, so other requests go on
    return await asyncio.to_thread(hash_password, password)


async def refresh(state: ApiState, refresh_token: str) -> TokenPair:
    """Spend the refresh token for a new pair in its family, carrying the user's current role."""
    claims = await state.tokens.spend_refresh(refresh_token)
    assert claims.family is not None
    user = await get_user(state, claims.subject)
    if user is None or not user.is_active:
        await state.tokens.revoke_family_id(claims.family, "disabled")
        raise ApiError(403, "user_disabled", "this user is no longer active: ask an administrator")
    if user.session_ended(claims.family_started_ms):
        await state.tokens.revoke_family_id(claims.family, "password_changed")
        raise ApiError(
            401,
            "token_revoked",
            "the password changed after this session began: log in again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return state.tokens.issue_pair(user.id, user.role, user.username, claims.family, claims.family_started_ms)


# -- the Telegram link flow ----------------------------------------------------------------------------------------
def _code_key(state: ApiState, code: str) -> str:
    return f"{state.kernel.names.prefix}auth:link-code:{code}"


def _user_code_key(state: ApiState, user_id: str) -> str:
    return f"{state.kernel.names.prefix}auth:link-code-of:{user_id}"


def normalize_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


async def issue_link_code(state: ApiState, user_id: str) -> tuple[str, int]:
    """A new one-time code for ``user_id`` (its earlier code stops working) and its lifetime in seconds."""
    ttl = state.kernel.settings.api.link_code_ttl_s
    redis = state.kernel.redis
    while True:
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
        if await redis.set(_code_key(state, code), user_id.encode(), nx=True, ex=ttl):
            break
    previous = await redis.set(_user_code_key(state, user_id), code.encode(), ex=ttl, get=True)
    if previous is not None:
        await redis.delete(_code_key(state, _text(previous)))
    log.info("telegram link code issued", user_id=user_id)
    return code, ttl


async def link_telegram(state: ApiState, code: str, telegram_id: int) -> UserRecord:
    """Bind ``telegram_id`` to the user the code was issued for; the code works once."""
    key = _code_key(state, normalize_code(code))
    redis = state.kernel.redis
    stored = await redis.get(key)
    if stored is None:
        raise _bad_code()
    user_id = _text(stored)
    owner = await get_user_by_telegram_id(state, telegram_id)
    if owner is not None and owner.id != user_id:
        raise _telegram_taken()
    if await redis.getdel(key) is None:  # redeemed concurrently
        raise _bad_code()
    try:
        record = await _one(
            state,
            f"UPDATE users SET telegram_id = %s, updated_at = now() WHERE id = %s RETURNING {_COLUMNS}",
            (telegram_id, user_id),
        )
    except errors.UniqueViolation:
        raise _telegram_taken() from None
    if record is None:
        raise ApiError(404, "user_not_found", "the user this code was issued for no longer exists")
    log.info("telegram linked", user_id=record.id)
    return record


async def telegram_token(state: ApiState, telegram_id: int) -> TokenPair:
    """A new session for the user bound to ``telegram_id`` (asked for by the bot)."""
    user = await get_user_by_telegram_id(state, telegram_id)
    if user is None:
        raise ApiError(404, "telegram_not_linked", "no user is linked to this Telegram id: link it with a code first")
    if not user.is_active:
        raise ApiError(403, "user_disabled", f"this user is {user.status}: ask an administrator")
    return state.tokens.issue_pair(user.id, user.role, user.username)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bad_code() -> ApiError:
    return ApiError(400, "invalid_link_code", "the link code is unknown, expired or already used: ask for a new one")


def _telegram_taken() -> ApiError:
    return ApiError(409, "telegram_id_taken", "this Telegram id is linked to another user")
