"""How a job ends, once its last worker is settled: a root waiting for approval is held
(``approvals``); otherwise a root's result branch is merged (``results``), a child job's work into
its parent worker's branch (``nesting``), the reports rendered (``reporting``) and the final record
written before anyone hears the job ended; a parent worker waiting on it resumes or is settled,
and a finished tree leaves memory once FINISHED_TREES_IN_MEMORY newer ones have ended.

A root whose landing left workers out for breaking its merged result, with ``gates_retry`` rounds to
give, has not ended (``hold``): its record stays ``running`` with a note, a marker in its tree's state
says so, the engine lets go of the tree, and its breakers are sent back (engine/continuing.py); once
their rounds are over it ends (``end_held``) with what is then true, its reports, signed record and
pull request following, and only then is anyone told it ended (``job.completed``, ``--wait``).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .. import failpoints, states
from ..delivery import approval
from ..models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from ..outcomes import MergeRecord
from ..process.monitor import ResourceMonitor
from ..selection.candidates import candidate_tasks
from ..states import WorkerPhase
from ..workspace import logs
from ..workspace.ids import worker_key
from ..workspace.layout import Workspace
from .approvals import Approvals
from .choosing import Choosing
from .context import EngineContext, EnginePart
from .locked_only import locked_only
from .nesting import Nesting
from .queries import Queries
from .reporting import Reporting
from .results import Results
from .scheduling import Scheduler
from .settling import Settling
from .tables import Snapshot, write_unless_full

log = logging.getLogger("orchestrator.engine")
# Finished trees kept in memory (their records, events and locks): enough for clients that
# read a tree right after it ends; older ones come from disk, the same way after a restart.
FINISHED_TREES_IN_MEMORY = 32


class Ending(EnginePart):
    """Ends jobs, on the engine's context (``ctx``); a freed slot goes to the next pending worker
    through ``ctx.hooks.dispatch``. The parts that end a job through it are made here, given
    ``end_job`` or ``conclude``: ``settling`` (a job's last worker settled), ``choosing`` (a
    task's last selection made) and ``approvals`` (a person decided)."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        monitor: ResourceMonitor,
        queries: Queries,
        nesting: Nesting | None,
        scheduler: Scheduler | None,
        results: Results,
        reporting: Reporting,
    ) -> None:
        self.ctx = ctx  # what every part shares (EnginePart reads it)
        self.scheduler = scheduler
        self.nesting = nesting  # a child job's work into its parent worker's branch (worktrees)
        self.results = results
        self.reporting = reporting
        # A task's candidates settle into one winner (engine/choosing.py): a unit of the job's work.
        self.choosing = Choosing(ctx, scheduler=scheduler, queries=queries, end_job=self.end_job)
        self.settling = Settling(ctx, monitor=monitor, scheduler=scheduler, choosing=self.choosing, end_job=self.end_job)
        self.approvals = Approvals(ctx, queries=queries, reporting=reporting, conclude=self.conclude)
        # Set by the engine (engine/continuing.py): a root's breakers of its result, sent back before it ends.
        self.breakers: Callable[[JobRecord], list[str]] | None = None
        self.send_back: Callable[[JobRecord, Callable[[str], None]], None] | None = None

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
            self.approvals.hold(job, outcome)
        else:
            self.conclude(job, land=True)

    def conclude(self, job: JobRecord, *, land: bool) -> None:
        """Outside the lock, the job in ``tables.ending`` with its status: land a root's result
        (unless ``land`` is False: rejected or cancelled while waiting), render its reports, write
        its final record, tell everyone."""
        tables = self.tables
        with self.tables.locked():
            outcome = tables.ending[job.id][0]
        if job.is_root and land:  # its result branch (delivery/landing.py) is on disk before anyone hears the tree ended
            landed = self.results.land_once(job, cancelled=outcome is JobStatus.CANCELLED)
            self.partial_if_broken(job, landed.merge)
            if outcome is not JobStatus.CANCELLED and self.breakers is not None and self.send_back is not None:
                breakers = self.breakers(job)
                if breakers and self.hold(job, breakers):
                    self.send_back(job, self.end_held)
                    return
        elif not job.is_root and self.nesting is not None:  # in the parent's checkout before its spawn --wait returns
            self.nesting.merge_child(job)
            with self.tables.locked():
                merge = job.merge
            self.partial_if_broken(job, merge)
        if job.is_root:  # FINAL_RESULT.md exists, and TMPDIRs are gone, before anyone is told the tree ended
            self.reporting.level_renders.forget(lambda key: key[0] == job.root_id)  # every level is rendered below
            # Removing a TMPDIR per worker is kernel time; the record and the reports are Python: side by side.
            # (A thread of its own: the pool may be shutting down when a cancelled tree ends.)
            remover = threading.Thread(target=self.workspace.remove_tree_tmp, args=(job.root_id,), name="tmp-removal")
            remover.start()
            with self.tables.locked():
                status, ended = tables.ending[job.id]
            try:  # its signed record, its pull request, then its reports once
                self.results.record_result(job, status, ended, publish=land and status is not JobStatus.CANCELLED)
            finally:
                remover.join()
        with self.tables.locked():
            status, ended = tables.ending[job.id]
            final = job.copy()
            states.set_job_status(final, status)
            final.ended_at = ended
            snapshot = tables.job_snapshot(final)
        # On disk before anyone can see it, and outside the lock: an fsync on a busy disk takes
        # tens of ms, which every request (a child job's refusal) would otherwise wait out.
        failpoints.hit("before_final_job")  # the chaos tests' stop after its stages, before its record
        self.write_final_job(job, snapshot)
        with self.tables.locked():
            del tables.ending[job.id]
            if self.scheduler is not None:
                self.scheduler.forget(job.id)
            states.set_job_status(job, status)
            job.ended_at = ended
            held = self.tree_records(job.root_id) if job.is_root and job.root_id not in tables.unwritten else None
            if held is not None:  # every record of its tree on disk as held here: the index need not read them back
                self.announce.tree_ended(job, *held)
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
            self.reporting.level_renders.request((job.root_id, job.depth), functools.partial(self.reporting.render_locked, job))
        if settle_parent and parent is not None:
            self.settling.settle(parent)
        if job.is_root:
            self.evict_finished(job.root_id)

    @locked_only
    def tree_records(self, root_id: str) -> tuple[list[JobRecord], list[WorkerRecord]] | None:
        """The live records of a tree (not copies: read them inside this section); None when the
        engine does not hold every worker of it."""
        tables = self.tables
        jobs = [j for j in tables.jobs.values() if j.root_id == root_id]
        found = [tables.workers.get((root_id, worker_key(j.depth, n))) for j in jobs for n in j.worker_names]
        return None if any(live is None for live in found) else (jobs, [live.record for live in found if live is not None])

    def hold(self, job: JobRecord, breakers: list[str]) -> bool:
        """A root whose breakers are sent back before it ends: its record on disk says ``running`` with
        a note and its marker is written, then the engine lets go of its tree (read from disk from now
        on). False, and nothing changed: its records cannot be written (a full disk): it ends now."""
        tables = self.tables
        with self.tables.locked():
            if job.root_id in tables.unwritten:
                return False
            note = (
                f"not ended yet: {', '.join(breakers)} left out for breaking the merged result, sent back to fix it "
                f"(up to {job.config.gates_retry} round(s) each); the job ends once their rounds are over"
            )
            job.notes.append(note)
            snapshot = tables.job_snapshot(job)
        if write_unless_full([snapshot]) is not None:
            with self.tables.locked():
                job.notes.remove(note)
            return False
        self.workspace.write_text(held_marker(self.workspace, job.root_id), job.id + "\n")
        with self.tables.locked():
            del tables.ending[job.id]
            if self.scheduler is not None:
                self.scheduler.forget(job.id)
            tables.forget_tree(job.root_id, self.announce.events)
            self.announce.line(job, f"job {job.id}: {note}")
            self.tables.notify_all()
            self.hooks.dispatch()
        return True

    def end_held(self, job_id: str) -> None:
        """A root held while its breakers were sent back (``hold``) ends, from its records on disk: the
        status its workers' outcome now gives (partial while the merge leaves one out), its TMPDIRs
        gone, its reports, signed record and pull request, then its record, then everyone told."""
        ws, tables = self.workspace, self.tables
        job = ws.load_job(job_id)
        if job.status.terminal:  # ended already (a second server's end of the same hold)
            held_marker(ws, job.root_id).unlink(missing_ok=True)
            return
        _, workers = ws.load_tree(job.root_id)
        status = outcome_now(job, workers, job.merge.left_out if job.merge is not None else ())
        ended = self.clock.time()
        ws.remove_tree_tmp(job.root_id)
        with tables.locked():
            tables.ending[job.id] = (status, ended)  # the reports show it (``Queries.snapshot``'s outcomes)
        try:
            self.results.record_result(job, status, ended, publish=True)  # (its reports too)
            states.set_job_status(job, status)
            job.ended_at = ended
            ws.save_job(job)
        finally:
            with tables.locked():
                del tables.ending[job.id]
        held_marker(ws, job.root_id).unlink(missing_ok=True)
        with tables.locked():
            self.announce.job(job, f"job {status.value}")
            self.announce.line(job, f"job {job.id} {status.value}")
            tables.notify_all()

    def partial_if_broken(self, job: JobRecord, merge: MergeRecord | None) -> None:
        """A job ending completed whose merge (a root's into its result, a child's into its parent
        worker's branch) left out work for breaking the combination ends partial: not complete."""
        if merge is None or not any(w.get("combination") is not None for w in merge.left_out):
            return
        with self.tables.locked():
            status, ended = self.tables.ending[job.id]
            if status is JobStatus.COMPLETED:
                self.tables.ending[job.id] = (JobStatus.PARTIAL, ended)

    def write_final_job(self, job: JobRecord, snapshot: Snapshot) -> None:
        """A job's final record on disk, unless a full disk kept a worker's of its tree from the disk
        (``tables.unwritten``): then the job ends in memory only, its tree unfinished on disk for a restart
        to settle from the exit files, and its notes say so."""
        with self.tables.locked():
            unwritten = job.root_id in self.tables.unwritten
        if not unwritten:
            full = write_unless_full([snapshot])
            if full is None:
                return
            log.warning("job %s: its final record not written: %s", job.id, full, extra=logs.context(job.id))
        with self.tables.locked():
            self.tables.unwritten.add(job.root_id)
            job.notes.append(
                "no space left on device while writing the records of its tree: it ended here, and its records on disk "
                "stay unfinished; once there is room, a restart settles its workers from their exit files"
            )

    @locked_only
    def job_outcome(self, job: JobRecord) -> JobStatus:
        """The status a job whose workers are all settled ends with."""
        records = [self.tables.workers[(job.root_id, worker_key(job.depth, n))].record for n in job.worker_names]
        return outcome_of(job, records)

    def evict_finished(self, root_id: str) -> None:
        """Keep the newest FINISHED_TREES_IN_MEMORY finished trees in memory; older ones are
        read from their records on disk, so a long-running server's memory stays flat."""
        with self.tables.locked():
            if root_id in self.tables.unwritten:
                return  # its records on disk are not final: what it ended as is held here alone
            self.tables.finished_roots.append(root_id)
            while len(self.tables.finished_roots) > FINISHED_TREES_IN_MEMORY:
                self.tables.forget_tree(self.tables.finished_roots.popleft(), self.announce.events)


HELD = "sending-back"  # in a tree's state folder: its root is held while its breakers are sent back


def held_marker(workspace: Workspace, root_id: str) -> Path:
    """The marker of a root held for its breakers' rounds (``Ending.hold``): a restarted server reads it."""
    return workspace.state_dir(root_id) / HELD


def outcome_now(job: JobRecord, workers: Iterable[WorkerRecord], left_out: Sequence[Mapping[str, str]]) -> JobStatus:
    """What an ended root reads after rounds of its workers (continued, or sent back): its own workers'
    outcome (``workers``: its tree's records, the latest of each), partial while its merge leaves one out."""
    mine = {w.name: w for w in workers if w.job_id == job.id}
    found = outcome_of(job, [mine[n] for n in job.worker_names if n in mine])
    return JobStatus.PARTIAL if found is JobStatus.COMPLETED and left_out else found


def outcome_of(job: JobRecord, records: list[WorkerRecord]) -> JobStatus:
    """The status a job ends with, from its own workers' records once all are settled (also after a
    continue round: engine/continuing.py)."""
    if any(r.status in (WorkerStatus.CANCELLED, WorkerStatus.SKIPPED) for r in records) and job.cancel_requested:
        return JobStatus.CANCELLED
    # A task run as candidates counts once, by its winner, whatever its losers did. A task is
    # done when its work is (``ok``: it lands), complete when nothing below it is missing
    # either: a child_incomplete worker's job is partial, not completed.
    by_name = {r.name: r for r in records}
    final = {r.task_id or r.name: r.status for r in records if r.candidate is None}
    for task in candidate_tasks(job):
        winner = by_name.get(chosen.winner or "") if (chosen := job.selections.get(task)) is not None else None
        if winner is None:
            final[task] = WorkerStatus.FAILED
        else:  # chosen among the eligible: its work is done; is anything below it missing?
            final[task] = winner.status if winner.status is WorkerStatus.CHILD_INCOMPLETE else WorkerStatus.SUCCESS
    if all(status.complete for status in final.values()):
        return JobStatus.COMPLETED
    return JobStatus.PARTIAL if any(status.ok for status in final.values()) else JobStatus.FAILED
