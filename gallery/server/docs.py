"""The API docs (/docs) served from the installed package, never from a CDN: on a closed network the
page works as on the open one.

Swagger UI's files come from the `swagger-ui-bundle-v2` package (Swagger UI 5, Apache-2.0; its
licence is in the package's metadata), a dependency of the `[server]` extra.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def mount_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) over /openapi.json, its script and style under /docs-assets; /redoc, which
    would need a CDN, leads to /docs. Create the app with docs_url=None and redoc_url=None."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title}: API",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> RedirectResponse:
        return RedirectResponse("/docs")
