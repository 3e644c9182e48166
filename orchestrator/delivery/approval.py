"""A person in the loop: ``approval: before_merge`` makes a root job whose
workers are all done stop in the ``waiting`` state before landing merges anything (engine/approvals.py
``hold``); ``POST /api/v1/jobs/{id}/approve`` lands it with the status its workers earned,
``/reject`` (a reason required) ends it failed with nothing merged, a cancel ends it cancelled
with nothing merged (engine/approvals.py ``decide``).

Only a root job waits, and only when there is something its workers earned to land (they earned
completed or partial; a failed or cancelled job ends as it would). A child job of an approval job
inherits the key and ignores it: its merge into its parent worker's branch is not gated, only
the root's landing is. A child job's request carrying the key is refused (config/job.py: 403).

The record (``JobRecord.approval``): ``models.Approval``, whose dict is ``{"state", "earned",
"waiting_since", "decided_at", "note", "reason"}``; on disk, so a restart finds the job still waiting (engine/takeover.py leaves it so).

Signed links: ``sign_link(secret, job_id, action, expires)`` is the one signing function, an
HMAC-SHA256 token over the job, the action and the expiry, keyed by ``link_secret(api_key)``
(derived from the admin key, never the key itself in a URL). ``links`` gives the paths a webhook
payload carries; ``check_link`` refuses a link for another job or action, expired or tampered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from urllib.parse import quote, unquote, urlencode

from ..config import ApprovalMode
from ..config.keys import StrEnum
from ..errors import Conflict, Forbidden, ValidationError
from ..models import Approval, ApprovalState, JobRecord, JobStatus


class Decision(StrEnum):
    """What a person (or a cancel) decides for a job waiting for approval."""

    APPROVE = "approve"  # it lands, with the status its workers earned
    REJECT = "reject"  # nothing merged, it ends failed
    CANCEL = "cancel"  # nothing merged, it ends cancelled (a cancel of the waiting job; no link)


ACTIONS = (Decision.APPROVE, Decision.REJECT)  # what a person may decide, by the API or a signed link
MAX_REASON = 2000  # characters a reject's reason (or an approve's note) may have
TOKEN = "[0-9a-f]{64}"  # sign_link's hex digest
EXPIRES = "[0-9]{1,12}"  # Unix seconds (no int() of a 5,000-digit string)
LINK_PREFIX = "/approval"  # the signed links' routes (api/approval_routes.py), outside /api/v1: no API key


def waits(job: JobRecord, earned: JobStatus) -> bool:
    """Whether a job whose workers are all done stops for approval instead of landing."""
    return job.is_root and job.config.approval == ApprovalMode.BEFORE_MERGE and earned in (JobStatus.COMPLETED, JobStatus.PARTIAL)


def waiting(earned: JobStatus, now: float) -> Approval:
    return Approval(state=ApprovalState.WAITING, earned=earned.value, waiting_since=now)


def waiting_note(job: JobRecord) -> str:
    return (
        f"waiting for approval: nothing is merged until POST /api/v1/jobs/{job.id}/approve "
        f'(or /reject with {{"reason": "..."}}); its workers earned {job.approval.earned if job.approval else None}'
    )


def check_text(value: object, key: str, *, required: bool) -> str:
    """A reject's reason (required) or an approve's note (optional): a string, capped."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON:
        raise ValidationError(
            f"{key} must be a non-empty string of at most {MAX_REASON} characters"
            + (f' saying why, e.g. {{"{key}": "its tests do not cover the bug"}}' if required else " (or left out)"),
            field=key,
        )
    return value.strip()


def decision(job: JobRecord, action: Decision, text: str, now: float) -> tuple[JobStatus, Approval, str]:
    """A waiting job's status once ``action`` (approve, reject, cancel) is taken, its new approval
    record and the note it gets. Conflict when it is not waiting."""
    record = job.approval
    if job.status is not JobStatus.WAITING or not record:
        raise Conflict(
            f"job {job.id} is {job.status.value}, not waiting for approval: only a root job with approval: "
            "before_merge whose workers are all done waits (GET its status)"
        )
    if action == Decision.APPROVE:
        status, state = JobStatus(record.earned), ApprovalState.APPROVED
        note = "approved" + (f": {text}" if text else "") + "; landing its result"
    elif action == Decision.REJECT:
        status, state = JobStatus.FAILED, ApprovalState.REJECTED
        note = (
            f"rejected: {text}; nothing merged, its branches are kept for review "
            f"(merge them anyway with: python -m orchestrator merge {job.id})"
        )
    else:
        status, state = JobStatus.CANCELLED, ApprovalState.CANCELLED
        note = (
            f"cancelled while waiting for approval: nothing merged (merge it anyway with: python -m orchestrator merge {job.id})"
        )
    if action == Decision.APPROVE:
        record = dataclasses.replace(record, note=text or None)
    elif action == Decision.REJECT:
        record = dataclasses.replace(record, reason=text or None)
    return status, dataclasses.replace(record, state=state, decided_at=now), note


# -- signed links ------------------------------------------------------------------------------


def link_secret(api_key: str) -> bytes:
    """The links' signing key: derived from the admin key (one-way), so a link never carries it."""
    return hmac.new(api_key.encode("utf-8"), b"orchestrator approval links v1", hashlib.sha256).digest()


def sign_link(secret: bytes, job_id: str, action: str, expires: int) -> str:
    """The token of a signed ``action`` ("approve" or "reject") link for ``job_id``, valid until
    ``expires`` (Unix seconds): hex HMAC-SHA256 over the three, keyed by ``link_secret(api_key)``."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}")
    return hmac.new(secret, f"{job_id}\n{action}\n{int(expires)}".encode(), hashlib.sha256).hexdigest()


def link_path(secret: bytes, job_id: str, action: str, expires: int) -> str:
    """``/approval/<job id>/<action>?expires=..&token=..``: prepend the server's URL."""
    query = urlencode({"expires": int(expires), "token": sign_link(secret, job_id, action, expires)})
    return f"{LINK_PREFIX}/{quote(job_id, safe='')}/{action}?{query}"


# An unsigned link's token, until it is signed (``sign_unsigned``): letters and hyphens only, so it
# stays as it is through urlencode and JSON. The webhooks' outbox keeps links so (webhooks/sending.py):
# a signed link is a bearer credential, and never written to a file.
UNSIGNED = "unsigned-"
_UNSIGNED_RE = re.compile(r"/([^/?\s\"]+)/(approve|reject)\?expires=(\d+)&token=" + UNSIGNED + r"(?:approve|reject)")


def unsigned_links(job_id: str, now: float, ttl: float) -> dict[str, str]:
    """``links`` with a placeholder for each token: what may be written down."""
    expires = int(now + ttl)
    return {
        action: f"{LINK_PREFIX}/{quote(job_id, safe='')}/{action}?{urlencode({'expires': expires, 'token': UNSIGNED + action})}"
        for action in ACTIONS
    }


def sign_unsigned(api_key: str, text: str) -> str:
    """``text`` with each link of ``unsigned_links`` signed, as ``links`` would have made it."""
    if UNSIGNED not in text:
        return text
    secret = link_secret(api_key)

    def signed(found: re.Match[str]) -> str:
        job_id, action, expires = unquote(found[1]), found[2], int(found[3])
        return f"/{found[1]}/{action}?expires={expires}&token={sign_link(secret, job_id, action, expires)}"

    return _UNSIGNED_RE.sub(signed, text)


def links(api_key: str, job_id: str, now: float, ttl: float) -> dict[str, str]:
    """The approve and reject links of a waiting job (paths), valid for ``ttl`` seconds
    (``git.approval_link_ttl``): what a webhook payload carries."""
    secret, expires = link_secret(api_key), int(now + ttl)
    return {action: link_path(secret, job_id, action, expires) for action in ACTIONS}


def check_link(secret: bytes, job_id: str, action: str, expires: object, token: object, now: float) -> None:
    """Refuse (403) a link whose token was not made for this job and action with this expiry
    (tampered, or another job's), or that has expired."""
    if (
        action not in ACTIONS
        or not isinstance(token, str)
        or not isinstance(expires, str)
        or not (re.fullmatch(TOKEN, token) and re.fullmatch(EXPIRES, expires))
    ):
        raise Forbidden("this approval link is not valid: ask for a new one (the job's status lists its approve URL)")
    expected = sign_link(secret, job_id, action, int(expires))
    if not hmac.compare_digest(expected.encode(), token.encode()):
        raise Forbidden("this approval link is not valid for this job and action: it was changed, or made for another job")
    if int(expires) < now:
        raise Forbidden("this approval link has expired: approve with the API key (POST /api/v1/jobs/<id>/approve)")
