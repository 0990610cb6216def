"""What the API process holds, built once in the app's lifespan and reached through ``api.deps``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from api.tokens import TokenService
from core.bootstrap import Kernel
from core.messaging.bus import MessageBus
from core.security.crypto import KeyRing
from realtime.orders.commands import CommandClient
from realtime.portfolio.readmodels import PortfolioReadModels
from warehouse.store import WarehouseStore


@dataclass
class ApiState:
    kernel: Kernel
    tokens: TokenService
    keyring: KeyRing
    commands: CommandClient
    read_models: PortfolioReadModels
    warehouse: WarehouseStore
    # the API's own command bus (strategy commands), on transactional units of work: rows and event in one commit
    bus: MessageBus
    # venue endpoints used to validate linked exchange keys ({"binance_rest_url": ..., "simulator": bool})
    venues: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
