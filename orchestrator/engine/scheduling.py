"""A task graph schedules itself: which pending workers may start, what a
worker's end unblocks, and what its failure does to the tasks that wait on it.

A task starts once every prerequisite has succeeded, which for a worktree job means its work
passed its gates and was merged into the job's integration branch (delivery/integration.py: the last
after-attempt step; a merge that fails fails the worker). A failed prerequisite, by the job's
``on_failure``:

=========  ==================================================================================
skip       every task that waits on it, directly or not, ends ``skipped``: "dependency api
           failed: step gates failed: gate tests failed: exit code 1"
continue   they run anyway, once their prerequisites have ended whatever their status
stop       the rest of the job is cancelled (running workers stopped, pending ones skipped) and
           the job ends failed or partial, not cancelled: GNU parallel's ``--halt now,fail=1``
=========  ==================================================================================

Everything here runs inside ``tables.locked()`` (each method is ``locked_only``) and is cheap: a job's task ids are mapped to its
workers' keys once.
"""

from __future__ import annotations

from ..config import OnFailure
from ..models import JobRecord, WorkerRecord, WorkerStatus, delivered
from ..planner import graph
from ..workspace.ids import worker_key
from .context import EngineContext, EnginePart
from .locked_only import locked_only
from .tables import LiveWorker

REASON_CHARS = 300  # of a failed prerequisite's exit reason, in its dependents' reasons


class Scheduler(EnginePart):
    """Readiness and failure handling for jobs whose tasks have dependencies. A failed
    prerequisite's dependents end through the engine's hooks: ``skip_pending`` (skipped with a
    reason) or ``stop_job`` (the rest of the job cancelled)."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx  # what every part shares (EnginePart reads it)
        # job id -> task id -> its workers' keys (one, or a task's candidates)
        self._keys: dict[str, dict[str, list[str]]] = {}
        self._graphs: dict[str, bool] = {}  # job id -> has_graph

    @locked_only
    def keys(self, job: JobRecord) -> dict[str, list[str]]:
        found = self._keys.get(job.id)
        if found is None:
            found = {}
            for node, name in zip(job.nodes, job.worker_names):
                found.setdefault(node.id, []).append(worker_key(job.depth, name))
            self._keys[job.id] = found
        return found

    @locked_only
    def forget(self, job_id: str) -> None:
        self._keys.pop(job_id, None)
        self._graphs.pop(job_id, None)

    @locked_only
    def has_graph(self, job: JobRecord) -> bool:
        """Whether any of the job's tasks waits on another (asked once per job)."""
        found = self._graphs.get(job.id)
        if found is None:
            found = self._graphs[job.id] = bool(job.nodes) and graph.has_dependencies(job.nodes)
        return found

    @locked_only
    def _records(self, job: JobRecord, task_id: str) -> list[WorkerRecord]:
        found = []
        for key in self.keys(job).get(task_id, ()):
            live = self.tables.workers.get((job.root_id, key))
            if live is not None:
                found.append(live.record)
        return found

    @locked_only
    def _met(self, job: JobRecord, task_id: str) -> bool:
        records = self._records(job, task_id)
        if not records:
            return True
        if job.config.on_failure == OnFailure.CONTINUE:  # ended, and a task with candidates has chosen (or found none)
            chosen = records[0].candidate is None or task_id in job.selections
            return chosen and all(r.status.terminal for r in records)
        return any(delivered(job, r) for r in records)

    @locked_only
    def waits_on(self, job: JobRecord, record: WorkerRecord) -> list[str]:
        """The prerequisites ``record`` still waits on (task ids, plan order)."""
        return [d for d in record.depends_on if not self._met(job, d)]

    @locked_only
    def ready(self, job: JobRecord, keys: list[str]) -> list[str]:
        """Those of ``keys`` (pending workers of ``job``) whose prerequisites are all met."""
        if not self.has_graph(job):
            return keys
        found = []
        for key in keys:
            live = self.tables.workers[(job.root_id, key)]
            if all(self._met(job, d) for d in live.record.depends_on):
                found.append(key)
        return found

    @locked_only
    def unblocked_by(self, live: LiveWorker, status: WorkerStatus) -> list[str]:
        """As ``live`` settles with ``status`` (or, for a task's candidate, once its
        task has chosen: engine/choosing.py): the task ids that may start now because of it (every other
        prerequisite of theirs already met)."""
        job, rec = live.job, live.record
        if rec.task_id is None or not self.has_graph(job):
            return []
        if rec.candidate is not None and rec.task_id not in job.selections:
            return []  # a candidate's end unblocks nothing before its task's selection
        continuing = job.config.on_failure == OnFailure.CONTINUE and status.terminal
        if rec.candidate is not None:  # its task has chosen: has every candidate ended?
            continuing = continuing and self._met(job, rec.task_id)
        if not (delivered(job, rec, status) or continuing):
            return []
        found = []
        for node in graph.unique_nodes(job.nodes):
            if rec.task_id in node.depends_on and all(d == rec.task_id or self._met(job, d) for d in node.depends_on):
                if any(d.status is WorkerStatus.PENDING for d in self._records(job, node.id)):
                    found.append(node.id)
        return found

    @locked_only
    def settled(self, live: LiveWorker) -> None:
        """Once ``live``'s final status is set: a failed prerequisite skips its
        dependents or stops the job, as ``on_failure`` says. A candidate's task fails only when
        its selection finds no winner (``failed_task``, from engine/choosing.py)."""
        job, rec = live.job, live.record
        if delivered(job, rec) or rec.task_id is None or rec.candidate is not None or not self.has_graph(job):
            return
        if rec.status.ok:  # it succeeded, yet its work is not in the integration branch (it never ran its steps)
            why = f"dependency {rec.task_id} succeeded but its work was never merged into {job.integration}"
        else:
            why = f"dependency {rec.task_id} {rec.status.value}: {(rec.exit_reason or rec.error or '')[:REASON_CHARS]}"
        self.failed_task(job, rec.task_id, rec.status.value, why)

    @locked_only
    def failed_task(self, job: JobRecord, task_id: str, status: str, why: str) -> None:
        """Task ``task_id`` will never deliver; its dependents as ``on_failure`` says."""
        if not self.has_graph(job):
            return
        waiting = graph.dependents(job.nodes, task_id)
        if not waiting:
            return
        policy = job.config.on_failure
        if policy == OnFailure.CONTINUE:
            return
        if policy == OnFailure.STOP:
            if job.error is None:
                self.hooks.stop_job(job, f"stopped: task {task_id} {status} (on_failure: stop)")
            return
        pending = self.tables.pending.get(job.id)
        if not pending:
            return
        keys = self.keys(job)
        skipped = [key for t in waiting for key in keys.get(t, ()) if key in pending]
        if skipped:
            for key in skipped:
                pending.remove(key)
            if not pending:
                del self.tables.pending[job.id]
            self.hooks.skip_pending(job, skipped, f"skipped: {why}")
