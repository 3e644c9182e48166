"""How a worker ends: its process exits (``record_outcome``, called as it frees its slot); once its
child jobs have ended too it is settled: ``final_record`` works out its terminal status inside the
lock, ``publish_final`` writes it to disk and then applies it (``settle`` does both;
``publish_finals`` does it for the workers of one settling pass, their records written together).
Its job ends (``end_job``) when its last worker is settled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import failpoints, states
from ..models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from ..process.monitor import ResourceMonitor
from ..states import WorkerPhase
from ..workers import costs
from ..workers.adapters.base import session_of
from ..workspace import logs
from .choosing import Choosing
from .context import EngineContext, EnginePart
from .locked_only import locked_only
from .scheduling import Scheduler
from .tables import LiveWorker, Outcome, Snapshot, write_together

log = logging.getLogger("orchestrator.engine")


class Settling(EnginePart):
    """Settles workers, on the engine's context (``ctx``): a settled candidate goes to its task's
    choice (``choosing``), a graph's worker to its scheduler, and a job whose last worker settled
    to ``end_job`` (``ending.Ending``'s)."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        monitor: ResourceMonitor,
        scheduler: Scheduler | None,
        choosing: Choosing,
        end_job: Callable[[JobRecord], None],
    ) -> None:
        self.ctx = ctx
        self.monitor = monitor
        self.scheduler = scheduler  # a task graph's: what a worker's end unblocks or skips
        self.choosing = choosing
        self.end_job = end_job

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
            rec.cost_basis = parsed.cost_basis or (costs.CostBasis.REPORTED if parsed.cost_usd is not None else None)
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
        Only the child jobs its last attempt started or reused count: an earlier attempt failed, and
        what its other child jobs did went with it (a retry starts again from the checkpoint)."""
        jobs = self.tables.jobs
        since = rec.attempts[-1].started_at if rec.attempts else None
        last = rec.attempts[-1].number if rec.attempts else None
        own = [
            c
            for c in rec.child_job_ids
            if c not in jobs or since is None or jobs[c].created_at >= since or rec.reused_children.get(c) == last
        ]
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
        with self.tables.locked(), self.announce.gathered():  # the pass's lines in one append per tree
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
        lost), and so does its tree's (``tables.unwritten``): a restart settles it from its exit file."""
        why = f"no space left on device while writing its final record (it ended: {final.exit_reason})"
        log.warning("%s: %s: %s", live.record.key, why, exc, extra=logs.context(live.job.id, live.record.name))
        with self.tables.locked():
            self.tables.unwritten.add(live.job.root_id)
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
