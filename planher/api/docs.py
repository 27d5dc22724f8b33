"""/openapi.json and /docs: the document and Swagger UI, served with no network."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from planher.errors import APIError
from planher.web.endpoint import endpoint


@endpoint("This document", ok=(200, dict[str, Any]), auth=None)
async def openapi_json(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


# Swagger UI is served from the pinned swagger-ui-py package, so /docs works with no network,
# and its page may run nothing but those files (the Content-Security-Policy says so).
SWAGGER_UI_DIR = Path(str(importlib.resources.files("swagger_ui") / "static"))
SWAGGER_UI_FILES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
SWAGGER_UI_START = (
    'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", '
    "persistAuthorization: true});"
)
SWAGGER_UI_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PlanHer API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/start.js"></script>
</body></html>"""
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@endpoint("Swagger UI for this API", ok=(200, str), auth=None, media_type="text/html")
async def docs(request: Request) -> Response:
    return HTMLResponse(
        SWAGGER_UI_PAGE, headers={"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY}
    )


async def docs_asset(request: Request) -> Response:
    """The docs page's files (not part of the API, so not in its document)."""
    name = request.path_params["name"]
    if name == "start.js":
        return Response(SWAGGER_UI_START, media_type="text/javascript")
    if name not in SWAGGER_UI_FILES:
        raise APIError(404, "not_found", "Not found")
    return FileResponse(SWAGGER_UI_DIR / name, media_type=SWAGGER_UI_FILES[name])
