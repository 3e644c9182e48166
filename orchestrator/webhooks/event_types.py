"""Webhook event types, derived from the events the engine already publishes (engine/announce.py),
and the compact job summary a delivery carries. Pure but for the memory of what was told.

    job event, status running the first time        job.started (for a job started since this server run began)
    job event, status waiting (approval)            job.waiting (each time the job enters it)
    job event, a terminal status the first time     job.<status> (after merge.* for a root job)
    a root job's merge record, new or changed       merge.completed, or merge.conflicted (conflicts)
    worker event ending failed or timeout           worker.failed, and gate.failed if a required gate did not pass
    worker event ending child_incomplete            worker.child_incomplete (it exited 0, a child job it started did not complete)
    worker event ending, refused something          worker.refused (whatever its status: what the agent tried)
    worker event "selected for task ..."            candidate.selected
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from ..config.hooks import WebhookEvent
from ..errors import TERMINAL_STATUSES
from ..events import Event
from ..models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from ..outcomes import refusal_line, said_line

TERMINAL = TERMINAL_STATUSES
TERMINAL_WORKER = frozenset(s.value for s in WorkerStatus if s.terminal)
REQUEST_HEAD = 200  # characters of the request a delivery carries


class Seen:
    """What was told already (bounded: the oldest keys are forgotten first)."""

    def __init__(self, size: int = 100_000) -> None:
        self._keys: OrderedDict[Hashable, Any] = OrderedDict()
        self._size = size

    def changed(self, key: Hashable, value: Any = True) -> bool:
        """True (and remembered) when ``key`` was not seen with ``value`` before."""
        if key in self._keys and self._keys[key] == value:
            return False
        self._keys[key] = value
        self._keys.move_to_end(key)
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


def job_types(seen: Seen, job: JobRecord, event: Event, since: float = 0.0) -> list[str]:
    """The webhook types one job event stands for, in the order they are told. ``since``: when
    this server run began (a job resumed after a restart was told of its start by the last run)."""
    status = event.status
    found: list[str] = []
    started_now = job.started_at is not None and job.started_at >= since
    if status == JobStatus.RUNNING and started_now and seen.changed(("started", job.id)):
        found.append(WebhookEvent.JOB_STARTED)
    if seen.changed(("status", job.id), status) and status == JobStatus.WAITING:
        found.append(WebhookEvent.JOB_WAITING)
    if status in TERMINAL:
        merge = job.merge
        if job.is_root and merge is not None and not merge.error and merge.outcome is not None:
            mark = (merge.result_commit, len(merge.conflicts), len(merge.merged))
            if seen.changed(("merge", job.id), mark):
                found.append(WebhookEvent.MERGE_CONFLICTED if merge.conflicts else WebhookEvent.MERGE_COMPLETED)
        if seen.changed(("end", job.id)):
            found.append(WebhookEvent(f"job.{status}"))
    return found


def worker_types(seen: Seen, job: JobRecord, record: WorkerRecord, event: Event) -> list[str]:
    """The webhook types one worker event stands for."""
    found: list[str] = []
    if event.status in (WorkerStatus.FAILED, WorkerStatus.TIMEOUT) and seen.changed(("failed", job.id, record.name)):
        found.append(WebhookEvent.WORKER_FAILED)
        if any(g.required and not g.passed for g in record.gates):
            found.append(WebhookEvent.GATE_FAILED)
    if event.status == WorkerStatus.CHILD_INCOMPLETE and seen.changed(("child_incomplete", job.id, record.name)):
        found.append(WebhookEvent.WORKER_CHILD_INCOMPLETE)
    if event.status in TERMINAL_WORKER and record.refusals_total and seen.changed(("refused", job.id, record.name)):
        found.append(WebhookEvent.WORKER_REFUSED)
    if event.message.startswith("selected for task ") and seen.changed(("selected", job.id, record.name)):
        found.append(WebhookEvent.CANDIDATE_SELECTED)
    return found


def job_summary(job: JobRecord) -> dict[str, Any]:
    """What a receiver needs to act without asking: ids, status, the request's head, counts, merge."""
    merge = job.merge
    return {
        "id": job.id,
        "root_id": job.root_id,
        "parent_id": job.parent_job_id,
        "depth": job.depth,
        "status": job.status.value,
        "request": job.request[:REQUEST_HEAD],
        "tasks": len(job.tasks),
        "workers": len(job.worker_names),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "error": (job.error or "")[:500] or None,
        "record_digest": job.record_digest,  # its signed RECORD.json's (a root's, once written): ./orchestrator.sh verify
        "merge": None
        if merge is None
        else {
            "merged": len(merge.merged),
            "unchanged": len(merge.unchanged),  # workers whose work added nothing: not merged
            "conflicts": len(merge.conflicts),
            "result_ref": merge.result_ref,
            "result_commit": merge.result_commit,
            "command": merge.outcome.command if merge.outcome is not None else None,
            "error": (merge.error or "")[:500] or None,
            # work kept out of the result, and why ({"worker", "reason"}; "combination": the workers it broke the result with)
            "left_out": [dict(w) for w in merge.left_out],
        },
    }


def worker_summary(record: WorkerRecord, event: Event) -> dict[str, Any]:
    return {
        "name": record.name,
        "task_id": record.task_id,
        "status": event.status,
        "message": event.message[:500],
        # Why it ended so: a child_incomplete worker's names the child job that did not complete and how it ended.
        "exit_reason": (record.exit_reason or "")[:500] or None,
        "no_changes": record.no_changes,  # its checkout is as it found it (null: not known)
        "gates": [{"name": g.name, "required": g.required, "status": g.status, "passed": g.passed} for g in record.gates],
        # What the system refused it (workers/refusals.py: bounded), beside its status: what it tried.
        "refused": refusal_line(record.refusals, record.refusals_total) or None,
        "refusals_total": record.refusals_total,
        "refusals": [r.to_dict() for r in record.refusals],
        "said": said_line(record.said_refused, record.said_refused_total) or None,  # its log's words, not refusals
    }


def links(job: JobRecord, base: Callable[[], str | None]) -> dict[str, str]:
    """Where to read more: the status document, the tree's report and its dashboard page."""
    url = (base() or "").rstrip("/")
    return {
        "status": f"{url}/api/v1/jobs/{job.id}/status",
        "report": f"{url}/api/v1/jobs/{job.root_id}/report",
        "dashboard": f"{url}/jobs/{job.root_id}",
    }
