"""The running platform for order tests: ``@pytest.mark.parametrize("platform", [n], indirect=True)`` sets how many
users it starts with (default 2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.platform_harness import Platform, running_platform


@pytest.fixture
async def platform(
    request: pytest.FixtureRequest, settings: Settings, migrated_database_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Platform]:
    users = getattr(request, "param", 2)
    async with running_platform(settings, migrated_database_url, redis_url, tmp_path, users=users) as p:
        yield p
