"""The live web dashboard: a Flask blueprint of shell pages, plain JavaScript and CSS.

The pages carry no data and need no key: the browser asks for the API key once,
keeps it in ``sessionStorage`` and sends it as ``X-API-Key`` on every ``fetch``
to the JSON API (``/api/v1/...``), so the key never appears in a URL or a server
log. Everything a worker wrote is inserted as text, never as HTML, and a strict
Content-Security-Policy refuses inline scripts as a second line of defence.

Modules: none beside this one, which holds the blueprint; the pages are in ``templates/`` and ``static/``.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from ..workspace.ids import validate_job_id

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/dashboard/static")

# blob: lets the timeline SVG show through an <img> (where no script inside it can run).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/")
def jobs_page() -> str:
    """The jobs list."""
    return render_template("dashboard/jobs.html")


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    """One job's live tree; the id is checked here so a bad link fails before any script runs."""
    return render_template("dashboard/job.html", job_id=validate_job_id(job_id))


@bp.after_request
def harden(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response
