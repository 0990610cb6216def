"""Per-IP and per-user rate limits in Redis: a fixed one-minute window, one round trip per check.

Every worker of every API process shares the counters, so the limit holds however many workers serve. The window
index is part of the key (``<prefix>api:ratelimit:<scope>:<who>:<minute>``), so the counter needs no TTL bookkeeping
beyond expiring with its window, and ``Retry-After`` is simply the time left in the window. A fixed window lets
a client send up to twice the limit across a window boundary; that is acceptable for abuse protection and keeps
the check to one ``EVALSHA`` on the hot path.

When Redis does not answer, requests are let through (and a warning logged): the limits protect the platform,
they do not decide what is correct, and every other Redis-backed part of the request will fail loudly anyway.
The one exception is an authenticated request: its user's token cut-off is read in the same call, and without
it no token is honoured (a 503 naming Redis), so a suspended user's old token never works during an outage.

What counts where: a request without a bearer token counts against its address here, in the middleware; one with
a token counts after the token is read (``api.deps``): a user's against its address and its user, a service
token's (the Telegram bot's) against the token and its address in limits of their own, and a token that fails
(forged, expired, revoked) against its address, so junk tokens cannot skip the per-IP limit. Logins count per
``(username, address)`` and per address, so nobody can lock a user out from elsewhere; link-code redemptions
count per service token and per address.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.errors import ApiError, DependencyUnavailable, error_body
from api.metrics import ApiMetrics
from api.state import ApiState
from core.observability.logging import get_logger

WINDOW_S = 60
IP, USER = "ip", "user"
SERVICE, SERVICE_IP = "service", "service_ip"
LINK, LINK_IP = "link", "link_ip"
LOGIN, LOGIN_IP = "login", "login_ip"
# health probes and Prometheus scrapes never count against (or get refused by) the per-IP limit
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})

# INCR each key, and on its window's first hit set its expiry: one atomic round trip returning the counts so far.
_INCREMENT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  counts[i] = n
end
return counts
"""
# An authenticated request's one round trip: its address's count, its user's count, and the user's token cutoff.
_AUTHENTICATED = """
local ip = redis.call('INCR', KEYS[1])
if ip == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local user = redis.call('INCR', KEYS[2])
if user == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
local cutoff = redis.call('GET', KEYS[3])
return {ip, user, cutoff or ''}
"""

log = get_logger("api.ratelimit")


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    count: int
    limit: int
    retry_after_s: int


class RateLimiter:
    """Counts hits per ``(scope, who)`` in the current minute and says whether each scope's limit is passed."""

    def __init__(self, redis: Redis, prefix: str, metrics: ApiMetrics, limits: dict[str, int]) -> None:
        self._script = redis.register_script(_INCREMENT)
        self._authenticated = redis.register_script(_AUTHENTICATED)
        self._prefix = f"{prefix}api:ratelimit:"
        self._metrics = metrics
        self.limits = limits

    async def hit(self, scope: str, who: str, now: float | None = None) -> Verdict:
        return (await self.hit_all([(scope, who)], now))[0]

    async def hit_all(
        self, hits: list[tuple[str, str]], now: float | None = None, *, fail_closed: bool = False
    ) -> list[Verdict]:
        """Count one hit for each ``(scope, who)`` in one round trip; a verdict per hit, in order. Without Redis
        the hits pass, unless ``fail_closed`` (then a 503 naming Redis)."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        keys = [f"{self._prefix}{scope}:{who}:{window}" for scope, who in hits]
        try:
            counts = [int(n) for n in await self._script(keys=keys, args=[WINDOW_S + 1])]
        except (RedisError, OSError) as exc:
            if fail_closed:
                raise DependencyUnavailable("redis", "redis is unavailable: retry shortly") from exc
            log.warning("rate limit check failed; letting the request through", error=repr(exc))
            counts = [0] * len(hits)
        return [self._verdict(scope, count, now) for (scope, _), count in zip(hits, counts, strict=True)]

    async def hit_authenticated(self, ip: str | None, user_id: str, cutoff_key: str) -> tuple[Verdict, Verdict, int]:
        """Count one request against its address and its user, and read the user's token cutoff, in one call."""
        now = time.time()
        window = int(now // WINDOW_S)
        keys = [f"{self._prefix}{IP}:{ip or '-'}:{window}", f"{self._prefix}{USER}:{user_id}:{window}", cutoff_key]
        try:
            ip_count, user_count, cutoff = await self._authenticated(keys=keys, args=[WINDOW_S + 1])
        except (RedisError, OSError) as exc:  # fail closed: a revoked token must not pass while Redis is away
            raise DependencyUnavailable(
                "redis", "redis is unavailable: tokens cannot be checked; retry shortly"
            ) from exc
        ip_verdict = self._verdict(IP, 0 if ip is None else int(ip_count), now)
        return ip_verdict, self._verdict(USER, int(user_count), now), int(cutoff) if cutoff else 0

    def _verdict(self, scope: str, count: int, now: float) -> Verdict:
        limit = self.limits[scope]
        retry_after = max(1, math.ceil((int(now // WINDOW_S) + 1) * WINDOW_S - now))
        allowed = count <= limit
        if not allowed:
            self._metrics.rate_limited.labels(scope).inc()
        return Verdict(allowed, count, limit, retry_after)


def rate_limiter(state: ApiState) -> RateLimiter:
    """The process's limiter, built on first use from the API state (one per app, shared by its requests)."""
    limiter: RateLimiter | None = state.extras.get("rate_limiter")
    if limiter is None:
        api = state.kernel.settings.api
        limits = {
            IP: api.rate_limit_ip_per_min,
            USER: api.rate_limit_user_per_min,
            SERVICE: api.rate_limit_service_per_min,
            SERVICE_IP: api.rate_limit_service_ip_per_min,
            LINK: api.rate_limit_link_per_min,
            LINK_IP: api.rate_limit_link_ip_per_min,
            LOGIN: api.rate_limit_login_per_min,
            LOGIN_IP: api.rate_limit_login_ip_per_min,
        }
        limiter = RateLimiter(state.kernel.redis, state.kernel.names.prefix, state.extras["metrics"], limits)
        state.extras["rate_limiter"] = limiter
    return limiter


_WHO = {
    IP: "this address",
    USER: "your account",
    SERVICE: "this service token",
    SERVICE_IP: "this address with service tokens",
    LINK: "link-code redemptions with this service token",
    LINK_IP: "link-code redemptions from this address",
    LOGIN: "login attempts for this user from this address",
    LOGIN_IP: "login attempts from this address",
}


def _message(verdict: Verdict, scope: str) -> str:
    return (
        f"too many requests from {_WHO[scope]}: the limit is {verdict.limit} a minute; "
        f"retry after {verdict.retry_after_s} s"
    )


def _too_many(verdict: Verdict, scope: str) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        _message(verdict, scope),
        {"scope": scope, "limit_per_minute": verdict.limit, "retry_after_s": verdict.retry_after_s},
        headers={"Retry-After": str(verdict.retry_after_s)},
    )


async def _enforce(state: ApiState, hits: list[tuple[str, str]], *, fail_closed: bool = False) -> None:
    """Count every hit, then refuse (429) with the first scope over its limit."""
    verdicts = await rate_limiter(state).hit_all(hits, fail_closed=fail_closed)
    for (scope, _), verdict in zip(hits, verdicts, strict=True):
        if not verdict.allowed:
            raise _too_many(verdict, scope)


async def check_authenticated(state: ApiState, client_ip: str | None, user_id: str, issued_at_ms: int) -> None:
    """An authenticated user's request: per-IP and per-user limits (429) and the user's token cutoff (401: the
    user's role, status or password changed after this token was issued), all in one Redis round trip; 503 when
    Redis does not answer."""
    ip_verdict, user_verdict, cutoff = await rate_limiter(state).hit_authenticated(
        client_ip, user_id, state.tokens.user_cutoff_key(user_id)
    )
    if not ip_verdict.allowed:
        raise _too_many(ip_verdict, IP)
    if not user_verdict.allowed:
        raise _too_many(user_verdict, USER)
    if cutoff and issued_at_ms <= cutoff:
        raise ApiError(
            401,
            "token_revoked",
            "your role, status or password changed after this token was issued: refresh it or log in again",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def check_refused_token(state: ApiState, client_ip: str | None) -> None:
    """A request whose bearer token failed counts against its address like one without a token: a 429 once the
    address is over its limit, so a junk ``Bearer`` header never skips the per-IP limit."""
    if client_ip is not None:
        await _enforce(state, [(IP, client_ip)])


async def check_service(state: ApiState, client_ip: str | None, token_id: str) -> None:
    """A service token's request (the Telegram bot's): its own per-token and per-address limits, generous
    because one bot speaks for many users, but finite, so a leaked service token cannot flood the API."""
    await _enforce(state, [(SERVICE, token_id), (SERVICE_IP, client_ip or "-")])


async def check_link_redemption(state: ApiState, client_ip: str | None, token_id: str) -> None:
    """A link-code redemption, per service token and per address: bounds how fast codes can be guessed."""
    await _enforce(state, [(LINK, token_id), (LINK_IP, client_ip or "-")])


async def check_login(state: ApiState, client_ip: str | None, username: str) -> None:
    """A login attempt, whatever its outcome, per ``(username, address)`` (guessing one password) and per address
    (a password check costs about half a second of CPU by design). No limit is per username alone: failures from
    one address never refuse the right password from another. Without Redis no password is checked (503): an
    outage must not open a window for unthrottled guessing."""
    address = client_ip or "-"
    await _enforce(state, [(LOGIN_IP, address), (LOGIN, f"{address}/{username}")], fail_closed=True)


def _bears_token(scope: dict[str, Any]) -> bool:
    """Whether the request carries ``Authorization: Bearer <something>`` (what ``api.deps`` reads as a token)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return len(value) > 7 and value[:7].lower() == b"bearer "
    return False


class IpRateLimitMiddleware:
    """Plain ASGI middleware: every HTTP request counts against its client address; over the limit, a 429
    JSON error body with ``Retry-After`` is sent before the app sees the request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS or _bears_token(scope):
            # a request with a bearer token is counted after its token is read (api.deps): with its user or its
            # service token when the token holds, against its address alone when it fails
            await self.app(scope, receive, send)
            return
        state: ApiState | None = getattr(scope["app"].state, "api", None)
        client = scope.get("client")
        if state is None or client is None:
            await self.app(scope, receive, send)
            return
        verdict = await rate_limiter(state).hit(IP, client[0])
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        details = {"scope": IP, "limit_per_minute": verdict.limit, "retry_after_s": verdict.retry_after_s}
        body = orjson.dumps(error_body("rate_limited", _message(verdict, IP), details))
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(verdict.retry_after_s).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
