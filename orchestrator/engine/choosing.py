"""A task's candidates settle into one winner.

When the last of a task's candidates has settled (or, under ``select: first_passing``, as soon as
one has passed its gates: the others are cancelled), the selection runs on a thread of its own,
never inside ``tables.locked()``: it may run a scoring command in each candidate's worktree and ask
an AI judge (selection package). Its record goes in ``JobRecord.selections[task]`` and each
candidate's ``selected`` and ``score``; the winner's work is then delivered like any task's: a graph
job merges it into its integration branch at once (the next candidate in the ranking when it
conflicts there), else landing merges it with the job's (gates.merge_block leaves the others out:
their branches stay for review until the job is deleted).

A task's selection is a unit of its job's work (``Tables.unfinished`` counts it from submission),
so the job ends only after its selections, and a restarted server makes the ones left undone.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Isolation, Select
from ..delivery.integration import integrate_worker
from ..errors import OrchestratorError
from ..git import diffs
from ..git.repository import GitFailed, run_git
from ..models import JobRecord, WorkerStatus
from ..outcomes import IntegrationRecord, Measure, SelectionRecord
from ..quality import gates
from ..selection import Candidate, Selection, candidates, choose, scoring
from ..selection.judge import Confined
from ..workers.confinement import Confinement
from ..workers.environment import add_caches, base_env
from ..workspace.ids import worker_key
from ..workspace.stages import StageLedger, StageState, rerun_note
from .context import EngineContext, EnginePart
from .locked_only import locked_only
from .resolvers import driver_factory
from .scheduling import Scheduler
from .tables import LiveWorker, Snapshot, write_snapshots

log = logging.getLogger("orchestrator.choosing")
Chooser = Callable[..., Selection]  # selection.choose's signature: a test may hand in its own


class Choosing(EnginePart):
    """Starts, runs and records the selection of each task with candidates."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        scheduler: Scheduler | None,
        queries: diffs.Reader,
        end_job: Callable[[JobRecord], None],
        chooser: Chooser | None = None,
    ) -> None:
        self.ctx = ctx
        self.confinement = Confinement(ctx.settings, ctx.workspace, configs=ctx.cli_configs)
        self.scheduler = scheduler
        self.queries = queries
        self.end_job = end_job  # Ending's: the job ends once its last selection is made
        self.chooser: Chooser = chooser or choose
        self._running: set[tuple[str, str]] = set()  # (job id, task id) being chosen
        self._threads: set[threading.Thread] = set()
        self._closing = threading.Event()  # set by close(): a judge or scoring run in progress stops early

    # -- when ---------------------------------------------------------------------------------
    @locked_only
    def settled(self, live: LiveWorker) -> None:
        """Once candidate ``live`` has its final status: start its task's
        selection when the task is ready for one."""
        job, rec = live.job, live.record
        if rec.task_id is None or rec.task_id in job.selections or (job.id, rec.task_id) in self._running:
            return
        group = self.group(job, rec.task_id)
        first = job.config.select == Select.FIRST_PASSING and rec.status.ok
        if first or all(g.record.status.terminal for g in group):
            self._start(job, rec.task_id)
        if first:
            self._cancel_rest(job, group, live)

    @locked_only
    def group(self, job: JobRecord, task_id: str) -> list[LiveWorker]:
        """The task's candidates, in number order."""
        names = candidates.candidate_tasks(job).get(task_id, [])
        return [self.tables.workers[(job.root_id, worker_key(job.depth, n))] for n in names]

    def open_tasks(self, job: JobRecord) -> list[str]:
        """The job's tasks with candidates whose selection is not made yet."""
        return [t for t in candidates.candidate_tasks(job) if t not in job.selections]

    @locked_only
    def resume(self, job: JobRecord) -> None:
        """For a job a restarted server took over: its records follow the
        selections on record, and each task whose candidates all ended before the restart
        (or, first_passing, one passed) is chosen now."""
        for task_id, selection in job.selections.items():
            for live in self.group(job, task_id):
                live.record.selected = live.record.name == selection.winner
        for task_id in self.open_tasks(job):
            if (job.id, task_id) in self._running:
                continue
            group = self.group(job, task_id)
            passed = [g for g in group if g.record.status.ok]
            if all(g.record.status.terminal for g in group) or (job.config.select == Select.FIRST_PASSING and passed):
                self._start(job, task_id)
                if job.config.select == Select.FIRST_PASSING and passed:
                    self._cancel_rest(job, group, passed[0])

    def _start(self, job: JobRecord, task_id: str) -> None:
        self._running.add((job.id, task_id))
        thread = threading.Thread(target=self._run, args=(job, task_id), name=f"choose-{job.id}-{task_id}", daemon=True)
        self._threads.add(thread)
        thread.start()

    def close(self, timeout: float) -> None:
        """At shutdown: selections in progress stop early (the chooser's cancel) and are waited for,
        so none writes a record after the engine is gone."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        with self.tables.locked():
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @locked_only
    def _cancel_rest(self, job: JobRecord, group: list[LiveWorker], winner: LiveWorker) -> None:
        """First_passing: the task's other candidates are stopped: running ones
        get the kill ladder, pending ones end skipped."""
        why = f"{winner.record.name} passed first (select: first_passing)"
        pending = self.tables.pending.get(job.id, [])
        waiting = [g.record.key for g in group if g is not winner and g.record.key in pending]
        for key in waiting:
            pending.remove(key)
        if waiting:
            self.hooks.skip_pending(job, waiting, f"skipped: {why}")
        for live in group:
            if live is not winner and not live.record.status.terminal and live.record.key not in waiting:
                live.cancel.set()
                self.announce.worker(live, f"cancelled: {why}")

    # -- how ----------------------------------------------------------------------------------
    def _run(self, job: JobRecord, task_id: str) -> None:
        integrated: dict[str, IntegrationRecord | None] = {}
        try:
            selection, integrated = self._select(job, task_id)
        except Exception as exc:  # the job must still end: no winner, and why
            log.exception("selection of task %s of job %s failed", task_id, job.id)
            selection = SelectionRecord(None, f"the selection failed: {exc}", chose=False)
        try:
            self._record(job, task_id, selection, integrated)
        except Exception:
            log.exception("recording the selection of task %s of job %s failed", task_id, job.id)
        finally:
            self._finish(job, task_id)
            with self.tables.locked():
                self._threads.discard(threading.current_thread())

    def _select(self, job: JobRecord, task_id: str) -> tuple[SelectionRecord, dict[str, IntegrationRecord | None]]:
        """The task's selection and, a graph job's, each candidate tried for its integration
        branch with what its merge there recorded (an IntegrationRecord, or None)."""
        with self.tables.locked():
            records = [g.record.copy() for g in self.group(job, task_id)]
            cancelled = job.cancel_requested
        task = records[0].task if records else ""
        names = [r.name for r in records]
        if cancelled:
            why = "the job was cancelled before a winner was chosen"
            return SelectionRecord(None, why, task_id=task_id, select=job.config.select, candidates=names, chose=False), {}
        shown = [self._candidate(job, r) for r in records]
        scratch = self.workspace.planning_dir()
        env = base_env(self.settings)
        add_caches(env, self.settings, self.workspace, job.root_id)  # scoring commands write the tree's caches
        try:
            chosen = self.chooser(
                task,
                shown,
                job.config.select,
                settings=self.settings,
                judge=dict(job.config.judge),
                runner=self.runner,
                env=env,
                work_dir=scratch,
                cancel=self._closing,
                once=self._scored_once(job, task_id, records),
                confined=self._judge_confined(job),
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        result = chosen.record(task_id, job.config.select, names)
        integrated = self._integrate(job, records, result) if job.integration is not None and result.winner else {}
        result.at = self.clock.time()
        return result, integrated

    def _scored_once(self, job: JobRecord, task_id: str, records: list[Any]) -> scoring.Once:
        """How each candidate's scoring command runs once across a server's restarts
        (workspace/stages.py), on the commit it would be merged at: measures it reached before a
        stop are taken as they were; a run the stop cut off runs once more, and the job's notes
        and its tree's log say so. A run a shutdown stopped reached no verdict."""
        ledger = StageLedger(self.workspace, job.root_id)
        commits = {r.name: gates.merge_commit(r) for r in records}

        def once(candidate: Candidate, run: Callable[[], dict[str, Measure]]) -> dict[str, Measure]:
            key = f"scoring {job.id} task {task_id} {candidate.name} {commits.get(candidate.name) or 'folder'}"
            stage = ledger.begin(key)
            if stage.state is StageState.DONE and stage.verdict is not None:
                self.ctx.restart_note(job, f"scoring of {candidate.name}: its measures from before the server's restart are kept")
                return dict(stage.verdict)
            if stage.rerun:
                self.ctx.restart_note(job, rerun_note(f"scoring of {candidate.name}"))
            values = run()
            if not self._closing.is_set():
                ledger.reached(key, values)
            return values

        return once

    def _judge_confined(self, job: JobRecord) -> Confined:
        """Where the judge of ``job``'s candidates runs: what it reads is workers' work, so each call
        runs in the tree's worker sandbox with the workers' caps, in its own empty folder, or is not made."""
        kind = job.config.judge.get("kind")
        return Confined(
            lambda folder, env: self.confinement.helper(job.root_id, kind, folder, job.config, env),
            self.confinement.limits(),
            self.confinement.for_job(job.config).note,
        )

    def _candidate(self, job: JobRecord, record: Any) -> Candidate:
        """What the selection sees of one candidate: its record and, in a worktree, its diff."""
        diff, truncated, added, removed = "", False, 0, 0
        if job.config.isolation == Isolation.WORKTREE and record.status.ok and record.commit:
            try:
                found = diffs.worker_diff(
                    self.queries,
                    self.settings,
                    self.workspace,
                    job.id,
                    (record.depth, record.name),
                    self.settings.candidates.judge_diff_bytes,
                )
                diff, truncated = found["diff"], found["truncated"]
                added, removed = line_counts(diffs.repository(self.settings, self.workspace), found["from"], found["to"])
            except (OrchestratorError, GitFailed, OSError) as exc:
                diff = f"(its diff could not be read: {exc})"
        folder = self.workspace.worker_dir(record.root_id, record.depth, record.name)
        return Candidate(
            name=record.name,
            kind=record.kind,
            model=record.model,
            status=record.status.value,
            eligible=record.status.ok,
            gates=list(record.gates),
            cost_usd=record.cost_usd,
            duration=record.duration,
            ended_at=record.ended_at,
            diff=diff,
            diff_truncated=truncated,
            diffstat=record.diffstat,
            files_changed=len(record.files_changed) if record.files_changed else len(record.files_created),
            lines_added=added,
            lines_removed=removed,
            output=record.output,
            cwd=folder if folder.is_dir() else None,
            # Only an eligible one is scored in its sandbox; another's worktree may be its retry's
            # now (first_passing chooses while the rest still run), which a spec would show again.
            sandbox=self.confinement.spec(record, folder, job.config) if record.status.ok else None,
            tree_tag=f"{job.root_id}.",  # a scoring command a restart finds is its tree's, and killed
        )

    def _integrate(self, job: JobRecord, records: list[Any], result: SelectionRecord) -> dict[str, IntegrationRecord | None]:
        """A graph job: the winner merged into the integration branch now; when it conflicts
        there, the next eligible candidate of the ranking instead (said in the reason). Each
        candidate tried, with what its merge recorded."""
        by_name = {r.name: r for r in records}
        order = [row.worker for row in result.ranking if row.eligible]
        order = [str(result.winner), *[n for n in order if n != result.winner]]
        notes: list[str] = []
        tried: dict[str, IntegrationRecord | None] = {}
        for name in order:
            record = by_name.get(name)
            if record is None or not record.status.ok:
                continue
            merged, failure = integrate_worker(
                self.settings,
                self.workspace,
                job,
                record,
                record.branch,
                gates.merge_commit(record),
                drivers=driver_factory(self.ctx),
            )
            tried[name] = merged
            if failure is None:
                if name != result.winner:
                    result.reason += f"; {'; '.join(notes)}, so {name} (next in the ranking) was merged"
                    result.winner = name
                return tried
            notes.append(f"{name} could not be merged: {failure}")
        result.reason += "; " + "; ".join(notes) if notes else ""
        result.winner = None
        return tried

    def _record(
        self, job: JobRecord, task_id: str, result: SelectionRecord, integrated: dict[str, IntegrationRecord | None]
    ) -> None:
        """The selection on the job's and the candidates' records (on disk before anyone is
        told), the judge's cost toward the tree, what the winner unblocks."""
        writes: list[Snapshot] = []
        with self.tables.locked():
            job.selections[task_id] = result
            rows = {row.worker: row for row in result.ranking}
            group = self.group(job, task_id)
            winner = None
            for live in group:
                rec = live.record
                rec.selected = rec.name == result.winner
                rec.score = rows.get(rec.name)
                if (merged := integrated.get(rec.name)) is not None:
                    rec.integrated = merged
                if rec.selected:
                    winner = live
            self.ctx.add_cost(job.root_id, result.cost_usd)
            if winner is not None and self.scheduler is not None:
                winner.record.unblocked = self.scheduler.unblocked_by(winner, winner.record.status)
            writes.append(self.tables.job_snapshot(job))
            writes.extend(self.tables.worker_snapshot(live) for live in group)
        write_snapshots(writes)
        with self.tables.locked():
            what = f"selected {result.winner}" if result.winner else "no winner"
            self.announce.line(job, f"job {job.id} task {task_id} ({job.config.select}): {what}: {result.reason}")
            for live in self.group(job, task_id):  # every candidate's record changed: each is told (streams, the index)
                if live is not winner:
                    self.announce.worker(live, f"not selected for task {task_id} ({job.config.select})")
            if winner is not None:
                extra = f"; unblocked {', '.join(winner.record.unblocked)}" if winner.record.unblocked else ""
                self.announce.worker(winner, f"selected for task {task_id} ({job.config.select}){extra}")
            elif self.scheduler is not None:
                self.scheduler.failed_task(
                    job,
                    task_id,
                    WorkerStatus.FAILED.value,
                    f"dependency {task_id} has no winner: {result.reason}"[:400],
                )
            self.announce.job(job, f"task {task_id}: {what}")

    def _finish(self, job: JobRecord, task_id: str) -> None:
        with self.tables.locked():
            self._running.discard((job.id, task_id))
            self.tables.unfinished[job.id] -= 1
            done = self.tables.unfinished[job.id] == 0
            self.hooks.dispatch()
        if done:
            self.end_job(job)


def line_counts(repo: Path, old: str, new: str) -> tuple[int, int]:
    """Lines added and removed between two commits (``git diff --numstat``; binary files count 0)."""
    found = run_git(repo, "diff", "--no-ext-diff", "--no-textconv", "--numstat", "--no-renames", old, new, "--", check=False)
    added = removed = 0
    for line in found.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            added += int(parts[0])
            removed += int(parts[1])
    return added, removed
