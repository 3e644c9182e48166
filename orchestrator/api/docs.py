"""``GET /docs``: interactive API documentation, where Kage Bunshin's task API has it: Swagger UI from the pinned
``swagger-ui-bundle`` wheel (its files served from here: nothing comes from a CDN), pointed at
``/openapi.json``. A public shell like the dashboard's pages: it holds no data, needs no key and
carries the dashboard's Content-Security-Policy (no inline script: the initializer is
static/swagger-init.js). The key is entered through Swagger UI's Authorize and sent as the
``X-API-Key`` header by the browser, never in a URL.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # no py.typed in the wheel

from ..dashboard import harden

bp = Blueprint("docs", __name__)
bp.after_request(harden)  # the dashboard's CSP and headers

OURS = Path(__file__).parent / "static"
# The only files served: the wheel's (vendored Swagger UI) and our initializer.
ASSETS = {
    "swagger-ui-bundle.js": Path(str(swagger_ui_path)),
    "swagger-ui.css": Path(str(swagger_ui_path)),
    "favicon-32x32.png": Path(str(swagger_ui_path)),
    "swagger-init.js": OURS,
}
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>orchestrator API</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/png" href="{icon}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""


@bp.get("/docs")
def docs() -> Response:
    asset = lambda name: url_for("docs.asset", name=name)  # noqa: E731
    page = PAGE.format(
        css=asset("swagger-ui.css"),
        icon=asset("favicon-32x32.png"),
        bundle=asset("swagger-ui-bundle.js"),
        init=asset("swagger-init.js"),
    )
    return Response(page, mimetype="text/html")


@bp.get("/docs/static/<name>")
def asset(name: str) -> Response:
    folder = ASSETS.get(name)
    if folder is None:
        abort(404)
    return send_from_directory(folder, name, max_age=3600)
