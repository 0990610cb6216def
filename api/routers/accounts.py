"""/accounts (not written yet)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/accounts", tags=["accounts"])
