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

Its signed approve and reject links: webhooks/approval_links.py.
"""

from __future__ import annotations

import dataclasses

from ..config import ApprovalMode
from ..errors import Conflict, ValidationError
from ..models import Approval, ApprovalDecision, ApprovalState, JobRecord, JobStatus

MAX_REASON = 2000  # characters a reject's reason (or an approve's note) may have


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


def decision(job: JobRecord, action: ApprovalDecision, text: str, now: float) -> tuple[JobStatus, Approval, str]:
    """A waiting job's status once ``action`` (approve, reject, cancel) is taken, its new approval
    record and the note it gets. Conflict when it is not waiting."""
    record = job.approval
    if job.status is not JobStatus.WAITING or not record:
        raise Conflict(
            f"job {job.id} is {job.status.value}, not waiting for approval: only a root job with approval: "
            "before_merge whose workers are all done waits (GET its status)"
        )
    if action == ApprovalDecision.APPROVE:
        status, state = JobStatus(record.earned), ApprovalState.APPROVED
        note = "approved" + (f": {text}" if text else "") + "; landing its result"
    elif action == ApprovalDecision.REJECT:
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
    if action == ApprovalDecision.APPROVE:
        record = dataclasses.replace(record, note=text or None)
    elif action == ApprovalDecision.REJECT:
        record = dataclasses.replace(record, reason=text or None)
    return status, dataclasses.replace(record, state=state, decided_at=now), note
