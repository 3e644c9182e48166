"""How workers and jobs end: a worker's outcome applied, its final record written, its job
ended once its last worker is, a root's result branch merged (``land``, quality/landing.py) and the
reports rendered before anyone hears the job ended.

A worker ends in steps (its phases, see ``states``): its process exits (``record_outcome``,
called by the engine, frees its slot); once its child jobs have ended too it is settled:
``final_record`` works out its terminal status inside ``tables.locked()``, ``publish_final`` writes it
to disk and then applies it (``settle`` does both; ``publish_finals`` does it for the workers of one
settling pass, their records written together). The job ends (``end_job``) when its last worker
is settled.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from typing import Any

from .. import failpoints, reports, states
from ..audit import keys as audit_keys
from ..audit import record as audit_record
from ..checkouts import lifetime
from ..config import Isolation
from ..errors import Conflict, OrchestratorError
from ..gate_output import failing_gate
from ..git.gitcmd import GitFailed
from ..models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from ..process.monitor import ResourceMonitor
from ..quality import approval, landing, publishing
from ..quality.landing import Landed, ResolverFactory
from ..reports.analytics import analyse
from ..reports.wording import pull_request_text
from ..selection.candidates import candidate_tasks
from ..states import WorkerPhase
from ..workers import costs
from ..workers.adapters.base import session_of
from ..workspace import logs
from ..workspace.ids import worker_key
from .choosing import Choosing
from .context import EngineContext
from .locked_only import locked_only
from .nesting import Nesting
from .pacing import Pacer
from .queries import Queries
from .scheduling import Scheduler
from .tables import LiveWorker, Outcome, Snapshot, write_snapshots, write_together, write_unless_full

log = logging.getLogger("orchestrator.engine")
# Finished trees kept in memory (their records, events and locks): enough for clients that
# read a tree right after it ends; older ones come from disk, the same way after a restart.
FINISHED_TREES_IN_MEMORY = 32


class Finishing:
    """Ends workers and jobs, on the engine's context (``ctx``); a freed slot goes to the next
    pending worker through ``ctx.hooks.dispatch``."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        monitor: ResourceMonitor,
        queries: Queries,
        nesting: Nesting | None,
        scheduler: Scheduler | None,
        resolvers: ResolverFactory | None = None,
    ) -> None:
        self.settings = ctx.settings
        # A task's candidates settle into one winner (engine/choosing.py): a unit of the job's work.
        self.choosing = Choosing(ctx, scheduler=scheduler, queries=queries, end_job=self.end_job)
        self.scheduler = scheduler  # a task graph's: what a worker's end unblocks or skips
        self.nesting = nesting  # a child job's work into its parent worker's branch (worktrees)
        self.ctx = ctx
        self.clock = ctx.clock
        self.workspace = ctx.workspace
        self.tables = ctx.tables
        self.announce = ctx.announce
        self.metrics = ctx.metrics
        self.hooks = ctx.hooks
        self.monitor = monitor
        self.queries = queries
        self.resolvers = resolvers  # merge_strategy resolve's resolver workers (None: resolve stops as auto)
        self.level_renders: Pacer[tuple[str, int]] = Pacer()  # (root id, depth) -> a child job's level report, paced
        # Trees a full disk kept a final record of from the disk (under tables.locked()): they end in
        # memory only, and stay there; on disk they stay unfinished, for a restart to settle from the
        # exit files (``unwritten``).
        self.unwritten: set[str] = set()

    # -- a worker ---------------------------------------------------------------------------
    @locked_only
    def record_outcome(self, live: LiveWorker, outcome: Outcome) -> None:
        """What its last attempt reported, its sampled usage, and its cost
        toward the tree's budget."""
        rec = live.record
        parsed = outcome.parsed
        rec.exit_reason = outcome.exit_reason
        rec.error = outcome.error
        usage = self.monitor.take_usage(live.tag)
        if usage is not None:
            rec.peak_rss, rec.peak_processes = usage.peak_rss, usage.peak_processes
            rec.cpu_seconds = round(usage.cpu_seconds, 3)
        if parsed is not None:
            rec.output = parsed.output
            rec.cost_usd, rec.tokens_in, rec.tokens_out = parsed.cost_usd, parsed.tokens_in, parsed.tokens_out
            rec.tokens_cache_read = parsed.tokens_cache_read
            rec.cost_basis = parsed.cost_basis or (costs.CostBasis.REPORTED.value if parsed.cost_usd is not None else None)
            rec.cost_note = parsed.cost_note
            rec.session_id = session_of(parsed.extra) or rec.session_id
            self.ctx.add_cost(rec.root_id, parsed.cost_usd)

    def settle(self, live: LiveWorker) -> None:
        """Its process has exited and its child jobs have ended: settle its status."""
        with self.tables.locked():
            settled = self.final_record(live)
        if settled is not None:
            self.publish_final(live, *settled)

    @locked_only
    def final_record(self, live: LiveWorker) -> tuple[WorkerRecord, Snapshot] | None:
        """The worker's final record and its snapshot to write, or None when
        it is not in phase EXITED (already settled, or being settled)."""
        if live.phase is not WorkerPhase.EXITED:
            return None
        states.set_phase(live, WorkerPhase.SETTLING)
        rec = live.record
        outcome = live.outcome or Outcome(WorkerStatus.FAILED, "lost")
        live.outcome = None  # read once (its phase leaves EXITED): its parsed output is not held per settled worker
        if not rec.attempts:  # never ran (skipped): its reason was never applied
            rec.exit_reason, rec.error = outcome.exit_reason, outcome.error
        status = outcome.status
        jobs = self.tables.jobs
        if status is WorkerStatus.SUCCESS and rec.child_job_ids:
            status = self.with_children(rec)
        if self.scheduler is not None:  # in its final record: the tasks its end lets start
            rec.unblocked = self.scheduler.unblocked_by(live, status)
        final = rec.copy()
        # It ended when its last process and its child jobs did: for one that ended while no
        # server ran, that is its shim's time, not the restart's.
        ends = [a.ended_at for a in rec.attempts[-1:] if a.ended_at is not None]
        ends += [e for c in rec.child_job_ids if c in jobs and (e := jobs[c].ended_at)]
        states.set_worker_status(final, status)
        final.ended_at = max(ends) if ends else self.clock.time()
        self.metrics.worker_finished(live.tag, status.value, final.duration)
        return final, self.tables.worker_snapshot(live, final)

    @locked_only
    def with_children(self, rec: WorkerRecord) -> WorkerStatus:
        """The status of a worker that exited 0 after starting child jobs:
        ``recursive_success`` when each completed, else ``child_incomplete``, its ``exit_reason`` then
        naming each child job that did not complete and how it ended ("child job X ended partial").
        Only the child jobs its last attempt started count: an earlier attempt failed, and what its
        child jobs did went with it (a retry starts again from the checkpoint)."""
        jobs = self.tables.jobs
        since = rec.attempts[-1].started_at if rec.attempts else None
        own = [c for c in rec.child_job_ids if c not in jobs or since is None or jobs[c].created_at >= since]
        if not own:
            return WorkerStatus.SUCCESS
        missing = [
            f"child job {c} ended {jobs[c].status.value}" if c in jobs else f"child job {c} is not known"
            for c in own
            if c not in jobs or jobs[c].status is not JobStatus.COMPLETED
        ]
        if not missing:
            return WorkerStatus.RECURSIVE_SUCCESS
        rec.exit_reason = "; ".join([r for r in (rec.exit_reason, *missing) if r])
        return WorkerStatus.CHILD_INCOMPLETE

    def publish_final(self, live: LiveWorker, final: WorkerRecord, snapshot: Snapshot) -> bool:
        """Outside the lock: the final record on disk, then everyone told; the job may end. False when a
        full disk kept the record from the disk (the worker then fails with the reason, in memory)."""
        [(written, ending)] = self.publish_finals([(live, final, snapshot)])
        if ending is not None:
            self.end_job(ending)
        return written

    def publish_finals(self, finals: list[tuple[LiveWorker, WorkerRecord, Snapshot]]) -> list[tuple[bool, JobRecord | None]]:
        """``publish_final`` for workers settled together: their records written with shared syncs,
        then one lock section tells each. Per worker: whether its record is on disk, and the job
        its end ended (its last worker), for the caller to end (``end_job``: its thread's, as a
        child job's merge back may take a while)."""
        # On disk before anyone can see it: a reader told "done" never loses that to a crash.
        for _ in finals:
            failpoints.hit("before_final_record")
        fulls = write_together(self.workspace, [snapshot for *_, snapshot in finals])
        told = [
            (live, final if full is None else self.unwritten_final(live, final, full))
            for (live, final, _), full in zip(finals, fulls, strict=True)
        ]
        ending: list[JobRecord | None] = []
        with self.tables.locked():
            for live, final in told:
                rec = live.record
                states.set_worker_status(rec, final.status)
                rec.ended_at = final.ended_at
                states.set_phase(live, WorkerPhase.SETTLED)
                job = live.job
                self.tables.unfinished[job.id] -= 1
                ending.append(job if self.tables.unfinished[job.id] == 0 else None)
                self.announce.worker(live, rec.exit_reason + ("; no changes" if rec.no_changes else ""))
                if rec.candidate is not None:
                    self.choosing.settled(live)
                if self.scheduler is not None and self.scheduler.has_graph(job):
                    self._graph_step(live, self.scheduler)
        return [(full is None, job) for full, job in zip(fulls, ending, strict=True)]

    def unwritten_final(self, live: LiveWorker, final: WorkerRecord, exc: BaseException) -> WorkerRecord:
        """Its final record could not be written, the disk being full: it fails with that reason, in
        memory, so its job goes on to its end. Its record on disk stays as it was (nothing there is
        lost), and so does its tree's (``unwritten``): a restart settles it from its exit file."""
        why = f"no space left on device while writing its final record (it ended: {final.exit_reason})"
        log.warning("%s: %s: %s", live.record.key, why, exc, extra=logs.context(live.job.id, live.record.name))
        with self.tables.locked():
            self.unwritten.add(live.job.root_id)
            rec = live.record
            rec.exit_reason = rec.error = why
            failed = rec.copy()
            states.set_worker_status(failed, WorkerStatus.FAILED)
            failed.ended_at = final.ended_at
            failed.unblocked = self.scheduler.unblocked_by(live, WorkerStatus.FAILED) if self.scheduler is not None else []
        return failed

    @locked_only
    def _graph_step(self, live: LiveWorker, scheduler: Scheduler) -> None:
        """A graph job's worker settled: say what it unblocked, skip or stop
        what waited on it if it failed (engine/scheduling.py), and start what may start now."""
        rec = live.record
        if rec.unblocked:
            self.announce.worker(live, f"task {rec.task_id} {rec.status.value}: unblocked {', '.join(rec.unblocked)}")
        scheduler.settled(live)
        self.hooks.dispatch()

    # -- a job ------------------------------------------------------------------------------
    def end_job(self, job: JobRecord) -> None:
        """Its last worker is settled: render its reports, write its final record, tell
        everyone; a parent worker waiting on it resumes (or is settled)."""
        tables = self.tables
        with self.tables.locked():
            if job.status.at_rest or job.id in tables.ending:  # ended, ending, or waiting for approval
                return
            outcome = self.job_outcome(job)
            tables.ending[job.id] = (outcome, self.clock.time())
            wait = approval.waits(job, outcome)
        if wait:  # approval: before_merge: nothing lands until a person approves (decide)
            self.hold(job, outcome)
        else:
            self.conclude(job, land=True)

    def conclude(self, job: JobRecord, *, land: bool) -> None:
        """Outside the lock, the job in ``tables.ending`` with its status: land a root's result
        (unless ``land`` is False: rejected or cancelled while waiting), render its reports, write
        its final record, tell everyone."""
        tables = self.tables
        with self.tables.locked():
            outcome = tables.ending[job.id][0]
        if job.is_root and land:  # its result branch (quality/landing.py) is on disk before anyone hears the tree ended
            self.land(job, cancelled=outcome is JobStatus.CANCELLED)
        elif not job.is_root and self.nesting is not None:  # in the parent's checkout before its spawn --wait returns
            self.nesting.merge_child(job)
        if job.is_root:  # FINAL_RESULT.md exists, and TMPDIRs are gone, before anyone is told the tree ended
            self.level_renders.forget(lambda key: key[0] == job.root_id)  # every level is rendered below
            # Removing a TMPDIR per worker is kernel time and rendering is Python: side by side.
            # (A thread of its own: the pool may be shutting down when a cancelled tree ends.)
            remover = threading.Thread(target=self.workspace.remove_tree_tmp, args=(job.root_id,), name="tmp-removal")
            remover.start()
            with self.render_lock(job.root_id):
                self.render_reports(job)
            remover.join()
            with self.tables.locked():
                status, ended = tables.ending[job.id]
            self.record_result(job, status, ended, publish=land and status is not JobStatus.CANCELLED)
        with self.tables.locked():
            status, ended = tables.ending[job.id]
            final = job.copy()
            states.set_job_status(final, status)
            final.ended_at = ended
            snapshot = tables.job_snapshot(final)
        # On disk before anyone can see it, and outside the lock: an fsync on a busy disk takes
        # tens of ms, which every request (a child job's refusal) would otherwise wait out.
        self.write_final_job(job, snapshot)
        with self.tables.locked():
            del tables.ending[job.id]
            if self.scheduler is not None:
                self.scheduler.forget(job.id)
            states.set_job_status(job, status)
            job.ended_at = ended
            self.announce.job(job, f"job {status.value}")
            self.announce.line(job, f"job {job.id} {status.value}")
            self.tables.notify_all()
            parent = tables.parent_of(job)
            idle = parent is not None and not tables.live_children(parent)
            settle_parent = parent is not None and idle and parent.phase is WorkerPhase.EXITED
            if parent is not None and idle and parent.phase is WorkerPhase.LENDING:
                states.set_phase(parent, WorkerPhase.RUNNING)  # its child is done: it runs again, and counts again
                tables.slots_used += 1
            self.hooks.dispatch()
        if not job.is_root:  # a waiting parent resumes first; its level report follows (paced: engine/pacing.py)
            self.level_renders.request((job.root_id, job.depth), functools.partial(self.render_locked, job))
        if settle_parent and parent is not None:
            self.settle(parent)
        if job.is_root:
            self.evict_finished(job.root_id)

    def write_final_job(self, job: JobRecord, snapshot: Snapshot) -> None:
        """A job's final record on disk, unless a full disk kept a worker's of its tree from the disk
        (``unwritten``): then the job ends in memory only, its tree unfinished on disk for a restart
        to settle from the exit files, and its notes say so."""
        with self.tables.locked():
            unwritten = job.root_id in self.unwritten
        if not unwritten:
            full = write_unless_full([snapshot])
            if full is None:
                return
            log.warning("job %s: its final record not written: %s", job.id, full, extra=logs.context(job.id))
        with self.tables.locked():
            self.unwritten.add(job.root_id)
            job.notes.append(
                "no space left on device while writing the records of its tree: it ended here, and its records on disk "
                "stay unfinished; once there is room, a restart settles its workers from their exit files"
            )

    def record_result(self, job: JobRecord, status: JobStatus, ended: float | None, *, publish: bool = True) -> None:
        """Outside the lock, once a root's result has landed: its signed record, then (``publish``, and
        git.push set) its push and pull request, from one copy of the tree's records."""
        jobs, workers = self.queries.snapshot(job.root_id)
        self.write_record(job, status, ended, jobs, workers)
        if publish and publishing.configured(self.settings):
            self.publish(job, workers, status)
            # FINAL_RESULT.md was rendered before the push: again, so it names the pull request.
            with self.render_lock(job.root_id):
                self.render_reports(job)

    def write_record(
        self, job: JobRecord, status: JobStatus, ended: float | None, jobs: list[JobRecord], workers: list[WorkerRecord]
    ) -> None:
        """Outside the lock: a root tree's signed RECORD.json (audit/record.py) from the tree's records,
        its digest on the job record. Failing to write it is a note on the job, never the job's failure."""
        try:
            job_dir = self.workspace.job_dir(job.root_id)
            key = audit_keys.load_or_create(self.workspace.root)
            digest = audit_record.write_signed(job, jobs, workers, job_dir, key, status=status.value, ended_at=ended)
        except Exception as exc:  # a full disk, an unreadable key: the run's result stands without its record
            log.warning("job %s: RECORD.json not written: %s", job.id, exc, extra=logs.context(job.id))
            with self.tables.locked():
                job.notes.append(f"RECORD.json not written: {exc}")
            return
        with self.tables.locked():
            job.record_digest = digest

    def publish(
        self, job: JobRecord, workers: list[WorkerRecord] | None = None, status: JobStatus | None = None
    ) -> dict[str, Any]:
        """Outside the lock: push a root's result branch and open or update its pull request
        (quality/publishing.py) from the tree's worker records (None: read now); what happened is
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
            if said:
                job.notes.append(f"pull request: {said}")
        pr = found.get("pull_request") or {}
        if found["error"]:
            log.warning("job %s: publishing: %s", job.id, found["error"], extra=logs.context(job.id))
            self.announce.line(job, f"job {job.id}: not published: {found['error']} (retry: ./orchestrator.sh publish {job.id})")
        else:
            where = f"; pull request {pr.get('url') or pr.get('number')} {pr.get('action')}" if pr else ""
            self.announce.line(job, f"job {job.id}: pushed {found['branch']} to {found['remote']}{where}")
        return found

    # -- a person in the loop (quality/approval.py) ----------------------------------------------
    def hold(self, job: JobRecord, earned: JobStatus) -> None:
        """Outside the lock, from ``end_job``: a root job with approval: before_merge stops in
        waiting, nothing merged; its reports say so and a "waiting" job event is published."""
        tables = self.tables
        with self.tables.locked():
            job.approval = approval.waiting(earned, self.clock.time())
            job.notes.append(approval.waiting_note(job))
        with self.render_lock(job.root_id):
            self.render_reports(job)
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

    def decide(self, job_id: str, action: str, text: str = "") -> JobRecord:
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
            if action == "reject":
                job.error = f"rejected: {text}"
            self.announce.line(job, f"job {job.id} {note}")
            self.tables.ending[job.id] = (status, now)
        self.conclude(job, land=action == "approve")
        return self.queries.get_job(job_id)

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

    def _release_worktrees(self, job: JobRecord, landed: Landed) -> None:
        """A landing that moved the branch the user named ends the worktrees' lifetime (checkouts/lifetime.py)."""
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

    @locked_only
    def job_outcome(self, job: JobRecord) -> JobStatus:
        """The status a job whose workers are all settled ends with."""
        records = [self.tables.workers[(job.root_id, worker_key(job.depth, n))].record for n in job.worker_names]
        if any(r.status in (WorkerStatus.CANCELLED, WorkerStatus.SKIPPED) for r in records) and job.error == "cancelled":
            return JobStatus.CANCELLED
        # A task run as candidates counts once, by its winner, whatever its losers did. A task is
        # done when its work is (``ok``: it lands), complete when nothing below it is missing
        # either: a child_incomplete worker's job is partial, not completed.
        by_name = {r.name: r for r in records}
        final = {r.task_id or r.name: r.status for r in records if r.candidate is None}
        for task in candidate_tasks(job):
            winner = by_name.get(job.selections.get(task, {}).get("winner") or "")
            if winner is None:
                final[task] = WorkerStatus.FAILED
            else:  # chosen among the eligible: its work is done; is anything below it missing?
                final[task] = winner.status if winner.status is WorkerStatus.CHILD_INCOMPLETE else WorkerStatus.SUCCESS
        if all(status.complete for status in final.values()):
            return JobStatus.COMPLETED
        return JobStatus.PARTIAL if any(status.ok for status in final.values()) else JobStatus.FAILED

    def evict_finished(self, root_id: str) -> None:
        """Keep the newest FINISHED_TREES_IN_MEMORY finished trees in memory; older ones are
        read from their records on disk, so a long-running server's memory stays flat."""
        with self.tables.locked():
            if root_id in self.unwritten:
                return  # its records on disk are not final: what it ended as is held here alone
            self.tables.finished_roots.append(root_id)
            while len(self.tables.finished_roots) > FINISHED_TREES_IN_MEMORY:
                self.tables.forget_tree(self.tables.finished_roots.popleft(), self.announce.events)

    # -- reports ----------------------------------------------------------------------------
    def render_lock(self, root_id: str) -> threading.Lock:
        with self.tables.locked():
            return self.tables.render_locks.setdefault(root_id, threading.Lock())

    def render_locked(self, job: JobRecord) -> None:
        with self.render_lock(job.root_id):
            self.render_reports(job)

    def render_reports(self, job: JobRecord) -> None:
        """Level report of the job's depth; for a root, every level and FINAL_RESULT.md."""
        jobs, workers = self.queries.snapshot(job.root_id, outcomes=True)
        tails = {}  # a failed worker's log's last lines, or its failing gate's output's (FINAL_RESULT.md's Failures)
        for w in workers:
            if w.status in reports.FAILURE_STATUSES:  # the workers FINAL_RESULT.md's Failures list
                gate = failing_gate(w.gates, w.exit_reason)
                path = gate.log_path if gate is not None else w.log_path
                tails[w.key] = self.workspace.read_tail(self.workspace.job_dir(w.root_id) / path, 20)
        tdir = self.settings.templates_dir
        depths = sorted({w.depth for w in workers}) if job.is_root else [job.depth]
        try:
            # Each task's CANDIDATES file first, so the reports' links to them never dangle.
            for path, text in reports.render_candidate_reports(jobs[0], jobs, workers, templates_dir=tdir).items():
                self.workspace.write_text(self.workspace.job_dir(job.root_id) / path, text)
            for depth in depths:
                text = reports.render_level_report(depth, jobs[0], jobs, workers, log_tails=tails, templates_dir=tdir)
                self.workspace.write_text(self.workspace.level_report(job.root_id, depth), text)
            if job.is_root:  # the picture first, so the report's link to it never dangles
                # One set of the tree's figures for both, and the picture streamed to its file:
                # at 10,000 workers each is a pass over every record, and the picture megabytes.
                jobs, workers = reports.tree_order(jobs, workers)
                now = time.time()
                figures = analyse(jobs, workers, now)
                svg = self.workspace.timeline_svg(job.root_id)
                self.workspace.write_text(svg, reports.timeline_svg_parts(jobs, workers, now=now, analytics=figures))
                text = reports.render_final_report(
                    jobs[0],
                    jobs,
                    workers,
                    log_tails=tails,
                    templates_dir=tdir,
                    timeline_svg=self.workspace.relative(job.root_id, svg),
                    now=now,
                    analytics=figures,
                )
                self.workspace.write_text(self.workspace.final_report(job.root_id), text)
        except Exception as exc:  # a broken custom template must not hang the job
            log.exception("report rendering failed for %s", job.id, extra=logs.context(job.id))
            with self.tables.locked():
                job.notes.append(f"report rendering failed: {exc}")
