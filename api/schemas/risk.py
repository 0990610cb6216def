"""Risk limit and kill-switch requests and answers (fund managers and admins)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas.orders import Amount
from realtime.risk.limits import SETTABLE_LIMIT_TYPES

Scope = Literal["fund", "user", "account"]
LimitType = Literal[SETTABLE_LIMIT_TYPES]  # type: ignore[valid-type]  # the kinds realtime.risk.limits defines


class _Scoped(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Scope
    scope_id: str = Field("", max_length=64, description="a user id, an account id, or empty for the fund")

    @model_validator(mode="after")
    def _scope_id_matches(self) -> Self:
        if self.scope == "fund":
            self.scope_id = ""
            return self
        try:
            self.scope_id = str(uuid.UUID(self.scope_id))
        except ValueError:
            raise ValueError(f"a {self.scope} scope needs scope_id: the {self.scope}'s id (a UUID)") from None
        return self


class RiskLimitSet(_Scoped):
    """Set one limit of a scope; ``value`` null lifts it. Applies to the next order, no restart."""

    limit_type: LimitType
    # the column is NUMERIC(38, 18): a value it cannot hold is refused here, in the API's words, not the database's
    value: Decimal | None = Field(None, ge=0, allow_inf_nan=False, max_digits=38, decimal_places=18)


class RiskLimitPublic(BaseModel):
    scope: Scope
    scope_id: str
    limit_type: str
    value: Amount | None
    active: bool
    updated_at: datetime | None = None


class KillSwitchActivate(_Scoped):
    """Block new orders in the scope and cancel every open one."""

    reason: str = Field("manual", min_length=1, max_length=200)


class KillSwitchPublic(BaseModel):
    scope: Scope
    scope_id: str
    active: bool
    message: str | None = None
