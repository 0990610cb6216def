"""The interactive docs work without internet: /docs (Swagger UI) and /redoc load every script and stylesheet from
the app itself, each asset answers 200, and in a real browser (Debian's chromium, when installed) Swagger UI
renders the operations list from /openapi.json."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from api.app import create_app
from core.settings import Settings
from tests.integration.api.conftest import serve_app, stop_server

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
_ASSET = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_JS_URL = re.compile(r"""\burl\s*:\s*["']([^"']+)["']""")


@pytest.fixture
async def docs_api(settings: Settings, migrated_database_url: str, redis_url: str) -> AsyncIterator[str]:
    """The app served over real HTTP on the real PostgreSQL and Redis (no platform: the docs need none)."""
    app = create_app(settings, database_url=migrated_database_url, redis_url=redis_url, venues={}, access_log=False)
    server, task, base_url = await serve_app(app)
    try:
        yield base_url
    finally:
        await stop_server(server, task)


def asset_urls(html: str) -> list[str]:
    """Every script and stylesheet the page loads (``<script src>``, ``<link href>``)."""
    return _ASSET.findall(html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_every_asset_from_the_app(docs_api: str, page: str) -> None:
    async with httpx.AsyncClient(base_url=docs_api, timeout=30) as client:
        response = await client.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        urls = asset_urls(response.text)
        assert any(u.endswith(".js") for u in urls), urls  # the page's UI bundle is among them
        for url in urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc and url.startswith("/"), f"{page} loads {url} from outside"
            asset = await client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 0, url
        assert "fonts.googleapis" not in response.text and "cdn.jsdelivr" not in response.text
        spec_urls = _JS_URL.findall(response.text) + re.findall(r'spec-url="([^"]+)"', response.text)
        assert spec_urls == ["/openapi.json"]
        assert (await client.get(spec_urls[0])).json()["info"]["title"] == "PATRIOT API"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
async def test_swagger_ui_renders_the_operations_in_a_browser_without_internet(docs_api: str, tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
    outside: list[str] = []
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page()

            async def only_the_app(route: Any) -> None:
                # the machine may have no internet: anything not from the app is refused (and recorded)
                request = route.request
                if request.url.startswith(docs_api):
                    await route.continue_()
                else:
                    outside.append(request.url)
                    await route.abort()

            await page.route("**/*", only_the_app)
            await page.goto(f"{docs_api}/docs")
            operations = page.locator(".opblock-summary-path")
            await operations.first.wait_for(state="visible", timeout=20_000)
            paths = set(await operations.all_inner_texts())
            await page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
        finally:
            await browser.close()
    assert {"/health", "/auth/login", "/orders"} <= {p.replace("\u200b", "").strip() for p in paths}
    assert outside == []
    assert (tmp_path / "docs.png").stat().st_size > 0


async def test_the_openapi_description_documents_the_websocket_authentication(docs_api: str) -> None:
    """OpenAPI lists no WebSocket operation, so the description is where a client learns how /stream/ws signs in."""
    async with httpx.AsyncClient(base_url=docs_api, timeout=30) as client:
        description = (await client.get("/openapi.json")).json()["info"]["description"]
    for needed in ("/stream/ws?token=", "Authorization: Bearer", '{"type": "auth", "token"', "4401", "token_expired"):
        assert needed in description, needed
    assert "token_revoked" in description and '{"type": "authenticated"' in description
