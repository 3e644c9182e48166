"""The status document's shape (``GET /api/v1/jobs/{id}/status``, ``check-status.sh``, the
dashboard): every key ``status_document.job_status`` writes, typed. They stay plain dicts on the
wire; a key is only ever added, never renamed (workers and scripts parse the document).

The readers of a document (``status_table`` and the lines beside it, the CLI's progress view)
take ``Mapping[str, Any]``: a document from another server's version may lack a newer key.
Records' own JSON forms (``to_dict``) stay ``dict[str, Any]`` here; models.py documents them.
"""

from __future__ import annotations

from typing import Any, TypedDict

from ..outcomes import CostBasis
from .candidate_groups import CandidateGroup


class PlannerUsage(TypedDict):
    """This job's AI planner call."""

    cost_usd: float | None
    tokens_in: int | None
    tokens_out: int | None


class RecordRef(TypedDict):
    """A root's signed record of the run (``./orchestrator.sh verify JOB``)."""

    path: str  # job_<id>/RECORD.json, under the workspace
    digest: str


class Progress(TypedDict):
    """Counts over the job's own workers."""

    completed: int  # ended, however
    total: int
    running: int
    pending: int
    succeeded: int  # nothing of it missing
    child_incomplete: int  # exited 0, a child job it started did not complete
    failed: int
    no_changes: int  # ended with its checkout as it found it
    success_rate: float  # succeeded / total, 4 places


class ResolverTotals(TypedDict):
    """merge_strategy resolve's resolver workers' share of the tree's totals."""

    resolutions: int
    accepted: int
    cost_usd: float | None  # None: none known
    estimated: int  # resolutions whose cost is from a price table


class TreeTotals(TypedDict):
    """Counts, cost and resources over the job and every job below it."""

    jobs: int
    workers: int
    completed: int
    succeeded: int
    child_incomplete: int
    max_depth: int
    cost_usd: float | None  # workers, AI planners, judges, resolvers
    # Workers whose cost is an estimate from a price table, and why others' is unknown
    # ({"cost unknown (model X)": workers}): the total is then a lower bound.
    cost_estimated: int
    cost_unknown: dict[str, int]
    tokens_in: int | None
    tokens_out: int | None
    planner: dict[str, Any]  # the AI planner's share (analytics.PlannerTotals)
    resolver: ResolverTotals
    worker_seconds: float | None
    cpu_seconds: float | None
    peak_rss: int | None  # bytes, the largest worker's peak


class QueueWait(TypedDict):
    total: float | None
    max: float | None
    worker: str | None  # the worker that waited longest


class SlowestWorker(TypedDict):
    worker: str
    duration: float | None


class BottleneckLevel(TypedDict):
    depth: int
    span: float | None


class Performance(TypedDict):
    """The tree's timing: the critical path, queue waits, resources per job."""

    wall: float | None
    worker_seconds: float | None
    peak_concurrency: int
    parallel_efficiency: float | None
    cpu_seconds: float | None
    peak_rss: int | None
    queue_wait: QueueWait
    slowest_worker: SlowestWorker | None
    bottleneck_level: BottleneckLevel | None
    level_spans: dict[str, float | None]  # by depth, as a string (JSON's keys)
    critical_path: list[dict[str, Any]]
    jobs: list[dict[str, Any]]


class GraphFields(TypedDict):
    """A task's place in its job's graph: what it waits on, its gates, what its end let start."""

    task_id: str | None
    depends_on: list[str]
    owns: list[str]
    waits_on: list[str]  # prerequisites not merged (or succeeded) yet
    dependency_wait: float | None  # seconds waited on them
    # Each gate's run; "output_tail": the end of its output where it did not pass, else null
    # (a record on disk holds it only where one was kept); "restart", where a server's restart came
    # in between: "rerun" (cut off, run once more) or "reused" (its verdict from before the stop).
    gates: list[dict[str, Any]]
    gate_summary: str | None  # "tests passed, lint failed (exit 1)"
    gated_commit: str | None
    trespass: list[str]
    integrated: dict[str, Any] | None
    unblocked: list[str]
    # Its candidate number (null: its task runs once), whether its task's selection chose it
    # (null: not made yet) and its ranking row there (the job's "candidates" groups them).
    candidate: int | None
    selected: bool | None
    score: dict[str, Any] | None


class _TaskKeys(GraphFields):
    worker_id: str
    status: str
    task: str
    role: str | None  # its task's role (tasks.roles), and what it ran: kind and model (null: orchestrator.model)
    kind: str | None
    model: str | None
    output: str | None
    files_created: list[str]
    branch: str | None  # null in folder isolation
    commit: str | None
    files_changed: list[dict[str, str]]  # {"path", "change"}
    diffstat: str | None
    files: str  # "+2 ~3 -1" (added, modified, deleted), "0" for none: as every surface shows them
    no_changes: bool | None  # its checkout is as it found it (null: not known yet); never merged
    port: int | None  # a worktree worker's ORCHESTRATOR_PORT
    depth: int
    attempts: int
    node: str | None  # the node its latest attempt runs or ran on (null: this server)
    sandbox: str | None
    attempt_nodes: list[str | None]
    duration: float | None
    exit_reason: str | None
    waiting: str | None  # why a pending worker has not started ("waiting for memory: ...")
    # A running worker whose log has not grown for workers.quiet_after seconds: how long (the
    # log's last write is the clock), and the words every surface shows.
    quiet_for: int | None
    quiet: str | None
    # What the system refused it, from records it cannot write (the orchestrator's, its network record):
    # [{"kind": orchestrator|network, "path", "line", "recorded"}], the first distinct ones, how many
    # in all, and the one-line summary (null: none).
    refusals: list[dict[str, Any]]
    refusals_total: int
    refused: str | None
    # What its log says it was refused, where nothing outside it recorded a refusal: its own words,
    # the same shape, never counted as refusals (``said``: the one-line summary).
    said_refused: list[dict[str, Any]]
    said_refused_total: int
    said: str | None
    error: str | None
    failure_class: str | None  # auth, bad_request, transient
    log: str | None
    dir: str | None
    cost_usd: float | None
    cost_basis: CostBasis | None  # reported (by its CLI) or estimated (from a price table)
    cost_note: str | None  # "cost unknown (model X)": it reported tokens and no price is known
    tokens_in: int | None
    tokens_out: int | None
    # Its prompt's bytes, its job's shared block's bytes among them (0: its prompt does not start
    # with it), the prompt-cache reads its model API reported.
    prompt_bytes: int | None
    shared_prompt_bytes: int | None
    tokens_cache_read: int | None
    queue_wait: float | None
    cpu_seconds: float | None
    peak_rss: int | None
    peak_processes: int | None
    # How its latest attempt's caps were held: by the kernel (cgroup v2, cgroup v1, file-size
    # limit) or sampled.
    enforced: dict[str, Any] | None
    # Its continue rounds after its first run (engine/continuing.py), and the CLI session a round
    # would resume (null: a round gets a prompt with its previous outcome).
    rounds: list[dict[str, Any]]
    session_id: str | None


class TaskEntry(_TaskKeys, total=False):
    """A worker's entry in ``results.tasks``; a worker that started child jobs also has theirs."""

    child_job_id: str  # its first
    child_job_ids: list[str]
    child_results: list[TaskEntry]  # each with "job_id" and "job_status"
    child_candidates: dict[str, dict[str, CandidateGroup]]  # by child job, as the document's "candidates"
    job_id: str  # in child_results: the child job it ran in
    job_status: str | None


class Results(TypedDict):
    tasks: list[TaskEntry]
    workspace: str
    final_report: str | None  # written as jobs end
    level_report: str | None


class StatusDocument(TypedDict):
    """``{"job_id", "status", "results": {"tasks": [...], "workspace", "final_report"}, ...}``: the
    original spec's keys, then ours."""

    job_id: str
    status: str
    request: str
    goal: str | None  # what every subtask is part of, from the planner (null: none shared)
    root_job_id: str
    parent_job_id: str | None
    parent_worker: str | None
    depth: int
    planner: str
    planner_usage: PlannerUsage | None  # null: no call or nothing reported; the tree's: tree.planner
    config: dict[str, Any]
    no_changes: bool  # a worktree job at rest whose every worker changed nothing: its result is its base
    created_at: float
    started_at: float | None
    ended_at: float | None
    duration: float | None
    error: str | None
    notes: list[str]
    # How its workers' branches were merged (git isolation; null until then): into the result
    # branch (root), or into the parent worker's branch (child job, key "target").
    merge: dict[str, Any] | None
    # merge_strategy resolve: each conflict a resolver worker was asked to resolve, its graph's
    # integration's ("stage": "integration") then its last merge's ("merge"): {"stage", "worker",
    # "files", "resolver", "accepted", "reason", "attempts", "gates", "tree", "cost_usd", "cost_basis"}.
    resolutions: list[dict[str, Any]]
    record: RecordRef | None  # null until the tree has ended
    # A root's last push of its result branch and its pull request (git.push; null: never published):
    # {"at", "remote", "branch", "commit", "pushed", "error", "pull_request": {"forge", "number", "url", "action", "base"}}.
    publish: dict[str, Any] | None
    pull_request: str | None  # its URL, or why publishing failed, as every surface says it
    # The watch of its pull request's checks (git.check_rounds; null: not watched): {"state", "commit",
    # "since", "max_rounds", "rounds": [{"number", "commit", "failed", "worker", "why", "started_at",
    # "state", "ended_at", "cost_usd", "pushed", "candidates", "comment"}], "rounds_used", "cost_usd", "reason",
    # "failed_reads", "answered"}.
    checks: dict[str, Any] | None
    checks_text: str | None  # the same in one line, as every surface says it
    # approval: before_merge, once its workers were done: {"state", "earned", "waiting_since",
    # "decided_at", "note", "reason"}.
    approval: dict[str, Any] | None
    # Each task's node ({id, depends_on, role, owns}, plan order) and the ref its workers are
    # merged into as each passes its gates (null: no task depends on another).
    nodes: list[dict[str, Any]]
    integration: str | None
    has_dependencies: bool
    # executor rq: "unreachable since <UTC>" while the queue to the nodes (Redis) does not answer,
    # so a worker shown running on a node cannot be confirmed (the table says "unknown (queue
    # unreachable)"); null: it answers, or attempts run on this server.
    queue: str | None
    # Its workers' prompt bytes and its shared context block's share of them (null: no prompt rendered).
    prompts: dict[str, Any] | None
    # Each task that runs as candidates, by task id (plan order), its candidates side by side.
    candidates: dict[str, CandidateGroup]
    progress: Progress
    tree: TreeTotals
    performance: Performance
    results: Results
