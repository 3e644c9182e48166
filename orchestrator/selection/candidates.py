"""A subtask run as several candidates, as pure functions: the plan expanded at
submission so that each candidate is a worker of its own, with the task's id, its number, and its
kind, model, timeout and context; and which of a job's workers are one task's candidates.

Where a task's candidates come from, first match wins: the explicit task's own ``candidates``, the
job's ``config.candidates``, ``config.attempts: N`` (N runs of the task's own kind); else it runs
once, as before. Every candidate gets the same prompt (its ``context`` object aside), starts from
the same base in a worktree of its own, and is gated like any worker; only the selected one is
merged (engine/choosing.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ..config import JobConfig, MergeStrategy, Select, Settings
from ..config.choice import CandidateSpec
from ..config.keys import StrEnum
from ..errors import ConfigError
from ..models import JobRecord, JobStatus, TaskNode, WorkerRecord
from ..workers.adapters import ADAPTERS, get_adapter


class TaskStatus(StrEnum):
    """A root job's status as a task (the task API's, as Kage Bunshin defined it): ``task_outcome``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


def specs_for(node: TaskNode, cfg: JobConfig) -> list[CandidateSpec]:
    """The candidates ``node`` runs as ([]: it runs once)."""
    if node.candidates:
        return list(node.candidates)
    if cfg.candidates:
        return [CandidateSpec.from_dict(c) for c in cfg.candidates]
    if cfg.attempts > 1:
        return [CandidateSpec() for _ in range(cfg.attempts)]
    return []


def expand(tasks: list[str], nodes: list[TaskNode], cfg: JobConfig, settings: Settings) -> tuple[list[str], list[TaskNode]]:
    """The plan with each task that has candidates repeated once per candidate (plan order kept,
    a task's candidates side by side). 422 for what could never run: ``select: judge`` without a
    judge, or a candidate's timeout above this server's ``workers.max_timeout``."""
    out_tasks: list[str] = []
    out_nodes: list[TaskNode] = []
    for text, node in zip(tasks, nodes):
        specs = specs_for(node, cfg)
        if not specs:
            out_tasks.append(text)
            out_nodes.append(_without_specs(node))
            continue
        for number, spec in enumerate(specs, 1):
            timeout = spec.timeout
            if timeout is not None and timeout > settings.workers.max_timeout:
                raise ConfigError(
                    f"task {node.id}: candidate {number}'s timeout {timeout:g}s is above this server's limit "
                    f"{settings.workers.max_timeout:g}s (workers.max_timeout); ask for at most that",
                    key="candidates",
                )
            kind = spec.kind or node.kind
            model = spec.model if spec.model is not None else node.model
            if model is None and kind and kind != cfg.worker and settings.orchestrator.model:
                model = ""  # orchestrator.model names a model of the job's CLI; another CLI would refuse it
            out_tasks.append(text)
            out_nodes.append(
                TaskNode(
                    id=node.id,
                    depends_on=list(node.depends_on),
                    role=node.role,
                    owns=list(node.owns),
                    kind=kind,
                    model=model,
                    candidate=number,
                    timeout=timeout,
                    context=spec.context,
                )
            )
    if cfg.select == Select.JUDGE and any(n.candidate is not None for n in out_nodes):
        if not cfg.judge:
            raise ConfigError(
                'select: judge needs a judge: set candidates.judge in config.yaml or config.judge in the request, e.g. {"kind": "claude"}',
                key="judge",
            )
        if not get_adapter(cfg.judge["kind"]).is_ai:
            ai = ", ".join(name for name in ADAPTERS if ADAPTERS[name].is_ai)
            raise ConfigError(f"judge.kind {cfg.judge['kind']} is not an AI kind; a judge must be one of: {ai}", key="judge")
    return out_tasks, out_nodes


def _without_specs(node: TaskNode) -> TaskNode:
    if not node.candidates:
        return node
    return TaskNode(node.id, list(node.depends_on), node.role, list(node.owns), node.kind, node.model)


def has_candidates_nodes(nodes: Iterable[TaskNode]) -> bool:
    return any(n.candidate is not None for n in nodes)


def candidate_tasks(job: JobRecord) -> dict[str, list[str]]:
    """Task id -> its candidates' worker names, in number order, for each task that has candidates."""
    found: dict[str, list[str]] = {}
    for node, name in zip(job.nodes, job.worker_names):
        if node.candidate is not None:
            found.setdefault(node.id, []).append(name)
    return found


def siblings(records: Iterable[WorkerRecord], record: WorkerRecord) -> list[WorkerRecord]:
    """``record``'s task's candidates (itself included) among ``records`` of its job."""
    return [r for r in records if r.job_id == record.job_id and r.task_id == record.task_id and r.candidate is not None]


def task_outcome(job: JobRecord, winners: Collection[str] | None = None) -> TaskStatus:
    """A root job's outcome as a task status (pending, running, completed, failed, cancelled: the task API's):
    an ended job is ``completed`` when a winner's work was merged (or nothing is merged here: no
    git, or ``manual``, and there is a winner), else ``failed``. ``winners``: the selected
    candidates' names (a job without candidates: its workers that succeeded); None: read from
    the job's record (its selections, else its status)."""
    if job.status is JobStatus.WAITING:  # for approval (delivery/approval.py): not done yet as a task status
        return TaskStatus.RUNNING
    if not job.status.terminal or job.status is JobStatus.CANCELLED:
        return TaskStatus(job.status.value)
    if winners is None and job.selections:
        winners = [s.winner for s in job.selections.values() if s.winner]
    merge = job.merge
    if winners is None:  # no candidates: some worker succeeded, and (when merging) something was merged
        succeeded = job.status in (JobStatus.COMPLETED, JobStatus.PARTIAL)
        if merge is None or merge.strategy == MergeStrategy.MANUAL:
            return TaskStatus.COMPLETED if succeeded else TaskStatus.FAILED
        return TaskStatus.COMPLETED if succeeded and (merge.merged or merge.unchanged) else TaskStatus.FAILED
    if merge is None or merge.strategy == MergeStrategy.MANUAL:  # nothing to merge, or merging left to the user
        return TaskStatus.COMPLETED if winners else TaskStatus.FAILED
    merged = {*merge.merged, *merge.unchanged}
    return TaskStatus.COMPLETED if any(name in merged for name in winners) else TaskStatus.FAILED
