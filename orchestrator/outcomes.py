"""Records that travel between features, as dataclasses: what the records of models.py hold
(``WorkerRecord.gates``, ``WorkerRecord.integrated``, ``JobRecord.merge``), kept here, below every
folder, so models.py can name them. Each one's ``to_dict`` is the shape on disk and in the API;
``from_dict`` loads what ``to_dict`` (and the code before these classes) wrote.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .config.keys import StrEnum


class GateStatus(StrEnum):
    """How a gate's run ended (quality/gates.py)."""

    PASSED = "passed"
    FAILED = "failed"  # it ran and exited non-zero
    TIMEOUT = "timeout"
    NOT_STARTED = "not_started"  # its command was not found, or could not start
    CRASHED = "crashed"  # the gate itself broke (the step raised)
    CANCELLED = "cancelled"
    NO_TESTS = "no_tests"  # it exited 0 but ran no test (quality/testruns.py)


PASSED, FAILED, TIMEOUT, NOT_STARTED = GateStatus.PASSED, GateStatus.FAILED, GateStatus.TIMEOUT, GateStatus.NOT_STARTED
CRASHED, CANCELLED, NO_TESTS = GateStatus.CRASHED, GateStatus.CANCELLED, GateStatus.NO_TESTS


class AfterRestart(StrEnum):
    """What a server's restart did to a stage of a worker's or a job's (workspace/stages.py)."""

    RERUN = "rerun"  # the server stopped during it: it ran once more
    REUSED = "reused"  # it had reached its verdict before the stop: taken as it was, not run again


class CostBasis(StrEnum):
    """Where a worker's (or a resolver attempt's) ``cost_usd`` comes from."""

    REPORTED = "reported"  # the CLI said what its run cost (claude, opencode)
    ESTIMATED = "estimated"  # computed from a price table: here (workers/costs.py), by aider, or by the anthropic kind

    @classmethod
    def read(cls, value: object) -> CostBasis | None:
        """A record's value as one (None: no cost, or a value no version wrote)."""
        return cls(value) if isinstance(value, str) and value in cls._value2member_map_ else None


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate's run: an entry of ``WorkerRecord.gates`` (``to_dict``, the shape on disk and in the
    API; see the module docstring)."""

    name: str
    required: bool
    status: GateStatus
    passed: bool
    exit_code: int | None
    duration: float
    log_path: str
    commit: str | None
    reason: str
    # The end of its output (gate_output.py) where it did not pass; None: it passed, or it was
    # recorded before tails were kept.
    output_tail: str | None = None
    # Set when a server's restart came between its start and the worker's end: ``rerun`` (it was
    # cut off and ran once more) or ``reused`` (its verdict from before the stop; not run again).
    restart: AfterRestart | None = None

    def to_dict(self) -> dict[str, Any]:
        """Its JSON shape; ``output_tail`` and ``restart`` only where set (the records before them
        stay byte for byte)."""
        found = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for optional in ("output_tail", "restart"):
            if found[optional] is None:
                del found[optional]
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(
            name=data["name"],
            required=bool(data.get("required", True)),
            status=GateStatus(data.get("status") or CRASHED),
            passed=bool(data.get("passed")),
            exit_code=data.get("exit_code"),
            duration=data.get("duration") or 0.0,
            log_path=data.get("log_path") or "",
            commit=data.get("commit"),
            reason=data.get("reason") or "",
            output_tail=data.get("output_tail"),
            restart=AfterRestart(data["restart"]) if data.get("restart") in tuple(AfterRestart) else None,
        )


# -- caps (process/cgroups.py) ---------------------------------------------------------------


class Enforcement(str, Enum):
    """How a cap was held for an attempt (the record says which)."""

    CGROUP_V2 = "cgroup v2"  # the kernel, through a v2 cgroup
    CGROUP_V1 = "cgroup v1"  # the kernel, through a v1 hierarchy
    FILE_SIZE = "file-size limit"  # the kernel's RLIMIT_FSIZE (a file past it is refused)
    SAMPLED = "sampled"  # the monitor's readings every workers.monitor_interval
    NONE = "no cap"  # the setting is 0

    @property
    def kernel(self) -> bool:
        return self in (Enforcement.CGROUP_V2, Enforcement.CGROUP_V1, Enforcement.FILE_SIZE)


@dataclass(frozen=True)
class Enforced:
    """Which enforcement held each cap of one attempt; ``file_size``: its RLIMIT_FSIZE in bytes.
    ``Attempt.enforced`` (process/cgroups.py decides it; a node's renewals carry its dict)."""

    memory: Enforcement = Enforcement.SAMPLED
    processes: Enforcement = Enforcement.SAMPLED
    log: Enforcement = Enforcement.SAMPLED
    disk: Enforcement = Enforcement.SAMPLED
    file_size: int = 0

    def to_dict(self) -> dict[str, str | int]:
        return {
            "memory": self.memory.value,
            "processes": self.processes.value,
            "log": self.log.value,
            "disk": self.disk.value,
            "file_size": self.file_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Enforced:
        def get(key: str) -> Enforcement:
            try:
                return Enforcement(str(data.get(key)))
            except ValueError:
                return Enforcement.SAMPLED

        size = data.get("file_size")
        return cls(get("memory"), get("processes"), get("log"), get("disk"), size if isinstance(size, int) else 0)


# -- merges (git/merging.py) ------------------------------------------------------------------


class RefusalKind(str, Enum):
    """What a refusal of a worker tells of (workers/refusals.py)."""

    READ_ONLY = "read-only"  # a write to a path its sandbox shows read-only (EROFS)
    PERMISSION = "permission"  # "Permission denied" / "Operation not permitted" on a path outside its own folders
    GIT_REF = "git-ref"  # a ref update git could not make (its sandbox holds the user's refs read-only)
    ORCHESTRATOR = "orchestrator"  # the orchestrator refused to take something of its sandbox (an object, a branch move)
    NETWORK = "network"  # the proxy refused a connection (``path``: HOST:PORT), or a program found no route out


@dataclass(frozen=True, slots=True)
class Refusal:
    """One thing the system refused a worker: an entry of ``WorkerRecord.refusals``. ``path``: the
    absolute path the line names (None: none); ``line``: the line, cut short. ``recorded``: from a
    record the worker cannot write (its proxy's, the orchestrator's), listed first; else read from
    the worker's own log (what its CLI printed of the sandbox's refusals: its word, not the sandbox's)."""

    kind: RefusalKind
    path: str | None
    line: str
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "path": self.path, "line": self.line, "recorded": self.recorded}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Refusal:
        return cls(
            kind=RefusalKind(data["kind"]),
            path=data.get("path"),
            line=str(data.get("line") or ""),
            recorded=bool(data.get("recorded")),
        )


def refusal_line(refusals: list[Refusal] | list[dict[str, Any]], total: int, limit: int = 3) -> str:
    """One line for a surface (a record's refusals, or their dicts): ``2 refused: read-only
    /home/u/x; git-ref /repo/.git/refs/heads/main.lock``; "" for none."""
    if not total:
        return ""
    rows = [r.to_dict() if isinstance(r, Refusal) else r for r in refusals[:limit]]
    parts = [f"{r['kind']} {r['path']}" if r.get("path") else f"{r['kind']}: {str(r.get('line'))[:80]}" for r in rows]
    more = f" and {total - len(parts)} more" if total > len(parts) else ""
    return f"{total} refused: " + "; ".join(parts) + more


def said_line(said: list[Refusal] | list[dict[str, Any]], total: int, limit: int = 3) -> str:
    """One line for what a worker's log says it was refused (its own words, never counted as a refusal:
    workers/refusals.py): ``its log says (its own words): read-only /etc/x; network: ... (2 lines)``; "" for none."""
    if not total:
        return ""
    rows = [r.to_dict() if isinstance(r, Refusal) else r for r in said[:limit]]
    parts = [f"{r['kind']} {r['path']}" if r.get("path") else f"{r['kind']}: {str(r.get('line'))[:80]}" for r in rows]
    more = f" and {total - len(parts)} more" if total > len(parts) else ""
    return "its log says (its own words): " + "; ".join(parts) + more + f" ({total} line{'s' if total != 1 else ''})"


@dataclass(frozen=True)
class FileConflict:
    """One conflicting path: the workers whose changes meet there and how many hunks conflict."""

    path: str
    workers: tuple[str, ...]
    hunks: int
    kind: str  # content, add/add, modify/delete, delete/modify
    resolved_by: str = ""  # under theirs: the worker whose side won; under resolve: "resolver", when kept
    predicted: bool = False  # not merged: what would conflict if it were
    refused: bool = False  # under resolve: not merged, the resolver's resolution was refused

    def to_dict(self) -> dict[str, Any]:
        """Its JSON shape; ``refused`` only where true (the records before it stay byte for byte)."""
        found = dataclasses.asdict(self) | {"workers": list(self.workers)}
        if not self.refused:
            del found["refused"]
        return found


@dataclass(frozen=True)
class ResolverAttempt:
    """One run of a resolver worker (delivery/resolving.py): how it ended and why its tree was refused."""

    number: int
    exit_code: int | None  # None: it timed out, was cancelled or never started
    seconds: float
    cost_usd: float | None
    cost_basis: CostBasis | None  # None: no cost
    refused: str  # why its tree was not taken ("" when it was)
    log_path: str  # relative to the job folder

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Resolution:
    """A conflict a resolver worker was asked to resolve under ``merge_strategy: resolve``: the
    worker whose branch conflicted with the result so far, the files, the resolver, each attempt,
    the gates run on the merged tree, and whether the resolution became part of the result."""

    worker: str  # whose branch conflicted
    files: tuple[str, ...]
    resolver: str  # its kind (and model: "claude (sonnet)")
    accepted: bool
    reason: str  # accepted: what it did; refused: why the worker's branch was left out
    attempts: tuple[ResolverAttempt, ...] = ()
    gates: tuple[GateResult, ...] = ()  # of the accepted attempt, or the last one that ran them
    tree: str | None = None  # the resolved tree (accepted only)

    @property
    def cost_usd(self) -> float | None:
        known = [a.cost_usd for a in self.attempts if a.cost_usd is not None]
        return sum(known) if known else None

    @property
    def estimated(self) -> bool:
        return any(a.cost_basis == CostBasis.ESTIMATED for a in self.attempts)

    @property
    def cost_basis(self) -> CostBasis | None:
        """As a worker's: "estimated" when any attempt's cost came from a price table, "reported" when
        its CLI said, None: no cost known."""
        return CostBasis.ESTIMATED if self.estimated else CostBasis.REPORTED if self.cost_usd is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "files": list(self.files),
            "resolver": self.resolver,
            "accepted": self.accepted,
            "reason": self.reason,
            "attempts": [a.to_dict() for a in self.attempts],
            "gates": [g.to_dict() for g in self.gates],
            "tree": self.tree,
            "cost_usd": self.cost_usd,
            "cost_basis": self.cost_basis,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resolution:
        fields = {f.name for f in dataclasses.fields(ResolverAttempt)}
        return cls(
            worker=data["worker"],
            files=tuple(data.get("files") or ()),
            resolver=data.get("resolver") or "",
            accepted=bool(data.get("accepted")),
            reason=data.get("reason") or "",
            attempts=tuple(
                dataclasses.replace(
                    ResolverAttempt(**{k: v for k, v in a.items() if k in fields}), cost_basis=CostBasis.read(a.get("cost_basis"))
                )
                for a in data.get("attempts") or ()
            ),
            gates=tuple(GateResult.from_dict(g) for g in data.get("gates") or ()),
            tree=data.get("tree"),
        )


@dataclass(frozen=True)
class WorkerChanges:
    worker: str
    branch: str
    commit: str
    files: tuple[str, ...]  # changed against the base


@dataclass(frozen=True)
class MergeOutcome:
    strategy: str
    base: str
    result_ref: str
    result_commit: str | None
    merged: tuple[str, ...]
    skipped: tuple[str, ...]
    conflicts: tuple[FileConflict, ...]
    changes: tuple[WorkerChanges, ...]
    command: str  # what the user runs to take the result
    unchanged: tuple[str, ...] = field(default=())  # workers whose work added nothing: not merged
    # ``manual`` on the result branch: the commit an earlier merge had left it at (None: it did not
    # exist), and whether it was removed (False: kept, checked out in a worktree: ``kept_in``).
    previous: str | None = None
    removed: bool = False
    kept_in: str | None = None
    resolutions: tuple[Resolution, ...] = ()  # ``resolve``: each conflict a resolver worker was asked to resolve

    def to_dict(self) -> dict[str, object]:
        """The record's ``merge`` and the API's shape: plain JSON types, tuples as lists."""
        return {
            "strategy": self.strategy,
            "base": self.base,
            "result_ref": self.result_ref,
            "result_commit": self.result_commit,
            "merged": list(self.merged),
            "skipped": list(self.skipped),
            "unchanged": list(self.unchanged),
            "conflicts": [c.to_dict() for c in self.conflicts],
            "changes": [dataclasses.asdict(c) | {"files": list(c.files)} for c in self.changes],
            "command": self.command,
            "previous": self.previous,
            "removed": self.removed,
            "kept_in": self.kept_in,
        } | ({"resolutions": [r.to_dict() for r in self.resolutions]} if self.resolutions else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MergeOutcome:
        return cls(
            strategy=data["strategy"],
            base=data["base"],
            result_ref=data["result_ref"],
            result_commit=data.get("result_commit"),
            merged=tuple(data.get("merged", ())),
            skipped=tuple(data.get("skipped", ())),
            conflicts=tuple(FileConflict(**(c | {"workers": tuple(c["workers"])})) for c in data.get("conflicts", ())),
            changes=tuple(WorkerChanges(**(c | {"files": tuple(c["files"])})) for c in data.get("changes", ())),
            command=data.get("command", ""),
            unchanged=tuple(data.get("unchanged", ())),
            previous=data.get("previous"),
            removed=bool(data.get("removed")),
            kept_in=data.get("kept_in"),
            resolutions=tuple(Resolution.from_dict(r) for r in data.get("resolutions") or ()),
        )


@dataclass(frozen=True, slots=True)
class Into:
    """A landing's fast-forward of the branch the user named (``merge_into``) to the result."""

    branch: str
    moved: bool  # the branch is at the result
    refused: str | None = None  # why not, or None
    command: str | None = None  # what the user runs instead, or None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "moved": self.moved,
            "refused": self.refused,
            "command": self.command,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Into:
        return cls(
            branch=data["branch"],
            moved=bool(data.get("moved")),
            refused=data.get("refused"),
            command=data.get("command"),
            message=data.get("message") or "",
        )


@dataclass(frozen=True, slots=True)
class MergeRecord:
    """``JobRecord.merge``: a job's last merge of its workers' branches, as delivery/landing.py (a
    root, into its result branch) and engine/nesting.py (a child job, into its parent worker's
    branch: ``target``) record it. Its dict is ``MergeOutcome.to_dict()`` plus ``at``, then a
    child's ``target`` or a root's ``into``, ``left_out`` (``[{"worker", "reason"}]``) and a child's
    ``error``; a root's merge that raised before it had an outcome is ``{"strategy", "error", "at"}``."""

    outcome: MergeOutcome | None  # None: the merge failed before it had one (``error`` says why)
    strategy: str
    at: float | None = None  # clock time
    error: str | None = None
    target: str | None = None  # a child job's: the parent worker's branch; None: a root's landing
    into: Into | None = None  # a root's: None unless a branch was named
    left_out: tuple[dict[str, str], ...] = ()  # work kept out of the result, and why

    @classmethod
    def of(cls, outcome: MergeOutcome, at: float, **more: Any) -> MergeRecord:
        return cls(outcome, outcome.strategy, at, **more)

    # Its outcome's facts the readers ask for: None or empty when it failed before it had one.
    @property
    def base(self) -> str | None:
        return self.outcome.base if self.outcome is not None else None

    @property
    def result_ref(self) -> str | None:
        return self.outcome.result_ref if self.outcome is not None else None

    @property
    def result_commit(self) -> str | None:
        return self.outcome.result_commit if self.outcome is not None else None

    @property
    def merged(self) -> tuple[str, ...]:
        return self.outcome.merged if self.outcome is not None else ()

    @property
    def skipped(self) -> tuple[str, ...]:
        return self.outcome.skipped if self.outcome is not None else ()

    @property
    def unchanged(self) -> tuple[str, ...]:
        return self.outcome.unchanged if self.outcome is not None else ()

    @property
    def conflicts(self) -> tuple[FileConflict, ...]:
        return self.outcome.conflicts if self.outcome is not None else ()

    def to_dict(self) -> dict[str, Any]:
        if self.outcome is None:
            return {"strategy": self.strategy, "error": self.error, "at": self.at}
        data: dict[str, Any] = self.outcome.to_dict() | {"at": self.at}
        if self.target is not None:
            data["target"] = self.target
        else:
            data["into"] = self.into.to_dict() if self.into is not None else None
        data["left_out"] = [dict(w) for w in self.left_out]
        if self.error is not None:
            data["error"] = self.error
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MergeRecord:
        """A record as ``to_dict`` wrote it (older ones lack ``unchanged``, ``into``, ``left_out``: defaults)."""
        if "result_ref" not in data:  # a merge that failed before it had an outcome
            return cls(None, data.get("strategy") or "", data.get("at"), error=data.get("error"))
        outcome = MergeOutcome.from_dict(data)
        into = data.get("into")
        return cls(
            outcome,
            outcome.strategy,
            data.get("at"),
            error=data.get("error"),
            target=data.get("target"),
            into=Into.from_dict(into) if into else None,
            left_out=tuple(dict(w) for w in data.get("left_out") or ()),
        )


@dataclass(frozen=True)
class Integrated:
    """One worker's commit merged into a graph job's integration branch (``integrate``)."""

    ref: str
    commit: str | None  # the branch's tip after it (None: not merged)
    merged: bool
    conflicts: tuple[FileConflict, ...] = ()
    # A commit was made for it (False: its work was in the branch already); told in its log, not recorded.
    added: bool = True
    resolution: Resolution | None = None  # ``resolve``: the resolver's work on its conflict

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "ref": self.ref,
            "commit": self.commit,
            "merged": self.merged,
            "conflicts": [c.to_dict() for c in self.conflicts],
        }
        if self.resolution is not None:
            found["resolution"] = self.resolution.to_dict()
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Integrated:
        conflicts = tuple(FileConflict(**(c | {"workers": tuple(c["workers"])})) for c in data.get("conflicts") or ())
        resolution = Resolution.from_dict(data["resolution"]) if data.get("resolution") else None
        return cls(data["ref"], data.get("commit"), bool(data.get("merged")), conflicts, resolution=resolution)


@dataclass(frozen=True, slots=True)
class IntegrationRecord:
    """``WorkerRecord.integrated``: the worker's commit merged into its job's integration branch
    (``Integrated``), when (clock time) and, when it was not merged, why."""

    integrated: Integrated
    at: float
    reason: str | None = None

    @property
    def merged(self) -> bool:
        return self.integrated.merged

    def to_dict(self) -> dict[str, Any]:
        return self.integrated.to_dict() | {"at": self.at, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntegrationRecord:
        return cls(Integrated.from_dict(data), data["at"], data.get("reason"))


# -- publishing (delivery/publishing.py) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PullRequestRecord:
    """The pull request a publishing opened or updated on the forge (``git.pull_request``)."""

    forge: str  # "github" or "gitlab"
    number: int | None
    url: str | None
    action: str  # "opened" or "updated"
    base: str | None  # the branch it merges into

    def to_dict(self) -> dict[str, Any]:
        return {"forge": self.forge, "number": self.number, "url": self.url, "action": self.action, "base": self.base}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PullRequestRecord:
        return cls(
            str(data.get("forge") or ""), data.get("number"), data.get("url"), str(data.get("action") or ""), data.get("base")
        )


@dataclass(frozen=True, slots=True)
class PublishRecord:
    """``JobRecord.publish``: a root's last publishing of its result: when, the remote and the branch
    pushed there, the commit, whether the push went through, why the push or the pull request
    failed (None: neither did) and the pull request (None: none, yet). Replaced whole, never
    changed in place; the next publishing reads the branch and commit this one pushed (its lease)
    and the pull request to update."""

    at: float
    remote: str
    branch: str | None = None
    commit: str | None = None
    pushed: bool = False
    error: str | None = None
    pull_request: PullRequestRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "remote": self.remote,
            "branch": self.branch,
            "commit": self.commit,
            "pushed": self.pushed,
            "error": self.error,
            "pull_request": self.pull_request.to_dict() if self.pull_request is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PublishRecord:
        pull = data.get("pull_request")
        return cls(
            at=data.get("at") or 0.0,
            remote=str(data.get("remote") or ""),
            branch=data.get("branch"),
            commit=data.get("commit"),
            pushed=bool(data.get("pushed")),
            error=data.get("error"),
            pull_request=PullRequestRecord.from_dict(pull) if isinstance(pull, Mapping) else None,
        )


class ChecksState(StrEnum):
    """Where the watch of a pull request's checks stands (``ChecksRecord.state``); every one but
    ``watching`` is final: the job's result branch moves no more."""

    WATCHING = "watching"  # the checks of the pushed commit are read every git.checks_poll_interval
    PASSED = "passed"  # every check of the pushed commit passed
    FAILED = "failed"  # a check failed and no round is left (git.check_rounds), or no worker can take it
    TIMED_OUT = "timed_out"  # a check did not finish within git.checks_timeout
    NONE = "none"  # no check at all was reported within git.checks_appear_within: the forge runs none here
    ERROR = "error"  # the forge kept answering wrong (404, 500, no JSON): the watch stopped, said why


@dataclass(slots=True)
class CheckRound:
    """One round a failed pull-request check sent back to a worker (engine/pr_checks.py): the checks
    that failed on ``commit``, the worker continued with their log tail and why it was chosen, how
    its continue round ended and what it cost, and the commit pushed after it (None: none)."""

    number: int  # 1 for the first check round
    commit: str  # the pushed result commit whose checks failed
    failed: list[str]  # the failing checks' names
    worker: str
    why: str  # "the failing check names its files", "no check names a worker's files: each in turn"
    started_at: float
    state: str = "running"  # running, then the worker's continue round's status
    ended_at: float | None = None
    cost_usd: float | None = None
    pushed: str | None = None  # the result commit pushed after the round
    candidates: int = 0  # candidate commits pushed to find its worker by bisection (delivery/pr_bisection.py)
    comment: str | None = None  # the review comment it answers ("github 123"), None: a failed check

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckRound:
        names = set(cls.__slots__)
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class ChecksRecord:
    """``JobRecord.checks``: the watch of a root's pull request's checks after it was pushed (git.check_rounds
    above 0). Durable: a server restarted while ``watching`` goes on watching (engine/pr_checks.py)."""

    state: str  # a ChecksState value
    commit: str  # the pushed result commit being watched (or last watched)
    since: float  # when the watch of ``commit`` began (git.checks_timeout counts from it)
    max_rounds: int
    rounds: list[CheckRound] = field(default_factory=list)
    reason: str | None = None  # why the watch ended, in words
    failed_reads: int = 0  # forge answers in a row that could not be read (the watch stops past a bound)
    answered: list[str] = field(default_factory=list)  # review comments read once (a round or a note), by id

    @property
    def final(self) -> bool:
        return self.state != ChecksState.WATCHING.value

    @property
    def cost_usd(self) -> float | None:
        costs = [r.cost_usd for r in self.rounds if r.cost_usd is not None]
        return sum(costs) if costs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "commit": self.commit,
            "since": self.since,
            "max_rounds": self.max_rounds,
            "rounds": [r.to_dict() for r in self.rounds],
            "rounds_used": len(self.rounds),
            "cost_usd": self.cost_usd,
            "reason": self.reason,
            "failed_reads": self.failed_reads,
            "answered": list(self.answered),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChecksRecord:
        return cls(
            state=str(data.get("state") or ChecksState.ERROR.value),
            commit=str(data.get("commit") or ""),
            since=float(data.get("since") or 0.0),
            max_rounds=int(data.get("max_rounds") or 0),
            rounds=[CheckRound.from_dict(r) for r in data.get("rounds") or [] if isinstance(r, Mapping)],
            reason=data.get("reason"),
            failed_reads=int(data.get("failed_reads") or 0),
            answered=[str(a) for a in data.get("answered") or []],
        )


# -- selections (selection/, engine/choosing.py) ------------------------------------------------


# One measure of a candidate (selection/scoring.py): a number, a scoring command's short text or
# flag, or None (unknown).
Measure = float | str | bool | None


@dataclass(frozen=True, slots=True)
class RankingRow:
    """One candidate's row of its task's selection, best first: an entry of
    ``SelectionRecord.ranking`` and the candidate's ``WorkerRecord.score``. ``score`` None: not
    scored (a mode other than best, or not eligible); ``rank`` None: not eligible; ``parts``: the
    points of each weighted measure; ``measures``: the raw values (a scoring command's keys too,
    whatever numbers, flags and short text it printed)."""

    worker: str
    kind: str
    model: str | None
    eligible: bool
    score: float | None
    parts: dict[str, float]
    measures: dict[str, Measure]
    rank: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "kind": self.kind,
            "model": self.model,
            "eligible": self.eligible,
            "score": self.score,
            "parts": dict(self.parts),
            "measures": dict(self.measures),
            "rank": self.rank,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RankingRow:
        return cls(
            worker=str(data.get("worker") or ""),
            kind=str(data.get("kind") or ""),
            model=data.get("model"),
            eligible=bool(data.get("eligible")),
            score=data.get("score"),
            parts=dict(data.get("parts") or {}),
            measures=dict(data.get("measures") or {}),
            rank=data.get("rank"),
            reason=str(data.get("reason") or ""),
        )


@dataclass(frozen=True, slots=True)
class JudgeAnswer:
    """One call of a judge's match: the two candidates in the order shown (as A and B), its answer
    (cut short), the label it picked (None: unusable, ``problem`` says why), its reasons and cost."""

    shown: tuple[str, str]
    answer: str
    parsed: str | None
    reasons: str
    cost_usd: float | None
    problem: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "shown": list(self.shown),
            "answer": self.answer,
            "parsed": self.parsed,
            "reasons": self.reasons,
            "cost_usd": self.cost_usd,
            "problem": self.problem,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeAnswer:
        first, second = (list(data.get("shown") or ()) + ["", ""])[:2]
        return cls(
            shown=(str(first), str(second)),
            answer=str(data.get("answer") or ""),
            parsed=data.get("parsed"),
            reasons=str(data.get("reasons") or ""),
            cost_usd=data.get("cost_usd"),
            problem=data.get("problem"),
        )


@dataclass(frozen=True, slots=True)
class JudgeMatch:
    """One match of a judge's knockout: ``a`` against ``b`` in ``round`` (``b`` None: a bye), each
    order asked, the winner and why; ``fallback``: the judge gave no usable, agreeing answer, so
    the better-ranked one went on."""

    round: int
    a: str
    b: str | None
    orders: tuple[JudgeAnswer, ...]
    winner: str
    reason: str
    fallback: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "a": self.a,
            "b": self.b,
            "orders": [o.to_dict() for o in self.orders],
            "winner": self.winner,
            "reason": self.reason,
            "fallback": self.fallback,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeMatch:
        return cls(
            round=int(data.get("round") or 0),
            a=str(data.get("a") or ""),
            b=data.get("b"),
            orders=tuple(JudgeAnswer.from_dict(o) for o in data.get("orders") or ()),
            winner=str(data.get("winner") or ""),
            reason=str(data.get("reason") or ""),
            fallback=bool(data.get("fallback")),
        )


@dataclass(frozen=True, slots=True)
class JudgeRecord:
    """``select: judge``'s bracket: the judge's kind and model (as configured) and every match."""

    kind: str | None
    model: str | None
    matches: tuple[JudgeMatch, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "matches": [m.to_dict() for m in self.matches]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeRecord:
        return cls(data.get("kind"), data.get("model"), tuple(JudgeMatch.from_dict(m) for m in data.get("matches") or ()))


@dataclass
class SelectionRecord:
    """``JobRecord.selections[task]``: how one task's winner was chosen among its candidates
    (engine/choosing.py): the rule, the candidates' names, when, the winner (None: none eligible,
    or none could be merged) and why, the ranking, the judge's bracket and its cost.

    Two shapes written before it stay as they were: a selection that never ran its chooser (the
    job was cancelled first, or it raised) has no ``cost_usd`` key (``chose`` False), and one
    that raised has none of ``task_id``, ``select``, ``candidates``, ``at`` (``task_id`` None)."""

    winner: str | None
    reason: str
    ranking: list[RankingRow] = field(default_factory=list)
    judge: JudgeRecord | None = None
    cost_usd: float | None = None  # what the judge's calls cost (counts toward the tree)
    task_id: str | None = None
    select: str | None = None
    candidates: list[str] = field(default_factory=list)
    at: float | None = None  # clock time it was made (None: the job was cancelled first)
    chose: bool = True

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.task_id is not None:
            data |= {"task_id": self.task_id, "select": self.select, "candidates": list(self.candidates), "at": self.at}
        data |= {
            "winner": self.winner,
            "reason": self.reason,
            "ranking": [r.to_dict() for r in self.ranking],
            "judge": self.judge.to_dict() if self.judge is not None else None,
        }
        if self.chose:
            data["cost_usd"] = self.cost_usd
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionRecord:
        judge = data.get("judge")
        return cls(
            winner=data.get("winner"),
            reason=str(data.get("reason") or ""),
            ranking=[RankingRow.from_dict(r) for r in data.get("ranking") or () if isinstance(r, Mapping)],
            judge=JudgeRecord.from_dict(judge) if isinstance(judge, Mapping) else None,
            cost_usd=data.get("cost_usd"),
            task_id=data.get("task_id"),
            select=data.get("select"),
            candidates=[str(n) for n in data.get("candidates") or ()],
            at=data.get("at"),
            chose="cost_usd" in data,
        )
