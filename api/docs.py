"""The interactive API docs served from the installed ``fastapi-offline`` package, not a CDN.

FastAPI's own ``/docs`` and ``/redoc`` pages load Swagger UI and ReDoc from jsdelivr, so without internet they are
blank pages. ``fastapi-offline`` ships both bundles (``swagger-ui-bundle.js``, ``swagger-ui.css``,
``redoc.standalone.js``) and a favicon; this module mounts them under :data:`STATIC_URL` and serves the two pages
with FastAPI's ``get_swagger_ui_html`` / ``get_redoc_html`` pointing at those local URLs (no Google fonts either).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static/docs"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def docs_assets_dir() -> Path:
    """The directory of the Swagger UI and ReDoc bundles inside the installed ``fastapi_offline`` package."""
    return Path(str(files("fastapi_offline") / "static"))


def install_offline_docs(app: FastAPI) -> None:
    """Mount the bundles and add ``/docs``, its OAuth2 redirect and ``/redoc``; build the app with both URLs None.

    Plain Starlette routes, as FastAPI adds its own docs pages: they are no API operation (no schema entry, no
    dependencies, no bearer token)."""
    app.mount(STATIC_URL, StaticFiles(directory=docs_assets_dir()), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, swagger_ui_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)
