"""Approval's signed links: the approve and reject URLs a webhook payload carries for a job
waiting for a person (delivery/approval.py), served without the API key (api/approval_routes.py).

``sign_link(secret, job_id, action, expires)`` is the one signing function, an HMAC-SHA256 token
over the job, the action and the expiry, keyed by ``link_secret(api_key)`` (derived from the admin
key, never the key itself in a URL). ``links`` gives the paths a payload carries; the outbox keeps
them unsigned (``unsigned_links``) and ``sign_unsigned`` signs them at each try; ``check_link``
refuses a link for another job or action, expired or tampered.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote, unquote, urlencode

from ..errors import Forbidden
from ..models import ApprovalDecision

ACTIONS = (ApprovalDecision.APPROVE, ApprovalDecision.REJECT)  # what a person may decide, by the API or a signed link
TOKEN = "[0-9a-f]{64}"  # sign_link's hex digest
EXPIRES = "[0-9]{1,12}"  # Unix seconds (no int() of a 5,000-digit string)
LINK_PREFIX = "/approval"  # the signed links' routes (api/approval_routes.py), outside /api/v1: no API key


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
