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
# health probes and Prometheus scrapes never count against (or get refused by) the per-IP limit
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})

# INCR, and on the window's first hit set its expiry: one atomic round trip returning the count so far.
_INCREMENT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
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
    """Counts hits per ``(scope, who)`` in the current minute and says whether the limit is passed."""

    def __init__(self, redis: Redis, prefix: str, metrics: ApiMetrics, ip_per_min: int, user_per_min: int) -> None:
        self._script = redis.register_script(_INCREMENT)
        self._authenticated = redis.register_script(_AUTHENTICATED)
        self._prefix = f"{prefix}api:ratelimit:"
        self._metrics = metrics
        self.limits = {IP: ip_per_min, USER: user_per_min}

    async def hit(self, scope: str, who: str, now: float | None = None) -> Verdict:
        limit = self.limits[scope]
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
        try:
            count = int(await self._script(keys=[f"{self._prefix}{scope}:{who}:{window}"], args=[WINDOW_S + 1]))
        except (RedisError, OSError) as exc:
            log.warning("rate limit check failed; letting the request through", scope=scope, error=repr(exc))
            return Verdict(True, 0, limit, retry_after)
        allowed = count <= limit
        if not allowed:
            self._metrics.rate_limited.labels(scope).inc()
        return Verdict(allowed, count, limit, retry_after)

    async def hit_authenticated(self, ip: str | None, user_id: str, cutoff_key: str) -> tuple[Verdict, Verdict, int]:
        """Count one request against its address and its user, and read the user's token cutoff, in one call."""
        now = time.time()
        window = int(now // WINDOW_S)
        retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
        keys = [f"{self._prefix}{IP}:{ip or '-'}:{window}", f"{self._prefix}{USER}:{user_id}:{window}", cutoff_key]
        try:
            ip_count, user_count, cutoff = await self._authenticated(keys=keys, args=[WINDOW_S + 1])
        except (RedisError, OSError) as exc:  # fail closed: a revoked token must not pass while Redis is away
            raise DependencyUnavailable(
                "redis", "redis is unavailable: tokens cannot be checked; retry shortly"
            ) from exc
        verdicts = []
        for scope, count in ((IP, int(ip_count)), (USER, int(user_count))):
            allowed = (ip is None and scope == IP) or count <= self.limits[scope]
            if not allowed:
                self._metrics.rate_limited.labels(scope).inc()
            verdicts.append(Verdict(allowed, count, self.limits[scope], retry_after))
        return verdicts[0], verdicts[1], int(cutoff) if cutoff else 0


def rate_limiter(state: ApiState) -> RateLimiter:
    """The process's limiter, built on first use from the API state (one per app, shared by its requests)."""
    limiter: RateLimiter | None = state.extras.get("rate_limiter")
    if limiter is None:
        api = state.kernel.settings.api
        limiter = RateLimiter(
            state.kernel.redis,
            state.kernel.names.prefix,
            state.extras["metrics"],
            api.rate_limit_ip_per_min,
            api.rate_limit_user_per_min,
        )
        state.extras["rate_limiter"] = limiter
    return limiter


def _message(verdict: Verdict, scope: str) -> str:
    who = "this address" if scope == IP else "your account"
    return f"too many requests from {who}: the limit is {verdict.limit} a minute; retry after {verdict.retry_after_s} s"


def _too_many(verdict: Verdict, scope: str) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        _message(verdict, scope),
        {"scope": scope, "limit_per_minute": verdict.limit, "retry_after_s": verdict.retry_after_s},
        headers={"Retry-After": str(verdict.retry_after_s)},
    )


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


def _bears_token(scope: dict[str, Any]) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return value[:7].lower() == b"bearer "
    return False


class IpRateLimitMiddleware:
    """Plain ASGI middleware: every HTTP request counts against its client address; over the limit, a 429
    JSON error body with ``Retry-After`` is sent before the app sees the request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS or _bears_token(scope):
            # a request with a bearer token is counted against its address together with its user, in one call
            # after the token is verified (api.deps); one with a bad token is refused there before any work
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
