"""A task graph schedules itself (issue 13 item 2): which pending workers may start, what a
worker's end unblocks, and what its failure does to the tasks that wait on it.

A task starts once every prerequisite has succeeded, which for a worktree job means its work
passed its gates and was merged into the job's integration branch (integration.py: the last
after-attempt step; a merge that fails fails the worker). A failed prerequisite, by the job's
``on_failure``:

=========  ==================================================================================
skip       every task that waits on it, directly or not, ends ``skipped``: "dependency api
           failed: step gates failed: gate tests failed: exit code 1"
continue   they run anyway, once their prerequisites have ended whatever their status
stop       the rest of the job is cancelled (running workers stopped, pending ones skipped) and
           the job ends failed or partial, not cancelled: GNU parallel's ``--halt now,fail=1``
=========  ==================================================================================

Everything here runs under the engine's lock and is cheap: a job's task ids are mapped to its
workers' keys once.
"""

from __future__ import annotations

from collections.abc import Callable

from . import graph
from .models import JobRecord, WorkerRecord, WorkerStatus, delivered
from .tables import LiveWorker, Tables
from .workspace import worker_key

REASON_CHARS = 300  # of a failed prerequisite's exit reason, in its dependents' reasons


class Scheduler:
    """Readiness and failure handling for jobs whose tasks have dependencies. ``skip`` ends
    pending workers skipped with a reason; ``stop`` cancels the rest of a job with a reason."""

    def __init__(
        self,
        tables: Tables,
        skip: Callable[[JobRecord, list[str], str], None],
        stop: Callable[[JobRecord, str], None],
    ) -> None:
        self.tables = tables
        self.skip = skip
        self.stop = stop
        self._keys: dict[str, dict[str, str]] = {}  # job id -> task id -> worker key
        self._graphs: dict[str, bool] = {}  # job id -> has_graph

    def keys(self, job: JobRecord) -> dict[str, str]:
        found = self._keys.get(job.id)
        if found is None:
            found = {n.id: worker_key(job.depth, name) for n, name in zip(job.nodes, job.worker_names)}
            self._keys[job.id] = found
        return found

    def forget(self, job_id: str) -> None:
        self._keys.pop(job_id, None)
        self._graphs.pop(job_id, None)

    def has_graph(self, job: JobRecord) -> bool:
        """Whether any of the job's tasks waits on another (asked once per job)."""
        found = self._graphs.get(job.id)
        if found is None:
            found = self._graphs[job.id] = bool(job.nodes) and graph.has_dependencies(job.nodes)
        return found

    def _record(self, job: JobRecord, task_id: str) -> WorkerRecord | None:
        key = self.keys(job).get(task_id)
        live = self.tables.workers.get((job.root_id, key)) if key else None
        return live.record if live is not None else None

    def _met(self, job: JobRecord, task_id: str) -> bool:
        record = self._record(job, task_id)
        if record is None:
            return True
        if job.config.on_failure == "continue":
            return record.status.terminal
        return delivered(job, record)

    def waits_on(self, job: JobRecord, record: WorkerRecord) -> list[str]:
        """The prerequisites ``record`` still waits on (task ids, plan order)."""
        return [d for d in record.depends_on if not self._met(job, d)]

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

    def unblocked_by(self, live: LiveWorker, status: WorkerStatus) -> list[str]:
        """Under the lock, as ``live`` settles with ``status``: the task ids that may start now
        because of it (every other prerequisite of theirs already met)."""
        job, rec = live.job, live.record
        if rec.task_id is None or not self.has_graph(job):
            return []
        if not (delivered(job, rec, status) or (job.config.on_failure == "continue" and status.terminal)):
            return []
        found = []
        for node in job.nodes:
            if rec.task_id in node.depends_on and all(d == rec.task_id or self._met(job, d) for d in node.depends_on):
                dependent = self._record(job, node.id)
                if dependent is not None and dependent.status is WorkerStatus.PENDING:
                    found.append(node.id)
        return found

    def settled(self, live: LiveWorker) -> None:
        """Under the lock, once ``live``'s final status is set: a failed prerequisite skips its
        dependents or stops the job, as ``on_failure`` says."""
        job, rec = live.job, live.record
        if delivered(job, rec) or rec.task_id is None or not self.has_graph(job):
            return
        waiting = graph.dependents(job.nodes, rec.task_id)
        if not waiting:
            return
        if rec.status.ok:  # it succeeded, yet its work is not in the integration branch (it never ran its steps)
            why = f"dependency {rec.task_id} succeeded but its work was never merged into {job.integration}"
        else:
            why = f"dependency {rec.task_id} {rec.status.value}: {(rec.exit_reason or rec.error or '')[:REASON_CHARS]}"
        policy = job.config.on_failure
        if policy == "continue":
            return
        if policy == "stop":
            if job.error is None:
                self.stop(job, f"stopped: task {rec.task_id} {rec.status.value} (on_failure: stop)")
            return
        pending = self.tables.pending.get(job.id)
        if not pending:
            return
        keys = self.keys(job)
        skipped = [keys[t] for t in waiting if keys.get(t) in pending]
        if skipped:
            for key in skipped:
                pending.remove(key)
            if not pending:
                del self.tables.pending[job.id]
            self.skip(job, skipped, f"skipped: {why}")
