"""Records of jobs and workers: plain data, no I/O.

The same dicts (``to_dict``) go to disk, to JSON responses and to the report
templates, so there is one shape for a job everywhere.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypedDict, TypeVar

from .config import Isolation
from .config.choice import CandidateSpec
from .config.job import JobConfig
from .config.keys import StrEnum
from .errors import TERMINAL_STATUSES
from .outcomes import (
    ChecksRecord,
    CostBasis,
    Enforced,
    GateResult,
    IntegrationRecord,
    MergeRecord,
    PublishRecord,
    RankingRow,
    Refusal,
    Resolution,
    SelectionRecord,
)

_T = TypeVar("_T")


class JobStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"  # every worker succeeded
    PARTIAL = "partial"  # some workers failed, some succeeded
    FAILED = "failed"  # no worker succeeded, or the job could not start
    CANCELLED = "cancelled"
    # A root job with approval: before_merge whose workers are all done: nothing merged until a
    # person approves (POST /jobs/{id}/approve) or rejects it (delivery/approval.py). Not terminal.
    WAITING = "waiting"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES

    @property
    def at_rest(self) -> bool:
        """Nothing of the job runs: it ended, or it waits for a person (approval)."""
        return self in TERMINAL_JOB_STATUSES or self is JobStatus.WAITING


TERMINAL_JOB_STATUSES = frozenset(JobStatus(status) for status in TERMINAL_STATUSES)


class WorkerStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    RECURSIVE_SUCCESS = "recursive_success"  # succeeded, and its child jobs completed
    CHILD_INCOMPLETE = "child_incomplete"  # exited 0 (its steps passed), but a child job it started did not complete
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # never started: the job was cancelled or its budget spent first

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_WORKER_STATUSES

    @property
    def ok(self) -> bool:
        """Its own work is done: it exited 0 and passed its after-attempt steps (success,
        recursive_success, child_incomplete). Such a worker's branch may land, a task waiting on it
        starts, and as a candidate it is eligible. ``child_incomplete`` is among them: what its
        child jobs did achieve was merged into its branch already, and what they missed is said by
        its status and its job's (``partial``), not by holding back the work it did."""
        return self in (WorkerStatus.SUCCESS, WorkerStatus.RECURSIVE_SUCCESS, WorkerStatus.CHILD_INCOMPLETE)

    @property
    def complete(self) -> bool:
        """Nothing of it is missing: ``ok`` and every child job it started completed (success,
        recursive_success). What a job needs of each task to end ``completed``, and what the
        counts of workers that "succeeded" count."""
        return self in (WorkerStatus.SUCCESS, WorkerStatus.RECURSIVE_SUCCESS)


TERMINAL_WORKER_STATUSES = frozenset(
    {
        WorkerStatus.SUCCESS,
        WorkerStatus.RECURSIVE_SUCCESS,
        WorkerStatus.CHILD_INCOMPLETE,
        WorkerStatus.FAILED,
        WorkerStatus.TIMEOUT,
        WorkerStatus.CANCELLED,
        WorkerStatus.SKIPPED,
    }
)


class FailureClass(StrEnum):
    """Why an attempt failed, as its adapter read it from the CLI's output (or the engine decided)."""

    AUTH = "auth"  # a bad or missing key: never retried
    BAD_REQUEST = "bad_request"  # the request itself is wrong: never retried
    TRANSIENT = "transient"  # a rate limit, an overload, a 5xx: retried on its own budget, after a wait
    NETWORK = "network"  # its sandbox's proxy refused it a connection (its network record says so): never retried
    FEEDBACK = "feedback"  # a step asked for another attempt with feedback (its partial work is kept)


class EndReason(StrEnum):
    """How an attempt ended."""

    EXIT = "exit"  # ran to completion, any exit code
    SIGNAL = "signal"  # killed by a signal nobody here sent
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    CAP = "cap"  # a resource cap (memory, processes, log, disk)
    SPAWN_ERROR = "spawn_error"  # could not start
    LOST = "lost"  # its state is unknown (a restart found no trace of how it ended)


@dataclass(slots=True)
class Attempt:
    """One run of a worker's command. A worker has one per try."""

    number: int
    started_at: float
    ended_at: float | None = None
    pid: int | None = None  # the shim's pid: the worker's process group and session
    pid_start: str | None = None  # the kernel's start time of ``pid``, to re-adopt it after a restart
    exit_code: int | None = None  # None while running, or when killed by a signal
    signal: int | None = None  # the signal that ended the process, if any
    end_reason: EndReason | None = None  # how it ended; None while it runs
    # Which rung of the kill ladder ended it: None (it exited by itself),
    # "SIGINT", "SIGTERM" or "SIGKILL".
    kill_rung: str | None = None
    log_offset: int = 0  # byte offset in the worker log where this attempt starts
    failure_class: FailureClass | None = None  # None: it succeeded, or why is not known
    retry_after: float | None = None  # seconds the service asked to wait, when the CLI said
    # A worktree worker's: the commit this attempt started from (checkouts/worktree.py: after a failed
    # attempt the next one starts from the same checkpoint, or from that attempt's work when kept).
    checkpoint: str | None = None
    # The node that ran it (distributed.executor rq; None: this server ran it), and the
    # Redis id of the attempt there (re-adopted by it after a server restart).
    node: str | None = None
    # Which enforcement held each cap (outcomes.Enforced; its dict: {"memory", "processes", "log", "disk":
    # "cgroup v2" | "cgroup v1" | "file-size limit" | "sampled" | "no cap", "file_size": bytes}); None: not known.
    enforced: Enforced | None = None
    # What it ran, for the run's record (audit/record.py): the prompt as its size and digest, secrets masked.
    argv: list[str] | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        # Its fields are scalars (and a frozen Enforced): a dict of them is dataclasses.asdict without
        # the deep copy (asdict was the engine's largest CPU cost per worker).
        data = _fields_of(self)
        data["enforced"] = self.enforced.to_dict() if self.enforced is not None else None
        data["duration"] = self.duration
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        known = _known_fields(cls, data)
        if isinstance(known.get("enforced"), dict):
            known["enforced"] = Enforced.from_dict(known["enforced"])
        if known.get("end_reason") is not None:
            known["end_reason"] = EndReason(known["end_reason"])
        if known.get("failure_class") is not None:
            known["failure_class"] = FailureClass(known["failure_class"])
        return cls(**known)


@dataclass(slots=True)
class Round:
    """One continue round of a finished worker (engine/continuing.py): the user's feedback, how the
    CLI went on (its resumed session, or a prompt holding the previous outcome), how the round
    ended, its cost, and what it left: its commit on the worker's branch and, when it passed its
    gates, the result branch's new commit."""

    number: int  # 2 for the first continue (round 1 is the worker's first run)
    feedback: str
    started_at: float
    first_attempt: int  # the number of the round's first attempt in ``WorkerRecord.attempts``
    resumed_session: str | None = None  # the CLI session it resumed; None: a new session with a prompt
    state: str = WorkerStatus.RUNNING.value  # running, then the round's worker status (success, failed, timeout, cancelled)
    ended_at: float | None = None
    exit_reason: str | None = None
    cost_usd: float | None = None  # what the round's attempts cost (also in the worker's cost_usd)
    commit: str | None = None  # the worker branch's tip after the round
    result_commit: str | None = None  # the result branch's new commit with the round's work; None: not merged
    merge_note: str | None = None  # what happened to the result branch, in words
    # When the worker had ended before this round (its previous round's end): the time between it and
    # ``started_at`` is no work of the worker's, left out of ``WorkerRecord.duration``. None: not recorded.
    previous_ended_at: float | None = None
    # Sent back by the job itself for breaking its merged result (engine/continuing.py ``send_back``),
    # not by a person: these count against ``gates_retry``, across a server's restarts.
    sent_back: bool = False

    @property
    def duration(self) -> float | None:
        """The round's own seconds, from its start to its end (None while it runs)."""
        return None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)

    @property
    def subject(self) -> str:
        """What the round's commits say they are: ``continue: <the feedback's first line>``."""
        first = next((line.strip() for line in self.feedback.splitlines() if line.strip()), "")
        return f"continue: {first}"

    @property
    def idle_before(self) -> float:
        """The seconds the worker stood finished before this round started (0: not known)."""
        if self.previous_ended_at is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.started_at - self.previous_ended_at)

    def to_dict(self) -> dict[str, Any]:
        data = _fields_of(self)
        data["duration"] = self.duration
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Round:
        return cls(**_known_fields(cls, data))


class WorkerFields(TypedDict, total=False):
    """What a worker's record takes from its task's node (``TaskNode.worker_fields``): WorkerRecord's
    fields of these names (one left out keeps the record's default)."""

    task_id: str
    depends_on: list[str]
    role: str | None
    owns: list[str]
    model: str | None
    candidate: int | None
    timeout: float | None


@dataclass
class TaskNode:
    """A subtask's place in its job's graph: its id, the ids it waits on, its role and
    the path globs it owns. Plain-string tasks get ids ``t1``, ``t2``... and no dependencies."""

    id: str
    depends_on: list[str] = field(default_factory=list)
    role: str | None = None
    owns: list[str] = field(default_factory=list)
    # What its worker runs, decided at submission from its role (roles.apply_roles): the worker kind
    # (None: the job's) and the model (None: orchestrator.model; "": the CLI's own default).
    kind: str | None = None
    model: str | None = None
    # An explicit task's own candidates (config/choice.py's CandidateSpec) before the plan is
    # expanded (selection/candidates.py); after it, each candidate is a node of its own with the task's id,
    # its 1-based ``candidate`` number, and its kind, model, ``timeout`` (None: the job's) and
    # ``context`` (a JSON object for its prompt). ``candidate`` None: the task runs once.
    candidates: list[CandidateSpec] = field(default_factory=list)
    candidate: int | None = None
    timeout: float | None = None
    context: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "depends_on": list(self.depends_on),
            "role": self.role,
            "owns": list(self.owns),
            "kind": self.kind,
            "model": self.model,
            "candidates": [c.to_dict() for c in self.candidates],
            "candidate": self.candidate,
            "timeout": self.timeout,
            "context": dict(self.context) if self.context is not None else None,
        }

    def worker_fields(self) -> WorkerFields:
        """What its worker's record carries of it (WorkerRecord.task_id, depends_on, role, owns, model;
        its kind, when its role chose one, replaces the job's in ``Workspace.pending_worker``)."""
        return {
            "task_id": self.id,
            "depends_on": list(self.depends_on),
            "role": self.role,
            "owns": list(self.owns),
            "model": self.model,
            "candidate": self.candidate,
            "timeout": self.timeout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskNode:
        known = _known_fields(cls, data)
        known["candidates"] = [CandidateSpec.from_dict(c) for c in known.get("candidates") or []]
        return cls(**known)


@dataclass(slots=True)
class WorkerRecord:
    """One subtask run as a subprocess. Changed only by the engine."""

    job_id: str
    root_id: str
    name: str  # "worker_2_1": unique within its depth, shows its ancestry
    index: int  # 1-based position in its job's plan
    depth: int
    task: str
    kind: str  # the worker kind (adapter) that ran it: "simulated", "command", "claude", ...
    status: WorkerStatus = WorkerStatus.PENDING
    attempts: list[Attempt] = field(default_factory=list)
    created_at: float = 0.0
    started_at: float | None = None  # first attempt's start
    ended_at: float | None = None  # when it became terminal
    # Why it is still pending when the count limits would let it start (process/admission.py: "waiting for
    # memory: 300 MB needed, 120 MB free ..."); None once it starts, or while nothing but a slot holds it.
    waiting: str | None = None
    exit_reason: str = ""  # one human line: "exit code 0", "timed out after 30s (SIGKILL)", ...
    error: str | None = None  # what went wrong, for failed/timeout workers
    failure_class: FailureClass | None = None  # its last attempt's (see Attempt); None if it succeeded
    output: str = ""  # the result text (an AI's answer, or the tail of the command's output)
    files_created: list[str] = field(default_factory=list)  # relative to the worker dir
    # A worktree worker's (git isolation): its branch, its tip once its work was committed, each
    # changed file ({"path", "change"}) and git's diffstat since its base ("no changes" if none).
    branch: str | None = None
    commit: str | None = None
    files_changed: list[dict[str, str]] = field(default_factory=list)
    diffstat: str | None = None
    # Its last attempt left its checkout as the worker found it (checkout.Changes.unchanged: a
    # worktree's tree equals the one its first attempt started from; a folder holds no file).
    # None: not known (it never ran, or its changes were never read). Never merged.
    no_changes: bool | None = None
    # A worktree worker's port, reserved for it from git.port_range (its ORCHESTRATOR_PORT; checkouts/bootstrap.py).
    port: int | None = None
    child_job_ids: list[str] = field(default_factory=list)
    # The child jobs an attempt of its reused instead of starting them again (a retry's spawn of the
    # request an earlier attempt spawned; engine/submission.py): child job id -> the latest such attempt.
    reused_children: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    # "reported" (its CLI said) or "estimated" (from a price table: workers/costs.py); None: no cost.
    cost_basis: CostBasis | None = None
    cost_note: str | None = None  # "cost unknown (model X)": it reported tokens, and no price is known
    tokens_in: int | None = None
    tokens_out: int | None = None
    peak_rss: int | None = None  # bytes: the most its whole process tree held at once (sampled)
    peak_processes: int | None = None  # the most processes its tree had at once (sampled)
    # user+system CPU seconds of its process tree over every attempt, reaped descendants
    # included (sampled, so at most one monitor interval short); None when never sampled
    cpu_seconds: float | None = None
    log_path: str = ""  # relative to the root job folder: "logs/depth_0_worker_1.log"
    dir_path: str = ""  # relative to the root job folder: "depth_0/worker_1"
    goal: str | None = None  # its job's goal (JobRecord.goal), which ``task`` is part of
    # Its task's node in the job's graph (TaskNode), copied here for every reader.
    task_id: str | None = None
    depends_on: list[str] = field(default_factory=list)  # task ids it waits on (merged first)
    role: str | None = None
    owns: list[str] = field(default_factory=list)
    model: str | None = None  # its role's model (TaskNode.model): None: orchestrator.model; "": the CLI's default
    reported_model: str | None = None  # the model its CLI said its latest attempt ran (None: not said)
    # Its quality gates' results, in order (records.GateResult; status: passed | failed | no_tests | timeout |
    # not_started | crashed | cancelled).
    gates: list[GateResult] = field(default_factory=list)
    gated_commit: str | None = None  # the commit its gates judged: the only one of its that may be merged
    trespass: list[str] = field(default_factory=list)  # paths its diff touched outside what it may (ownership)
    # What after-attempt steps found, by step name (a plugin step's ``ctx.updates.found``; quality/steps.py).
    findings: dict[str, str] = field(default_factory=dict)
    # What the system refused it, from records its sandbox cannot write (workers/refusals.py): the first
    # distinct ones (bounded), and how many in all. A success stays one.
    refusals: list[Refusal] = field(default_factory=list)
    refusals_total: int = 0
    # What its log says it was refused (its CLI's words: "Read-only file system"...), where nothing
    # outside it recorded a refusal: shown as its own words, never counted as refusals.
    said_refused: list[Refusal] = field(default_factory=list)
    said_refused_total: int = 0
    # Its merge into the job's integration branch (a graph job's; records.IntegrationRecord: the branch's
    # tip after it, whether it merged, when, why not, the conflicts); None: not merged yet.
    integrated: IntegrationRecord | None = None
    unblocked: list[str] = field(default_factory=list)  # task ids its end let start
    # One of its task's candidates (1-based; None: the task runs once). ``selected``:
    # None until its task's selection is made (JobRecord.selections), then whether it won (only a
    # winner is merged). ``score``: its row of that selection (outcomes.RankingRow). ``timeout``: its
    # own attempt timeout (None: the job's).
    candidate: int | None = None
    selected: bool | None = None
    score: RankingRow | None = None
    timeout: float | None = None
    # The bytes of its rendered prompt, how many of them are its job's shared
    # context block (workers/sharedcontext.py; 0: none), and the prompt-cache reads a model API reported
    # (the anthropic kind's usage.cache_read_input_tokens; None: not reported).
    prompt_bytes: int | None = None
    shared_prompt_bytes: int | None = None
    tokens_cache_read: int | None = None
    node: str | None = None  # the node its latest attempt runs or ran on (None: this server)
    # How its latest attempt was confined: "bubblewrap" or "landlock" (process/sandbox.py), or "none" (unconfined: the
    # job's notes say why); None: no attempt started.
    sandbox: str | None = None
    # The CLI's conversation id its last attempt reported (claude's ``session_id``): what a continue
    # round resumes (engine/continuing.py). Data the worker's CLI printed, checked before it is used.
    session_id: str | None = None
    # Its continue rounds after its first run, oldest first (engine/continuing.py).
    rounds: list[Round] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Unique within a root tree: the log's stem, ``depth_<d>_<name>``."""
        return f"depth_{self.depth}_{self.name}"

    @property
    def integration_resolution(self) -> Resolution | None:
        """``merge_strategy: resolve``: the resolver's work on the conflict of its merge into its job's
        integration branch (a graph job's). Its cost is its job's, never in ``cost_usd`` (what its own runs cost)."""
        return self.integrated.integrated.resolution if self.integrated is not None else None

    @property
    def running_round(self) -> Round | None:
        """Its continue round that runs now, if one does."""
        last = self.rounds[-1] if self.rounds else None
        return last if last is not None and last.state == WorkerStatus.RUNNING.value else None

    @property
    def duration(self) -> float | None:
        """Its working seconds: from its start to its end, less the time it stood finished between
        its first run and each continue round (a round days later adds its own time, not the days)."""
        if self.started_at is None:
            return None
        end = self.ended_at
        if end is None:
            return None
        rounds = self.rounds  # (none for most: a report reads 10,000 durations)
        return max(0.0, end - self.started_at - (sum(r.idle_before for r in rounds) if rounds else 0.0))

    def to_dict(self) -> dict[str, Any]:
        data = _fields_of(self)  # scalars, plus the lists copied below: nothing shared with the record
        data["status"] = self.status.value
        data["attempts"] = [a.to_dict() for a in self.attempts]
        data["files_created"] = list(self.files_created)
        data["files_changed"] = [dict(f) for f in self.files_changed]
        data["child_job_ids"] = list(self.child_job_ids)
        if self.reused_children:
            data["reused_children"] = dict(self.reused_children)
        else:  # none: left out, so a record is what it was before children were reused
            del data["reused_children"]
        data["depends_on"], data["owns"] = list(self.depends_on), list(self.owns)
        data["gates"] = [g.to_dict() for g in self.gates]
        data["trespass"], data["unblocked"] = list(self.trespass), list(self.unblocked)
        if self.refusals_total:
            data["refusals"] = [r.to_dict() for r in self.refusals]
        else:  # none: left out, so a record without refusals is what it was before they were read
            del data["refusals"], data["refusals_total"]
        if self.said_refused_total:
            data["said_refused"] = [r.to_dict() for r in self.said_refused]
        else:
            del data["said_refused"], data["said_refused_total"]
        if self.findings:
            data["findings"] = dict(self.findings)
        else:  # none: left out, so a record is what it was before steps could record findings
            del data["findings"]
        if self.reported_model is None:  # not said: left out, so a record is what it was before models were read
            del data["reported_model"]
        data["integrated"] = self.integrated.to_dict() if self.integrated is not None else None
        if self.rounds:
            data["rounds"] = [r.to_dict() for r in self.rounds]
        else:  # none: left out, so a worker never continued has the record it had before rounds existed
            del data["rounds"]
        if self.session_id is None:
            del data["session_id"]
        data["score"] = self.score.to_dict() if self.score is not None else None
        data["duration"] = self.duration
        data["worker_id"] = self.name
        return data

    def copy(self) -> WorkerRecord:
        """A copy safe to read while the engine changes the original (much cheaper than to_dict)."""
        dup = _shallow(self)
        dup.attempts = [_shallow(a) for a in self.attempts]
        dup.files_created = list(self.files_created)
        dup.files_changed = list(self.files_changed)
        dup.child_job_ids = list(self.child_job_ids)
        dup.reused_children = dict(self.reused_children)
        dup.findings = dict(self.findings)
        dup.gates, dup.trespass, dup.unblocked = list(self.gates), list(self.trespass), list(self.unblocked)
        dup.refusals, dup.said_refused = list(self.refusals), list(self.said_refused)
        dup.rounds = [_shallow(r) for r in self.rounds]
        return dup

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerRecord:
        known = _known_fields(cls, data)
        known["status"] = WorkerStatus(known.get("status", "pending"))
        known["cost_basis"] = CostBasis.read(known.get("cost_basis"))
        if known.get("failure_class") is not None:
            known["failure_class"] = FailureClass(known["failure_class"])
        known["attempts"] = [Attempt.from_dict(a) for a in known.get("attempts", [])]
        known["gates"] = [GateResult.from_dict(g) for g in known.get("gates") or []]
        known["refusals"] = [Refusal.from_dict(r) for r in known.get("refusals") or []]
        known["said_refused"] = [Refusal.from_dict(r) for r in known.get("said_refused") or []]
        if any(not r.recorded for r in known["refusals"]):  # a record from when its log's words were counted
            own = [r for r in known["refusals"] if not r.recorded]
            known["refusals"] = [r for r in known["refusals"] if r.recorded]
            total = int(known.get("refusals_total") or 0)
            known["refusals_total"] = len(known["refusals"])
            known["said_refused"] += own
            known["said_refused_total"] = int(known.get("said_refused_total") or 0) + max(
                len(own), total - len(known["refusals"])
            )
        known["rounds"] = [Round.from_dict(r) for r in known.get("rounds") or []]
        if known.get("integrated") is not None:
            known["integrated"] = IntegrationRecord.from_dict(known["integrated"])
        if known.get("score") is not None:
            known["score"] = RankingRow.from_dict(known["score"])
        return cls(**known)


class ApprovalDecision(StrEnum):
    """What a person (or a cancel) decides for a job waiting for approval (delivery/approval.py)."""

    APPROVE = "approve"  # it lands, with the status its workers earned
    REJECT = "reject"  # nothing merged, it ends failed
    CANCEL = "cancel"  # nothing merged, it ends cancelled (a cancel of the waiting job; no link)


class ApprovalState(StrEnum):
    """Where a root job's approval stands."""

    WAITING = "waiting"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Approval:
    """A root job's approval (``approval: before_merge``, delivery/approval.py): its ``state``;
    ``earned`` the status its workers earned; ``note`` an approve's, ``reason`` a reject's. Its
    dict (``to_dict``) is the shape on disk and in the API."""

    state: ApprovalState = ApprovalState.WAITING
    earned: str | None = None
    waiting_since: float | None = None
    decided_at: float | None = None
    note: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        known = _known_fields(cls, data)
        known["state"] = ApprovalState(known.get("state", ApprovalState.WAITING))
        return cls(**known)


@dataclass
class JobRecord:
    """One request with its plan and its workers' names. Changed only by the engine."""

    id: str
    root_id: str
    request: str
    depth: int = 0
    parent_job_id: str | None = None
    parent_worker: str | None = None  # name of the worker that started this job
    status: JobStatus = JobStatus.PENDING
    config: JobConfig = field(default_factory=JobConfig)  # effective job config, built once at submission
    tasks: list[str] = field(default_factory=list)  # the plan
    # What every subtask is part of ("Build a REST API" for "Authentication"), from the planner;
    # None when the subtasks stand alone. Records written before it had the goal in each task.
    goal: str | None = None
    planner: str = ""  # "explicit", "heuristic", "ai", ...
    # What the AI planner's CLI call cost, as the CLI reported it (None: no call, or not reported).
    # It counts in the tree's cost and its max_cost_usd budget, like a worker's.
    planner_cost_usd: float | None = None
    planner_tokens_in: int | None = None
    planner_tokens_out: int | None = None
    worker_names: list[str] = field(default_factory=list)
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. limits lowered to the server's
    child_seq: int = 0  # root only: last child job number handed out in this tree
    # How this job's workers' branches were merged (git isolation): the last merge (records.MergeRecord),
    # into the result branch (root) or the parent worker's branch (child job).
    merge: MergeRecord | None = None
    # A child job in worktree isolation: its parent worker's commit when it was spawned (its work
    # committed then, engine/nesting.py), where the job's workers branch from.
    start_commit: str | None = None
    # A child job: the digest of the spawn request that started it (its request, tasks and config:
    # engine/submission.spawn_key) and its parent worker's attempt that sent it. A later attempt of that
    # worker sending the same request gets this job back instead of a new one.
    spawn_key: str | None = None
    parent_attempt: int | None = None
    # Each task's node (TaskNode), in plan order beside ``tasks``; empty in records written
    # before graphs (every task independent). ``integration``: the ref a graph job's workers are
    # merged into as each passes its gates, and branch from (a root's result branch; None: no graph).
    nodes: list[TaskNode] = field(default_factory=list)
    integration: str | None = None
    # Each task with candidates, by task id, once its winner is chosen (engine/choosing.py;
    # outcomes.SelectionRecord: the winner, why, the ranking, the judge's bracket and cost).
    selections: dict[str, SelectionRecord] = field(default_factory=dict)
    # A root job with approval: before_merge once its workers are done (delivery/approval.py);
    # None: never waited.
    approval: Approval | None = None
    # A root's: the digest of its signed RECORD.json (audit/record.py), "sha256:<hex>"; None: not written.
    record_digest: str | None = None
    # A root's last publishing of its result (delivery/publishing.py; git.push, git.pull_request:
    # outcomes.PublishRecord); replaced whole, never changed in place. None: never published.
    publish: PublishRecord | None = None
    # A root's watch of its pull request's checks (engine/pr_checks.py; git.check_rounds): what is
    # watched and each round a failed check sent back to a worker. None: not watched.
    checks: ChecksRecord | None = None

    @property
    def is_root(self) -> bool:
        return self.parent_job_id is None

    @property
    def cancel_requested(self) -> bool:
        """A cancel (the API's, the command line's, a shutdown's) is what stops it: ``error`` says
        "cancelled", where a graph's ``on_failure: stop`` says why it stopped instead."""
        return self.error == EndReason.CANCELLED

    @property
    def judge_cost_usd(self) -> float | None:
        """What its selections' AI judge calls cost (None: no judge reported a cost)."""
        costs = [s.cost_usd for s in self.selections.values() if s.cost_usd is not None]
        return sum(costs) if costs else None

    @property
    def resolver_cost_usd(self) -> float | None:
        """What the resolver workers of its last merge cost (``merge_strategy: resolve``; a child job's
        merge into its parent worker's branch holds its own); None: none reported or estimated one.
        A graph job's integration resolutions are its workers' records' (``resolver_cost``)."""
        costs = (
            [r.cost_usd for r in self.merge.outcome.resolutions if r.cost_usd is not None]
            if self.merge and self.merge.outcome
            else []
        )
        return sum(costs) if costs else None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["status"] = self.status.value
        data["config"] = self.config.to_dict()
        for name in ("tasks", "worker_names", "notes"):
            data[name] = list(data[name])
        data["merge"] = self.merge.to_dict() if self.merge is not None else None
        data["nodes"] = [n.to_dict() for n in self.nodes]
        data["selections"] = {k: v.to_dict() for k, v in self.selections.items()}
        data["approval"] = self.approval.to_dict() if self.approval is not None else None
        data["publish"] = self.publish.to_dict() if self.publish is not None else None
        data["checks"] = self.checks.to_dict() if self.checks is not None else None
        if data["checks"] is None:  # never watched: the record as it was before the watch existed
            del data["checks"]
        for name in ("spawn_key", "parent_attempt"):  # a root's (or an older child's): left out, the record as it was
            if data[name] is None:
                del data[name]
        data["duration"] = self.duration
        return data

    def copy(self) -> JobRecord:
        dup = _shallow(self)
        dup.tasks = list(self.tasks)
        dup.worker_names = list(self.worker_names)
        dup.notes = list(self.notes)
        dup.nodes = list(self.nodes)
        dup.selections = dict(self.selections)
        return dup

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = _known_fields(cls, data)
        known["status"] = JobStatus(known.get("status", "pending"))
        known["config"] = JobConfig.from_dict(known.get("config") or {})  # on disk: a dict, maybe missing newer keys
        known["nodes"] = [TaskNode.from_dict(n) for n in known.get("nodes") or []]
        known["selections"] = {k: SelectionRecord.from_dict(v) for k, v in (known.get("selections") or {}).items()}
        if known.get("merge") is not None:
            known["merge"] = MergeRecord.from_dict(known["merge"])
        if known.get("approval") is not None:
            known["approval"] = Approval.from_dict(known["approval"])
        if known.get("publish") is not None:
            known["publish"] = PublishRecord.from_dict(known["publish"])
        if known.get("checks") is not None:
            known["checks"] = ChecksRecord.from_dict(known["checks"])
        return cls(**known)


def resolutions_of(job: JobRecord, workers: Iterable[WorkerRecord]) -> list[tuple[str, Resolution]]:
    """Every conflict a resolver worker was asked to resolve for ``job`` (``merge_strategy: resolve``),
    as (stage, resolution): its graph's integration ("integration", its own ``workers``' records, in
    plan order), then its last merge's ("merge"). The one list the views show."""
    mine = sorted((w for w in workers if w.job_id == job.id), key=lambda w: w.index)
    found = [("integration", r) for w in mine if (r := w.integration_resolution) is not None]
    outcome = job.merge.outcome if job.merge is not None else None
    return found + [("merge", r) for r in (outcome.resolutions if outcome is not None else ())]


def tree_resolutions(jobs: Iterable[JobRecord], workers: Iterable[WorkerRecord]) -> list[Resolution]:
    """Every conflict a resolver worker was asked to resolve in a tree, each once: each job's last
    merge's, then each worker's integration's (a graph job's)."""
    found = [r for j in jobs if j.merge is not None and j.merge.outcome is not None for r in j.merge.outcome.resolutions]
    return found + [r for w in workers if (r := w.integration_resolution) is not None]


def resolver_cost(jobs: Iterable[JobRecord], workers: Iterable[WorkerRecord]) -> float | None:
    """What the resolver workers of ``jobs`` cost, counted once (``tree_resolutions``); None: none known."""
    costs = [r.cost_usd for r in tree_resolutions(jobs, workers) if r.cost_usd is not None]
    return sum(costs) if costs else None


def delivered(job: JobRecord | None, record: WorkerRecord, status: WorkerStatus | None = None) -> bool:
    """A task's work is delivered to those that wait on it once it succeeded and, in a job with an
    integration branch (a graph in worktrees), was merged there (a candidate: once selected): the one rule engine/scheduling.py
    starts dependents by and the views (reports.taskgraph) show. ``status``: the one it is
    settling with, when its record does not have it yet."""
    if not (status or record.status).ok:
        return False
    if record.candidate is not None and not record.selected:  # a candidate delivers only once chosen
        return False
    if job is None or job.integration is None:
        return True
    return record.integrated is not None and record.integrated.merged


def changed_nothing(job: JobRecord, workers: list[WorkerRecord]) -> bool:
    """A worktree job at rest whose every worker that ran (of ``workers``, its own) left its
    checkout unchanged: its result is its base, whatever its status says (quick-start's exit
    code 6, the summary's "no worker changed anything")."""
    ran = [w for w in workers if w.job_id == job.id and w.attempts]
    return job.config.isolation == Isolation.WORKTREE and job.status.at_rest and bool(ran) and all(w.no_changes for w in ran)


def _shallow(record: _T) -> _T:
    """A shallow copy of a dataclass instance: copy.copy without the copy protocol's overhead
    (snapshots of a tree copy every record, on every status request)."""
    cls = type(record)
    if hasattr(record, "__dict__"):
        dup = object.__new__(cls)
        dup.__dict__.update(record.__dict__)
        return dup
    # Slotted (a worker and its attempts, 10,000s of them): its fields given to its __init__ in
    # order (no default factory runs for a field given); a few us a record more than the dict copy.
    getter = _GETTERS.get(cls) or _GETTERS.setdefault(cls, _init_getter(cls))
    copied: _T = cls(*getter(record))
    return copied


def _init_getter(cls: Any) -> Callable[[Any], Any]:
    """``record -> its fields in __init__'s order``, for a class whose __init__ takes every field
    and does nothing else: a field left out of it, or a __post_init__, would make that a new record."""
    fields = dataclasses.fields(cls)
    if any(not f.init for f in fields) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: _shallow copies through __init__, which must take every field and do nothing else")
    return operator.attrgetter(*(f.name for f in fields))


# The records there are many of (WorkerRecord, Attempt) have __slots__: 53 fields in a
# per-instance dict (past 30 keys Python does not share a class's key table) took 1.6 KB a
# record, the slots 0.4 KB, twice per worker at the end of a job (the record and its copy).
_GETTERS: dict[type, Callable[[Any], Any]] = {}
_DICT_MAKERS: dict[type, Callable[[Any], dict[str, Any]]] = {}


def _dict_maker(cls: type) -> Callable[[Any], dict[str, Any]]:
    """``record -> {field: value}`` in field order, as a generated function (a dict display of
    the slots is the fastest way to build it without a ``__dict__`` to copy)."""
    names = [f.name for f in dataclasses.fields(cls)]
    body = ", ".join(f"{name!r}: r.{name}" for name in names)
    made: dict[str, Any] = {}
    exec(f"def fields_of(r):\n    return {{{body}}}\n", {}, made)  # noqa: S102 - field names only
    return _DICT_MAKERS.setdefault(cls, made["fields_of"])


def _fields_of(record: Any) -> dict[str, Any]:
    """A slotted dataclass's fields as a dict, in field order (what ``dict(obj.__dict__)`` gave)."""
    cls = type(record)
    return (_DICT_MAKERS.get(cls) or _dict_maker(cls))(record)


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Drop keys a record does not have (derived ones such as ``duration``)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:  # once per class: ``dataclasses.fields`` walks every field (a worker's record has dozens)
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return {k: v for k, v in data.items() if k in names}


_FIELD_NAMES: dict[type, frozenset[str]] = {}
