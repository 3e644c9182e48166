"""Submitting a job: the request checked (``limits``), its config and worker kind resolved,
the plan made (explicit tasks, the heuristic or the AI planner), the limits of its tree
checked again after planning, then the job and its workers created in memory and their
records written before any worker starts."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass

from .. import defences, reports, states
from ..checkouts.isolated import resolve_isolation
from ..config import AUTO_KIND, Isolation, JobConfig, MergeStrategy, Select, Settings, job_config
from ..config.live import ConfigWatch
from ..delivery import landing
from ..delivery.integration import integration_ref
from ..errors import ConfigError, Conflict, JobNotFound, WorkerNotFound
from ..models import JobRecord, JobStatus, TaskNode
from ..planner import graph
from ..planner import heuristic as planning
from ..planner.ai import AIPlan, choose_planner, heuristic_plan, plan_with_ai
from ..selection import candidates
from ..states import WorkerPhase
from ..workers.adapters import get_adapter, resolve_kind
from ..workers.confinement import Confinement
from ..workers.environment import base_env
from ..workers.roles import apply_roles, not_installed, role_table, worker_kind_missing
from ..workspace.ids import child_job_id, new_root_id, validate_job_id, validate_worker_name
from . import limits
from .context import EngineContext, EnginePart
from .locked_only import locked_only
from .nesting import Nesting
from .tables import LiveWorker, Snapshot, new_tag, write_snapshots


@dataclass(frozen=True)
class Spawned:
    """A worker's spawn answered: the child job, and whether it was reused (started by an earlier
    attempt of the worker for the same request) rather than started now, with what became of its work."""

    job: JobRecord
    reused: bool = False
    note: str = ""


def spawn_key(request: object, tasks: object, config: object) -> str:
    """The digest a child job is known by to its parent worker's retries: its request, tasks and
    config as the spawn sent them (key order aside)."""
    text = json.dumps({"request": request, "tasks": tasks, "config": config}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Submission(EnginePart):
    """Admits and creates jobs, on the engine's context (``ctx``). Through ``ctx.hooks`` it
    refuses once the engine is closing (``check_open``), starts workers (``dispatch``) and ends
    the ones that will never start (``skip_pending``)."""

    def __init__(self, ctx: EngineContext, *, nesting: Nesting | None) -> None:
        self.ctx = ctx
        self.confinement = Confinement(
            ctx.settings, ctx.workspace, configs=ctx.cli_configs
        )  # what each root job's notes say of its sandbox
        self.nesting = nesting  # commits a worktree worker's work before its child job starts
        # The server's config.yaml, looked at before each root job (set by the server: config/live.py).
        self.config_watch: ConfigWatch | None = None

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
        reports.warm_soon(self.settings.templates_dir)  # its end renders them: compiled while it runs
        key = spawn_key(request, tasks, config) if parent_job_id is not None else None  # as the spawn sent them
        watch = self.config_watch if parent_job_id is None else None
        reloaded = watch.check().notes(watch.path) if watch is not None else []
        o = self.settings.orchestrator
        request = limits.check_request(request, o.max_request_chars)
        explicit = graph.check_tasks(tasks, o.max_tasks, o.max_request_chars, role_table(self.settings))
        given = limits.check_config(config)
        with self.tables.locked():
            self.hooks.check_open()
            parent = self.parent_for(parent_job_id, parent_worker) if parent_job_id else None
            parent_cfg = parent[0].config if parent else None
            cfg, notes = job_config(self.settings, given, parent_cfg)
            notes[:0] = reloaded  # what this job runs with, when config.yaml changed since the start
            kind, why = resolve_kind(cfg.worker, self.settings)
            if cfg.worker == AUTO_KIND and parent is None:
                notes.append(why)  # say plainly when no AI CLI was found and the simulated worker runs
            if parent is None:
                notes.append(self.confinement.for_job(cfg).note)  # sandboxed, or unconfined and why
            cfg = cfg.replace(worker=kind)
            if parent:
                self.check_recursion(parent[0], parent[1])
            depth = parent[0].depth + 1 if parent else limits.admitted_depth(given)
            child_id = None
            if parent and parent[0].config.isolation == Isolation.WORKTREE:  # its id, for the commit below
                child_id = self.reserve_child_id(parent[0])
        start = None
        if parent is None:
            isolation, note = resolve_isolation(self.settings, self.workspace.root, cfg.isolation)
            cfg = cfg.replace(isolation=isolation)
            if note:
                notes.append(note)
            if cfg.merge_into:  # a branch of the user's: checked with git, outside the lock
                cfg = cfg.replace(merge_into=landing.check_branch(self.settings, cfg.merge_into))
        else:  # a child job keeps its parent's (resolved) isolation, and starts from its parent's work
            cfg = cfg.replace(isolation=parent[0].config.isolation)
            if child_id is not None and self.nesting is not None:
                start = self.nesting.commit_at_spawn(parent[1].record, child_id)
        # Planning may ask an AI CLI and take minutes: never inside ``tables.locked()``.
        planned = self.plan(request, explicit, cfg, tree=parent[0].root_id if parent else None)
        plan, planner_name = planned.tasks, planned.planner
        if planned.note:
            notes.append(planned.note)
        nodes = self.graph_of(plan, planned, cfg, notes)
        with self.tables.locked():
            self.hooks.check_open()
            if parent and parent_job_id:  # the world may have moved while planning: check again
                parent = self.parent_for(parent_job_id, parent_worker)
                self.check_recursion(parent[0], parent[1])
                fitted, planned.goal = self.fit_tree(parent[0].root_id, request, plan, planner_name, notes, planned.goal)
                if fitted != plan:  # merged to fit the tree: the planner's graph no longer applies
                    plan, nodes = fitted, graph.independent(len(fitted))
            plan, nodes = self._workers_checked(cfg, plan, nodes, parent, notes)
            planned.nodes = nodes
            job, writes = self.create_job(request, cfg, plan, planner_name, notes, parent, planned, depth, child_id, start, key)
            self.announce.line(
                job, f"job {job.id} submitted at depth {job.depth}: {why}; planner {planner_name}, {len(plan)} subtask(s)"
            )
        # On disk (fsynced) before any of its workers starts and before the caller hears of it.
        try:
            write_snapshots(writes)
        except Exception:
            with self.tables.locked():  # never started: its workers end skipped, and the caller hears why
                self.hooks.skip_pending(
                    job, self.tables.pending.pop(job.id, []), "skipped: the job's record could not be written"
                )
            raise
        with self.tables.locked():
            self.hooks.dispatch()
        return job

    @locked_only
    def _workers_checked(
        self,
        cfg: JobConfig,
        plan: list[str],
        nodes: list[TaskNode],
        parent: tuple[JobRecord, LiveWorker] | None,
        notes: list[str],
    ) -> tuple[list[str], list[TaskNode]]:
        """The plan's workers, each task's kind given (its role's) and checked to run here, a worker per
        candidate, and the tree's room for them; a ConfigError (422) names what cannot run and the fix."""
        # What each role's workers run (422: a role kind not installed); a child job's tasks
        # without a role take its parent worker's.
        notes.extend(apply_roles(self.settings, cfg, nodes, inherited=parent[1].record.role if parent else None))
        # A task without a role's kind runs the job's; attempts that run elsewhere (nodes, a
        # test's fake executor) are checked where they run.
        if any(n.kind is None for n in nodes) and self.ctx.executor.local_runner() is not None:
            check_kind_runs(self.settings, cfg.worker)
        if self.ctx.executor.local_runner() is not None:  # (422: a CLI's model endpoint its proxy would refuse)
            self.confinement.check_endpoints(cfg, [n.kind or cfg.worker for n in nodes], base_env(self.settings))
        plan, nodes = candidates.expand(plan, nodes, cfg, self.settings)  # a worker per candidate
        judging = cfg.judge.get("kind") if cfg.select == Select.JUDGE and candidates.has_candidates_nodes(nodes) else None
        for kind in sorted({n.kind for n in nodes if n.candidate is not None and n.kind} | ({judging} if judging else set())):
            # The judge runs on this server; candidates run where workers run (nodes under rq).
            missing = (not_installed if kind == judging else worker_kind_missing)(self.settings, kind)
            if missing:
                raise ConfigError(
                    f"candidate worker kind {kind} is not installed here: {missing}. Install it, or leave it out "
                    "of config.candidates (and config.judge)",
                    key="candidates",
                )
        if parent is None:
            limits.check_root_plan(len(plan), self.settings.recursion.max_workers_per_root)
        elif candidates.has_candidates_nodes(nodes):  # the tree must hold every candidate
            used = sum(len(j.worker_names) for j in self.tables.jobs.values() if j.root_id == parent[0].root_id)
            limits.tree_room(parent[0].root_id, used, self.settings.recursion.max_workers_per_root, len(plan), True)
        return plan, nodes

    def spawn(
        self, request: object, config: object, tasks: object, *, parent_job_id: str | None, parent_worker: str | None
    ) -> Spawned:
        """A worker's request for a child job. A retry's spawn of the request an earlier attempt of the
        same worker spawned gets that child job back (running or ended; not one that was cancelled),
        so a subtask's retries never start the same child job twice; its work, when a reset took it out
        of the worker's checkout, is brought back in (``Nesting.bring_back``). Otherwise ``submit``."""
        key = spawn_key(request, tasks, config)
        with self.tables.locked():
            self.hooks.check_open()
            parent_job, parent = self.parent_for(parent_job_id or "", parent_worker)
            found = self.reusable_child(parent, key)
            if found is not None:
                self.check_running(parent_job, parent)
                ended = found.status.terminal
        if found is None:
            return Spawned(self.submit(request, config, tasks, parent_job_id=parent_job_id, parent_worker=parent_worker))
        note = f"it is {found.status.value}; "
        note += "its result is reported as it is, not run again" if ended else "its work merges into your branch when it ends"
        if ended and self.nesting is not None and found.config.isolation == Isolation.WORKTREE:
            brought = self.nesting.bring_back(found, parent.record)  # Conflict: refused, nothing recorded
            note += f"; {brought}" if brought else ""
        with self.tables.locked():
            self.check_running(parent_job, parent)
            attempt = parent.record.attempts[-1].number
            parent.record.reused_children[found.id] = attempt  # it counts for this attempt's end (settling.py)
            self.announce.worker(
                parent, f"attempt {attempt} reuses child job {found.id} (attempt {found.parent_attempt}'s, same request)"
            )
            written = self.tables.worker_snapshot(parent)
        write_snapshots([written])
        return Spawned(found, reused=True, note=note)

    @locked_only
    def reusable_child(self, parent: LiveWorker, key: str) -> JobRecord | None:
        """The latest child job ``parent`` started for the request ``key`` in an earlier attempt than
        its running one, unless it was cancelled; None: there is none."""
        rec = parent.record
        attempt = rec.attempts[-1].number if rec.attempts else 0
        for child_id in reversed(rec.child_job_ids):
            child = self.tables.jobs.get(child_id)
            if child is None or child.spawn_key != key or child.status is JobStatus.CANCELLED:
                continue
            if child.parent_attempt is not None and child.parent_attempt < attempt:
                return child
        return None

    def graph_of(self, plan: list[str], planned: AIPlan, cfg: JobConfig, notes: list[str]) -> list[TaskNode]:
        """The plan's nodes: the planner's (or the explicit tasks'), else independent ``t1``,
        ``t2``...; tasks whose ``owns`` overlap ordered one after the other (with a note each).
        A graph with dependencies needs a merge strategy that merges (422 for ``manual``)."""
        nodes = planned.nodes if planned.nodes and len(planned.nodes) == len(plan) else None
        if nodes is None:
            return graph.independent(len(plan))
        merges = runs_dependencies(cfg)
        if merges:
            notes.extend(graph.serialize_overlaps(nodes))
        if graph.has_dependencies(nodes) and not merges:
            raise ConfigError(
                "merge_strategy manual cannot run a task graph: a task starts once its prerequisites are merged into "
                "the job's result branch, and manual merges nothing. Use merge_strategy auto, theirs or resolve, or drop depends_on",
                key="merge_strategy",
            )
        return nodes

    def plan(
        self, request: str, tasks: tuple[list[str], list[TaskNode]] | None, cfg: JobConfig, *, tree: str | None = None
    ) -> AIPlan:
        """The subtasks, the planner's name, a note and the AI call's cost: explicit tasks win;
        else the heuristic or the AI planner, which falls back to the heuristic one (with a
        note saying why) whenever it fails. ``tree``: a child job's root id: its request is a
        worker's text, so the AI planner runs in that tree's worker sandbox, with the workers'
        caps, or not at all (no deputy: docs/sandbox.md)."""
        if tasks:
            return AIPlan(tasks[0], "explicit", nodes=tasks[1])
        graph = runs_dependencies(cfg)  # else a sequence stays one task, and the AI's dependencies go
        if choose_planner(cfg.planner, cfg.worker) == "heuristic":
            return heuristic_plan(request, cfg.max_workers, graph=graph)
        scratch = self.workspace.planning_dir()  # empty: the planner's cwd, prompt and log, nothing else
        try:
            env = base_env(self.settings)
            sandbox, limits = None, None
            if tree is not None:
                env = Confinement.helper_env(env, scratch)
                sandbox = self.confinement.helper(tree, cfg.worker, scratch, cfg, env)
                if sandbox is None and not defences.off("helper_refusal"):  # (the hostile suite's switch)
                    why = self.confinement.for_job(cfg).note
                    note = f"AI planner refused: a child job's request is a worker's text, and no sandbox runs it here: {why}; used the heuristic planner"
                    return heuristic_plan(request, cfg.max_workers, note, graph=graph)
                limits = self.confinement.limits()
            return plan_with_ai(
                request,
                cfg.max_workers,
                settings=self.settings,
                adapter=get_adapter(cfg.worker),
                runner=self.runner,
                work_dir=scratch,
                timeout=self.settings.orchestrator.planner_timeout,
                env=env,
                roles=role_table(self.settings),
                graph=graph,
                sandbox=sandbox,
                limits=limits,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @locked_only
    def parent_for(self, job_id: str, worker_name: str | None) -> tuple[JobRecord, LiveWorker]:
        """The job and worker that ask for a child job."""
        validate_job_id(job_id)
        job = self.tables.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"parent job {job_id} is not running on this server")
        name = validate_worker_name(worker_name)
        live = self.tables.worker(job.root_id, job.depth, name)
        if live is None or live.job.id != job.id:
            raise WorkerNotFound(f"worker {name} is not a worker of job {job_id}")
        return job, live

    @locked_only
    def check_running(self, parent_job: JobRecord, parent: LiveWorker) -> None:
        """Is this worker still running (Conflict: no child job is started, or reused, for it)?"""
        where = f"worker {parent.record.name} of job {parent_job.id}"
        if parent_job.status.terminal or parent_job.id in self.tables.ending or parent.cancel.is_set():
            raise Conflict(f"{where} is no longer running (job {parent_job.status.value}); no child job was started")
        if parent.record.status.terminal or parent.phase.process_ended:
            raise Conflict(f"{where} has already finished; no child job was started")

    @locked_only
    def check_recursion(self, parent_job: JobRecord, parent: LiveWorker) -> None:
        """May this worker start a child job now?"""
        pcfg = parent_job.config
        where = f"worker {parent.record.name} of job {parent_job.id}"
        self.check_running(parent_job, parent)
        limits.check_recursion_enabled(pcfg.enable_recursion, parent_job.id)
        limits.check_depth(parent_job.depth, pcfg.max_recursion_depth, where)
        limits.check_budget(self.tables.tree_spent(parent_job), parent_job.config.max_cost_usd)
        limits.check_fan_out(len(parent.record.child_job_ids), pcfg.max_children_per_worker, where)

    @locked_only
    def fit_tree(
        self, root_id: str, request: str, plan: list[str], planner_name: str, notes: list[str], goal: str | None
    ) -> tuple[list[str], str | None]:
        """A child job's plan, merged to fit recursion.max_workers_per_root."""
        cap = self.settings.recursion.max_workers_per_root
        used = sum(len(j.worker_names) for j in self.tables.jobs.values() if j.root_id == root_id)
        room = limits.tree_room(root_id, used, cap, len(plan), planner_name == "explicit")
        if room is not None:
            merged = planning.split_request(request, room)  # merges parts, never drops one
            plan, goal = merged.tasks, merged.goal
            notes.append(limits.merged_note(room, cap))
        return plan, goal

    @locked_only
    def create_job(
        self,
        request: str,
        cfg: JobConfig,
        plan: list[str],
        planner_name: str,
        notes: list[str],
        parent: tuple[JobRecord, LiveWorker] | None,
        planned: AIPlan | None = None,
        depth: int = 0,
        child_id: str | None = None,
        start_commit: str | None = None,
        request_key: str | None = None,
    ) -> tuple[JobRecord, list[Snapshot]]:
        """The job in memory, and the record snapshots to write (outside it).
        ``child_id``: a child's id reserved before (``reserve_child_id``); ``start_commit``: where
        a worktree child's workers branch from (its parent's work at the spawn, engine/nesting.py);
        ``request_key``: a child's ``spawn_key``, which its parent's retries find it by."""
        now = self.clock.time()
        tables = self.tables
        job = self._new_record(request, parent, depth, now, child_id, start_commit, request_key)
        job.config = cfg
        job.tasks = plan
        job.nodes = planned.nodes if planned is not None and planned.nodes else graph.independent(len(plan))
        graphed = graph.has_dependencies(job.nodes)
        if cfg.isolation == Isolation.WORKTREE and graphed:  # its integration branch
            job.integration = integration_ref(self.settings.git.branch_prefix, job)
        job.goal = planned.goal if planned is not None else None
        job.planner = planner_name
        if planned is not None:  # the AI planner's call: the tree's cost, and its budget, count it
            job.planner_cost_usd, job.planner_tokens_in, job.planner_tokens_out = (
                planned.cost_usd,
                planned.tokens_in,
                planned.tokens_out,
            )
        job.notes = notes
        states.set_job_status(job, JobStatus.RUNNING)
        job.started_at = now
        writes: list[Snapshot] = []
        try:
            self.create_workers(job, parent)
            if parent is not None:
                # The root's child counter first: a crash after it leaves a gap, never a reused id.
                writes.append(tables.job_snapshot(tables.jobs[job.root_id]))
                writes.append(tables.job_snapshot(job))
                writes.append(self.attach_child(parent[1], job))
            else:
                writes.append(tables.job_snapshot(job))
        except Exception:
            if parent is None:
                self.workspace.remove_job_tree(job.root_id)
            raise
        tables.jobs[job.id] = job
        tables.running[job.id] = 0
        # A task's selection among its candidates is work of the job too: it ends after them (engine/choosing.py).
        tables.unfinished[job.id] = len(job.worker_names) + len(candidates.candidate_tasks(job))
        self.ctx.add_cost(job.root_id, job.planner_cost_usd)
        tasks = len({n.id for n in job.nodes})
        extra = f" as {len(plan)} workers (candidates)" if tasks != len(plan) else ""
        self.announce.job(job, f"planned {tasks} subtask(s){extra}")
        if graphed:  # what each task waits on, once
            waits = "; ".join(f"{n.id} waits on {', '.join(n.depends_on)}" for n in job.nodes if n.depends_on)
            self.announce.line(job, f"job {job.id} task graph: {waits}")
        return job, writes

    @locked_only
    def _new_record(
        self,
        request: str,
        parent: tuple[JobRecord, LiveWorker] | None,
        depth: int,
        now: float,
        child_id: str | None,
        start_commit: str | None,
        request_key: str | None,
    ) -> JobRecord:
        """A root job's record, with its tree made on disk under a new id, or a child's under its id in
        its tree, tied to the worker and attempt that asked for it."""
        if parent is None:
            self.workspace.check_writable()
            root_id = new_root_id()
            while self.workspace.job_dir(root_id).exists():
                root_id = new_root_id()
            self.workspace.create_job_tree(root_id)
            job = JobRecord(id=root_id, root_id=root_id, request=request, depth=depth, created_at=now)
        else:
            pjob, plive = parent
            root = self.tables.jobs[pjob.root_id]
            if child_id is None:
                child_id = self.reserve_child_id(pjob)
            job = JobRecord(
                id=child_id,
                root_id=root.id,
                request=request,
                depth=pjob.depth + 1,
                parent_job_id=pjob.id,
                parent_worker=plive.record.name,
                created_at=now,
                start_commit=start_commit,
                spawn_key=request_key,
                parent_attempt=plive.record.attempts[-1].number if plive.record.attempts else None,
            )
        return job

    @locked_only
    def reserve_child_id(self, parent_job: JobRecord) -> str:
        """The next child job id of the tree (a refused spawn leaves a gap)."""
        root = self.tables.jobs[parent_job.root_id]
        root.child_seq += 1
        return child_job_id(root.id, root.child_seq)

    def create_workers(self, job: JobRecord, parent: tuple[JobRecord, LiveWorker] | None) -> None:
        if parent is None:
            prefix, first = "worker", 1
        else:
            plive = parent[1]
            prefix = plive.record.name
            first = 1 + sum(len(self.tables.jobs[c].worker_names) for c in plive.record.child_job_ids if c in self.tables.jobs)
        names = [f"{prefix}_{first + offset}" for offset in range(len(job.tasks))]
        job.worker_names.extend(names)
        keys = []
        # No file per pending worker: its record follows from the job record (see
        # Workspace.pending_worker) and is first written when the worker starts.
        for index in range(1, len(names) + 1):
            record = self.workspace.pending_worker(job, index)
            self.tables.workers[(job.root_id, record.key)] = LiveWorker(
                record=record, job=job, tag=new_tag(job.root_id, record.key)
            )
            keys.append(record.key)
        self.tables.pending[job.id] = keys

    def attach_child(self, plive: LiveWorker, child: JobRecord) -> Snapshot:
        """The parent worker lends its global slot to the child while the child runs. Returns
        the parent's record snapshot, for the caller to write outside the lock."""
        plive.record.child_job_ids.append(child.id)
        self.workspace.mark_recursive(plive.record.root_id, plive.record.depth, plive.record.name)
        if plive.phase is WorkerPhase.RUNNING:
            states.set_phase(plive, WorkerPhase.LENDING)
            self.tables.slots_used -= 1
        self.announce.worker(plive, f"started child job {child.id}")
        return self.tables.worker_snapshot(plive)


def runs_dependencies(cfg: JobConfig) -> bool:
    """Can the job run a graph with dependencies? A worktree job must merge (not ``manual``):
    a task starts once its prerequisites' work is merged into the integration branch."""
    return cfg.isolation != Isolation.WORKTREE or cfg.merge_strategy != MergeStrategy.MANUAL


def check_kind_runs(settings: Settings, kind: str) -> None:
    """422 before anything is written when the job's worker kind cannot start here (no
    ``orchestrator.command`` for the command kind, a CLI not on the workers' PATH): the job would
    be accepted and every worker fail. The message names what to set."""
    missing = worker_kind_missing(settings, kind)
    if not missing:
        return
    fix = get_adapter(kind).program_fix()
    raise ConfigError(f"worker kind {kind} cannot run here: {missing}; {fix}", key="worker")
