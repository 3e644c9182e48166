"""The engine: jobs, their workers, and every state change.

One lock guards all records. Each running worker has a thread that owns its
process (see ``execution``); everything else (submitting, dispatching,
finishing jobs, cancelling) happens under the lock and is cheap.

Concurrency: a job runs at most ``max_workers`` workers at once, and the
server at most ``workers.global_max_workers``. A worker that has started a
child job lends its global slot to the child while the child runs (it is
blocked on it), so a deep tree completes even under a global limit of 2.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import failpoints, logs, protocol, recovery, reports
from .adapters import get_adapter, resolve_kind
from .checkout import Checkout, finish_checkout, make_checkout
from .config import JobConfig, Settings, job_config
from .errors import Conflict, JobNotFound, RecursionLimit, Unavailable, ValidationError, WorkerNotFound
from .events import EventBus
from .execution import Outcome, WorkerExecution, attempt_marker, marker_start_time
from .metrics import Metrics
from .models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from .monitor import Caps, ResourceMonitor, Watched
from .pacing import Pacer
from .planner import heuristic as planning
from .planner.ai import AIPlan, choose_planner, heuristic_plan, plan_with_ai
from .prompts import check_template, prompt_template_path, render_worker_prompt
from .prune import jobs_on_disk, refusal
from .queries import Queries
from .recovery import Fate, Recovered
from .runner import FoundShim, ProcessHandle, ProcessRunner, Wakeup, find_shims, python_executable
from .steps import Step
from .workspace import Workspace, child_job_id, new_root_id, validate_job_id, validate_worker_name, worker_key

log = logging.getLogger("orchestrator.engine")
# Finished trees kept in memory (their records, events and locks): enough for clients that
# read a tree right after it ends; older ones come from disk, the same way after a restart.
FINISHED_TREES_IN_MEMORY = 32
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
SPAWN_BIN = str(Path(__file__).resolve().parent / "bin")  # holds orchestrator-spawn


def base_env(settings: Settings) -> dict[str, str]:
    """The environment an AI CLI (a worker, or the AI planner) starts from: the server's whole
    environment (workers.inherit_env) or only the variables in workers.env_passthrough, then
    workers.env; never the server's own ORCHESTRATOR_* variables; PATH always set (the
    server's, unless workers.env sets one)."""
    w = settings.workers
    source = os.environ
    env = dict(source) if w.inherit_env else {name: source[name] for name in w.env_passthrough if name in source}
    for name in [n for n in env if n.startswith(protocol.PREFIX)]:
        del env[name]  # never leak a parent's identity or settings into a worker
    env.update(w.env)
    env.setdefault("PATH", source.get("PATH", os.defpath))
    return env


def _key(root_id: str, depth: int, name: str) -> tuple[str, str]:
    """The key of a worker in ``Engine._live``: its root and its ``depth_<d>_<name>`` key."""
    return root_id, worker_key(depth, name)


def _recorded_outcome(rec: WorkerRecord) -> Outcome:
    """The outcome of a worker whose process ended before a restart, from its record (the
    engine applied it, and wrote the record, before waiting for the worker's child jobs)."""
    last = rec.attempts[-1] if rec.attempts else None
    if last is None:
        return Outcome(WorkerStatus.SKIPPED, rec.exit_reason or "skipped")
    status = {"timeout": WorkerStatus.TIMEOUT, "cancelled": WorkerStatus.CANCELLED}.get(last.end_reason or "")
    if status is None:
        ok = last.end_reason == "exit" and last.exit_code == 0 and not rec.error
        status = WorkerStatus.SUCCESS if ok else WorkerStatus.FAILED
    return Outcome(status, rec.exit_reason or f"exit code {last.exit_code}", error=rec.error)


@dataclass
class _Versions:
    """A record's writes, made outside the engine lock: each snapshot is numbered under the
    lock, and a write never replaces a newer version another thread already put on disk."""

    taken: int = 0  # the newest snapshot's number
    written: int = 0  # the number on disk
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class _Snapshot:
    """One record's state, numbered under the engine lock, written by ``write`` outside it."""

    versions: _Versions
    number: int
    save: Callable[[], None]

    def write(self) -> None:
        """Durably (temp + fsync + rename + folder fsync), unless a newer one is on disk."""
        with self.versions.lock:
            if self.number > self.versions.written:
                self.save()
                self.versions.written = self.number


def _numbered(versions: _Versions, save: Callable[[], None]) -> _Snapshot:
    versions.taken += 1
    return _Snapshot(versions, versions.taken, save)


@dataclass
class _Live:
    """Runtime state of a worker beside its record."""

    record: WorkerRecord
    job: JobRecord
    tag: str
    cancel: Wakeup = field(default_factory=Wakeup)
    holds_slot: bool = False
    process_done: bool = False
    outcome: Outcome | None = None
    execution: WorkerExecution | None = None  # while its attempts run
    finishing: bool = False  # its terminal record is being written
    versions: _Versions = field(default_factory=_Versions)  # of its record on disk


class Engine:
    """Submits, runs, cancels and reports jobs; the workspace holds the truth on disk."""

    def __init__(
        self,
        settings: Settings,
        *,
        workspace: Workspace | None = None,
        runner: ProcessRunner | None = None,
        api_url: str | None = None,
        credentials: Any = None,
        checkout: Checkout | None = None,
        steps: Sequence[Step] = (),
    ) -> None:
        self.settings = settings
        self.workspace = workspace or Workspace(settings.workspace_root)
        self.checkout = checkout if checkout is not None else make_checkout(settings, self.workspace)  # prepares each worker's directory
        self.steps = tuple(steps)  # after-attempt steps (steps.py), in order
        self.runner = runner or ProcessRunner()
        if self.runner.perl is None:
            log.warning("no perl on this machine: workers run under the /bin/sh shim, which records a worker "
                        "killed by signal N as exit code 128+N (install perl to tell them apart)")
        self.events = EventBus()
        self.api_url = api_url  # set by the server once it listens; workers call back here
        self.credentials = credentials  # issues scoped worker keys (api.auth), when serving
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        self._live: dict[tuple[str, str], _Live] = {}  # (root id, worker key) -> live worker
        self._pending: dict[str, list[str]] = {}  # job id -> worker keys not started yet
        self._running: dict[str, int] = {}  # job id -> workers with a live process
        self._unfinished: dict[str, int] = {}  # job id -> workers not yet terminal
        self._tree_cost: dict[str, float] = {}  # root id -> AI cost reported so far (budget)
        self._slots_used = 0
        self._finishing: dict[str, tuple[JobStatus, float]] = {}
        self._render_locks: dict[str, threading.Lock] = {}
        self._level_renders: Pacer[tuple[str, int]] = Pacer()  # (root id, depth) -> a child job's level report, paced
        self._finished_roots: deque[str] = deque()  # newest last; older ones are read from disk
        # Workers waiting on children keep their thread, so the pool may exceed global_max_workers.
        self._pool = ThreadPoolExecutor(max_workers=4096, thread_name_prefix="worker")
        self._futures: set[Future[None]] = set()
        self._closing = False
        # Every read of jobs and workers (list, find, wait, logs, reports, snapshots): the
        # engine's memory while it holds a tree, the records on disk otherwise.
        self.queries = Queries(self.workspace, self._cond, self._jobs, self._live, self._finishing)
        self.metrics = Metrics(self.queries.job_counts, self.counts, self.workspace)  # read by GET /metrics
        w = settings.workers
        self.monitor = ResourceMonitor(self.runner, Caps(w.max_memory_mb, w.max_processes, w.max_log_mb, w.max_disk_mb),
                                       w.monitor_interval, self._watched, tick=self._enforce_deadlines)
        self.monitor.start()
        self._prompt_template = prompt_template_path(settings)
        if self._prompt_template is not None:
            check_template(self._prompt_template)  # a broken template fails here, not in every worker
        # Job records are snapshotted under the lock and written (temp + fsync + rename) outside
        # it: an fsync can take tens of ms on a busy disk, and every request (a child job's
        # refusal, a credential check) waits for this lock. Versions keep writes in order.
        self._job_versions: dict[str, _Versions] = {}

    # -- submitting -----------------------------------------------------------
    def submit(
        self,
        request: object,
        config: object = None,
        tasks: object = None,
        *,
        parent_job_id: str | None = None,
        parent_worker: str | None = None,
    ) -> JobRecord:
        """Validate, plan and start a job. A child job names the worker that asks for it."""
        request = self._check_request(request)
        task_list = self._check_tasks(tasks)
        if config is not None and not isinstance(config, dict):
            raise ValidationError("config must be a JSON object, e.g. {\"max_workers\": 3}")
        with self._lock:
            self._check_open()
            parent = self._parent_for(parent_job_id, parent_worker) if parent_job_id else None
            parent_cfg = JobConfig.from_dict(parent[0].config) if parent else None
            cfg, notes = job_config(self.settings, config, parent_cfg)
            kind, why = resolve_kind(cfg.worker, self.settings)
            if cfg.worker == "auto" and parent is None:
                notes.append(why)  # say plainly when no AI CLI was found and the simulated worker runs
            cfg = JobConfig.from_dict({**cfg.to_dict(), "worker": kind})
            if parent:
                self._check_recursion(parent[0], parent[1], cfg)
            depth = parent[0].depth + 1 if parent else self._admitted_depth(config)
        # Planning may ask an AI CLI and take minutes: never under the lock.
        planned = self._plan(request, task_list, cfg)
        plan, planner_name = planned.tasks, planned.planner
        if planned.note:
            notes.append(planned.note)
        with self._lock:
            self._check_open()
            if parent and parent_job_id:  # the world may have moved while planning: check again
                parent = self._parent_for(parent_job_id, parent_worker)
                self._check_recursion(parent[0], parent[1], cfg)
                plan, planned.goal = self._fit_tree_budget(parent[0].root_id, request, plan, planner_name, notes, planned.goal)
            elif len(plan) > self.settings.recursion.max_workers_per_root:
                cap = self.settings.recursion.max_workers_per_root
                raise ValidationError(f"{len(plan)} tasks exceed recursion.max_workers_per_root={cap}; give at most {cap}")
            job, writes = self._create_job(request, cfg, plan, planner_name, notes, parent, planned, depth)
            self._event_line(job, f"job {job.id} submitted at depth {job.depth}: {why}; planner {planner_name}, {len(plan)} subtask(s)")
        # On disk (fsynced) before any of its workers starts and before the caller hears of it.
        try:
            self._write_snapshots(writes)
        except Exception:
            with self._lock:  # never started: its workers end skipped, and the caller hears why
                self._skip_pending(job, self._pending.pop(job.id, []), "skipped: the job's record could not be written")
            raise
        with self._lock:
            self._dispatch()
        return job

    def _job_snapshot(self, job: JobRecord) -> _Snapshot:
        """Under the lock: a job record's current state (``job`` may be a copy about to be
        applied), numbered, to write outside it."""
        data = job.to_dict()
        versions = self._job_versions.setdefault(job.id, _Versions())
        return _numbered(versions, functools.partial(self.workspace.save_job_dict, job.id, data))

    def _snapshot_record(self, live: _Live, record: WorkerRecord | None = None) -> _Snapshot:
        """Under the lock: a worker record's current state (or ``record``, a copy about to be
        applied), numbered, to write outside it."""
        rec = record or live.record
        data = rec.to_dict()
        return _numbered(live.versions, functools.partial(self.workspace.save_worker_dict, rec.root_id, rec.depth, rec.name, data))

    @staticmethod
    def _write_snapshots(writes: list[_Snapshot]) -> None:
        """Outside the lock, in order (an fsync'd write costs ~1 ms, tens on a busy disk)."""
        for snapshot in writes:
            snapshot.write()

    def _check_open(self) -> None:
        if self._closing:
            raise Unavailable("the orchestrator is shutting down; submit again once it is back")

    def _check_request(self, request: object) -> str:
        if not isinstance(request, str):
            raise ValidationError("request must be a string describing the work, e.g. \"Build a REST API with auth and tests\"")
        text = request.strip()
        if not text:
            raise ValidationError("request is empty: describe the work to do, e.g. \"Build a REST API with auth and tests\"")
        limit = self.settings.orchestrator.max_request_chars
        if len(text) > limit:
            raise ValidationError(f"request is {len(text)} characters; the limit is {limit} (orchestrator.max_request_chars). Shorten it or split it into jobs.")
        return text

    def _check_tasks(self, tasks: object) -> list[str] | None:
        if tasks is None:
            return None
        limit = self.settings.orchestrator.max_tasks
        if not isinstance(tasks, list) or not tasks:
            raise ValidationError("tasks must be a non-empty list of strings (one subtask each), or left out to let the planner split the request")
        if len(tasks) > limit:
            raise ValidationError(f"{len(tasks)} tasks given; at most {limit} are accepted (orchestrator.max_tasks)")
        cleaned = []
        for i, task in enumerate(tasks):
            if not isinstance(task, str) or not task.strip():
                raise ValidationError(f"tasks[{i}] must be a non-empty string")
            if len(task) > self.settings.orchestrator.max_request_chars:
                raise ValidationError(f"tasks[{i}] is longer than orchestrator.max_request_chars")
            cleaned.append(" ".join(task.split()))
        return cleaned

    def _plan(self, request: str, tasks: list[str] | None, cfg: JobConfig) -> AIPlan:
        """The subtasks, the planner's name, a note and the AI call's cost: explicit tasks win;
        else the heuristic or the AI planner, which falls back to the heuristic one (with a
        note saying why) whenever it fails."""
        if tasks:
            return AIPlan(tasks, "explicit")
        if choose_planner(cfg.planner, cfg.worker) == "heuristic":
            return heuristic_plan(request, cfg.max_workers)
        scratch = self.workspace.planning_dir()
        try:
            return plan_with_ai(request, cfg.max_workers, settings=self.settings, adapter=get_adapter(cfg.worker),
                                runner=self.runner, work_dir=scratch, timeout=self.settings.orchestrator.planner_timeout,
                                env=base_env(self.settings))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _parent_for(self, job_id: str, worker_name: str | None) -> tuple[JobRecord, _Live]:
        validate_job_id(job_id)
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"parent job {job_id} is not running on this server")
        name = validate_worker_name(worker_name)
        live = self._live.get(_key(job.root_id, job.depth, name))
        if live is None or live.job.id != job.id:
            raise WorkerNotFound(f"worker {name} is not a worker of job {job_id}")
        return job, live

    @staticmethod
    def _admitted_depth(config: dict[str, Any] | None) -> int:
        """A job submitted with the admin key is a root, at depth 0, unless its body says it is
        deeper: the seed's AI-to-AI protocol POSTs with the admin key and ``current_depth + 1``,
        and job_config refuses a current_depth past the limit, so that loop ends. The body can
        only raise the depth (a worker credential's job is its parent's depth + 1, whatever it says)."""
        return int((config or {}).get("current_depth") or 0)

    def _check_recursion(self, parent_job: JobRecord, parent: _Live, cfg: JobConfig) -> None:
        pcfg = JobConfig.from_dict(parent_job.config)
        where = f"worker {parent.record.name} of job {parent_job.id}"
        if parent_job.status.terminal or parent_job.id in self._finishing or parent.cancel.is_set():
            raise Conflict(f"{where} is no longer running (job {parent_job.status.value}); no child job was started")
        if parent.record.status.terminal or parent.process_done:
            raise Conflict(f"{where} has already finished; no child job was started")
        if not pcfg.enable_recursion:
            raise RecursionLimit(f"recursion is disabled for job {parent_job.id} (enable_recursion=false); do the subtask directly")
        depth = parent_job.depth + 1
        if depth > pcfg.max_recursion_depth:
            raise RecursionLimit(
                f"Max recursion depth reached: {where} is at depth {parent_job.depth} and this tree's "
                f"max_recursion_depth is {pcfg.max_recursion_depth}. Do the subtask directly, or submit the "
                "root job with a higher max_recursion_depth.",
                depth=depth, max_depth=pcfg.max_recursion_depth,
            )
        if self._budget_spent(parent_job):
            raise RecursionLimit(f"{self._budget_note(parent_job).replace('skipped: ', 'no child job: ')}. Do the rest directly.")
        if len(parent.record.child_job_ids) >= pcfg.max_children_per_worker:
            raise RecursionLimit(
                f"Max children per worker reached: {where} already started {len(parent.record.child_job_ids)} "
                f"child job(s) (max_children_per_worker={pcfg.max_children_per_worker}). Do the rest directly.",
            )

    def _fit_tree_budget(self, root_id: str, request: str, plan: list[str], planner_name: str, notes: list[str],
                         goal: str | None) -> tuple[list[str], str | None]:
        cap = self.settings.recursion.max_workers_per_root
        used = sum(len(j.worker_names) for j in self._jobs.values() if j.root_id == root_id)
        room = cap - used
        if room <= 0:
            raise RecursionLimit(
                f"Max workers per root tree reached: tree {root_id} already has {used} workers "
                f"(recursion.max_workers_per_root={cap}). Do the subtask directly."
            )
        if len(plan) > room:
            if planner_name == "explicit":
                raise RecursionLimit(f"{len(plan)} tasks asked for, but tree {root_id} has room for {room} more worker(s) (recursion.max_workers_per_root={cap})")
            merged = planning.split_request(request, room)  # merges parts, never drops one
            plan, goal = merged.tasks, merged.goal
            notes.append(f"plan merged into {room} subtask(s): the tree is near recursion.max_workers_per_root={cap}")
        return plan, goal

    def _create_job(
        self, request: str, cfg: JobConfig, plan: list[str], planner_name: str, notes: list[str],
        parent: tuple[JobRecord, _Live] | None, planned: AIPlan | None = None, depth: int = 0,
    ) -> tuple[JobRecord, list[_Snapshot]]:
        """Under the lock: the job in memory, and the record snapshots to write (outside it)."""
        now = time.time()
        if parent is None:
            self.workspace.check_writable()
            root_id = new_root_id()
            while self.workspace.job_dir(root_id).exists():
                root_id = new_root_id()
            self.workspace.create_job_tree(root_id)
            job = JobRecord(id=root_id, root_id=root_id, request=request, depth=depth, created_at=now)
        else:
            pjob, plive = parent
            root = self._jobs[pjob.root_id]
            root.child_seq += 1
            job = JobRecord(
                id=child_job_id(root.id, root.child_seq), root_id=root.id, request=request, depth=pjob.depth + 1,
                parent_job_id=pjob.id, parent_worker=plive.record.name, created_at=now,
            )
        job.config = cfg.to_dict()
        job.tasks = plan
        job.goal = planned.goal if planned is not None else None
        job.planner = planner_name
        if planned is not None:  # the AI planner's call: the tree's cost, and its budget, count it
            job.planner_cost_usd, job.planner_tokens_in, job.planner_tokens_out = planned.cost_usd, planned.tokens_in, planned.tokens_out
        job.notes = notes
        job.status = JobStatus.RUNNING
        job.started_at = now
        writes: list[_Snapshot] = []
        try:
            self._create_workers(job, parent)
            if parent is not None:
                # The root's child counter first: a crash after it leaves a gap, never a reused id.
                writes.append(self._job_snapshot(self._jobs[job.root_id]))
                writes.append(self._job_snapshot(job))
                writes.append(self._attach_child(parent[1], job))
            else:
                writes.append(self._job_snapshot(job))
        except Exception:
            if parent is None:
                self.workspace.remove_job_tree(job.root_id)
            raise
        self._jobs[job.id] = job
        self._running[job.id] = 0
        self._unfinished[job.id] = len(job.worker_names)
        self._add_cost(job.root_id, job.planner_cost_usd)
        self._publish_job(job, f"planned {len(plan)} subtask(s)")
        return job, writes

    def _create_workers(self, job: JobRecord, parent: tuple[JobRecord, _Live] | None) -> None:
        if parent is None:
            prefix, first = "worker", 1
        else:
            plive = parent[1]
            prefix = plive.record.name
            first = 1 + sum(len(self._jobs[c].worker_names) for c in plive.record.child_job_ids if c in self._jobs)
        names = [f"{prefix}_{first + offset}" for offset in range(len(job.tasks))]
        job.worker_names.extend(names)
        keys = []
        # No file per pending worker: its record follows from the job record (see
        # Workspace.pending_worker) and is first written when the worker starts.
        for index in range(1, len(names) + 1):
            record = self.workspace.pending_worker(job, index)
            tag = f"{job.root_id}.{record.key}.{secrets.token_hex(4)}"
            self._live[(job.root_id, record.key)] = _Live(record=record, job=job, tag=tag)
            keys.append(record.key)
        self._pending[job.id] = keys

    def _attach_child(self, plive: _Live, child: JobRecord) -> _Snapshot:
        """The parent worker lends its global slot to the child while the child runs. Returns
        the parent's record snapshot, for the caller to write outside the lock."""
        plive.record.child_job_ids.append(child.id)
        self.workspace.mark_recursive(plive.record.root_id, plive.record.depth, plive.record.name)
        if plive.holds_slot:
            plive.holds_slot = False
            self._slots_used -= 1
        self._publish_worker(plive, f"started child job {child.id}")
        return self._snapshot_record(plive)

    # -- dispatching ----------------------------------------------------------
    def _dispatch(self) -> None:
        """Start pending workers, oldest job first, within the per-job and global limits."""
        limit = self.settings.workers.global_max_workers
        for job_id, keys in list(self._pending.items()):
            job = self._jobs[job_id]
            if self._budget_spent(job):
                self._skip_pending(job, keys, self._budget_note(job))
                del self._pending[job_id]
                continue
            cap = job.config["max_workers"]
            while keys and self._slots_used < limit and self._running[job_id] < cap:
                live = self._live[(job.root_id, keys.pop(0))]
                self._start(live)
            if not keys:
                del self._pending[job_id]
            if self._slots_used >= limit:
                return

    def _budget_spent(self, job: JobRecord) -> bool:
        budget = float(job.config.get("max_cost_usd") or 0)
        return budget > 0 and self._tree_cost.get(job.root_id, 0.0) >= budget

    def _budget_note(self, job: JobRecord) -> str:
        return (f"skipped: the tree's AI cost ${self._tree_cost.get(job.root_id, 0.0):.4f} reached its budget "
                f"max_cost_usd=${float(job.config['max_cost_usd']):.4f}")

    def _skip_pending(self, job: JobRecord, keys: list[str], reason: str) -> None:
        """Workers that will never start end as skipped; settled on a pool thread (not under our caller's lock)."""
        for key in keys:
            live = self._live[(job.root_id, key)]
            live.outcome = Outcome(WorkerStatus.SKIPPED, reason)
            live.process_done = True
            self._futures.add(self._pool.submit(self._finish_worker, live))
        keys.clear()

    def _start(self, live: _Live) -> None:
        live.holds_slot = True
        self._slots_used += 1
        self._running[live.job.id] += 1
        live.record.status = WorkerStatus.RUNNING
        self.metrics.dispatched(live.tag)
        # Idle threads are reused: starting a thread per worker under the lock cost more than the worker.
        future = self._pool.submit(self._run_worker, live)
        self._futures.add(future)
        future.add_done_callback(self._forget)

    def recover(self) -> list[str]:
        """Take over the job trees a previous server left unfinished (it was killed, or the
        machine stopped), as ``recovery`` decides: live workers are re-adopted through their
        shims, ones that ended meanwhile get their true status from their exit files, lost ones
        fail with a reason, never-started ones start; the jobs then go on or end. Processes of
        a tree that no record or shim accounts for are killed. Returns the recovered root ids."""
        recovered = []
        for root_id in self.workspace.root_ids():
            if self.queries.holds(root_id):
                continue  # ours, live
            try:
                if self.workspace.load_job(root_id).status.terminal:
                    continue  # a root ends after its whole tree: one small read skips a finished tree
                jobs, workers = self.workspace.load_tree(root_id)
            except (JobNotFound, OSError, ValueError) as exc:
                log.warning("cannot read job tree %s to recover it: %s", root_id, exc)
                continue
            if not jobs or all(j.status.terminal for j in jobs):
                continue
            self._restore_tree(root_id, jobs, workers)
            recovered.append(root_id)
        return recovered

    def _restore_tree(self, root_id: str, jobs: list[JobRecord], workers: list[WorkerRecord]) -> None:
        shims: dict[str, list[FoundShim]] = {}
        for shim in find_shims(f"{root_id}."):
            shims.setdefault(shim.tag.split(".")[1], []).append(shim)
        by_id = {j.id: j for j in jobs}
        fates = []
        for worker in workers:
            job = by_id.get(worker.job_id)
            if job is None:
                continue  # a record without its job: nothing can run it
            # Transient retries have a budget of their own: their exit files are looked for too.
            max_attempts = int(job.config.get("max_retries", 0)) + self.settings.workers.transient_retries + 1
            fates.append(recovery.decide(
                worker, shims.pop(worker.key, []),
                functools.partial(self.workspace.exit_file, root_id, worker.depth, worker.name), max_attempts,
                functools.partial(self._attempt_start, worker)))
        # Whatever carries this tree's tag and is no adopted shim's (descendants of an ended
        # worker, or a shim of a worker no record knows) must not run on unaccounted for.
        adopted_tags = {f.tag for f in fates if f.fate is Fate.ADOPT and f.tag}
        leftovers = [s for found in shims.values() for s in found]
        killed = self._kill_unaccounted(root_id, adopted_tags, leftovers)
        counts = Counter(fate.fate.value for fate in fates)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "keep") or "nothing to resume"
        to_run: list[tuple[_Live, Recovered]] = []
        to_finish: list[_Live] = []
        with self._lock:
            # The budget counts what the tree spent before the restart: its workers' and planners' reported cost.
            self._tree_cost[root_id] = (sum(w.cost_usd or 0.0 for w in workers)
                                        + sum(j.planner_cost_usd or 0.0 for j in jobs))
            for job in jobs:
                self._jobs[job.id] = job
                if not job.status.terminal:
                    self._running[job.id] = 0
                    self._unfinished[job.id] = 0
            for fate in fates:
                live = self._restore_worker(by_id[fate.record.job_id], fate, to_run, to_finish)
                self._live[_key(root_id, fate.record.depth, fate.record.name)] = live
            for job in jobs:
                if not job.status.terminal:
                    note = (f"recovered at server start: the server had stopped while this job ran; workers: {summary}; "
                            f"{killed} unaccounted process(es) of its tree killed")
                    job.notes.append(note)
                    self._write_snapshots([self._job_snapshot(job)])
                    self._event_line(job, f"job {job.id} recovered: {summary}")
            self._dispatch()
        for live, fate in to_run:
            future = self._pool.submit(self._run_worker, live, fate)
            with self._lock:
                self._futures.add(future)
            future.add_done_callback(self._forget)
        for live in to_finish:
            self._finish_worker(live)
        # Jobs whose workers had all ended before the crash, but not the job itself.
        for job in sorted(jobs, key=lambda j: -j.depth):
            with self._lock:
                ready = not job.status.terminal and self._unfinished.get(job.id) == 0
            if ready:
                self._complete_job(job)

    def _restore_worker(self, job: JobRecord, fate: Recovered, to_run: list[tuple[_Live, Recovered]],
                        to_finish: list[_Live]) -> _Live:
        """Under the lock: the live state of one recovered worker, by its fate."""
        rec = fate.record
        tag = fate.tag or f"{job.root_id}.{rec.key}.{secrets.token_hex(4)}"
        live = _Live(record=rec, job=job, tag=tag)
        if fate.fate is Fate.KEEP:
            return live
        self._unfinished[job.id] += 1
        if fate.fate is Fate.START:
            rec.status = WorkerStatus.PENDING
            self._pending.setdefault(job.id, []).append(rec.key)
        elif fate.fate is Fate.ADOPT:
            rec.status = WorkerStatus.RUNNING
            live.holds_slot = True
            self._slots_used += 1
            self._running[job.id] += 1
            to_run.append((live, fate))
        elif fate.fate is Fate.WAITING:
            live.process_done = True
            live.outcome = _recorded_outcome(rec)
            if not self._live_children(live):
                to_finish.append(live)
        else:  # LOST
            attempt = fate.attempt
            if attempt is not None and attempt.ended_at is None:
                attempt.ended_at, attempt.end_reason = time.time(), "lost"
            live.process_done = True
            live.outcome = Outcome(WorkerStatus.FAILED, recovery.LOST_REASON, error=recovery.LOST_REASON)
            rec.exit_reason, rec.error = live.outcome.exit_reason, live.outcome.error
            to_finish.append(live)
        return live

    def _kill_unaccounted(self, root_id: str, adopted_tags: set[str], shims: list[FoundShim]) -> int:
        """SIGKILL every process of the tree that carries no adopted shim's tag."""
        for shim in shims:
            log.warning("killing shim pid %d (tag %s): no record of its tree names it", shim.pid, shim.tag)
        return self.runner.sweep_prefix(f"{root_id}.", keep=adopted_tags)

    def _enforce_deadlines(self) -> None:
        """Cancel every root tree that has run past recursion.tree_deadline."""
        deadline = self.settings.recursion.tree_deadline
        if not deadline:
            return
        now = time.time()
        with self._lock:
            late = [j for j in self._jobs.values() if j.is_root and not j.status.terminal and j.error != "cancelled"
                    and j.id not in self._finishing and now - j.created_at > deadline]
            for job in late:
                self.metrics.refused("deadline")
                job.notes.append(f"cancelled: the tree ran past its deadline of {deadline:g}s (recursion.tree_deadline)")
        for job in late:
            try:
                self.cancel(job.id)
            except Conflict:
                pass

    def _watched(self) -> list[Watched]:
        """Running workers for the resource monitor."""
        with self._lock:
            found = []
            for live in self._live.values():
                execution = live.execution
                handle = execution.handle if execution else None
                if execution is None or handle is None or handle.exited:
                    continue
                rec = live.record
                found.append(Watched(
                    key=rec.key, tag=live.tag, started_at=handle.started_at,
                    log_path=self.workspace.worker_log(rec.root_id, rec.depth, rec.name),
                    worker_dir=self.workspace.worker_dir(rec.root_id, rec.depth, rec.name), abort=execution.abort,
                    shim_pid=handle.pid if handle.exit_file is not None else None))
            return found

    def _forget(self, future: Future[None]) -> None:
        self._futures.discard(future)  # atomic; shutdown copies the set before reading it

    def _run_worker(self, live: _Live, adopted: Recovered | None = None) -> None:
        sweep: Callable[[], None] = functools.partial(self.runner.sweep, live.tag)  # (if _execute fails)
        try:
            outcome, sweep = self._execute(live, adopted)
        except Exception as exc:  # a bug must not leave a worker "running" forever
            log.exception("worker %s crashed in the engine", live.record.key, extra=logs.context(live.record.job_id, live.record.name))
            outcome = Outcome(WorkerStatus.FAILED, "engine error", error=f"internal error: {exc}")
        live.cancel.close()
        rec = live.record
        # Its process has ended: the slot goes to the next worker (and its cost to the tree's
        # budget) before the tag sweep, which waits to share one /proc scan with other
        # finishing workers. A worker with child jobs does this after the sweep, in one step
        # with settling it (a child job ending in between may settle it).
        early = not rec.child_job_ids
        if early:
            with self._lock:
                self._process_ended(live, outcome)
                self._dispatch()
        sweep()  # before its files are listed and before it is reported ended
        changes = finish_checkout(self.checkout, rec, succeeded=outcome.status is WorkerStatus.SUCCESS)
        with self._lock:
            rec.files_created = changes.files_created
            if not early:
                self._process_ended(live, outcome)
            waiting = self._live_children(live)
            if waiting:
                self._publish_worker(live, f"process exited; waiting for child job(s) {', '.join(waiting)}")
                snapshot = self._snapshot_record(live)
            else:  # settled in this same lock section (each one is a hand-off between 16 threads)
                settled = self._settle_worker(live)
            if not early:
                self._dispatch()
        if waiting:
            snapshot.write()
        elif settled is not None:
            self._worker_settled(live, *settled)  # writes the record once, with its final status

    def _process_ended(self, live: _Live, outcome: Outcome) -> None:
        """Under the lock: its process has ended with ``outcome``; it no longer counts against
        the limits, and its cost counts against the tree's budget."""
        live.outcome = outcome
        live.process_done = True
        self._running[live.job.id] -= 1
        if live.holds_slot:
            live.holds_slot = False
            self._slots_used -= 1
        self._apply_outcome(live, outcome)

    def _execute(self, live: _Live, adopted: Recovered | None = None) -> tuple[Outcome, Callable[[], None]]:
        """Run the worker's attempts; returns the outcome and the sweep of its last attempt's leftovers."""
        rec, job = live.record, live.job
        cfg = JobConfig.from_dict(job.config)
        adapter = get_adapter(rec.kind)
        prompt = self._prompt(rec, job) if adapter.needs_prompt(self.settings) else rec.task
        directory = self.checkout.prepare(rec, job)
        if adapter.needs_prompt_file(self.settings):
            # The prompt is an input, not state: a plain write, no fsync.
            self.workspace.prompt_path(rec.root_id, rec.depth, rec.name).write_text(prompt, encoding="utf-8")
        execution = WorkerExecution(
            record=rec, config=cfg, settings=self.settings, adapter=adapter, runner=self.runner,
            workspace=self.workspace, env=self._worker_env(live, cfg), prompt=prompt, tag=live.tag,
            lock=self._lock, on_change=self._on_attempt, cancel=live.cancel,
            checkout=self.checkout, worker_dir=directory, steps=self.steps,
        )
        live.execution = execution
        resume = None
        if adopted is not None and adopted.attempt is not None:
            resume = (adopted.attempt, self._adopt(live, adopted))
        try:
            return execution.run(resume), execution.sweep
        finally:
            live.execution = None

    def _adopt(self, live: _Live, fate: Recovered) -> ProcessHandle:
        """A handle on the shim of a worker a previous server started; its record says so on disk."""
        attempt, rec = fate.attempt, live.record
        assert attempt is not None and (fate.pid is not None or fate.exit_file is not None)
        handle = self.runner.adopt(fate.pid or 0, fate.start_id, tag=live.tag, started_at=attempt.started_at,
                                   exit_file=fate.exit_file)
        state = "still running" if handle.code is None else f"ended while no server ran (status {handle.code})"
        self._on_attempt(rec, f"attempt {attempt.number} re-adopted after a server restart (pid {handle.pid}): {state}")
        return handle

    def _attempt_start(self, rec: WorkerRecord, number: int) -> tuple[int, float] | None:
        """(log offset, start time) of attempt ``number`` from its start line in the worker log."""
        found = self.workspace.find_line_in_log(self.workspace.worker_log(rec.root_id, rec.depth, rec.name),
                                                attempt_marker(number))
        started = marker_start_time(found[1]) if found is not None else None
        return None if found is None or started is None else (found[0], started)

    def _on_attempt(self, record: WorkerRecord, message: str, begin: Callable[[], None] | None = None,
                    write: bool = True) -> Callable[[], None]:
        """An attempt started (or was re-adopted): ``begin`` (if any) puts it in the record
        under the lock, and everyone is told. With ``write`` the record is on disk first;
        without, the caller gets the write to make later (see ``WorkerExecution._attempt``).
        Telling "running" before it is on disk is safe, unlike a final status: a restart finds
        the attempt through its shim and says "running" (or its true end) again. Returns the
        write (a no-op on disk once made)."""
        with self._lock:
            if begin is not None:
                begin()
            live = self._live[(record.root_id, record.key)]
            snapshot = self._snapshot_record(live)
        self.metrics.spawned(live.tag)

        def save() -> None:
            snapshot.write()
            failpoints.hit("after_record")

        if write:
            save()
        self._publish_worker(live, message)  # the event bus and the log append need no engine lock
        return save

    def _prompt(self, rec: WorkerRecord, job: JobRecord) -> str:
        """What an AI worker reads: its subtask, its context, and how (and whether) to recurse."""
        cfg = JobConfig.from_dict(job.config)
        return render_worker_prompt(
            task=rec.task, goal=job.goal, request=job.request, siblings=job.tasks, index=rec.index,
            depth=rec.depth, max_recursion_depth=cfg.max_recursion_depth,
            recursion_enabled=cfg.enable_recursion and self.api_url is not None,  # spawn needs the API
            worker_dir=str(self.workspace.worker_dir(rec.root_id, rec.depth, rec.name)),
            job_id=rec.job_id, worker_id=rec.name,
            children_left=max(0, cfg.max_children_per_worker - len(rec.child_job_ids)),
            timeout=cfg.default_timeout, template=self._prompt_template, kind_no_spawn=get_adapter(rec.kind).no_spawn_reason,
        )

    def _worker_env(self, live: _Live, cfg: JobConfig) -> dict[str, str]:
        """The worker protocol: who it is, where it is, and how to start a child job, on top of
        the environment the server's owner chose (``base_env``)."""
        rec = live.record
        env = base_env(self.settings)
        # orchestrator-spawn first, then the interpreter's folder (``python -m orchestrator spawn``).
        bin_dir = os.path.dirname(python_executable())
        env["PATH"] = os.pathsep.join((SPAWN_BIN, bin_dir, env["PATH"]))
        env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update({
            protocol.JOB_ID: rec.job_id,
            protocol.ROOT_JOB_ID: rec.root_id,
            protocol.WORKER_ID: rec.name,
            protocol.DEPTH: str(rec.depth),
            protocol.MAX_DEPTH: str(cfg.max_recursion_depth),
            protocol.ENABLE_RECURSION: "1" if cfg.enable_recursion else "0",
            protocol.WORKER_DIR: str(self.workspace.worker_dir(rec.root_id, rec.depth, rec.name)),
            protocol.PYTHON: python_executable(),
        })
        # Its own temp folder (outside its directory, so files_created stays the worker's work).
        tmp = str(self.workspace.worker_tmp(rec.root_id, rec.depth, rec.name))
        env.update({"TMPDIR": tmp, "TMP": tmp, "TEMP": tmp})
        if self.api_url and cfg.enable_recursion:
            env[protocol.API_URL] = self.api_url
            if self.credentials is not None:
                env[protocol.API_KEY] = self.credentials.issue(rec.root_id, rec.job_id, rec.name)
        return env

    # -- finishing --------------------------------------------------------------
    def _apply_outcome(self, live: _Live, outcome: Outcome) -> None:
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
            self._add_cost(rec.root_id, parsed.cost_usd)

    def _add_cost(self, root_id: str, usd: float | None) -> None:
        """Under the lock: AI cost reported by a worker or the AI planner, toward the tree's budget."""
        if usd:
            self._tree_cost[root_id] = self._tree_cost.get(root_id, 0.0) + usd
            self.metrics.add_cost(usd)

    def _live_children(self, live: _Live) -> list[str]:
        return [c for c in live.record.child_job_ids if c in self._jobs and not self._jobs[c].status.terminal]

    def _finish_worker(self, live: _Live) -> None:
        """The process is done and so are its child jobs: settle the worker's status."""
        with self._lock:
            settled = self._settle_worker(live)
        if settled is not None:
            self._worker_settled(live, *settled)

    def _settle_worker(self, live: _Live) -> tuple[WorkerRecord, _Snapshot] | None:
        """Under the lock: the worker's final record and its snapshot to write, or None when
        it is already settled (or being settled)."""
        rec = live.record
        if rec.status.terminal or live.finishing:
            return None
        live.finishing = True
        outcome = live.outcome or Outcome(WorkerStatus.FAILED, "lost")
        if not rec.attempts:  # never ran (skipped): its reason was never applied
            rec.exit_reason, rec.error = outcome.exit_reason, outcome.error
        status = outcome.status
        if status is WorkerStatus.SUCCESS and rec.child_job_ids:
            children = [self._jobs[c] for c in rec.child_job_ids if c in self._jobs]
            if children and all(c.status is JobStatus.COMPLETED for c in children):
                status = WorkerStatus.RECURSIVE_SUCCESS
            else:
                rec.exit_reason += "; a child job did not complete"
        final = rec.copy()
        # It ended when its last process and its child jobs did: for one that ended while no
        # server ran, that is its shim's time, not the restart's.
        ends = [a.ended_at for a in rec.attempts[-1:] if a.ended_at is not None]
        ends += [e for c in rec.child_job_ids if c in self._jobs and (e := self._jobs[c].ended_at)]
        final.status, final.ended_at = status, max(ends) if ends else time.time()
        self.metrics.worker_finished(live.tag, status.value, final.duration)
        return final, self._snapshot_record(live, final)

    def _worker_settled(self, live: _Live, final: WorkerRecord, snapshot: _Snapshot) -> None:
        """Outside the lock: the final record on disk, then everyone told; the job may end."""
        # On disk before anyone can see it: a reader told "done" never loses that to a crash.
        failpoints.hit("before_final_record")
        snapshot.write()
        with self._lock:
            rec = live.record
            rec.status, rec.ended_at = final.status, final.ended_at
            job = live.job
            self._unfinished[job.id] -= 1
            done = self._unfinished[job.id] == 0
            self._publish_worker(live, rec.exit_reason)
        if done:
            self._complete_job(job)

    def _complete_job(self, job: JobRecord) -> None:
        with self._lock:
            if job.status.terminal or job.id in self._finishing:
                return
            self._finishing[job.id] = (self._outcome(job), time.time())
        if job.is_root:  # FINAL_RESULT.md exists, and TMPDIRs are gone, before anyone is told the tree ended
            self._level_renders.forget(lambda key: key[0] == job.root_id)  # every level is rendered below
            # Removing a TMPDIR per worker is kernel time and rendering is Python: side by side.
            # (A thread of its own: the pool may be shutting down when a cancelled tree ends.)
            remover = threading.Thread(target=self.workspace.remove_tree_tmp, args=(job.root_id,), name="tmp-removal")
            remover.start()
            with self._render_lock(job.root_id):
                self._render_reports(job)
            remover.join()
        with self._lock:
            status, ended = self._finishing[job.id]
            final = job.copy()
            final.status, final.ended_at = status, ended
            snapshot = self._job_snapshot(final)
        # On disk before anyone can see it, and outside the lock: an fsync on a busy disk takes
        # tens of ms, which every request (a child job's refusal) would otherwise wait out.
        self._write_snapshots([snapshot])
        with self._lock:
            del self._finishing[job.id]
            job.status, job.ended_at = status, ended
            self._publish_job(job, f"job {status.value}")
            self._event_line(job, f"job {job.id} {status.value}")
            self._cond.notify_all()
            parent = self._live.get(_key(job.root_id, job.depth - 1, job.parent_worker)) if job.parent_worker else None
            finish_parent = parent is not None and parent.process_done and not self._live_children(parent)
            if parent is not None and not parent.process_done and not parent.holds_slot and not self._live_children(parent):
                parent.holds_slot = True  # its child is done: it runs again, and counts again
                self._slots_used += 1
            self._dispatch()
        if not job.is_root:  # a waiting parent resumes first; its level report follows (paced: pacing.py)
            self._level_renders.request((job.root_id, job.depth), functools.partial(self._render_locked, job))
        if finish_parent and parent is not None:
            self._finish_worker(parent)
        if job.is_root:
            self._evict_finished(job.root_id)

    def _evict_finished(self, root_id: str) -> None:
        """Keep the newest FINISHED_TREES_IN_MEMORY finished trees in memory; older ones are
        read from their records on disk, so a long-running server's memory stays flat."""
        with self._lock:
            self._finished_roots.append(root_id)
            while len(self._finished_roots) > FINISHED_TREES_IN_MEMORY:
                self._forget_tree(self._finished_roots.popleft())

    def _forget_tree(self, root_id: str) -> None:
        """Under the lock: drop a finished (or deleted) tree's in-memory state."""
        for jid in [j.id for j in self._jobs.values() if j.root_id == root_id]:
            del self._jobs[jid]
            for table in (self._running, self._unfinished, self._pending):
                table.pop(jid, None)
        for key in [k for k in self._live if k[0] == root_id]:
            del self._live[key]
        self._tree_cost.pop(root_id, None)
        self._render_locks.pop(root_id, None)
        for jid in [j for j in self._job_versions if j == root_id or j.startswith(root_id + "-")]:
            del self._job_versions[jid]
        self.events.forget(root_id)

    def _outcome(self, job: JobRecord) -> JobStatus:
        statuses = [self._live[_key(job.root_id, job.depth, n)].record.status for n in job.worker_names]
        if any(s in (WorkerStatus.CANCELLED, WorkerStatus.SKIPPED) for s in statuses) and job.error == "cancelled":
            return JobStatus.CANCELLED
        ok = sum(1 for s in statuses if s.ok)
        if ok == len(statuses):
            return JobStatus.COMPLETED
        return JobStatus.PARTIAL if ok else JobStatus.FAILED

    def _render_lock(self, root_id: str) -> threading.Lock:
        with self._lock:
            return self._render_locks.setdefault(root_id, threading.Lock())

    def _render_locked(self, job: JobRecord) -> None:
        with self._render_lock(job.root_id):
            self._render_reports(job)

    def _render_reports(self, job: JobRecord) -> None:
        """Level report of the job's depth; for a root, every level and FINAL_RESULT.md."""
        jobs, workers = self.queries.snapshot(job.root_id, outcomes=True)
        tails = {w.key: self.workspace.read_tail(self.workspace.job_dir(w.root_id) / w.log_path, 20)
                 for w in workers if w.status in (WorkerStatus.FAILED, WorkerStatus.TIMEOUT)}
        tdir = self.settings.templates_dir
        depths = sorted({w.depth for w in workers}) if job.is_root else [job.depth]
        try:
            for depth in depths:
                text = reports.render_level_report(depth, jobs[0], jobs, workers, log_tails=tails, templates_dir=tdir)
                self.workspace.write_text(self.workspace.level_report(job.root_id, depth), text)
            if job.is_root:  # the picture first, so the report's link to it never dangles
                svg = self.workspace.timeline_svg(job.root_id)
                self.workspace.write_text(svg, reports.render_timeline_svg(jobs, workers))
                text = reports.render_final_report(jobs[0], jobs, workers, log_tails=tails, templates_dir=tdir,
                                                   timeline_svg=self.workspace.relative(job.root_id, svg))
                self.workspace.write_text(self.workspace.final_report(job.root_id), text)
        except Exception as exc:  # a broken custom template must not hang the job
            log.exception("report rendering failed for %s", job.id, extra=logs.context(job.id))
            with self._lock:
                job.notes.append(f"report rendering failed: {exc}")

    # -- reading: queries.Queries answers; the engine forwards for its callers -----------
    def snapshot(self, root_id: str, job_id: str | None = None, *, outcomes: bool = False) -> tuple[list[JobRecord], list[WorkerRecord]]:
        return self.queries.snapshot(root_id, job_id, outcomes=outcomes)

    def get_job(self, job_id: str) -> JobRecord:
        return self.queries.get_job(job_id)

    def wait(self, job_id: str, timeout: float) -> JobRecord:
        return self.queries.wait(job_id, timeout)

    def list_jobs(self) -> list[JobRecord]:
        return self.queries.list_jobs()

    def find_worker(self, job_id: str, depth: int | None, name: str) -> WorkerRecord:
        return self.queries.find_worker(job_id, depth, name)

    def read_log(self, record: WorkerRecord, *, tail: int = 0, offset: int = 0) -> tuple[str, int]:
        return self.queries.read_log(record, tail=tail, offset=offset)

    def follow_log(self, record: WorkerRecord, offset: int, deadline: float) -> Iterator[bytes]:
        return self.queries.follow_log(record, offset, deadline)

    def read_report(self, job_id: str, name: str) -> str:
        return self.queries.read_report(job_id, name)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "jobs_running": sum(1 for j in self._jobs.values() if not j.status.terminal),
                "workers_running": sum(self._running.values()),
                "slots_used": self._slots_used,
            }

    def worker_running(self, job_id: str, worker: str) -> bool:
        """True while the worker's process runs: its credential is honoured only then."""
        with self._lock:
            job = self._jobs.get(job_id)
            live = self._live.get(_key(job.root_id, job.depth, worker)) if job else None
            return live is not None and live.record.status is WorkerStatus.RUNNING and not live.process_done

    # -- deleting ---------------------------------------------------------------------
    def delete(self, job_id: str) -> None:
        """Remove a finished root job's folder (its child jobs live inside it). The rule is
        ``prune.refusal``'s, judged on the tree as this server holds it, else as on disk."""
        job = self.get_job(job_id)
        # A tree this server does not hold is judged by its records (read outside the lock).
        on_disk = [] if self.queries.holds(job.root_id) else jobs_on_disk(self.workspace, job)
        with self._lock:
            held = [j for j in self._jobs.values() if j.root_id == job.root_id]
            reason = refusal(job, held or on_disk)  # a finishing job (reports rendering) is still running here
            if reason:
                raise Conflict(reason)
            self._forget_tree(job.root_id)
            with contextlib.suppress(ValueError):
                self._finished_roots.remove(job.root_id)
            self.workspace.remove_job_tree(job.root_id)
        log.info("job tree %s (%s) deleted with its folder", job.root_id, job.status.value, extra=logs.context(job.id, root_id=job.root_id))


    # -- cancelling -----------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job and its whole subtree. Cancelling a finished job is a Conflict."""
        with self._lock:
            job = self._jobs.get(validate_job_id(job_id))
            if job is None:
                stored = self.workspace.load_job(job_id)
                raise Conflict(f"job {job_id} is already {stored.status.value}; there is nothing to cancel")
            if job.status.terminal or job.id in self._finishing:
                raise Conflict(f"job {job_id} is already {job.status.value}; there is nothing to cancel")
            finished = self._cancel_locked(job)
        for live in finished:
            self._finish_worker(live)
        return self.get_job(job_id)

    def _cancel_locked(self, job: JobRecord) -> list[_Live]:
        job.error = "cancelled"
        self._event_line(job, f"job {job.id} cancel requested")
        never_started = []
        pending = set(self._pending.pop(job.id, []))
        for name in job.worker_names:
            live = self._live[_key(job.root_id, job.depth, name)]
            live.cancel.set()
            if live.record.key in pending:
                live.record.status = WorkerStatus.PENDING
                live.outcome = Outcome(WorkerStatus.SKIPPED, "skipped: the job was cancelled before it started")
                live.process_done = True
                never_started.append(live)
            for child_id in live.record.child_job_ids:
                child = self._jobs.get(child_id)
                if child is not None and not child.status.terminal:
                    never_started.extend(self._cancel_locked(child))
        return never_started

    def shutdown(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, cancel running ones (kill ladder) and wait for their threads."""
        with self._lock:
            self._closing = True
            roots = [j for j in self._jobs.values() if j.is_root and not j.status.terminal]
        for job in roots:
            try:
                self.cancel(job.id)
            except Conflict:
                pass
        with self._lock:
            futures = [f for f in list(self._futures) if not f.done()]
        wait_futures(futures, timeout=timeout)
        self._pool.shutdown(wait=False)
        self._level_renders.close()
        self.monitor.stop()

    # -- events ---------------------------------------------------------------------
    def _publish_job(self, job: JobRecord, message: str) -> None:
        self.events.publish(job.root_id, type="job", job_id=job.id, status=job.status.value, depth=job.depth, message=message)

    def _publish_worker(self, live: _Live, message: str) -> None:
        rec = live.record
        self.events.publish(rec.root_id, type="worker", job_id=rec.job_id, status=rec.status.value,
                            worker=rec.name, depth=rec.depth, message=message)
        self._event_line(live.job, f"{rec.key} {rec.status.value}: {message}", rec.name)

    def _event_line(self, job: JobRecord, message: str, worker: str | None = None) -> None:
        if worker is None:  # job-level events also go to the server log; worker ones only to the tree's
            log.info(message, extra=logs.context(job.id, root_id=job.root_id))
        try:
            if self.settings.logging.enable_structured:
                line = logs.job_line(message, job_id=job.id, root_id=job.root_id, depth=job.depth, worker=worker)
                self.workspace.append_line(self.workspace.orchestrator_log(job.root_id), line)
            else:
                self.workspace.log_event(job.root_id, message)
        except OSError:
            log.warning("cannot append to orchestrator.log of %s", job.root_id)

