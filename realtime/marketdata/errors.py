"""Errors of the market-data tier: what a collector catches per message without stopping the stream."""

from __future__ import annotations


class MalformedMessage(ValueError):
    """A venue message that cannot be decoded into a market event (garbage, missing field, wrong type)."""


class BookNotSynced(RuntimeError):
    """The local order book was read while it is waiting for a snapshot or a resync, so it must not be published."""
