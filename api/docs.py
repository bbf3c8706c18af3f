"""Interactive API documentation that works offline: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, which a self-hosted install behind a
firewall cannot reach (the page stays blank). The assets here come from the ``fastapi-offline``
package, which ships them in its wheel; this app serves them under :data:`ASSETS_URL` and points
both pages at them and at the app's own ``/openapi.json``. Nothing is fetched from elsewhere.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

__all__ = ["ASSETS_URL", "DOCS_URL", "REDOC_URL", "install_docs"]

#: Where the Swagger UI page is served.
DOCS_URL = "/docs"
#: Where the ReDoc page is served.
REDOC_URL = "/redoc"
#: Where the pages' scripts, styles and icon are served (from the fastapi-offline wheel).
ASSETS_URL = "/docs-assets"

#: The pages may load nothing from elsewhere (ReDoc's footer would fetch its logo from a CDN;
#: the browser drops it instead). The pages' own start-up scripts are inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)

#: The folder of the bundled assets: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js.
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI and ReDoc for ``app`` from bundled assets (no CDN).

    Create the app with ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not
    registered too. The pages honour the ASGI ``root_path`` (an API behind a path prefix).

    Parameters
    ----------
    app
        The application; its ``openapi_url`` and ``swagger_ui_oauth2_redirect_url`` are used.
    """
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _locked(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _locked(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )


def _locked(page: HTMLResponse) -> HTMLResponse:
    """``page`` with :data:`CONTENT_SECURITY_POLICY` set."""
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page
