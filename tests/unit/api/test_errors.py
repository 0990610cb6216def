"""Which dependency an exception says is down: the API answers 503 naming it, anything else is a 500."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import PoolTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import DependencyUnavailable, unavailable_dependency


def _caused_by(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("the handler failed") from cause
    except RuntimeError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (RedisConnectionError("Connection refused"), "redis"),
        (RedisTimeoutError("Timeout reading from socket"), "redis"),
        (psycopg.OperationalError("server closed the connection unexpectedly"), "postgresql"),
        (PoolTimeout("couldn't get a connection after 1.00 sec"), "postgresql"),
        (DependencyUnavailable("redis"), "redis"),
        (_caused_by(psycopg.OperationalError("gone")), "postgresql"),
        (ExceptionGroup("tasks", [ValueError("x"), RedisConnectionError("down")]), "redis"),
    ],
)
def test_outage_exceptions_name_their_dependency(exc: BaseException, dependency: str) -> None:
    assert unavailable_dependency(exc) == dependency


@pytest.mark.parametrize(
    "exc", [ZeroDivisionError("division by zero"), ResponseError("WRONGTYPE"), psycopg.errors.UniqueViolation()]
)
def test_other_failures_name_no_dependency(exc: BaseException) -> None:
    assert unavailable_dependency(exc) is None
