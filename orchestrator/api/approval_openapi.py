"""The OpenAPI description of a person in the loop (orchestrator/delivery/approval.py, api/approval_routes.py):
``POST /api/v1/jobs/{id}/approve`` and ``/reject`` (the admin key), and the signed links
``/approval/{id}/{action}`` (no key: an expiring HMAC token)."""

from __future__ import annotations

from typing import Any

from ..delivery.approval import MAX_REASON
from ..models import ApprovalDecision
from ..webhooks.approval_links import ACTIONS, EXPIRES, TOKEN
from .tasks_openapi import ERROR, NOT_BLANK

TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_REASON, "pattern": NOT_BLANK}  # a note or a reason
PAGE = {"description": "a page", "content": {"text/html": {"schema": {"type": "string"}}}}
ACTION = {"name": "action", "in": "path", "required": True, "schema": {"type": "string", "enum": [a.value for a in ACTIONS]}}
PROOF = {"expires": {"type": "string", "pattern": f"^{EXPIRES}$"}, "token": {"type": "string", "pattern": f"^{TOKEN}$"}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): ERROR for code in codes}


def approval_paths(job_id: dict[str, Any], status_ref: dict[str, Any]) -> dict[str, Any]:
    """The routes' paths; ``job_id``: the path parameter, ``status_ref``: the status document's response."""
    paths: dict[str, Any] = {}
    for action, body in ((ApprovalDecision.APPROVE, "Approve"), (ApprovalDecision.REJECT, "Reject")):
        done = (
            "it lands and ends with the status its workers earned"
            if action == ApprovalDecision.APPROVE
            else "nothing is merged, it ends failed"
        )
        paths[f"/api/v1/jobs/{{job_id}}/{action}"] = {
            "post": {
                "description": f"{action} a root job waiting for approval (approval: before_merge): {done}; admin key only; "
                "409 when it is not waiting",
                "parameters": [job_id],
                "requestBody": {
                    "required": action == ApprovalDecision.REJECT,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
                },
                "responses": {"200": status_ref, **_errors(400, 401, 403, 404, 409, 422)},
            }
        }
    link = {"security": [], "responses": {"200": PAGE, **_errors(400, 403, 404, 409)}}
    form = {"type": "object", "properties": {**PROOF, "note": TEXT, "reason": TEXT}, "required": ["expires", "token"]}
    paths["/approval/{job_id}/{action}"] = {
        "get": {
            "description": "a signed approval link's confirmation page (the link a job.waiting webhook carries: no key, an expiring HMAC token)",
            **link,
            "parameters": [
                job_id,
                ACTION,
                *({"name": k, "in": "query", "required": True, "schema": v} for k, v in PROOF.items()),
            ],
        },
        "post": {
            "description": "a signed approval link's action: its confirmation page's form (a reject needs a reason)",
            **link,
            "parameters": [job_id, ACTION],
            "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}},
        },
    }
    return paths


def approval_schemas() -> dict[str, Any]:
    return {
        "Approve": {"type": "object", "additionalProperties": False, "properties": {"note": TEXT}},
        "Reject": {"type": "object", "required": ["reason"], "additionalProperties": False, "properties": {"reason": TEXT}},
    }
