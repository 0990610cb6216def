"""Binance spot: capabilities data and the factories building its adapters (ccxt, native REST) for a linked account."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.security.account_secrets import ExchangeCredentials
from realtime.exchanges.base import RateLimiter
from realtime.exchanges.binance.capabilities import BINANCE_SPOT
from realtime.exchanges.binance.rest import BinanceRestAdapter, build_binance_rest_adapter
from realtime.exchanges.ccxt_adapter import CcxtAdapter

# Spot only: the simulator and our accounts have no margin/futures endpoints, nor the SAPI currency list.
SPOT_OPTIONS: dict[str, Any] = {"fetchMarkets": ["spot"], "fetchCurrencies": False, "fetchMargins": False}


def simulator_urls(base_url: str) -> dict[str, str]:
    """``urls`` that point ccxt binance at the local simulator (``http://127.0.0.1:<port>``)."""
    base = base_url.rstrip("/")
    return {"public": f"{base}/api/v3", "private": f"{base}/api/v3", "v1": f"{base}/api/v1"}


def build_binance_adapter(
    credentials: ExchangeCredentials,
    urls: Mapping[str, str] | None = None,
    rate_limiter: RateLimiter | None = None,
    max_retries: int = 4,
    **kwargs: Any,
) -> CcxtAdapter:
    """A Binance spot adapter for one linked account; ``urls`` overrides the API endpoints (the simulator)."""
    return CcxtAdapter(
        "binance",
        credentials.api_key,
        credentials.api_secret,
        urls,
        rate_limiter,
        BINANCE_SPOT,
        max_retries,
        options=SPOT_OPTIONS | dict(kwargs.pop("options", {})),
        **kwargs,
    )


__all__ = [
    "BINANCE_SPOT",
    "SPOT_OPTIONS",
    "BinanceRestAdapter",
    "build_binance_adapter",
    "build_binance_rest_adapter",
    "simulator_urls",
]
