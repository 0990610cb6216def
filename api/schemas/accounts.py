"""Exchange account requests and answers. Keys go in once, on linking; only the masked key ever comes back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Exchange = Literal["simulator", "binance", "bybit"]


class AccountCreate(BaseModel):
    """Link an exchange account: its API key and secret are checked against the venue, then stored encrypted."""

    model_config = ConfigDict(extra="forbid")

    exchange: Exchange
    label: str = Field("main", min_length=1, max_length=64, pattern=r"^[\w .\-]+$")
    api_key: SecretStr = Field(min_length=1, max_length=256)
    api_secret: SecretStr = Field(min_length=1, max_length=512)


class AccountPublic(BaseModel):
    """A linked account as its owner sees it: never the key or the secret, only the key masked."""

    id: uuid.UUID
    exchange: Exchange
    label: str
    api_key_masked: str = Field(examples=["keyd…9f3a"])
    active: bool
    created_at: datetime
