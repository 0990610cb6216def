"""One router per resource; ``ROUTERS`` is the order the app includes them (and the OpenAPI document lists)."""

from __future__ import annotations

from api.routers import (
    accounts,
    admin,
    analytics,
    auth,
    health,
    market,
    orders,
    portfolio,
    risk,
    strategies,
    stream,
    users,
)

ROUTERS = [
    health.router,
    auth.router,
    users.router,
    accounts.router,
    orders.router,
    portfolio.router,
    risk.router,
    strategies.router,
    analytics.router,
    market.router,
    admin.router,
    stream.router,
]
