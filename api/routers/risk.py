"""/risk (not written yet)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/risk", tags=["risk"])
