"""Taking over the job trees a previous server left unfinished: ``recovery`` decides each
worker's fate; this module applies the fates to the engine's tables, in one place."""

from __future__ import annotations

import functools
import logging
from collections import Counter

from .. import states
from ..delivery.resolving import RunLedger
from ..errors import JobNotFound
from ..models import EndReason, JobRecord, WorkerRecord, WorkerStatus, resolver_cost
from ..process.shim import FoundAttempt
from ..retention import pruning
from ..states import WorkerPhase
from . import recovery
from .context import EngineContext, EnginePart
from .ending import Ending, held_marker
from .locked_only import locked_only
from .queries import Queries
from .recovery import Fate, Recovered
from .tables import LiveWorker, Outcome, new_tag, worker_of, write_unless_full
from .worker_thread import attempt_start

log = logging.getLogger("orchestrator.engine")


def recorded_outcome(rec: WorkerRecord) -> Outcome:
    """The outcome of a worker whose process ended before a restart, from its record (the
    engine applied it, and wrote the record, before waiting for the worker's child jobs)."""
    last = rec.attempts[-1] if rec.attempts else None
    if last is None:
        return Outcome(WorkerStatus.SKIPPED, rec.exit_reason or "skipped")
    status = (
        {EndReason.TIMEOUT: WorkerStatus.TIMEOUT, EndReason.CANCELLED: WorkerStatus.CANCELLED}.get(last.end_reason)
        if last.end_reason
        else None
    )
    if status is None:
        ok = last.end_reason == EndReason.EXIT and last.exit_code == 0 and not rec.error
        status = WorkerStatus.SUCCESS if ok else WorkerStatus.FAILED
    return Outcome(status, rec.exit_reason or f"exit code {last.exit_code}", error=rec.error)


class Takeover(EnginePart):
    """Applies ``recovery``'s fates, on the engine's context (``ctx``). The process side of a
    restart is the engine's (``ctx.hooks.kill_unaccounted``); an adopted worker's thread starts
    through ``ctx.hooks.start_thread``."""

    def __init__(self, ctx: EngineContext, *, queries: Queries, ending: Ending) -> None:
        self.ctx = ctx  # what every part shares (EnginePart reads it)
        self.queries = queries
        self.ending = ending  # a recovered job whose workers have all ended ends there
        self.settling = ending.settling
        self.choosing = ending.choosing

    def recover(self) -> list[str]:
        """Take over the job trees a previous server left unfinished. Returns their root ids.
        First, the admin entries of this workspace's worktrees whose folders are gone go
        (retiring.prune_stale: never a worktree of the user's, nor one whose folder is there),
        after the deletions a crash cut short are finished (pruning.finish_deletions: their
        worktrees' entries and branches go by the deletion's own rule)."""
        for root_id in pruning.finish_deletions(self.workspace, self.checkout.tree_remover()):
            log.warning("finished deleting job tree %s: the server had stopped while deleting it", root_id)
        for path in self.checkout.prune_stale():
            log.info("pruned the stale worktree entry of %s (its folder was gone)", path)
        recovered = []
        for root_id in self.workspace.root_ids():
            if self.queries.holds(root_id):
                continue  # ours, live
            try:
                root = self.workspace.load_job(root_id)
                if root.status.terminal:
                    continue  # a root ends after its whole tree: one small read skips a finished tree
                if held_marker(self.workspace, root_id).exists():
                    self.resume_sending_back(root)
                    recovered.append(root_id)
                    continue
                jobs, workers = self.workspace.load_tree(root_id)
            except (JobNotFound, OSError, ValueError) as exc:
                log.warning("cannot read job tree %s to recover it: %s", root_id, exc)
                continue
            if not jobs or all(j.status.terminal for j in jobs):
                continue
            self.restore_tree(root_id, jobs, workers)
            recovered.append(root_id)
        return recovered

    def resume_sending_back(self, job: JobRecord) -> None:
        """A root the last server held while its breakers were sent back (engine/ending.py ``hold``):
        its tree had ended but for those rounds, so nothing of it is restored; the rest are sent back
        (a round the stop cut off ends failed: engine/continuing.py), then it ends."""
        job.notes.append("recovered at server start: the server had stopped while its workers were sent back; the rest go on")
        self.workspace.save_job(job)
        self.announce.line(job, f"job {job.id} recovered: sending its workers back goes on")
        if self.ending.send_back is not None:
            self.ending.send_back(job, self.ending.end_held)

    def restore_tree(self, root_id: str, jobs: list[JobRecord], workers: list[WorkerRecord]) -> None:
        shims: dict[str, list[FoundAttempt]] = {}
        for shim in self.executor.find(f"{root_id}."):
            # A gate's or a resolver's process is no worker's attempt: a leftover, killed below (a
            # gate the stop cut off runs once more, quality/gates.py).
            shims.setdefault(worker_of(shim.tag) or f"({shim.tag})", []).append(shim)
        by_id = {j.id: j for j in jobs}
        fates = []
        for worker in workers:
            job = by_id.get(worker.job_id)
            if job is None:
                continue  # a record without its job: nothing can run it
            # Transient retries have a budget of their own: their exit files are looked for too.
            max_attempts = job.config.max_retries + self.settings.workers.transient_retries + 1
            fates.append(
                recovery.decide(
                    worker,
                    shims.pop(worker.key, []),
                    functools.partial(self.workspace.exit_file, root_id, worker.depth, worker.name),
                    max_attempts,
                    functools.partial(attempt_start, self.workspace, worker),
                )
            )
        # Whatever carries this tree's tag and is no adopted shim's (descendants of an ended
        # worker, or a shim of a worker no record knows) must not run on unaccounted for.
        adopted_tags = {f.tag for f in fates if f.fate is Fate.ADOPT and f.tag}
        leftovers = [s for found in shims.values() for s in found]
        killed = self.hooks.kill_unaccounted(root_id, adopted_tags, leftovers)
        for fate in fates:  # nothing of the tree runs yet: no lock needed
            self.take_changes(by_id[fate.record.job_id], fate)
        counts = Counter(fate.fate.value for fate in fates)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "keep") or "nothing to resume"
        to_run: list[tuple[LiveWorker, Recovered]] = []
        to_settle: list[LiveWorker] = []
        tables = self.tables
        with self.tables.locked():
            # The budget counts what the tree spent before the restart: its workers', planners', judges'
            # and conflict resolvers' cost (reported or estimated).
            tables.tree_cost[root_id] = (
                sum(w.cost_usd or 0.0 for w in workers)
                + sum((j.planner_cost_usd or 0.0) + (j.judge_cost_usd or 0.0) for j in jobs)
                + self.resolvers_spent(root_id, jobs, workers)
            )
            for job in jobs:
                tables.jobs[job.id] = job
                if not job.status.terminal:
                    tables.running[job.id] = 0
                    tables.unfinished[job.id] = 0
            for fate in fates:
                live = self.restore_worker(by_id[fate.record.job_id], fate, to_run, to_settle)
                tables.workers[(root_id, fate.record.key)] = live
            for job in jobs:  # a task's selection not made before the restart is still to do (engine/choosing.py)
                if not job.status.terminal:
                    tables.unfinished[job.id] += len(self.choosing.open_tasks(job))
            for job in jobs:
                if not job.status.at_rest:  # a job waiting for approval ran nothing: it just waits on
                    note = (
                        f"recovered at server start: the server had stopped while this job ran; workers: {summary}; "
                        f"{killed} unaccounted process(es) of its tree killed"
                    )
                    job.notes.append(note)
                    if (full := write_unless_full([tables.job_snapshot(job)])) is not None:  # taken over all the same
                        log.warning("job %s: its recovery note not written: %s", job.id, full)
                    self.announce.line(job, f"job {job.id} recovered: {summary}")
            self.hooks.dispatch()
        for live, fate in to_run:
            self.hooks.start_thread(live, fate)
        for live in to_settle:
            self.settling.settle(live)
        with self.tables.locked():
            for job in jobs:
                if not job.status.terminal:
                    self.choosing.resume(job)
        # Jobs whose workers had all ended before the crash, but not the job itself.
        for job in sorted(jobs, key=lambda j: -j.depth):
            with self.tables.locked():
                ready = not job.status.terminal and tables.unfinished.get(job.id) == 0
            if ready:
                self.ending.end_job(job)

    def resolvers_spent(self, root_id: str, jobs: list[JobRecord], workers: list[WorkerRecord]) -> float:
        """What the tree's conflict resolvers cost: every run its ledger holds, also those of a merge
        a restart cut short (delivery/resolving.py); a tree from before the ledger, by its records."""
        spent = RunLedger(self.workspace, root_id).cost()
        return spent if spent is not None else resolver_cost(jobs, workers) or 0.0

    def take_changes(self, job: JobRecord, fate: Recovered) -> None:
        """A worker whose process ended while no server ran (lost, or it had only its child
        jobs left to wait for and its record lacks what it changed): what it left goes in
        its record (a worktree commits it on its branch first, see ``Checkout.recovered``)."""
        rec = fate.record
        if not (fate.fate is Fate.LOST or (fate.fate is Fate.WAITING and rec.branch is None)):
            return  # adopted ones are finished by engine/worker_thread.py, like any worker; kept ones are done
        try:
            changes = self.checkout.recovered(rec, job, lost=fate.fate is Fate.LOST)
        except Exception:  # a restart must go on: the worker is settled, with no changes told
            log.exception("could not tell what recovered worker %s left", rec.key)
            return
        changes.apply_to(rec)

    @locked_only
    def restore_worker(
        self, job: JobRecord, fate: Recovered, to_run: list[tuple[LiveWorker, Recovered]], to_settle: list[LiveWorker]
    ) -> LiveWorker:
        """The live state of one recovered worker, by its fate."""
        rec = fate.record
        tag = fate.tag or new_tag(job.root_id, rec.key)
        if fate.fate is Fate.KEEP:
            return LiveWorker(record=rec, job=job, tag=tag, phase=WorkerPhase.SETTLED)
        live = LiveWorker(record=rec, job=job, tag=tag)
        tables = self.tables
        tables.unfinished[job.id] += 1
        if fate.fate is Fate.START:
            states.set_worker_status(rec, WorkerStatus.PENDING)  # never started: it says so already
            tables.pending.setdefault(job.id, []).append(rec.key)
        elif fate.fate is Fate.ADOPT:
            states.set_worker_status(rec, WorkerStatus.RUNNING)
            states.set_phase(live, WorkerPhase.RUNNING)
            tables.slots_used += 1
            tables.running[job.id] += 1
            to_run.append((live, fate))
        elif fate.fate is Fate.WAITING:
            live.exited(recorded_outcome(rec))
            if not tables.live_children(live):
                to_settle.append(live)
        else:  # LOST
            if rec.status is WorkerStatus.PENDING:  # it began (its exit file says so) before any record said so
                states.set_worker_status(rec, WorkerStatus.RUNNING)
            attempt = fate.attempt
            if attempt is not None and attempt.ended_at is None:
                attempt.ended_at, attempt.end_reason = self.clock.time(), EndReason.LOST
            live.exited(Outcome(WorkerStatus.FAILED, recovery.LOST_REASON, error=recovery.LOST_REASON))
            rec.exit_reason, rec.error = recovery.LOST_REASON, recovery.LOST_REASON
            to_settle.append(live)
        return live
