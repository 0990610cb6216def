"""Access, refresh and service tokens: HS256 JWTs with a fixed algorithm list (``alg: none`` and any other
algorithm are refused), required ``exp``/``iat``/``sub``/``typ``/``jti`` claims and our issuer.

Refresh tokens rotate: each use returns a new pair and spends the old one. They belong to a family (one login);
presenting a spent refresh token again is taken as theft and revokes the whole family. Spent tokens and revoked
families live in Redis with the refresh lifetime as TTL, so revocation survives API restarts and is shared by
every worker.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.errors import ApiError, DependencyUnavailable
from core.settings import ApiSettings, RuntimeSettings

ALGORITHM = "HS256"
ACCESS, REFRESH, SERVICE = "access", "refresh", "service"
_MIN_SECRET_BYTES = 32
_VERIFIED_MAX = 50_000  # verified tokens remembered per process (about 10 MB at most)


class TokenSecretMissing(RuntimeError):
    """No JWT signing secret outside dev mode."""


def load_jwt_secret(api: ApiSettings, runtime: RuntimeSettings) -> bytes:
    """``PATRIOT_JWT_SECRET``; in dev, a random secret generated once under the data directory (mode 0600)."""
    if api.jwt_secret is not None:
        value = api.jwt_secret.get_secret_value().encode()
        if len(value) < _MIN_SECRET_BYTES:
            raise TokenSecretMissing(
                f"PATRIOT_JWT_SECRET is shorter than {_MIN_SECRET_BYTES} bytes; generate one with "
                'python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        return value
    if not runtime.is_dev:
        raise TokenSecretMissing(
            "PATRIOT_JWT_SECRET is not set and the platform is not in dev mode; generate one with "
            'python -c "import secrets; print(secrets.token_urlsafe(48))" and set it in the environment'
        )
    path = Path(runtime.data_dir) / "secrets" / "api-jwt.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token: who (``sub``: user id or service name), as what role, and which token."""

    subject: str
    role: str
    token_type: str
    token_id: str
    expires_at: int
    family: str | None = None
    username: str | None = None
    issued_at_ms: int = 0
    # a refresh token's session start (its family's first login, in ms): rotation keeps it, a password change
    # ends every family started before it
    family_started_ms: int = 0


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class TokenService:
    def __init__(self, secret: bytes, settings: ApiSettings, redis: Redis, prefix: str) -> None:
        self._secret = secret
        self._settings = settings
        self._redis = redis
        self._prefix = f"{prefix}auth:"
        self._verified: dict[str, Claims] = {}

    # -- issuing ---------------------------------------------------------------------------------------------
    def _encode(self, claims: dict[str, Any], ttl_s: int) -> str:
        now_ms = time.time_ns() // 1_000_000
        now = now_ms // 1000
        # "ims": the issue time in ms, so a user cut-off (role or status change) never catches a token issued
        # after it within the same second
        payload = {**claims, "iss": self._settings.jwt_issuer, "iat": now, "ims": now_ms, "exp": now + ttl_s}
        payload.setdefault("jti", uuid.uuid4().hex)
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def access_token(self, user_id: str, role: str, username: str | None = None, ttl_s: int | None = None) -> str:
        """An access token living ``ttl_s`` (default: the configured access lifetime)."""
        ttl = ttl_s if ttl_s is not None else self._settings.access_ttl_s
        return self._encode({"sub": user_id, "role": role, "typ": ACCESS, "name": username}, ttl)

    def service_token(self, service: str) -> str:
        return self._encode({"sub": service, "role": "service", "typ": SERVICE}, self._settings.service_token_ttl_s)

    def issue_pair(
        self,
        user_id: str,
        role: str,
        username: str | None = None,
        family: str | None = None,
        family_started_ms: int = 0,
    ) -> TokenPair:
        """A new access token and a refresh token in ``family`` started at ``family_started_ms`` (no family: a new
        login, starting now)."""
        started = family_started_ms if family and family_started_ms else time.time_ns() // 1_000_000
        refresh = self._encode(
            {"sub": user_id, "role": role, "typ": REFRESH, "fam": family or uuid.uuid4().hex, "name": username,
             "fst": started},
            self._settings.refresh_ttl_s,
        )  # fmt: skip
        return TokenPair(self.access_token(user_id, role, username), refresh, self._settings.access_ttl_s)

    # -- verifying -------------------------------------------------------------------------------------------
    def decode(self, token: str, expected_type: str | tuple[str, ...]) -> Claims:
        """Verify signature, algorithm, expiry, issuer and type; any failure is a 401 saying what to do.

        A token is immutable, so its verified claims are remembered (per process, bounded): a client sending the
        same token on every request pays for the HMAC and JSON parsing once; expiry is still checked every time.
        """
        types = (expected_type,) if isinstance(expected_type, str) else expected_type
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at <= time.time():
                raise _unauthorized("token_expired", "the token has expired: refresh it or log in again")
            if known.token_type not in types:
                raise _unauthorized("invalid_token", f"expected a {' or '.join(types)} token")
            return known
        claims = self._verify(token, types)
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _verify(self, token: str, types: tuple[str, ...]) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self._settings.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "jti", "typ", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token_expired", "the token has expired: refresh it or log in again") from None
        except jwt.PyJWTError:
            raise _unauthorized("invalid_token", "the token is not valid: log in again") from None
        if payload.get("typ") not in types:
            raise _unauthorized("invalid_token", f"expected a {' or '.join(types)} token")
        if payload["typ"] == REFRESH and not payload.get("fam"):
            raise _unauthorized("invalid_token", "the refresh token has no session: log in again")
        issued_at_ms = int(payload.get("ims") or int(payload["iat"]) * 1000)
        return Claims(
            subject=str(payload["sub"]),
            role=str(payload.get("role", "")),
            token_type=str(payload["typ"]),
            token_id=str(payload["jti"]),
            expires_at=int(payload["exp"]),
            family=payload.get("fam"),
            username=payload.get("name"),
            issued_at_ms=issued_at_ms,
            family_started_ms=int(payload.get("fst") or issued_at_ms),
        )

    async def spend_refresh(self, refresh_token: str) -> Claims:
        """Spend a refresh token once; presenting a spent one again revokes its family (taken as theft)."""
        claims = self.decode(refresh_token, REFRESH)
        assert claims.family is not None
        if await self._redis.exists(self._family_key(claims.family)):
            raise _unauthorized("token_revoked", "this session was revoked: log in again")
        ttl = max(1, claims.expires_at - int(time.time()))
        first_use = await self._redis.set(f"{self._prefix}spent:{claims.token_id}", b"1", nx=True, ex=ttl)
        if not first_use:
            await self.revoke_family_id(claims.family, "reuse")
            raise _unauthorized("token_reused", "this refresh token was already used; the session is revoked")
        return claims

    async def rotate(self, refresh_token: str) -> tuple[Claims, TokenPair]:
        """Spend a refresh token for a new pair in the same family, with the role and name it carried."""
        claims = await self.spend_refresh(refresh_token)
        pair = self.issue_pair(claims.subject, claims.role, claims.username, claims.family, claims.family_started_ms)
        return claims, pair

    async def revoke_family(self, refresh_token: str) -> None:
        """Log out: the refresh token's family can no longer be refreshed."""
        claims = self.decode(refresh_token, REFRESH)
        assert claims.family is not None
        await self.revoke_family_id(claims.family, "logout")

    async def revoke_family_id(self, family: str, reason: str) -> None:
        await self._redis.set(self._family_key(family), reason.encode(), ex=self._settings.refresh_ttl_s)

    def _family_key(self, family: str) -> str:
        return f"{self._prefix}revoked:{family}"

    async def revoke_token(self, claims: Claims) -> None:
        """Revoke one access or service token until it expires."""
        await self.revoke_token_id(claims.token_id, max(1, claims.expires_at - int(time.time())))

    async def revoke_token_id(self, token_id: str, ttl_s: int | None = None) -> None:
        """Revoke a token by its ``jti`` for ``ttl_s`` (default: a service token's whole lifetime)."""
        ttl = ttl_s if ttl_s is not None else self._settings.service_token_ttl_s
        await self._redis.set(f"{self._prefix}revoked-jti:{token_id}", b"1", ex=ttl)

    def user_cutoff_key(self, user_id: str) -> str:
        """Access tokens of this user issued at or before the second stored here are no longer honoured."""
        return f"{self._prefix}user-cutoff:{user_id}"

    async def cut_off_user(self, user_id: str) -> int:
        """End every access token of a user now (role, status or password changed); refresh re-reads the user.
        Returns the cut-off (ms): only tokens issued after it are honoured."""
        now_ms = time.time_ns() // 1_000_000
        await self._redis.set(self.user_cutoff_key(user_id), now_ms, ex=self._settings.access_ttl_s + 60)
        return now_ms

    async def user_cutoff(self, user_id: str) -> int:
        """The user's cut-off in ms (0: none). Fails closed: without Redis no token can be checked (503)."""
        try:
            value = await self._redis.get(self.user_cutoff_key(user_id))
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable(
                "redis", "redis is unavailable: tokens cannot be checked; retry shortly"
            ) from exc
        return int(value) if value else 0

    async def is_revoked(self, claims: Claims) -> bool:
        return bool(await self._redis.exists(f"{self._prefix}revoked-jti:{claims.token_id}"))


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})
