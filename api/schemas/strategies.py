"""Request and response bodies of /strategies: strategy definitions and their allocations to accounts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.market import Money

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")]
Kind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="the strategy's implementation")]


class StrategyStatus(StrEnum):
    INACTIVE = "inactive"
    ACTIVE = "active"
    PAUSED = "paused"
    RETIRED = "retired"


class StrategyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: Kind
    params: dict[str, Any] = Field(default_factory=dict, description="the strategy's parameters (JSON object)")
    status: StrategyStatus = StrategyStatus.INACTIVE


class StrategyUpdate(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    kind: Kind | None = None
    params: dict[str, Any] | None = None
    status: StrategyStatus | None = None


class AssignmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: UUID
    allocation: Decimal = Field(ge=0, max_digits=38, decimal_places=18, description="the account's allocation")
    active: bool = True


class AssignmentsPut(BaseModel):
    """The strategy's whole set of assignments: accounts left out are unassigned."""

    model_config = ConfigDict(extra="forbid")

    assignments: list[AssignmentIn] = Field(max_length=1000)


class AssignmentPublic(BaseModel):
    account_id: UUID
    allocation: Money
    active: bool


class StrategyPublic(BaseModel):
    id: UUID
    name: str
    kind: str
    params: dict[str, Any]
    status: StrategyStatus
    created_at: datetime
    updated_at: datetime
    assignments: list[AssignmentPublic] = Field(
        description="allocations to accounts: every account for staff, only your own accounts for a user"
    )
