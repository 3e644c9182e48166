"""A person in the loop (delivery/approval.py): a root job with approval: before_merge whose
workers are all settled stops in ``waiting`` (``hold``), nothing merged; ``decide`` carries out
a person's approve, reject or cancel, and the job then ends as ``ending.Ending.conclude`` ends it.
"""

from __future__ import annotations

from typing import Protocol

from .. import states
from ..delivery import approval
from ..errors import Conflict
from ..models import ApprovalDecision, JobRecord, JobStatus
from .context import EngineContext, EnginePart
from .queries import Queries
from .reporting import Reporting
from .tables import write_snapshots


class Conclude(Protocol):
    """How a decided job ends (``ending.Ending.conclude``): landed, or with nothing merged."""

    def __call__(self, job: JobRecord, *, land: bool) -> None: ...


class Approvals(EnginePart):
    """Holds a job for approval and carries out the decision; ``conclude`` ends the decided job
    (given by ``ending.Ending``, which holds a job here as it ends)."""

    def __init__(self, ctx: EngineContext, *, queries: Queries, reporting: Reporting, conclude: Conclude) -> None:
        self.ctx = ctx  # what every part shares (EnginePart reads it)
        self.queries = queries
        self.reporting = reporting
        self.conclude = conclude

    def hold(self, job: JobRecord, earned: JobStatus) -> None:
        """Outside the lock, from ``end_job``: a root job with approval: before_merge stops in
        waiting, nothing merged; its reports say so and a "waiting" job event is published."""
        tables = self.tables
        with self.tables.locked():
            job.approval = approval.waiting(earned, self.clock.time())
            job.notes.append(approval.waiting_note(job))
        self.reporting.render_locked(job)
        with self.tables.locked():
            held = job.copy()
            states.set_job_status(held, JobStatus.WAITING)
            snapshot = tables.job_snapshot(held)
        write_snapshots([snapshot])  # on disk before anyone hears it waits: a restart finds it waiting
        with self.tables.locked():
            del tables.ending[job.id]
            states.set_job_status(job, JobStatus.WAITING)
            self.announce.job(job, "job waiting for approval")
            self.announce.line(job, f"job {job.id} waiting for approval: nothing merged yet")
            self.tables.notify_all()

    def decide(self, job_id: str, action: ApprovalDecision, text: str = "") -> JobRecord:
        """``action`` (approve, reject, cancel) on a waiting root job: approve lands it and it ends
        with the status its workers earned; reject ends it failed, cancel cancelled, nothing merged.
        Conflict (409) when it is not waiting, or another decision is being carried out."""
        with self.tables.locked():
            job = self.tables.jobs.get(job_id)
            if job is None or job.id in self.tables.ending:
                state = "being ended" if job is not None else "not waiting for approval"
                raise Conflict(f"job {job_id} is {state}: only a waiting job can be approved, rejected or cancelled here")
            now = self.clock.time()
            status, record, note = approval.decision(job, action, text, now)
            job.approval = record
            job.notes.append(note)
            if action == ApprovalDecision.REJECT:
                job.error = f"rejected: {text}"
            self.announce.line(job, f"job {job.id} {note}")
            self.tables.ending[job.id] = (status, now)
        self.conclude(job, land=action == ApprovalDecision.APPROVE)
        return self.queries.get_job(job_id)
