"""A root job's result: its workers' branches merged into its result branch (``land``,
delivery/landing.py), its signed RECORD.json (``write_record``, audit/record.py), and, with git.push
set, its push and pull request (``publish``, delivery/publishing.py). Each runs outside the lock;
what happened is on the job's record and in its notes, never the job's failure.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .. import failpoints
from ..audit import record as audit_record
from ..audit import signing_key as audit_keys
from ..config import Isolation
from ..delivery import landing, pr_checks, publishing
from ..delivery.landing import Landed, ResolverFactory
from ..errors import OrchestratorError
from ..git.invocation import GitFailed
from ..models import JobRecord, JobStatus, WorkerRecord
from ..outcomes import MergeRecord, PublishRecord
from ..reports.wording import pull_request_text
from ..retention import lifetime
from ..workspace import logs
from ..workspace.stages import StageLedger, StageState, rerun_note
from .context import EngineContext, EnginePart
from .queries import Queries
from .reporting import Reporting
from .resolvers import driver_factory

log = logging.getLogger("orchestrator.engine")


class Results(EnginePart):
    """Lands, records and publishes a root job's result, from the tree's records (``queries``);
    FINAL_RESULT.md is rendered again (``reporting``) once it can name the pull request."""

    def __init__(
        self, ctx: EngineContext, *, queries: Queries, reporting: Reporting, resolvers: ResolverFactory | None = None
    ) -> None:
        self.ctx = ctx
        self.queries = queries
        self.reporting = reporting
        self.resolvers = resolvers  # merge_strategy resolve's resolver workers (None: resolve stops as auto)

    def land(
        self,
        job: JobRecord,
        strategy: str | None = None,
        into: str | None = None,
        *,
        strict: bool = False,
        cancelled: bool = False,
    ) -> Landed:
        """Outside the lock: merge a root job's workers' branches into its result branch and record
        it in ``job.merge`` with a note. A failure is recorded too (the job keeps the status its
        workers earned); ``strict`` (POST /merge) raises it after recording it."""
        if job.config.isolation != Isolation.WORKTREE:
            return Landed(None, "")  # folder workers have no branches (and a big tree's copy is not free)
        with landing.tree_lock(job.root_id):
            _, workers = self.queries.snapshot(job.root_id, job.id)
            try:
                landed = landing.land(
                    job,
                    workers,
                    cancelled=cancelled,
                    settings=self.settings,
                    workspace=self.workspace,
                    now=self.clock.time(),
                    strategy=strategy,
                    into=into,
                    resolvers=self.resolvers,
                    drivers=driver_factory(self.ctx),
                )
            except Exception as exc:
                log.warning("merging job %s failed: %s", job.id, exc, extra=logs.context(job.id))
                landed = landing.failed(job, strategy, exc, self.clock.time())
                if strict:
                    self._record_landing(job, landed)
                    raise
            self._record_landing(job, landed)
            self._release_worktrees(job, landed)
        return landed

    def land_once(self, job: JobRecord, *, cancelled: bool = False) -> Landed:
        """``land`` as a root ends, once across a server's restarts (workspace/stages.py): a landing
        that reached its verdict before a stop is taken as it was, not merged again (a second
        merge would make another result commit, and a ``merge_into`` branch already moved to the
        first could not follow); one the stop cut off runs once more, and the job's notes say so."""
        if job.config.isolation != Isolation.WORKTREE or cancelled:
            return self.land(job, cancelled=cancelled)  # no branches, or nothing merged: no stage to keep
        ledger, key = StageLedger(self.workspace, job.root_id), f"landing {job.id}"
        stage = ledger.begin(key)
        if stage.state is StageState.DONE and stage.verdict is not None:
            merge = stage.verdict.get("merge")
            landed = Landed(MergeRecord.from_dict(merge) if isinstance(merge, dict) else None, "")
            self._record_landing(job, landed)
            self.ctx.restart_note(job, "landing: its verdict from before the server's restart is kept, not merged again")
            return landed
        if stage.rerun:
            self.ctx.restart_note(job, rerun_note("landing"))
        landed = self.land(job)
        failpoints.hit("after_landing")  # the chaos tests' stop between a landing and its record
        ledger.reached(key, {"merge": landed.merge.to_dict() if landed.merge is not None else None})
        return landed

    def _release_worktrees(self, job: JobRecord, landed: Landed) -> None:
        """A landing that moved the branch the user named ends the worktrees' lifetime (retention/lifetime.py)."""
        try:
            note = lifetime.release_landed(self.settings, self.workspace, job, landed.merge)
        except (GitFailed, OrchestratorError):
            log.warning("job %s: could not remove its worktrees after its landing", job.id, exc_info=True)
            return
        if note:
            with self.tables.locked():
                job.notes.append(note)
                self.announce.line(job, note)

    def _record_landing(self, job: JobRecord, landed: Landed) -> None:
        with self.tables.locked():
            job.merge = landed.merge
            if landed.note:
                job.notes.append(landed.note)
                self.announce.line(job, landed.note)

    def record_result(self, job: JobRecord, status: JobStatus, ended: float | None, *, publish: bool = True) -> None:
        """Outside the lock, once a root's result has landed: its signed record, then (``publish``, and
        git.push set) its push and pull request, from one copy of the tree's records; then its reports,
        rendered once, so FINAL_RESULT.md names the record's digest and the pull request."""
        jobs, workers = self.queries.snapshot(job.root_id)
        self.write_record(job, status, ended, jobs, workers)
        if publish and publishing.configured(self.settings):
            self.publish_once(job, workers, status)
        # Let go of this copy first: the reports take their own (with the outcomes), and a
        # 10,000-worker tree held three times at once (the engine's, this, the reports') was
        # the peak of a run's memory.
        del jobs, workers
        self.reporting.render_locked(job)

    def write_record(
        self, job: JobRecord, status: JobStatus, ended: float | None, jobs: list[JobRecord], workers: list[WorkerRecord]
    ) -> None:
        """Outside the lock: a root tree's signed RECORD.json (audit/record.py) from the tree's records,
        its digest on the job record. Failing to write it is a note on the job, never the job's failure."""
        try:
            job_dir = self.workspace.job_dir(job.root_id)
            key = audit_keys.load_or_create(self.workspace.root)
            digest = audit_record.write_signed(job, jobs, workers, job_dir, key, status=status.value, ended_at=ended)
        except Exception as exc:  # a full disk, an unusable key: the run's result stands without its record
            log.warning("job %s: RECORD.json not written: %s", job.id, exc, extra=logs.context(job.id))
            with self.tables.locked():
                job.notes.append(f"RECORD.json not written: {exc}")
            return
        with self.tables.locked():
            job.record_digest = digest

    def publish_once(self, job: JobRecord, workers: list[WorkerRecord], status: JobStatus) -> None:
        """``publish`` as a root ends, once per result commit across a server's restarts
        (workspace/stages.py): a publication that reached its verdict before a stop is taken as it
        was; one the stop cut off runs once more, and the notes say so. Running it again is safe
        in any case: the push leases on the commit this job pushed or its result commit (the same
        commit pushed twice is no change), and the forge's pull request for the branch is updated,
        not opened twice (delivery/publishing.py)."""
        commit = job.merge.result_commit if job.merge is not None else None
        ledger, key = StageLedger(self.workspace, job.root_id), f"publish {job.id} {commit}"
        stage = ledger.begin(key)
        if stage.state is StageState.DONE and stage.verdict is not None:
            with self.tables.locked():
                job.publish = PublishRecord.from_dict(stage.verdict)
            self.ctx.restart_note(job, "publish: its verdict from before the server's restart is kept, not pushed again")
            return
        if stage.rerun:
            self.ctx.restart_note(job, rerun_note("publish"))
        found = self.publish(job, workers, status)
        ledger.reached(key, found)

    def publish(
        self, job: JobRecord, workers: list[WorkerRecord] | None = None, status: JobStatus | None = None
    ) -> dict[str, Any]:
        """Outside the lock: push a root's result branch and open or update its pull request
        (delivery/publishing.py) from the tree's worker records (None: read now); what happened is
        the job's ``publish`` record, never its failure, and a note on the job. ``status``: its
        final status, as it ends (None: its record's)."""
        if workers is None:
            _, workers = self.queries.snapshot(job.root_id)
        found = publishing.publish(
            job,
            workers,
            settings=self.settings,
            workspace=self.workspace,
            environ=os.environ,
            now=self.clock.time(),
            status=status,
        )
        said = pull_request_text(found)
        with self.tables.locked():
            job.publish = found
            pr_checks.begin(job, found, self.settings, self.workspace, self.clock.time())  # git.check_rounds
            if said:
                job.notes.append(f"pull request: {said}")
        pr = found.pull_request
        if found.error:
            log.warning("job %s: publishing: %s", job.id, found.error, extra=logs.context(job.id))
            self.announce.line(job, f"job {job.id}: not published: {found.error} (retry: ./orchestrator.sh publish {job.id})")
        else:
            where = f"; pull request {pr.url or pr.number} {pr.action}" if pr else ""
            self.announce.line(job, f"job {job.id}: pushed {found.branch} to {found.remote}{where}")
        return found.to_dict()
