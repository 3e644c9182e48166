"""Landing a root job's work: its depth-0 workers' branches merged, in plan
order, into ``<git.branch_prefix><root id>/result`` from the job's base with its
``merge_strategy`` (git/merging.py: no working tree touched), then, when ``merge_into`` names a
branch of the user's, that branch fast-forwarded to the result (job_refs.advance: refused, with
the command to run, when it is not a fast-forward or its checkout is dirty).

Only workers that ``gates.merge_block`` lets through are merged, each at its gated commit
(``gates.merge_commit``), never a branch tip its gates did not judge: a worker that failed,
timed out or was cancelled, or whose required gate did not pass (or never ran), is left out,
listed with why in the note and in ``merge["left_out"]`` (``[{"worker", "reason"}]``), and
``merge_into`` is then left alone.

The result branch moves only to a tree that passed (DESIGN §15): with the job's gates, the merge
is written as a candidate first, gated as a whole (delivery/result_gate.py) and, when it fails,
searched for its breakers (delivery/bisection.py), each left out with the combination it broke
(``{"worker", "reason", "combination"}`` in ``left_out``); the ref then moves once, to the candidate
of the rest (``gated_merge``). A graph job's result is its integration branch, gated as each
worker's work went in (delivery/integration.py); what is left is merged onto it as before.

``land`` returns what goes in ``JobRecord.merge`` and a note for the job; the engine stores
them (engine/results.py when the root ends, ``Engine.merge`` for ``POST /jobs/{id}/merge``). It
runs git and is never called under the engine's lock. Folder jobs have no branches: nothing
is merged and ``merge`` stays None.

``JobRecord.merge`` is a ``records.MergeRecord``, whose dict is ``MergeOutcome.to_dict()`` (strategy, base, result_ref, result_commit,
merged, skipped, unchanged (workers that changed nothing: never merged), conflicts, changes,
command, and for ``manual``: previous, removed, kept_in) plus ``at`` (clock time), ``left_out`` and ``into``
(None unless a branch was named): ``{"branch", "moved" (the branch is at the result), "refused"
(why not, or None), "command" (what the user runs instead, or None), "message"}``. A merge
that failed is ``{"strategy", "error", "at"}``.
"""

from __future__ import annotations

import dataclasses
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import failpoints
from ..config import Isolation, MergeStrategy, Settings
from ..errors import ConfigError, Conflict, OrchestratorError
from ..git import conflicts as conflict_text
from ..git import merging
from ..git.commits import Source
from ..git.drivers import DriverRunner
from ..git.invocation import run_git
from ..git.job_refs import MergeRefused, advance, branch_ref, job_prefix, ref_value, update_ref
from ..git.repository import find_host
from ..models import JobRecord, JobStatus, WorkerRecord, resolutions_of
from ..outcomes import Into, MergeOutcome, MergeRecord
from ..quality import gates
from ..workers.adapters import co_author_of
from ..workspace.layout import Workspace
from . import bisection
from .result_gate import ResultGate

# (the job whose workers merge, the tree's worker records, the repository, the base) -> a resolver
ResolverFactory = Callable[[JobRecord, list[WorkerRecord], Path, str], merging.Resolver]
# the job whose merges these are -> what runs its tree's trusted merge drivers (delivery/trusted_drivers.py)
DriverFactory = Callable[[JobRecord], DriverRunner]


@dataclass(frozen=True)
class Landed:
    merge: MergeRecord | None  # what JobRecord.merge becomes (None: nothing to merge)
    note: str  # one line for the job's notes ("" when there is nothing to say)


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def tree_lock(root_id: str) -> threading.Lock:
    """One merge of a tree at a time (the job's end and any number of POST /merge)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(root_id, threading.Lock())


# -- checks ------------------------------------------------------------------------------------


def check_strategy(value: object, key: str = "strategy") -> MergeStrategy:
    if value not in merging.STRATEGIES:
        raise ConfigError(
            f"{key}={value!r} is not a merge strategy: use one of {', '.join(merging.STRATEGIES)}", key=key, value=str(value)
        )
    return MergeStrategy(str(value))


def check_branch(settings: Settings, value: object, key: str = "merge_into") -> str:
    """A branch of the user's to fast-forward to the result: a valid branch name (``git
    check-ref-format --branch``, argv only) outside the orchestrator's branch prefix."""
    if not isinstance(value, str):
        raise ConfigError(f'{key} must be a branch name (a string), e.g. "main"', key=key)
    name = value.removeprefix("refs/heads/")
    plain = len(name) <= 255 and name.isprintable()  # no NUL or control character ever reaches git's argv
    valid = plain and name and not name.startswith("-") and "@{" not in name and name != "@"
    if valid and run_git(".", "check-ref-format", "--branch", name, check=False).returncode != 0:
        valid = False
    if not valid:
        raise ConfigError(
            f'{key}={value[:200]!r} is not a valid branch name: give the name of a branch of yours, e.g. "main" '
            "(see 'git help check-ref-format')",
            key=key,
        )
    prefix = settings.git.branch_prefix
    if (name + "/").startswith(prefix) or name == prefix.rstrip("/"):
        raise ConfigError(
            f"{key}={name!r} is inside the orchestrator's branch prefix {prefix!r}: name a branch of yours "
            f"(the result is already the branch {prefix}<job id>/result)",
            key=key,
        )
    return name


def check_root(job: JobRecord) -> JobRecord:
    """Only a root job's result is merged here (a child job's workers merge into its parent
    worker's branch: 422), and only a worktree job has branches (409: the job's state)."""
    if not job.is_root:
        raise ConfigError(
            f"job {job.id} is a child job: its workers' branches merge into its parent worker's branch. "
            f"Use the root job {job.root_id}",
            key="job_id",
        )
    if job.status is JobStatus.WAITING:  # approval: before_merge (delivery/approval.py)
        raise Conflict(
            f"job {job.id} is waiting for approval: approve it to land its result (POST /api/v1/jobs/{job.id}/approve) "
            f"or reject it with a reason (POST /api/v1/jobs/{job.id}/reject)"
        )
    if job.config.isolation != Isolation.WORKTREE:
        raise Conflict(
            f"job {job.id} ran in folder isolation: its workers have no branches to merge "
            "(run a job with isolation worktree in a git repository)"
        )
    return job


# -- the merge ---------------------------------------------------------------------------------


def repository(settings: Settings, workspace: Workspace) -> Path:
    host = find_host(settings.base_dir, workspace.root, settings.git.repo)
    if isinstance(host, str):
        raise ConfigError(f"cannot merge: {host}")
    return host.repo


def branches(job: JobRecord, workers: list[WorkerRecord]) -> list[tuple[str, str]]:
    """(worker, branch) of the job's own workers, in plan order, that have a committed branch."""
    mine = {w.name: w for w in workers if w.job_id == job.id}
    return [(n, w.branch) for n in job.worker_names if (w := mine.get(n)) is not None and w.branch and w.commit]


@dataclass
class Mergeable:
    """A job's committed branches (``branches``) sorted for a merge."""

    named: list[tuple[str, str]]  # (worker, branch) that may be merged (gates.merge_block says None)
    commits: dict[str, str]  # worker -> its commit to merge (its gated commit)
    left_out: list[dict[str, str]]  # {"worker", "reason"}: work kept out of the result, and why
    unchanged: list[str]  # workers that may be merged but changed nothing: no work to merge

    def with_unchanged(self, outcome: MergeOutcome, order: list[str]) -> MergeOutcome:
        """``outcome`` with the workers that changed nothing among its ``unchanged``, in plan order."""
        found = {*outcome.unchanged, *self.unchanged}
        return dataclasses.replace(outcome, unchanged=tuple(n for n in order if n in found))


def mergeable(job: JobRecord, workers: list[WorkerRecord], settings: Settings) -> Mergeable:
    """Of the job's committed branches (``branches``): those that may be merged, each worker's
    commit, the workers left out with why, and those that changed nothing (``no_changes``: never
    merged, whatever their commit holds, such as git.setup's files)."""
    mine = {w.name: w for w in workers if w.job_id == job.id}
    found = Mergeable([], {}, [], [])
    for worker, branch in branches(job, workers):
        record = mine[worker]
        why = gates.merge_block(record, job, settings)
        commit = gates.merge_commit(record)
        if why is None and commit and record.no_changes:
            found.unchanged.append(worker)
        elif why is None and commit:
            found.named.append((worker, branch))
            found.commits[worker] = commit
        else:
            found.left_out.append({"worker": worker, "reason": why or "it has no commit"})
    return found


def _left_out(left_out: list[dict[str, str]]) -> str:
    return "; ".join(f"{w['worker']} ({w['reason']})" for w in left_out)


def land(
    job: JobRecord,
    workers: list[WorkerRecord],
    *,
    settings: Settings,
    workspace: Workspace,
    now: float,
    strategy: str | None = None,
    into: str | None = None,
    cancelled: bool = False,
    resolvers: ResolverFactory | None = None,
    drivers: DriverFactory | None = None,
) -> Landed:
    """Merge the root job's workers' branches into its result branch (see the module docstring).
    A cancelled job is merged only when asked (POST /merge). Raises on a git failure; the caller
    records it. ``resolvers``: makes ``merge_strategy: resolve``'s resolver (delivery/resolving.py;
    None: that strategy stops at a conflict as ``auto``). ``drivers``: runs the user's trusted merge
    drivers (None: none runs; git/drivers.py)."""
    if job.config.isolation != Isolation.WORKTREE:
        return Landed(None, "")
    if cancelled:
        return Landed(
            None,
            f"not merged: the job was cancelled; merge what its workers committed with: python -m orchestrator merge {job.id}",
        )
    strategy = check_strategy(strategy or job.config.merge_strategy)
    into = job.config.merge_into if into is None else into
    # Only work that succeeded and passed its gates, at its gated commit (gates.merge_block); a
    # graph job's too (delivery/integration.py merged it as it passed).
    sorted_ = mergeable(job, workers, settings)
    named, left_out = sorted_.named, sorted_.left_out
    base_file = workspace.tree_base_file(job.root_id)
    if not named or not base_file.is_file():
        why = "no worker committed work on a branch"
        if sorted_.unchanged:
            why = f"no worker changed anything (no changes: {', '.join(sorted_.unchanged)})"
            why += "; left out: " + _left_out(left_out) if left_out else ""
        elif left_out:
            why = "every worker was left out: " + _left_out(left_out)
        return Landed(None, f"nothing merged: {why}")
    repo = repository(settings, workspace)
    base = base_file.read_text(encoding="utf-8").strip()
    # A graph job's workers were merged into its result branch as they passed their gates
    # (delivery/integration.py): the rest is merged onto that, never a rebuild from the base.
    onto = ref_value(repo, branch_ref(job.integration)) if job.integration else None
    request = merging.MergeRequest(
        base,
        named,
        strategy,
        prefix=settings.git.branch_prefix,
        root_id=job.root_id,
        onto=onto,
        commits=sorted_.commits,
        tasks={w.name: w.task for w in workers if w.job_id == job.id},
        credits={w.name: co_author_of(w, settings) for w in workers if w.job_id == job.id},
        drivers=drivers(job) if drivers is not None else None,
    )
    resolver = resolvers(job, workers, repo, base) if resolvers is not None and strategy == MergeStrategy.RESOLVE else None
    if strategy == MergeStrategy.MANUAL or onto is not None:  # manual merges nothing; a graph's: delivery/integration.py
        merged: MergeOutcome | None = merging.merge_branches(repo, request, resolver)
    else:  # the result branch moves only to a tree that passed (delivery/result_gate.py)
        merged, breakers = gated_merge(
            repo, request, resolver, ResultGate(settings=settings, workspace=workspace, repo=repo, job=job, workers=workers)
        )
        left_out += breakers
    if merged is None:
        return Landed(None, "nothing merged: every worker was left out: " + _left_out(left_out))
    outcome = sorted_.with_unchanged(merged, job.worker_names)
    failpoints.hit("landing_before_into")  # the chaos tests' stop between the result branch and merge_into
    advanced = _advance(repo, check_branch(settings, into), outcome, bool(left_out)) if into else None
    merge = MergeRecord.of(outcome, now, into=advanced, left_out=tuple(left_out))
    return Landed(merge, describe(merge))


def gated_merge(
    repo: Path, request: merging.MergeRequest, resolver: merging.Resolver | None, gate: ResultGate
) -> tuple[MergeOutcome | None, list[dict[str, str]]]:
    """The request's merge, its result branch moved only to a tree that passed the gates that
    applied to the work in it (``gated_candidate``), the ref moved to the candidate of the workers
    that passed. Returns that outcome (None: no worker's work passed, nothing moved) and the
    breakers as ``left_out`` entries (``{"worker", "reason", "combination"}``)."""
    kept, breakers = gated_candidate(repo, request, resolver, gate)
    if kept is not None:
        target, _ = request.destination()
        old = ref_value(repo, target)
        if kept.result_commit is not None and kept.result_commit != old:
            update_ref(repo, target, kept.result_commit, old, under=request.under)
    return kept, breakers


def gated_candidate(
    repo: Path, request: merging.MergeRequest, resolver: merging.Resolver | None, gate: ResultGate
) -> tuple[MergeOutcome | None, list[dict[str, str]]]:
    """The request's merge written as a candidate, no ref moved: the batch gated once as a whole
    with the gates that applied to the work in it (delivery/result_gate.py); failing, its breakers
    found (delivery/bisection.py) and left out, the outcome that of the candidate of the rest.
    Returns that outcome (None: no worker's work passed) and the breakers as ``left_out`` entries
    (``{"worker", "reason", "combination"}``). The caller moves the ref (``gated_merge``; a child
    job's merge from the parent's commit it merged onto: engine/nesting.py)."""
    candidates: dict[tuple[str, ...], MergeOutcome] = {}

    def candidate(subset: tuple[str, ...]) -> MergeOutcome:
        if subset not in candidates:
            wanted = set(subset)
            branches = [(w, b) for w, b in request.branches if w in wanted]
            candidates[subset] = merging.merge_branches(
                repo, dataclasses.replace(request, branches=branches, move=False), resolver
            )
        return candidates[subset]

    try:
        whole = candidate(tuple(w for w, _ in request.branches))
        batch = whole.merged  # what the batch's tree holds (a conflict stops ``auto``: the rest skipped)
        if not gate.applies(batch):
            settled = bisection.Settled(batch)
        else:
            settled = bisection.settle(batch, lambda subset, before: gate.judge(subset, candidate(subset).result_commit, before))
    finally:
        gate.close()
    breakers = [
        {"worker": b.worker, "reason": bisection.reason_of(b), "combination": ", ".join(b.combination)} for b in settled.breakers
    ]
    if batch and not settled.landed:
        return None, breakers
    landed = candidate(settled.landed) if settled.landed != batch else whole  # (no batch: as the merge made it)
    failed = {b.worker for b in settled.breakers}
    comparison = tuple(c for c in whole.changes if c.worker not in failed)
    kept = dataclasses.replace(
        landed, skipped=whole.skipped, unchanged=whole.unchanged, conflicts=whole.conflicts, changes=comparison
    )
    return kept, breakers


def _gate_round(
    repo: Path,
    job: JobRecord,
    worker: WorkerRecord,
    holds: Sequence[str],
    commit: str,
    *,
    settings: Settings,
    workspace: Workspace,
) -> bisection.Trial:
    """The gates that applied to the workers ``holds`` names, on the candidate ``commit`` of a continue
    round's work onto the result; the round's worker as it is now (its new diff)."""
    _, workers = workspace.load_tree(job.root_id)
    current = [worker if w.name == worker.name and w.job_id == job.id else w for w in workers]
    gate = ResultGate(settings=settings, workspace=workspace, repo=repo, job=job, workers=current)
    try:
        return gate.judge(holds, commit)
    finally:
        gate.close()


def _advance(repo: Path, branch: str, outcome: MergeOutcome, left_out: bool = False) -> Into:
    short = outcome.result_ref.removeprefix("refs/heads/")
    if outcome.result_commit is None or outcome.skipped or left_out:
        why = "the manual strategy merged nothing" if outcome.result_commit is None else conflict_text.STOPPED
        if outcome.result_commit is not None and outcome.strategy == MergeStrategy.RESOLVE and outcome.resolutions:
            why = "a conflict's resolution was refused"
        if left_out and outcome.result_commit is not None and not outcome.skipped:
            why = "some workers were left out of the merge"
        command = outcome.command if outcome.result_commit is None else f"git switch {shlex.quote(branch)} && git merge {short}"
        return Into(branch, False, f"{branch} was left alone: {why}, so the result lacks some workers' work", command)
    try:
        message = advance(repo, branch, outcome.result_commit)
    except MergeRefused as exc:
        return Into(branch, False, exc.message, exc.command)
    return Into(branch, True, None, None, message)


def failed(job: JobRecord, strategy: str | None, exc: BaseException, now: float) -> Landed:
    """What is recorded when the merge raised: the job keeps the status its workers earned."""
    text = exc.message if isinstance(exc, OrchestratorError) else str(exc)
    return Landed(
        MergeRecord(None, strategy or job.config.merge_strategy, now, error=text[:2000]),
        f"merging the workers' branches failed: {text[:500]}; run it again with: python -m orchestrator merge {job.id}",
    )


def describe(merge: MergeRecord) -> str:
    """The job's note: what was merged, what conflicted, and how to take the result."""
    outcome = merge.outcome
    assert outcome is not None, "describe is for a merge that has an outcome"
    strategy, merged = outcome.strategy, outcome.merged
    short = outcome.result_ref.removeprefix("refs/heads/")
    actual = [c for c in outcome.conflicts if not c.predicted]
    if strategy == MergeStrategy.MANUAL:
        text = f"merge manual: nothing merged, {len(outcome.skipped)} branches left for you"
        text += f"; they would conflict in: {conflict_text.listed(outcome.conflicts)}" if outcome.conflicts else "; none conflict"
        text += f"; to merge them yourself: {outcome.command}"
        text += _previous(outcome)
    elif strategy == MergeStrategy.RESOLVE and outcome.resolutions:
        text = f"merged {len(merged)} worker(s) into {short} (resolve); take it with: {outcome.command}"
        text += "".join(f"; {conflict_text.resolution(r)}" for r in outcome.resolutions)
    elif outcome.skipped:
        text = (
            f"merge auto stopped at a conflict in: {conflict_text.listed(actual)}; merged {len(merged)} worker(s) into {short}, "
            f"skipped {', '.join(outcome.skipped)}; take what merged with: {outcome.command}"
        )
    else:
        text = f"merged {len(merged)} worker(s) into {short} ({strategy}); take it with: {outcome.command}"
        won = [c for c in actual if c.resolved_by]
        if won:
            text += "; " + conflict_text.side_won(won)
    if outcome.unchanged:
        text += f"; no changes from {', '.join(outcome.unchanged)} (not merged)"
    if merge.left_out:
        text += "; left out: " + _left_out(list(merge.left_out))
    into = merge.into
    if into:
        text += f"; {into.message}" if into.moved else f"; {into.refused} (run: {into.command})"
    return text


def _previous(outcome: MergeOutcome) -> str:
    """What a ``manual`` merge did with the result branch an earlier merge had made."""
    previous = outcome.previous
    if not previous:
        return ""
    short = outcome.result_ref.removeprefix("refs/heads/")
    if outcome.removed:
        return (
            f"; {short} (at {previous[:12]}, an earlier merge's result) was removed, so it holds nothing this merge "
            "did not make (merge again with auto, theirs or resolve to make it again)"
        )
    return f"; {short} still holds an earlier merge's result ({previous[:12]}): it is checked out in {outcome.kept_in}"


def conflicts(job: JobRecord, workers: list[WorkerRecord], *, settings: Settings, workspace: Workspace) -> list[dict[str, Any]]:
    """What would conflict between each pair of the job's workers' branches as they stand now
    (GET /jobs/{id}/conflicts, before or after the merge); touches no working tree, moves no ref.
    Each with ``resolution``: under ``merge_strategy: resolve``, the last resolution made for that
    file and one of its workers (``resolved``), else None."""
    named = branches(job, workers)  # a child job's too: its workers' branches, merged into its parent worker's
    base_file = workspace.tree_base_file(job.root_id)
    if job.config.isolation != Isolation.WORKTREE or len(named) < 2 or not base_file.is_file():
        return []
    base = base_file.read_text(encoding="utf-8").strip()
    found = merging.predict_conflicts(repository(settings, workspace), base, named)
    made = resolved(job, workers)
    return [c.to_dict() | {"resolution": _resolution_for(made, c.path, c.workers)} for c in found]


def resolved(job: JobRecord, workers: list[WorkerRecord]) -> list[dict[str, Any]]:
    """Each resolution made for ``job`` (``models.resolutions_of``: its graph's integration's, then its
    last merge's) as JSON, with its ``stage``: GET /jobs/{id}/conflicts' ``resolutions``."""
    return [{"stage": stage} | r.to_dict() for stage, r in resolutions_of(job, workers)]


def _resolution_for(made: list[dict[str, Any]], path: str, workers: tuple[str, ...]) -> dict[str, Any] | None:
    found = [r for r in made if r["worker"] in workers and path in r["files"]]
    return found[-1] if found else None


# -- a continue round's work onto the result ------------------------------------------------------
def branch_exists(settings: Settings, workspace: Workspace, branch: str) -> bool:
    """Whether a worker's ``branch`` is still in the repository (a continue round goes on from it)."""
    return ref_value(repository(settings, workspace), branch_ref(branch)) is not None


def land_round(
    job: JobRecord,
    worker: WorkerRecord,
    commit: str,
    merged_at: str | None,
    *,
    settings: Settings,
    workspace: Workspace,
    now: float,
    drivers: DriverFactory | None = None,
) -> tuple[MergeRecord | None, str]:
    """A continue round's gated ``commit`` (engine/continuing.py) squashed onto the root's result branch
    as one new commit on its tip (never a rebuild: a result the user already took stays an ancestor),
    and ``merge_into`` fast-forwarded to it when the job names one. ``merged_at``: the worker's commit
    the result took before (its gated commit then). Returns the job's new merge
    record (None: the result is unchanged) and what happened, in words."""
    previous = job.merge
    if previous is None or previous.outcome is None or previous.result_commit is None:
        return None, (
            f"not merged: job {job.id} has no result branch to add to (its last merge made none); "
            f"merge its workers' branches with: ./orchestrator.sh merge {job.id}"
        )
    if not worker.branch:
        return None, "not merged: the worker has no branch"
    # A round adds to what is merged: manual would merge nothing, and resolve has no resolver here.
    strategy = job.config.merge_strategy if job.config.merge_strategy == MergeStrategy.THEIRS else MergeStrategy.AUTO
    repo = repository(settings, workspace)
    base = previous.base or workspace.tree_base_file(job.root_id).read_text(encoding="utf-8").strip()
    ref = previous.result_ref or job_prefix(settings.git.branch_prefix, job.root_id) + "result"
    subject = worker.rounds[-1].subject if worker.rounds else worker.task  # "continue: <its feedback>"
    source = Source(worker.name, worker.branch, commit, subject, co_author_of(worker, settings))
    # What the round adds to the worker's work in the result (its commit merged then), else all of its work.
    since = merged_at if merged_at and worker.name in previous.outcome.merged else base
    short = ref.removeprefix("refs/heads/")
    with tree_lock(job.root_id):
        old = ref_value(repo, branch_ref(ref))
        prefix = settings.git.branch_prefix
        done = merging.pick(
            repo,
            ref,
            since,
            source,
            strategy,
            prefix=prefix,
            root_id=job.root_id,
            drivers=drivers(job) if drivers is not None else None,
            move=False,
        )
        if not done.merged:
            return None, f"not merged: the round's work conflicts with {short} in: {conflict_text.listed(done.conflicts)}"
        if not done.added or done.commit is None:
            return None, f"not merged: {short} already holds the round's work (nothing new)"
        # The result moves only to a tree that passed (delivery/result_gate.py): the round's work with the rest.
        holds = (*(w for w in previous.outcome.merged if w != worker.name), worker.name)
        verdict = _gate_round(repo, job, worker, holds, done.commit, settings=settings, workspace=workspace)
        if not verdict.passed:
            rest = ", ".join(w for w in holds if w != worker.name)
            with_ = f" with {rest}" if rest else ""
            return None, f"not merged: the round's work breaks the result{with_}: {verdict.reason}; {short} is unchanged"
        update_ref(repo, branch_ref(ref), done.commit, old, under=job_prefix(prefix, job.root_id))
    # The worker's work is in the result now: merged, and no longer left out (whatever kept it out before).
    merged = previous.outcome.merged if worker.name in previous.outcome.merged else (*previous.outcome.merged, worker.name)
    left_out = tuple(w for w in previous.left_out if w.get("worker") != worker.name)
    unchanged = tuple(w for w in previous.outcome.unchanged if w != worker.name)
    outcome = dataclasses.replace(previous.outcome, result_commit=done.commit, merged=merged, unchanged=unchanged)
    into = previous.into.branch if previous.into is not None else job.config.merge_into
    advanced = _advance(repo, check_branch(settings, into), outcome, bool(left_out)) if into else None
    merge = dataclasses.replace(previous, outcome=outcome, at=now, into=advanced, left_out=left_out)
    said = f"merged into {short} as commit {done.commit[:12]}"
    if advanced is not None:
        said += f"; {advanced.branch} " + ("moved to it" if advanced.moved else f"left alone: {advanced.refused}")
    return merge, said
