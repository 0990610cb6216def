"""Exchange-account commands and events: linking an account and deactivating it.

The caller checks the keys against the venue and seals them (AES-GCM under the master key, bound to the account
id: ``core.security.account_secrets.seal_account``) before it sends ``LinkExchangeAccount``, so a command holds
only ciphertext and the masked key, and an event only the masked key: no stream entry, stored event or log line
ever carries a plaintext key or secret. Each account is its own aggregate (``aggregate_id`` = the account id):
version 1 links it, version 2 deactivates it. Published on ``user.events``, partitioned by the owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from core.domain.messages import Command, Event, register_command, register_event


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class LinkExchangeAccount(Command):
    account_id: str
    user_id: str
    exchange: str
    label: str
    api_key_masked: str
    api_key_encrypted: bytes = field(repr=False)
    api_secret_encrypted: bytes = field(repr=False)
    key_version: int


@register_command
@dataclass(frozen=True, slots=True, kw_only=True)
class DeactivateExchangeAccount(Command):
    """No new orders on the account from now on, and its open orders cancelled (its private stream stops, so
    nothing would follow them)."""

    account_id: str
    user_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeAccountEvent(Event):
    aggregate_type: ClassVar[str] = "exchange_account"
    user_id: str
    exchange: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeAccountLinked(ExchangeAccountEvent):
    label: str
    api_key_masked: str


@register_event
@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeAccountDeactivated(ExchangeAccountEvent):
    orders_canceled: int = 0
