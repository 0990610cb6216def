"""Roles and what each may do: the architecture's permission map, in one place.

Each role holds its own permissions and those of the roles below it (admin > fund_manager > user). A user only
ever sees and acts on their own accounts, orders and portfolio; wider reads are the permissions below.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    USER = "user"
    FUND_MANAGER = "fund_manager"
    ADMIN = "admin"
    SERVICE = "service"  # internal service-to-service callers (the Telegram bot, dashboards' backend)


class Permission(StrEnum):
    PORTFOLIO_READ = "portfolio:read"
    ORDERS_CREATE = "orders:create"
    ORDERS_READ = "orders:read"
    ANALYTICS_READ = "analytics:read"
    RISK_MANAGE = "risk:manage"
    REPORTS_GENERATE = "reports:generate"
    USERS_MANAGE = "users:manage"
    STRATEGIES_MANAGE = "strategies:manage"
    SYSTEM_MONITOR = "system:monitor"
    TELEGRAM_LINK = "telegram:link"  # services only: bind a Telegram id, act for a linked user


_USER = frozenset({Permission.PORTFOLIO_READ, Permission.ORDERS_CREATE, Permission.ORDERS_READ})
_FUND_MANAGER = _USER | {Permission.ANALYTICS_READ, Permission.RISK_MANAGE, Permission.REPORTS_GENERATE}
_ADMIN = _FUND_MANAGER | {Permission.USERS_MANAGE, Permission.STRATEGIES_MANAGE, Permission.SYSTEM_MONITOR}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.USER: _USER,
    Role.FUND_MANAGER: frozenset(_FUND_MANAGER),
    Role.ADMIN: frozenset(_ADMIN),
    Role.SERVICE: frozenset({Permission.TELEGRAM_LINK, Permission.SYSTEM_MONITOR}),
}

STAFF_ROLES = frozenset({Role.FUND_MANAGER, Role.ADMIN})


def permissions_of(role: str) -> frozenset[Permission]:
    """The permissions of ``role``; an unknown role has none."""
    try:
        return ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return frozenset()
