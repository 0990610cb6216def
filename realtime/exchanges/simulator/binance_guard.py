"""What Binance checks before it serves a request: parameters, API key, HMAC signature, timestamp, request weight.

Errors are Binance's: ``{"code": -XXXX, "msg": "..."}`` with its HTTP statuses, so clients (ccxt, ours) map them the
way they do against the real venue. Fault injection (forced statuses, delays) is part of the same gate.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from realtime.exchanges.simulator.engine_types import OrderRejected

Params = dict[str, str]
_API_KEY = re.compile(r"[A-Za-z0-9]{1,128}")
_NUMBER = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
_MINUTE_MS = 60_000
_MAX_BAN_MS = 3 * 24 * 3_600_000
# Binance's -2015 text gives no hint; the simulator's says where its keys come from (app.demo_accounts and
# POST /admin/accounts), and the API passes it on when it links an account against the simulator
KEYS_HINT = (
    "Exchange simulator: sign with the demo account's key (see `patriot simulator --help` or the README) "
    "or open an account with your own key: POST /admin/accounts on the simulator."
)
UNKNOWN_KEY_MSG = f"Invalid API-key, IP, or permissions for action. {KEYS_HINT}"


class BinanceError(Exception):
    def __init__(
        self,
        code: int,
        msg: str,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
        html: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = dict(headers or {})
        self.html = html  # a gateway's page instead of Binance's JSON (502/503/504 outages)

    @classmethod
    def from_rejection(cls, rejection: OrderRejected) -> BinanceError:
        status = 401 if rejection.code in (-2014, -2015) else 400
        return cls(rejection.code, rejection.msg, status)

    def response(self) -> web.Response:
        if self.html is not None:
            return web.Response(text=self.html, status=self.status, headers=self.headers, content_type="text/html")
        body = orjson.dumps({"code": self.code, "msg": self.msg})
        return web.Response(body=body, status=self.status, headers=self.headers, content_type="application/json")


def mandatory(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


@dataclass(frozen=True, slots=True)
class Credential:
    account_id: str
    api_key: str
    secret: str


async def read_params(request: web.Request) -> tuple[Params, str]:
    """Query and form body merged (Binance accepts either), and the exact text the signature covers."""
    query = request.rel_url.raw_query_string
    body = (await request.text()) if request.body_exists else ""
    params: Params = {}
    for name, value in [*parse_qsl(query, keep_blank_values=True), *parse_qsl(body, keep_blank_values=True)]:
        if name in params:
            raise BinanceError(-1101, "Duplicate values for a parameter detected.")
        params[name] = value
    # Binance signs "totalParams": the query string concatenated with the body, as sent, minus the signature.
    payload = _without_signature(query) + _without_signature(body)
    return params, payload


def _without_signature(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))


def api_key_credential(request: web.Request, credentials: Mapping[str, Credential]) -> Credential:
    """The account behind ``X-MBX-APIKEY``: -2014 for a malformed key, -2015 for an unknown one."""
    key = request.headers.get("X-MBX-APIKEY", "")
    if not _API_KEY.fullmatch(key):
        raise BinanceError(-2014, "API-key format invalid.", 401)
    credential = credentials.get(key)
    if credential is None:
        raise BinanceError(-2015, UNKNOWN_KEY_MSG, 401)
    return credential


def verify_signed(
    params: Params, payload: str, credential: Credential, now_ms: int, max_recv_window_ms: int = 60_000
) -> None:
    """HMAC-SHA256 of the payload with the account's secret, then ``timestamp`` within ``recvWindow``."""
    timestamp = params.get("timestamp")
    if not timestamp or not timestamp.isdigit():
        raise mandatory("timestamp")
    signature = params.get("signature")
    if not signature:
        raise mandatory("signature")
    recv_window = params.get("recvWindow", "5000")
    if not recv_window.isdigit():
        raise BinanceError(-1100, "Illegal characters found in parameter 'recvWindow'; legal range is '^[0-9]{1,20}$'.")
    if int(recv_window) > max_recv_window_ms:
        raise BinanceError(-1131, f"recvWindow must be less than {max_recv_window_ms}.")
    expected = hmac.new(credential.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise BinanceError(-1022, "Signature for this request is not valid.")
    sent = int(timestamp)
    if sent >= now_ms + 1000:
        raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if now_ms - sent > int(recv_window):
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def decimal_param(params: Params, name: str) -> str | None:
    """The parameter's text when it is a plain decimal number, -1100 otherwise (Binance's legal range)."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not _NUMBER.fullmatch(value):
        raise BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.",
        )
    return value


def int_param(params: Params, name: str, default: int | None = None, maximum: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    if not value.lstrip("-").isdigit():
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    number = int(value)
    if maximum is not None and number > maximum:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '1-{maximum}'.")
    return number


@dataclass(slots=True)
class _Window:
    start_ms: int
    used: int = 0
    refused: int = 0


class WeightLimiter:
    """Request weight per IP per minute (fixed windows, like Binance): 429 past the limit, 418 for who keeps going."""

    def __init__(
        self,
        limit_per_minute: int,
        clock_ms: Callable[[], int],
        refusals_before_ban: int = 3,
        ban_ms: int = 120_000,
    ) -> None:
        self.limit = limit_per_minute
        self._clock = clock_ms
        self._refusals_before_ban = refusals_before_ban
        self._ban_ms = ban_ms
        self._windows: dict[str, _Window] = {}
        self._banned_until: dict[str, int] = {}
        self._bans: dict[str, int] = {}
        self.refusals_total = 0  # 429s and 418s answered, over every IP: what a test of a client's manners reads
        self.bans_total = 0

    def used(self, ip: str) -> int:
        window = self._windows.get(ip)
        now = self._clock()
        return window.used if window is not None and window.start_ms == now - now % _MINUTE_MS else 0

    def charge(self, ip: str, weight: int) -> int:
        """Count ``weight`` against ``ip``'s minute; returns the minute's total, or raises 429/418."""
        now = self._clock()
        until = self._banned_until.get(ip, 0)
        if until > now:
            self.refusals_total += 1
            raise self._banned(until, now)
        start = now - now % _MINUTE_MS
        window = self._windows.get(ip)
        if window is None or window.start_ms != start:
            window = self._windows[ip] = _Window(start)
        if window.used + weight <= self.limit:
            window.used += weight
            return window.used
        window.refused += 1
        self.refusals_total += 1
        if window.refused > self._refusals_before_ban:
            # Binance bans IPs that ignore 429s, for 2 minutes up to 3 days as it keeps happening.
            bans = self._bans[ip] = self._bans.get(ip, 0) + 1
            self.bans_total += 1
            self._banned_until[ip] = now + min(_MAX_BAN_MS, self._ban_ms * 2 ** (bans - 1))
            raise self._banned(self._banned_until[ip], now)
        retry = math.ceil((start + _MINUTE_MS - now) / 1000)
        raise too_much_weight(self.limit, retry, window.used)

    def _banned(self, until: int, now: int) -> BinanceError:
        return ip_banned(until, math.ceil((until - now) / 1000))


def ip_banned(until_ms: int, retry_after_s: int) -> BinanceError:
    msg = (
        f"Way too much request weight used; IP banned until {until_ms}. "
        "Please use WebSocket Streams for live updates to avoid bans."
    )
    return BinanceError(-1003, msg, 418, {"Retry-After": str(retry_after_s)})


def too_much_weight(limit: int, retry_after_s: int, used: int | None = None) -> BinanceError:
    msg = (
        f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API."
    )
    headers = {"Retry-After": str(retry_after_s)}
    if used is not None:
        headers["X-MBX-USED-WEIGHT-1M"] = str(used)
    return BinanceError(-1003, msg, 429, headers)


@dataclass(slots=True)
class Faults:
    """Injected misbehaviour for REST paths under ``path_prefix``: a forced status (for ``count`` requests, or until
    cleared), the ``Retry-After`` a forced 429/418 carries, and a delay before answering. Also counts every ``/api/``
    request per path, so a test can see what a client really sent."""

    status: int | None = None
    count: int | None = None
    delay_ms: int = 0
    path_prefix: str = "/api/"
    retry_after_s: int | None = None
    served: dict[int, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)

    def take(self, path: str) -> tuple[int | None, float]:
        """(status to force or None, seconds to delay) for a request to ``path``."""
        self.requests[path] = self.requests.get(path, 0) + 1
        if not path.startswith(self.path_prefix):
            return None, 0.0
        status = None
        if self.status is not None and (self.count is None or self.count > 0):
            status = self.status
            self.served[status] = self.served.get(status, 0) + 1
            if self.count is not None:
                self.count -= 1
        return status, self.delay_ms / 1000

    def state(self) -> dict[str, object]:
        return {
            "status": self.status,
            "count": self.count,
            "delay_ms": self.delay_ms,
            "path_prefix": self.path_prefix,
            "retry_after_s": self.retry_after_s,
            "served": {str(k): v for k, v in self.served.items()},
            "requests": dict(self.requests),
        }


def forced_error(status: int, weight_limit: int, retry_after_s: int | None = None) -> BinanceError:
    """What Binance answers with that status: rate-limit and ban bodies (``Retry-After`` 60 and 120 s unless told),
    its internal-error JSON for 500, and the gateway's HTML page for 502/503/504 (an outage, not an API error)."""
    if status == 429:
        return too_much_weight(weight_limit, 60 if retry_after_s is None else retry_after_s)
    if status == 418:
        return ip_banned(0, 120 if retry_after_s is None else retry_after_s)
    if status == 500:
        return BinanceError(-1001, "Internal error; unable to process your request. Please try again.", status)
    if status > 500:
        page = f"<html><head><title>{status}</title></head><body><h1>{status} Service Unavailable</h1></body></html>"
        return BinanceError(-1001, "gateway error", status, html=page)
    return BinanceError(-1000, "An unknown error occurred while processing the request.", status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PARAMS_KEY = web.RequestKey("binance_params", dict[str, str])
CREDENTIAL_KEY = web.RequestKey("binance_credential", Credential)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A route with Binance's request weight and security type (NONE, USER_STREAM: API key only, SIGNED)."""

    method: str
    path: str
    handler: Handler
    weight: Callable[[Params], int]
    security: str = "NONE"


def fixed(weight: int) -> Callable[[Params], int]:
    return lambda params: weight


def params_of(request: web.Request) -> Params:
    return request[PARAMS_KEY]


def credential_of(request: web.Request) -> Credential:
    return request[CREDENTIAL_KEY]


def json_response(body: object) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
