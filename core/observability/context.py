"""Request-scoped context: the correlation id travels from a request to every event, consumer and exchange call."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
_causation_id: ContextVar[str | None] = ContextVar("causation_id", default=None)


def new_correlation_id() -> str:
    """A fresh id for work that did not arrive with one."""
    return os.urandom(16).hex()


def get_correlation_id() -> str | None:
    return _correlation_id.get()


def get_causation_id() -> str | None:
    return _causation_id.get()


@contextmanager
def correlation_scope(correlation_id: str | None, causation_id: str | None = None) -> Iterator[str]:
    """Run a block under a correlation id (generated when none is given) and an optional causation id."""
    cid = correlation_id or new_correlation_id()
    token_c = _correlation_id.set(cid)
    token_k = _causation_id.set(causation_id)
    try:
        yield cid
    finally:
        _correlation_id.reset(token_c)
        _causation_id.reset(token_k)
