"""A person in the loop (orchestrator/delivery/approval.py): approve or reject a root job
waiting for approval.

* ``POST /api/v1/jobs/{id}/approve`` (admin key; body ``{"note": "..."}`` optional) and
  ``POST /api/v1/jobs/{id}/reject`` (admin key; body ``{"reason": "..."}`` required): the job's
  status document after the decision; 409 when it is not waiting, 404 for an unknown job.
* ``GET /approval/{id}/{approve|reject}?expires=..&token=..``: a signed link (a webhook payload
  carries it, webhooks/approval_links.py): no key; a confirmation page whose form POSTs to the same URL,
  which acts. A link for another job or action, expired or tampered is a 403. The pages carry
  no script and a strict Content-Security-Policy.
"""

from __future__ import annotations

import html
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from ..delivery import approval
from ..errors import ValidationError
from ..models import ApprovalDecision, ApprovalState
from ..webhooks import approval_links
from ..workspace.ids import validate_job_id
from . import request_context as context
from .request_context import extension
from .routes import _allowed, _status_doc, authenticate

bp = Blueprint("approval", __name__)
bp.before_request(authenticate)  # the same key, credentials and rate limits as every /api/v1 route
links = Blueprint("approval_links", __name__)  # the signed links: no key, the token is the proof

KEYS = {ApprovalDecision.APPROVE: "note", ApprovalDecision.REJECT: "reason"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"


def _body(action: ApprovalDecision) -> str:
    """The note (approve, optional) or reason (reject, required) from a JSON body."""
    key = KEYS[action]
    body = request.get_json(force=True, silent=True) if request.get_data() else {}
    if not isinstance(body, dict) or sorted(set(body) - {key}):
        raise ValidationError(f'body must be a JSON object with only "{key}", e.g. {{"{key}": "looks right"}}', field="body")
    return approval.check_text(body.get(key), key, required=action == ApprovalDecision.REJECT)


def _decide(job_id: str, action: ApprovalDecision, text: str) -> dict[str, Any]:
    engine = context.engine()
    job = engine.queries.get_job(job_id)  # 404 for an unknown job
    engine.approvals.decide(job.id, action, text)
    return _status_doc(job.id)


@bp.post("/jobs/<job_id>/approve")
def approve(job_id: str) -> Response:
    """Land a waiting root job's result: it ends with the status its workers earned."""
    g.principal.require_admin("approve a job")
    job_id = _allowed(job_id)
    return jsonify(_decide(job_id, ApprovalDecision.APPROVE, _body(ApprovalDecision.APPROVE)))


@bp.post("/jobs/<job_id>/reject")
def reject(job_id: str) -> Response:
    """End a waiting root job failed with the reason: nothing merged, its branches kept."""
    g.principal.require_admin("reject a job")
    job_id = _allowed(job_id)
    return jsonify(_decide(job_id, ApprovalDecision.REJECT, _body(ApprovalDecision.REJECT)))


# -- signed links -------------------------------------------------------------------------------


def _check_link(job_id: str, action: str) -> None:
    ext = extension()
    settings = ext["settings"]
    secret = approval_links.link_secret(settings.api.api_key)
    args = request.form if request.method == "POST" else request.args
    # No rate limit of its own: a token is 256 bits of HMAC, and a refusal is logged like a wrong key's.
    approval_links.check_link(secret, job_id, action, args.get("expires"), args.get("token"), context.engine().clock.time())


def _page(title: str, body: str, status: int = 200) -> Response:
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
        f'<title>{html.escape(title)}</title></head><body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">'
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    response = Response(text, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@links.get(f"{approval_links.LINK_PREFIX}/<job_id>/<action>")
def confirm(job_id: str, action: str) -> Response:
    """The confirmation page: nothing happens until its form is sent (a link preview or a
    mail scanner that follows links must not approve)."""
    job_id = validate_job_id(job_id)
    _check_link(job_id, action)
    job = context.engine().queries.get_job(job_id)
    state = f"It is {job.status.value}" + (
        "" if job.approval and job.approval.state == ApprovalState.WAITING else " (no longer waiting)"
    )
    reason = (
        '<p><label>Reason (required)<br><textarea name="reason" required maxlength="2000" rows="4" cols="60"></textarea></label></p>'
        if action == ApprovalDecision.REJECT
        else '<p><label>Note (optional)<br><input name="note" maxlength="2000" size="60"></label></p>'
    )
    form = (
        f'<form method="post"><input type="hidden" name="expires" value="{html.escape(request.args["expires"])}">'
        f'<input type="hidden" name="token" value="{html.escape(request.args["token"])}">{reason}'
        f'<p><button type="submit">{html.escape(action.capitalize())} job {html.escape(job_id)}</button></p></form>'
    )
    summary = f"<p>{html.escape(state)}. Request: {html.escape(job.request[:500])}</p>"
    return _page(f"{action.capitalize()} job {job_id}?", summary + form)


@links.post(f"{approval_links.LINK_PREFIX}/<job_id>/<action>")
def act(job_id: str, action: str) -> Response:
    """The signed link's action (the confirmation page's form): approve or reject."""
    job_id = validate_job_id(job_id)
    _check_link(job_id, action)
    decided = ApprovalDecision(action)  # checked by _check_link: approve or reject
    key = KEYS[decided]
    text = approval.check_text(request.form.get(key) or None, key, required=decided == ApprovalDecision.REJECT)
    doc = _decide(job_id, decided, text)
    done = {ApprovalDecision.APPROVE: "Approved", ApprovalDecision.REJECT: "Rejected"}[decided]
    return _page(f"Job {job_id} {doc['status']}", f"<p>{done}: the job is now {html.escape(doc['status'])}.</p>")
