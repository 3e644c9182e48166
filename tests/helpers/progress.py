"""Helpers of tests/test_progress.py, used by other test files too."""

from __future__ import annotations

from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus

NOW = 1000.0

ROOT_ID = "0123456789ab"


def worker(name, status, task, job_id=ROOT_ID, index=1, started=None, ended=None, children=()):
    depth = job_id.count("-c")
    return WorkerRecord(
        job_id=job_id,
        root_id=ROOT_ID,
        name=name,
        index=index,
        depth=depth,
        task=task,
        kind="simulated",
        status=WorkerStatus(status),
        started_at=started,
        ended_at=ended,
        child_job_ids=list(children),
        created_at=900.0 + index,
    )


def job(job_id, status, names, depth=0, parent=None):
    return JobRecord(
        id=job_id,
        root_id=ROOT_ID,
        request="r",
        depth=depth,
        status=JobStatus(status),
        worker_names=names,
        parent_job_id=parent,
        parent_worker=parent and "worker_2",
        created_at=900.0 + depth,
    )


def small_tree():
    """A root of three workers; worker_2 waits on a child job of three."""
    child = f"{ROOT_ID}-c1"
    jobs = [
        job(ROOT_ID, "running", ["worker_1", "worker_2", "worker_3"]),
        job(child, "running", ["worker_2_1", "worker_2_2", "worker_2_3"], depth=1, parent=ROOT_ID),
    ]
    workers = [
        worker("worker_1", "success", "Frontend", index=1, started=990.0, ended=990.4),
        worker("worker_2", "running", "Backend with auth and orders", index=2, started=990.0, children=[child]),
        worker("worker_3", "pending", "Database", index=3),
        worker("worker_2_1", "running", "Auth", job_id=child, index=1, started=997.5),
        worker("worker_2_2", "failed", "Orders", job_id=child, index=2, started=991.0, ended=994.25),
        worker("worker_2_3", "pending", "Payments", job_id=child, index=3),
    ]
    return jobs, workers
