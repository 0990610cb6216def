"""Exchange account requests and answers. Keys go in once, on linking; only the masked key ever comes back."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

Exchange = Literal["simulator", "binance", "bybit"]
_PRINTABLE = re.compile(r"^[!-~]+$")  # printable ASCII, no space
_PATTERN: dict[str, Any] = {"pattern": _PRINTABLE.pattern}  # told to clients (and schemathesis) in the schema


def _printable(value: SecretStr) -> SecretStr:
    """Exchange keys and secrets are printable ASCII without spaces: a control character (a NUL, a CR/LF that
    would inject a header when the key is sent to the venue) is refused here, naming the field, never echoing it."""
    if not _PRINTABLE.match(value.get_secret_value()):
        raise ValueError("must be printable ASCII without spaces or control characters")
    return value


ApiKey = Annotated[
    SecretStr, Field(min_length=1, max_length=256, json_schema_extra=_PATTERN), AfterValidator(_printable)
]
ApiSecret = Annotated[
    SecretStr, Field(min_length=1, max_length=512, json_schema_extra=_PATTERN), AfterValidator(_printable)
]


class AccountCreate(BaseModel):
    """Link an exchange account: its API key and secret are checked against the venue, then stored encrypted."""

    model_config = ConfigDict(extra="forbid")

    exchange: Exchange
    label: str = Field("main", min_length=1, max_length=64, pattern=r"^[\w .\-]+$")
    api_key: ApiKey
    api_secret: ApiSecret


class AccountPublic(BaseModel):
    """A linked account as its owner sees it: never the key or the secret, only the key masked."""

    id: uuid.UUID
    exchange: Exchange
    label: str
    api_key_masked: str = Field(examples=["keyd…9f3a"])
    active: bool
    created_at: datetime
