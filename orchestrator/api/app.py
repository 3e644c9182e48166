"""The Flask application: ``create_app(settings, engine)``.

Every error becomes JSON ``{"error": code, "message": ...}`` with the status
the error class names, so clients can rebuild the same exception.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from ..config import Settings
from ..config.documents import MAX_DEPTH, TextFault, deeper_than, text_fault
from ..engine.core import Engine
from ..errors import InvalidParameter, OrchestratorError, PayloadTooLarge, ValidationError
from ..reports.metrics import refusal_reason
from ..reports.status_document import StatusCache
from . import request_context as context
from .auth import Credentials
from .guard import RateLimiter, StreamSlots, allowed_hosts
from .request_context import EXTENSION

log = logging.getLogger("orchestrator.api")


def create_app(settings: Settings, engine: Engine, credentials: Credentials | None = None) -> Flask:
    """Build the app around an engine. The engine's ``credentials`` scope worker keys."""
    from .. import dashboard
    from . import approval_routes as approval
    from . import docs, routes
    from . import tasks_routes as tasks

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.api.max_body_bytes
    # No 308 from `/jobs/..%2f/status` to a "cleaned" `/jobs/../status`: an id is refused, never rewritten.
    app.url_map.merge_slashes = False
    app.json = BodyJSON(app)
    app.json.sort_keys = False
    if credentials is None:
        credentials = Credentials(settings.api.api_key, engine.worker_running)
    engine.credentials = credentials
    app.extensions[EXTENSION] = {
        "engine": engine,
        "settings": settings,
        "credentials": credentials,
        "status_cache": StatusCache(),
        # Names this server run in /health (not a secret): a folder's scripts check it against
        # the server record (.server.json) so they never talk to another folder's server.
        "instance": secrets.token_hex(8),
        "limiter": RateLimiter(settings.api.rate_burst),
        "streams": StreamSlots(settings.api.max_streams_per_key, settings.api.threads - settings.api.reserved_threads),
        "allowed_hosts": allowed_hosts(settings.api.host, settings.api.allowed_hosts, settings.api.public_url),
    }
    app.register_blueprint(routes.bp, url_prefix="/api/v1")
    app.register_blueprint(tasks.bp, url_prefix="/api/v1")  # Kage Bunshin's task API (/api/v1/tasks), a facade over jobs
    app.register_blueprint(approval.bp, url_prefix="/api/v1")  # approve / reject a waiting job (delivery/approval.py)
    app.register_blueprint(approval.links)  # their signed links: no key, an expiring HMAC token
    app.register_blueprint(routes.public)
    app.register_blueprint(docs.bp)  # GET /docs: Swagger UI, public like the dashboard's shell
    app.register_blueprint(dashboard.bp)  # the web dashboard's shell pages at /: public, no data
    app.register_error_handler(OrchestratorError, _orchestrator_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    app.after_request(_no_store)
    app.after_request(_note_route)
    app.wsgi_app = _timed(app.wsgi_app, engine)  # type: ignore[method-assign]
    return app


class BodyJSON(DefaultJSONProvider):
    """Every request body is parsed here, and refused before a route reads it when it nests
    deeper than ``MAX_DEPTH`` (400: past it a parser or a later walk would run out of stack), holds
    a NUL in any string (422 naming the field: no task, file name, argv or log takes one), or a
    string UTF-8 cannot encode (400 naming the field: ``"\\ud800"`` is valid JSON, and was a 500
    that left a job folder behind). The one check of request text: nothing past it re-checks."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = super().loads(s, **kwargs)
            too_deep = deeper_than(value)
        except RecursionError:  # the C parser's own limit, near 1,000 levels
            too_deep = True
        if too_deep:
            raise ValidationError(
                f"the JSON body nests arrays and objects more than {MAX_DEPTH} levels deep; the API takes at most {MAX_DEPTH}"
            )
        found = text_fault(value)
        if found is not None:
            field, fault, char = found
            error = InvalidParameter if fault is TextFault.NUL else ValidationError
            raise error(f"{field} contains {fault.value.format(char=char)}", field=field)
        return value


ROUTE_KEY = "orchestrator.route"


def _note_route(response: Response) -> Response:
    """Leave the matched route's template where the timing wrapper finds it."""
    request.environ[ROUTE_KEY] = request.url_rule.rule if request.url_rule else "unmatched"
    return response


def _timed(wsgi_app: Callable[..., Iterable[bytes]], engine: Engine) -> Callable[..., Iterable[bytes]]:
    """WSGI wrapper timing each answer, from the app being called to its headers being ready
    (all of routing, authentication and error handling; a stream's body is not waited for),
    into the engine's ``orchestrator_http_request_duration_seconds``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        status = ["500"]

        def noting_start_response(line: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            status[0] = line.split(" ", 1)[0]
            return start_response(line, headers, *exc_info)

        try:
            return wsgi_app(environ, noting_start_response)
        finally:
            engine.metrics.answered(
                environ.get("REQUEST_METHOD", "?"), environ.get(ROUTE_KEY, "unmatched"), status[0], time.perf_counter() - started
            )

    return app


def error_response(error: OrchestratorError) -> Response:
    response = jsonify(error.to_dict())
    response.status_code = error.http_status
    retry_after = error.details.get("retry_after") if error.details else None
    if isinstance(retry_after, (int, float)):  # seconds, set by the rate limiter (guard.py)
        response.headers["Retry-After"] = str(int(retry_after) + 1)
    return response


def _orchestrator_error(error: OrchestratorError) -> Response:
    if error.http_status != 500:  # every request the API refused, by the check that refused it
        context.engine().metrics.refused(refusal_reason(error))
        _log_refusal(error)
    return error_response(error)


def _log_refusal(error: OrchestratorError) -> None:
    """Every refused request goes to the server log: a wrong or expired key (401) and a
    forbidden one (403) as warnings, other refusals at info, 429s (a flood's echo: counted in
    the metrics) at debug. The message never holds a key: only what the check said."""
    level = {401: logging.WARNING, 403: logging.WARNING, 429: logging.DEBUG}.get(error.http_status, logging.INFO)
    if log.isEnabledFor(level):
        log.log(
            level,
            "refused %s %s from %s: %d %s: %s",
            request.method,
            request.path,
            request.remote_addr,
            error.http_status,
            error.code,
            error.message,
        )


def _http_error(error: HTTPException) -> Response:
    if error.code == 413:
        return _orchestrator_error(PayloadTooLarge(f"request body is over the {_cap()}-byte limit (api.max_body_bytes)"))
    hints = {404: "no such route; see GET /openapi.json for the routes", 405: "method not allowed on this route"}
    body: dict[str, Any] = {
        "error": (error.name or "error").lower().replace(" ", "_"),
        "message": hints.get(error.code or 0, error.description or ""),
    }
    response = jsonify(body)
    response.status_code = error.code or 500
    for name, value in error.get_headers():
        if name.lower() == "allow":  # RFC 9110: a 405 says which methods the route takes
            response.headers["Allow"] = value
    return response


def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    response = jsonify({"error": "internal", "message": f"internal error ({type(error).__name__}); see the server log"})
    response.status_code = 500
    return response


def _no_store(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _cap() -> int:
    from flask import current_app

    return int(current_app.config["MAX_CONTENT_LENGTH"])
