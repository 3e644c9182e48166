"""Records to index rows, and rows back to the dicts the API answers with. Pure: no I/O.

A row is a tuple in the column order of store.py's ``*_COLUMNS``; it is built where the record
is read (the engine's event, under its lock, or a tree loaded from disk), so the writer thread
never touches a live record."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..models import JobRecord, WorkerRecord
from ..outcomes import MergeRecord
from ..selection.candidates import task_outcome
from .store import JOB_COLUMNS

REQUEST_CAP = 4000  # characters of a job's request kept (the listing shows the first 300)
SUMMARY_REQUEST = 300  # what GET /api/v1/jobs has always shown of a request
SUMMARY_KEYS = ("job_id", "status", "request", "depth", "parent_job_id", "workers", "created_at", "ended_at", "duration")

Row = tuple[Any, ...]


def job_row(job: JobRecord) -> Row:
    return (
        job.id,
        job.root_id,
        job.parent_job_id,
        job.depth,
        job.status.value,
        job.request[:REQUEST_CAP],
        job.created_at,
        job.started_at,
        job.ended_at,
        len(job.worker_names),
        job.planner,
        job.planner_cost_usd,
        merge_summary(job.merge),
        len(job.selections),
        (job.error or "")[:500] or None,
        task_outcome(job).value if job.is_root else job.status.value,
    )


def merge_summary(merge: MergeRecord | None) -> str | None:
    """The few facts of a job's merge a listing shows (JSON), not its per-file detail."""
    if merge is None:
        return None
    found = {
        "strategy": merge.strategy,
        "result_ref": merge.result_ref,
        "result_commit": merge.result_commit,
        "merged": len(merge.merged),
        "conflicts": len(merge.conflicts),
        "error": merge.error,
    }
    return json.dumps(found)


def task_row(rec: WorkerRecord) -> Row:
    return (
        rec.job_id,
        rec.name,
        rec.root_id,
        rec.depth,
        rec.task_id,
        rec.kind,
        rec.model,
        rec.status.value,
        rec.candidate,
        None if rec.selected is None else int(rec.selected),
        rec.cost_usd,
        rec.duration,
        len(rec.files_changed),
        rec.branch,
        rec.created_at,
    )


def event_row(
    *, root_id: str, job_id: str, worker: str | None, kind: str | None, type: str, status: str, message: str, time: float
) -> Row:
    return (root_id, job_id, worker, kind, type, status, message[:2000], time)


def tree_events(jobs: list[JobRecord], workers: list[WorkerRecord]) -> list[Row]:
    """A tree's progress events as its records tell them (for a tree indexed from disk): each
    job's start and end, each worker's start and end, in time order. The live feed records every
    event as it is published; after a rebuild, these milestones are what is left."""
    found = [e for job in jobs for e in job_events(job)]
    for rec in workers:
        found += worker_events(rec)
    found.sort(key=lambda row: row[-1])
    return found


@dataclass(slots=True)
class TreeRows:
    """One tree's rows, read from its records on disk: its jobs', its tasks' and (when asked) its
    progress events' (``tree_events``)."""

    jobs: list[Row]
    tasks: list[Row]
    events: list[Row]


def tree_rows(jobs: list[JobRecord], workers: Iterable[WorkerRecord], *, events: bool) -> TreeRows:
    """A tree's rows with each worker's made as it is drawn from ``workers`` (the workspace's
    ``walk_tree``), so no record is kept: the rows of a 10,000-worker tree are a fifth of its
    records. ``events``: its milestones too, in time order (``tree_events``)."""
    tasks: list[Row] = []
    # Ordered as tree_events orders them: by time, then the jobs' order, then load_tree's workers'.
    keyed = [((e[-1], 0.0, i, 0.0, 0), e) for i, job in enumerate(jobs) for e in job_events(job)] if events else []
    for rec in workers:
        tasks.append(task_row(rec))
        if events:
            keyed += [((e[-1], 1.0, rec.depth, rec.created_at, rec.index), e) for e in worker_events(rec)]
    keyed.sort(key=lambda pair: pair[0])
    return TreeRows([job_row(j) for j in jobs], tasks, [e for _, e in keyed])


def job_events(job: JobRecord) -> list[Row]:
    """A job's milestones in ``tree_events``: submitted, planned, ended."""
    ids: Row = (job.root_id, job.id, None, None, "job")
    found: list[Row] = [(*ids, "pending", "job submitted", job.created_at)]
    if job.started_at is not None:
        found.append((*ids, "running", f"planned {len(job.tasks)} subtask(s)", job.started_at))
    if job.ended_at is not None:
        found.append((*ids, job.status.value, f"job {job.status.value}", job.ended_at))
    return found


def worker_events(rec: WorkerRecord) -> list[Row]:
    """A worker's milestones in ``tree_events``: started, ended."""
    ids: Row = (rec.root_id, rec.job_id, rec.name, rec.kind, "worker")
    found: list[Row] = []
    if rec.started_at is not None:
        found.append((*ids, "running", "started", rec.started_at))
    if rec.ended_at is not None:
        found.append((*ids, rec.status.value, (rec.exit_reason or rec.status.value)[:2000], rec.ended_at))
    return found


# -- rows back to dicts -------------------------------------------------------------------
def job_dict(row: Sequence[Any], cost: float | None) -> dict[str, Any]:
    """A listed job: the summary GET /api/v1/jobs gives (SUMMARY_KEYS), then the index's extras
    (root_id, started_at, planner, cost_usd of the job's own workers and planner, merge,
    selections, error)."""
    data = dict(zip(JOB_COLUMNS, row, strict=True))
    started, ended = data["started_at"], data["ended_at"]
    return {
        "job_id": data["id"],
        "status": data["status"],
        "request": data["request"][:SUMMARY_REQUEST],
        "depth": data["depth"],
        "parent_job_id": data["parent_job_id"],
        "workers": data["workers"],
        "created_at": data["created_at"],
        "ended_at": ended,
        "duration": None if started is None or ended is None else max(0.0, ended - started),
        "root_id": data["root_id"],
        "started_at": started,
        "planner": data["planner"],
        "cost_usd": cost,
        "merge": json.loads(data["merge"]) if data["merge"] else None,
        "selections": data["selections"],
        "error": data["error"],
        "outcome": data["outcome"],  # a root job's task status (pending ... cancelled: candidates.task_outcome)
    }


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """Only the keys GET /api/v1/jobs has always answered with."""
    return {key: job[key] for key in SUMMARY_KEYS}
