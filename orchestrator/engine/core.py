"""The engine: jobs, their workers, and every state change.

One lock guards all records: ``tables.Tables`` (the engine's memory of the trees it runs)
owns it, taken as ``with tables.locked():``. Each running worker has a thread that owns its
attempts (``running``, ``execution``, through an ``executor.Executor``); everything else
(submitting, dispatching, finishing jobs, cancelling) happens inside the lock and is cheap.
The engine builds one ``context.EngineContext`` that every part takes, dispatches and cancels,
and is the parts' ``context.EngineHooks`` (``dispatch``, ``skip_pending``, ``stop_job``,
``start_thread``, ...); each other concern is a part of its own: ``submission`` admits and
creates jobs (its checks are ``limits``'), ``running`` runs a worker's attempts,
``settling`` ends workers, ``ending`` ends jobs (``approvals`` holds one for a person, ``results``
lands, records and publishes a root's result, ``reporting`` renders reports), ``restorer`` applies
``recovery``'s decisions after a restart, ``queries`` answers every read, and ``states`` is
the one writer of a status.

Concurrency: a job runs at most ``max_workers`` workers at once, the server at most ``workers.global_max_workers``,
and a worker starts only where the memory its kind needs is free (``admission``). A worker that has started a child
job lends its global slot to the child while it runs (it is blocked on it): a deep tree completes under a limit of 2.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path

from .. import states
from ..checkouts.checkout import Checkout
from ..checkouts.isolated import make_checkout
from ..checkouts.retiring import flush_retired
from ..clock import SYSTEM_CLOCK, Clock
from ..cluster.distribution import executor_and_runner, path_locks
from ..config import JobConfig, Settings
from ..delivery import landing, publishing
from ..errors import ConfigError, Conflict, OrchestratorError, Unavailable
from ..events import EventBus
from ..models import ApprovalDecision, EndReason, JobRecord, JobStatus, WorkerRecord, WorkerStatus
from ..process.admission import MemoryProbe
from ..process.executor import AttemptHandle, Executor
from ..process.runner import ProcessRunner, Wakeup
from ..process.shim import FoundAttempt
from ..quality.steps import Step
from ..reports.metrics import Metrics
from ..retention.pruning import delete_job, jobs_on_disk, refusal
from ..states import WorkerPhase
from ..workers import roles
from ..workers.cli_configs import CliConfigs
from ..workers.confinement import Confinement
from ..workers.environment import SPAWN_BIN, BaseEnvs, Credentials, WorkerPrompts, base_env, worker_env
from ..workspace.ids import root_of, validate_job_id, worker_key
from ..workspace.layout import Workspace
from . import garbage, limits
from .announce import Announcer
from .assembly import attach_listeners, build_parts, load_plugins, watch_resources
from .context import EngineContext
from .ending import FINISHED_TREES_IN_MEMORY
from .locked_only import locked_only
from .queries import Queries
from .recovery import Recovered
from .tables import LiveWorker, Outcome, Tables

log = logging.getLogger("orchestrator.engine")
__all__ = ["FINISHED_TREES_IN_MEMORY", "SPAWN_BIN", "Engine", "base_env"]


class Engine:
    """Submits, runs, cancels and reports jobs; the workspace holds the truth on disk. It is
    also its parts' ``context.EngineHooks`` (``dispatch``, ``skip_pending``, ``stop_job``,
    ``start_thread``, ``process_ended``, ``release_locks``, ``kill_unaccounted``, ``worker_env``, ``check_open``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        workspace: Workspace | None = None,
        runner: ProcessRunner | None = None,
        executor: Executor | None = None,
        clock: Clock | None = None,
        api_url: str | None = None,
        credentials: Credentials | None = None,
        checkout: Checkout | None = None,
        steps: Sequence[Step] | None = None,
        memory: MemoryProbe | None = None,
    ) -> None:
        self.settings = settings
        load_plugins(settings)  # plugin kinds and forges join the registry; a bad one stops the start here
        self.workspace = workspace or Workspace(settings.workspace_root)
        # The sandbox of every process that runs a worker's code (workers.sandbox): said in the log.
        # The CLIs' config files read now, before any worker runs: the model endpoints they name are
        # the ones its workers reach besides their settings' (workers/cli_configs.py).
        self.cli_configs = CliConfigs.take(settings)
        self.confinement = Confinement(settings, self.workspace, announce=True, configs=self.cli_configs)
        # Where worker attempts run (process/executor.py), and the time every timeout, backoff and
        # deadline is measured on: local processes and the system clock unless a test injects others.
        # The AI planner runs its CLI through the runner of the local executor.
        self.executor, self.runner = executor_and_runner(settings, self.workspace, runner, executor)
        self.clock: Clock = clock or SYSTEM_CLOCK
        # Prepares each worker's directory (checkouts/checkout.py), and checks its work after each attempt (quality/steps.py).
        self.checkout = checkout if checkout is not None else make_checkout(settings, self.workspace, env=self.worker_env)
        self.events = EventBus()
        self.api_url = api_url  # set by the server once it listens; workers call back here
        self.credentials = credentials  # issues scoped worker keys (api.auth), when serving
        self._base_envs = BaseEnvs(settings)  # what each job's workers start from (workers/environment.py)
        self.prompts = WorkerPrompts(settings, self.workspace, lambda: self.api_url, roles.preamble)  # what AI workers read
        self.tables = Tables(self.workspace)  # read and changed inside self.tables.locked() only
        # Workers waiting on children keep their thread, so the pool may exceed global_max_workers.
        self._pool = ThreadPoolExecutor(max_workers=4096, thread_name_prefix="worker")
        self._futures: set[Future[None]] = set()
        self._closing = False
        # Every read of jobs and workers (list, find, wait, logs, reports, snapshots): the
        # engine's memory while it holds a tree, the records on disk otherwise.
        self.queries = Queries(
            self.workspace,
            self.tables,
            quiet_after=self.settings.workers.quiet_after,
            queue_outage=self.executor.queue_outage,
        )
        self.metrics = Metrics(self.queries.job_counts, self.counts, self.workspace)  # read by GET /metrics
        self.announce = Announcer(settings, self.workspace, self.events)
        self.monitor, self.admission = watch_resources(
            settings, self.executor, memory, self.announce, lambda: self.worker_threads.watched(), self._tick
        )
        self.index, self.webhooks = attach_listeners(
            settings, self.workspace, self.announce, lambda: self.api_url, self.clock.time()
        )
        self._build_parts(steps)
        # Shared-checkout path locks per root tree (checkouts/locks.py; in Redis under rq): a worker's die with its process.
        self.locks = path_locks(self.clock, settings)
        garbage.pace()  # the process's collector paced for a tree's records, once (engine/garbage.py)
        self.monitor.start()
        self.checks_watch.start()

    def _build_parts(self, steps: Sequence[Step] | None) -> None:
        """The context every part shares, and the parts made from it (``assembly.build_parts``) under
        the engine's names for them."""
        # What every part shares; the parts ask the engine for what only it does through ``hooks`` (this engine).
        ctx = EngineContext(
            settings=self.settings,
            workspace=self.workspace,
            clock=self.clock,
            tables=self.tables,
            announce=self.announce,
            metrics=self.metrics,
            executor=self.executor,
            runner=self.runner,
            checkout=self.checkout,
            confinement=self.confinement,
            hooks=self,
            cli_configs=self.cli_configs,
        )
        self.ctx = ctx
        parts = build_parts(
            ctx,
            queries=self.queries,
            monitor=self.monitor,
            confinement=self.confinement,
            prompts=self.prompts,
            steps=steps,
            release=self.release,
            after_round=self._after_round,
            tree_ended=self._tree_ended,
            after_checks=self._after_checks,
        )
        # The engine's names for its parts (assembly.Parts says what each is).
        self.steps = parts.steps
        self.nesting, self.scheduler = parts.nesting, parts.scheduler
        self.reporting, self.results = parts.reporting, parts.results
        self.ending = parts.ending
        self.settling, self.choosing, self.approvals = self.ending.settling, self.ending.choosing, self.ending.approvals
        self.submission, self.worker_threads = parts.submission, parts.worker_threads
        self.takeover, self.continuing, self.checks_watch = parts.takeover, parts.continuing, parts.checks_watch

    # -- context.EngineHooks: what the parts ask of the engine (ctx.hooks is this engine) --------
    @locked_only
    def check_open(self) -> None:
        """Unavailable once the engine is shutting down."""
        if self._closing:
            raise Unavailable("the orchestrator is shutting down; submit again once it is back")

    @locked_only
    def dispatch(self) -> None:
        """Start pending workers, oldest job first, within the limits and
        free memory (no overtaking)."""
        t = self.tables
        limit = self.settings.workers.global_max_workers
        self.admission.begin()
        for job_id, keys in list(t.pending.items()):
            job = t.jobs[job_id]
            if t.budget_spent(job):
                self.skip_pending(job, keys, t.budget_note(job))
                del t.pending[job_id]
                continue
            ready = self.scheduler.ready(job, keys)  # a graph's tasks wait on their prerequisites
            n = limits.startable(len(ready), t.running[job_id], job.config.max_workers, t.slots_used, limit)
            starting = [t.workers[(job.root_id, key)] for key in ready[:n]]
            n = self.admission.admit(job, starting)
            for live in starting[:n]:
                self._start(live)
            if ready is keys:
                del keys[:n]
            elif n:
                started = set(ready[:n])
                keys[:] = [k for k in keys if k not in started]
            if not keys:
                del t.pending[job_id]
            if t.slots_used >= limit or self.admission.waiting:
                return

    @locked_only
    def skip_pending(self, job: JobRecord, keys: list[str], reason: str) -> None:
        """Workers that will never start end as skipped; they are
        settled on a pool thread (after our caller lets the lock go)."""
        for key in keys:
            live = self.tables.workers[(job.root_id, key)]
            live.exited(Outcome(WorkerStatus.SKIPPED, reason))
            self._futures.add(self._pool.submit(self.settling.settle, live))
        keys.clear()

    @locked_only
    def stop_job(self, job: JobRecord, reason: str) -> None:
        """The rest of the job is cancelled for ``reason`` (on_failure: stop)."""
        for live in self._cancel_locked(job, reason):
            self._futures.add(self._pool.submit(self.settling.settle, live))

    @locked_only
    def _start(self, live: LiveWorker) -> None:
        """The worker takes a slot and its thread starts."""
        states.set_phase(live, WorkerPhase.RUNNING)
        self.tables.slots_used += 1
        self.tables.running[live.job.id] += 1
        states.set_worker_status(live.record, WorkerStatus.RUNNING)
        self.metrics.dispatched(live.tag)
        self.start_thread(live)

    def start_thread(self, live: LiveWorker, adopted: Recovered | None = None) -> None:
        """The worker's thread (from the pool: idle threads are reused, as starting a thread
        per worker inside ``tables.locked()`` cost more than the worker)."""
        future = self._pool.submit(self.worker_threads.run_worker, live, adopted)
        with self.tables.locked():
            self._futures.add(future)
        future.add_done_callback(self._forget)

    # -- what the engine does beside running workers (worker_thread.WorkerThread runs them) -----
    def kill_unaccounted(self, root_id: str, adopted_tags: set[str], shims: list[FoundAttempt]) -> int:
        """SIGKILL every process of the tree that carries no adopted attempt's tag."""
        for shim in shims:
            log.warning("killing attempt pid %d (tag %s): no record of its tree names it", shim.pid, shim.tag)
        return self.executor.sweep_prefix(f"{root_id}.", keep=adopted_tags)

    @locked_only
    def process_ended(self, rec: WorkerRecord) -> None:
        """Its memory is free again."""
        self.admission.ended(rec)

    def release_locks(self, rec: WorkerRecord) -> None:
        """Its path locks go: outside the engine's lock (``EngineHooks.release_locks``). A lock granted
        after its process ended is dropped by the grant itself (``acquire``'s ``alive``)."""
        self.locks.release_worker(rec.root_id, rec.name)

    def _tick(self) -> None:
        """Each monitor interval: workers waiting for memory try again (memory frees by itself too); late trees end;
        a silent worker is told of."""
        if self.admission.waiting:
            with self.tables.locked():
                self.dispatch()
        self._enforce_deadlines()
        self.worker_threads.tell_quiet(self.settings.workers.quiet_after)

    def _enforce_deadlines(self) -> None:
        """Cancel every root tree that has run past recursion.tree_deadline."""
        deadline = self.settings.recursion.tree_deadline
        if not deadline:
            return
        with self.tables.locked():
            late = limits.late_trees(self.tables.jobs.values(), self.tables.ending, self.clock.time(), deadline)
            for job in late:
                self.metrics.refused("deadline")
                job.notes.append(limits.deadline_note(deadline))
        for job in late:
            with contextlib.suppress(Conflict):
                self.cancel(job.id)

    def _forget(self, future: Future[None]) -> None:
        self._futures.discard(future)  # atomic; shutdown copies the set before reading it

    def worker_env(self, rec: WorkerRecord, cfg: JobConfig, shared: Path | None = None) -> dict[str, str]:
        base, creds = self._base_envs.get(rec.job_id), self.credentials
        return worker_env(
            self.settings, self.workspace, rec, cfg, api_url=self.api_url, credentials=creds, base=base, shared=shared
        )

    # -- reading what only the engine's memory holds (queries.Queries answers every other read) ----
    def counts(self) -> dict[str, int]:
        with self.tables.locked():
            return self.tables.counts()

    def worker_running(self, job_id: str, worker: str) -> bool:
        """True while the worker's process runs: its credential is honoured only then."""
        with self.tables.locked():
            job = self.tables.jobs.get(job_id)
            live = self.tables.worker(job.root_id, job.depth, worker) if job else None
            return live is not None and live.record.status is WorkerStatus.RUNNING and not live.phase.process_ended

    def worker_tags(self, job_id: str | None = None) -> list[str]:
        """The tags of the workers this engine holds in memory (of one job, or all; finished
        trees leave memory): how their processes are found in /proc."""
        with self.tables.locked():
            return [live.tag for live in self.tables.workers.values() if job_id is None or live.job.id == job_id]

    def worker_tag(self, record: WorkerRecord) -> str:
        """The tag of a worker this engine holds (KeyError once its tree left memory)."""
        with self.tables.locked():
            return self.tables.workers[(record.root_id, record.key)].tag

    def release(self, root_id: str) -> None:
        """Let go of a tree at rest: it is read from its records on disk from now on (as a tree
        evicted by ``ending.Ending.evict_finished``). ``run`` does it at its end, once the engine has
        stopped, so the tree is not held twice while its status document is built from a copy."""
        with self.tables.locked():
            if any(j.root_id == root_id and not j.status.at_rest for j in self.tables.jobs.values()):
                return
            self.tables.forget_tree(root_id, self.events)
            with contextlib.suppress(ValueError):
                self.tables.finished_roots.remove(root_id)

    # -- continuing a finished worker (engine/continuing.py) --------------------------------------
    def continue_worker(self, job_id: str, worker: str, feedback: object) -> dict[str, object]:
        """POST /jobs/{id}/workers/{worker}/continue: start a continue round of a finished root job's
        worker with the user's ``feedback``; returns the round's record (it runs on). 409 while the
        tree runs or another round of it does."""
        job = self.queries.get_job(validate_job_id(job_id))
        self._ended_root(job, "continue a worker of")
        return self.continuing.start(job, worker, feedback)

    # -- deleting ---------------------------------------------------------------------
    def delete(self, job_id: str, all_branches: bool = False) -> None:
        """Remove a finished root job's folder (its child jobs live inside it), with its
        worktrees and branches (its result branch too with ``all_branches``). The rule is
        ``prune.refusal``'s, judged on the tree as this server holds it, else as on disk."""
        job = self.queries.get_job(job_id)
        self._no_round(job, "delete")
        # A tree this server does not hold is judged by its records (read outside the lock).
        on_disk = [] if self.queries.holds(job.root_id) else jobs_on_disk(self.workspace, job)
        with self.tables.locked():
            held = [j for j in self.tables.jobs.values() if j.root_id == job.root_id]
            reason = refusal(job, held or on_disk)  # a finishing job (reports rendering) is still running here
            if reason:
                raise Conflict(reason)
            self.tables.forget_tree(job.root_id, self.events)
            with contextlib.suppress(ValueError):
                self.tables.finished_roots.remove(job.root_id)
        # Outside the lock (git may take seconds on a big tree; the tree left the tables above).
        delete_job(self.workspace, job, self.checkout, all_branches)

    # -- merging a root job's result (delivery/landing.py) ----------------------------------------
    def merge(self, job_id: str, strategy: str | None = None, into: str | None = None) -> dict[str, object] | None:
        """POST /jobs/{id}/merge: merge a finished root job's workers' branches again (or for the
        first time after a crash), with the job's strategy and merge_into unless given; the same
        inputs give the same commit and move nothing. 409 while the tree runs."""
        job = landing.check_root(self.queries.get_job(job_id))
        if strategy is not None:
            landing.check_strategy(strategy)
        if into:
            into = landing.check_branch(self.settings, into, "into")
        held = self._ended_root(job, "merge")
        target = held or job
        try:
            self.results.land(target, strategy, into, strict=True)
            # The record names the new result; the remote branch and its pull request follow it.
            self.results.record_result(target, target.status, target.ended_at)
        except (OrchestratorError, OSError):
            raise
        except Exception as exc:  # git failed: said (and recorded in the job's merge), not a bare 500
            raise OrchestratorError(f"merging job {job.id} failed: {exc}") from exc
        finally:  # the merge, or its error, on disk either way
            self._save_root(target, held, "merged again")
        return target.merge.to_dict() if target.merge is not None else None

    def _ended_root(self, job: JobRecord, action: str) -> JobRecord | None:
        """The engine's own record of a root job whose whole tree has ended (None: not held, read from
        disk); Conflict while any job of the tree runs or ends."""
        with self.tables.locked():
            held = self.tables.jobs.get(job.id)
            tree = [j for j in self.tables.jobs.values() if j.root_id == job.root_id] or [job]
            if any(not j.status.terminal or j.id in self.tables.ending for j in tree):
                raise Conflict(f"job {job.id} is still running: {action} it once it has ended (GET /api/v1/jobs/{job.id}/wait)")
        self._no_round(job, action)
        return held

    def _tree_ended(self, job: JobRecord) -> bool:
        """Whether a root job's whole tree has ended (nothing of it runs or ends here)."""
        with self.tables.locked():
            tree = [j for j in self.tables.jobs.values() if j.root_id == job.root_id] or [job]
            return all(j.status.terminal and j.id not in self.tables.ending for j in tree)

    def _after_checks(self, job: JobRecord) -> None:
        """The watch of a root's pull request's checks changed its record (on disk): its signed
        record again (it holds the check rounds), then its reports."""
        jobs, workers = self.queries.snapshot(job.root_id)
        self.results.write_record(job, job.status, job.ended_at, jobs, workers)
        self.workspace.save_job(job)  # the record's new digest
        self.reporting.render_locked(job)

    def _after_round(self, job: JobRecord, merged: bool) -> None:
        """A continue round has ended: the tree's reports again and, when it changed the result, its
        signed record, then its push and pull request (git.push), before them."""
        if merged:
            self.results.record_result(job, job.status, job.ended_at)  # (its reports too)
        else:
            self.reporting.render_locked(job)

    def _no_round(self, job: JobRecord, action: str) -> None:
        """Conflict while a continue round of the tree runs (its worker's branch and the result change)."""
        if self.continuing.busy(job.root_id):
            raise Conflict(f"job {job.root_id} has a continue round running: {action} it once the round has ended")

    def _save_root(self, target: JobRecord, held: JobRecord | None, event: str) -> None:
        """A root job's record on disk after a merge or a publish, and an event: status documents
        cached before it are stale."""
        with self.tables.locked():
            snapshot = self.tables.job_snapshot(target) if held is not None and self.tables.jobs.get(target.id) is held else None
        if snapshot is not None:
            snapshot.write()
        else:
            self.workspace.save_job(target)
        self.announce.job(target, event)

    def publish(self, job_id: str) -> dict[str, object]:
        """POST /jobs/{id}/publish: push a finished root job's result branch and open or update its
        pull request again (git.push, git.pull_request): its ``publish`` record. 409 while the tree
        runs; ConfigError without git.push."""
        job = landing.check_root(self.queries.get_job(job_id))
        if not publishing.configured(self.settings):
            raise ConfigError("nothing to publish to: set git.push to a remote of the repository (e.g. origin)", key="git.push")
        held = self._ended_root(job, "publish")
        target = held or job
        found = self.results.publish(target)
        self._save_root(target, held, "published")
        return found

    def conflicts(self, job_id: str) -> dict[str, object]:
        """GET /jobs/{id}/conflicts: predicted pairwise conflicts between the job's workers'
        branches as they stand (running or ended), each with its resolution (``merge_strategy:
        resolve``; None: none), the job's last merge, and every resolution made for the job."""
        job = self.queries.get_job(job_id)
        _, workers = self.queries.snapshot(job.root_id, job.id)
        found = landing.conflicts(job, workers, settings=self.settings, workspace=self.workspace)
        merge = job.merge.to_dict() if job.merge is not None else None
        return {"job_id": job.id, "conflicts": found, "merge": merge, "resolutions": landing.resolved(job, workers)}

    # -- cancelling -----------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job and its whole subtree. Cancelling a finished job is a Conflict."""
        if self.continuing.cancel(root_of(validate_job_id(job_id))):  # its continue round stops; the job stays as it ended
            return self.queries.get_job(job_id)
        with self.tables.locked():
            job = self._cancellable(job_id)
            queued = self._queued_handles(job)
            never_started = [] if queued else self._cancel_locked(job)
        if queued:
            # Before any of its workers is told to stop: a running one's freed slot would start a
            # queued one on its node. A withheld attempt ends by its terminate alone: the job lives on.
            self.executor.withhold(queued)
            with self.tables.locked():
                never_started = self._cancel_locked(self._cancellable(job_id))
        for live in never_started:
            self.settling.settle(live)
        if job.status is JobStatus.WAITING:  # nothing runs: it ends cancelled now, nothing merged (delivery/approval.py)
            self.approvals.decide(job.id, ApprovalDecision.CANCEL)
        return self.queries.get_job(job_id)

    @locked_only
    def _cancellable(self, job_id: str) -> JobRecord:
        """The running job ``job_id``; a Conflict when it has ended or is ending."""
        job = self.tables.jobs.get(validate_job_id(job_id))
        if job is None:
            stored = self.workspace.load_job(job_id)
            raise Conflict(f"job {job_id} is already {stored.status.value}; there is nothing to cancel")
        if job.status.terminal or job.id in self.tables.ending:
            raise Conflict(f"job {job_id} is already {job.status.value}; there is nothing to cancel")
        return job

    @locked_only
    def _queued_handles(self, job: JobRecord) -> list[AttemptHandle]:
        """The attempts of the job and its subtree that wait queued for a node."""
        found = []
        for live, children in self._workers_of(job):
            handle = live.execution.handle if live.execution is not None else None
            if handle is not None and handle.queued:
                found.append(handle)
            for child in children:
                found.extend(self._queued_handles(child))
        return found

    @locked_only
    def _workers_of(self, job: JobRecord) -> Iterator[tuple[LiveWorker, list[JobRecord]]]:
        """Each worker of ``job``, with its child jobs that have not ended (a cancel's subtree)."""
        for name in job.worker_names:
            live = self.tables.workers[(job.root_id, worker_key(job.depth, name))]
            children = [self.tables.jobs.get(child_id) for child_id in live.record.child_job_ids]
            yield live, [child for child in children if child is not None and not child.status.terminal]

    @locked_only
    def _cancel_locked(self, job: JobRecord, reason: str = EndReason.CANCELLED.value) -> list[LiveWorker]:
        """Wake every worker of the job and its subtree to stop; the ones that
        never started end skipped (returned, to settle outside the lock). A ``reason`` other
        than "cancelled" (a graph's on_failure: stop) ends the job failed or partial."""
        job.error = reason
        if job.is_root and reason == EndReason.CANCELLED:  # a child job's merge resolving a conflict stops too
            self.tables.tree_stop.setdefault(job.root_id, Wakeup()).set()
        self.announce.line(job, f"job {job.id} cancel requested" if reason == EndReason.CANCELLED else f"job {job.id} {reason}")
        never_started = []
        pending = set(self.tables.pending.pop(job.id, []))
        for live, children in self._workers_of(job):
            live.cancel.set()
            if live.record.key in pending:
                why = "the job was cancelled" if reason == EndReason.CANCELLED else f"the job {reason}"
                live.exited(Outcome(WorkerStatus.SKIPPED, f"skipped: {why} before it started"))
                never_started.append(live)
            for child in children:
                never_started.extend(self._cancel_locked(child))
        return never_started

    def shutdown(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, cancel running ones (kill ladder) and wait for their threads."""
        with self.tables.locked():
            self._closing = True
            roots = [j for j in self.tables.jobs.values() if j.is_root and not j.status.at_rest]  # a waiting one stays so
        self.ctx.closing.set()
        with self.tables.locked():  # a merge's resolver in progress stops (delivery/resolving.py)
            for stop in self.tables.tree_stop.values():
                stop.set()
        for job in roots:
            with contextlib.suppress(Conflict):
                self.cancel(job.id)
        with self.tables.locked():
            futures = [f for f in list(self._futures) if not f.done()]
        wait_futures(futures, timeout=timeout)
        flush_retired()  # a folder removed, its git entry not yet hidden: a stale entry in `git worktree list`
        self.continuing.close(timeout)
        self.checks_watch.close(timeout)
        self.choosing.close(timeout)  # a selection's thread ends the job it chooses for
        self._pool.shutdown(wait=False)
        self.reporting.level_renders.close()
        self.monitor.stop()
        self.executor.close()  # the rq executor's listener (attempts on nodes run on)
        self.index.close()
        self.webhooks.close()  # pending deliveries stay in the outbox for the next start
        self.locks.close()
