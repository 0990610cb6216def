"""Bybit v5 spot: capabilities data and the factory building its ccxt adapter from a linked account's keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.security.account_secrets import ExchangeCredentials
from realtime.exchanges.base import RateLimiter
from realtime.exchanges.bybit.capabilities import BYBIT_SPOT
from realtime.exchanges.ccxt_adapter import CcxtAdapter

SPOT_OPTIONS: dict[str, Any] = {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}}


def build_bybit_adapter(
    credentials: ExchangeCredentials,
    urls: Mapping[str, str] | None = None,
    rate_limiter: RateLimiter | None = None,
    max_retries: int = 4,
    **kwargs: Any,
) -> CcxtAdapter:
    """A Bybit spot adapter for one linked account; ``urls`` overrides the API endpoints."""
    return CcxtAdapter(
        "bybit",
        credentials.api_key,
        credentials.api_secret,
        urls,
        rate_limiter,
        BYBIT_SPOT,
        max_retries,
        options=SPOT_OPTIONS | dict(kwargs.pop("options", {})),
        **kwargs,
    )


__all__ = ["BYBIT_SPOT", "SPOT_OPTIONS", "build_bybit_adapter"]
