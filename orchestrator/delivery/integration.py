"""A graph job's integration branch: each worker's work merged into it as
soon as the worker has succeeded and passed its gates, so the tasks that wait on it branch
from a commit that holds it (checkouts/worktree.py starts a graph job's worker from this branch's tip).

A root job's integration branch is its result branch ``<prefix><root id>/result``; a child
job's is ``<prefix><root id>/<job id>/integration`` (its workers' branches are merged into its
parent worker's branch at its end, as any child job's: engine/nesting.py). ``IntegrateStep`` is the
last after-attempt step: it merges the commit the gates judged (never a later one) with the
job's strategy (``auto``: a conflict fails the worker, naming the files; ``resolve``: a resolver
worker resolves it first, delivery/resolving.py, and only a refused resolution fails it; ``theirs``: the worker's
side wins), one merge of a tree at a time (landing.tree_lock). The branch moves only to a tree
that passed (DESIGN §15): the merge is written as a candidate first and gated with the work the
branch holds (delivery/result_gate.py); failing, the worker fails, naming the combination, and the
branch stays where it was, so a task that waits on it never starts from a broken tip. Only ``merge_strategy`` auto,
theirs or resolve runs a graph (submission refuses manual).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ..config import MergeStrategy, Settings
from ..errors import OrchestratorError
from ..git import conflicts as conflict_text
from ..git.commits import WORKER_TRAILER, Source
from ..git.invocation import run_git
from ..git.job_refs import branch_ref, job_prefix, ref_value, update_ref
from ..git.merging import integrate
from ..models import JobRecord, WorkerRecord
from ..outcomes import Integrated, IntegrationRecord
from ..quality.gates import step_block
from ..quality.steps import PASS, Step, StepContext, Verdict, fail
from ..workers.adapters import co_author_of
from ..workspace.layout import Workspace
from .bisection import Trial
from .landing import DriverFactory, ResolverFactory, repository, tree_lock
from .result_gate import ResultGate

log = logging.getLogger("orchestrator.integration")


def integration_ref(prefix: str, job: JobRecord) -> str:
    """The branch a graph job's workers are merged into (see the module docstring)."""
    if job.is_root:
        return f"{prefix}{job.root_id}/result"
    return f"{prefix}{job.root_id}/{job.id}/integration"


class IntegrateStep(Step):
    """The worker's gated commit into its job's integration branch (the last step)."""

    name = "integrate"

    def __init__(
        self,
        settings: Settings,
        workspace: Workspace,
        resolvers: ResolverFactory | None = None,
        drivers: DriverFactory | None = None,
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.resolvers = resolvers  # merge_strategy resolve's (None: a conflict fails the worker, as auto)
        self.drivers = drivers  # runs the user's trusted merge drivers (None: none runs)

    def applies(self, job: JobRecord) -> bool:
        return job.integration is not None

    def run(self, ctx: StepContext) -> Verdict:
        job = ctx.job
        if job is None or job.integration is None or ctx.record.candidate is not None:
            return PASS  # a candidate is merged once its task selects it (engine/choosing.py), not as it passes
        blocked = step_block(ctx, self.settings)  # fail closed: never merge work its gates did not pass
        if blocked:
            return fail(f"not merged into {job.integration}: {blocked}")
        commit = ctx.updates.gated_commit or ctx.changes().commit
        branch = ctx.changes().branch
        record, failure = integrate_worker(
            self.settings, self.workspace, job, ctx.record, branch, commit, self.resolvers, self.drivers
        )
        if record is not None:
            ctx.updates.integrated = record
        return fail(failure) if failure else PASS


def _gate_integration(
    settings: Settings, workspace: Workspace, repo: Path, job: JobRecord, worker: WorkerRecord, start: str, commit: str
) -> tuple[list[str], Trial]:
    """The gates that applied to the work the integration candidate ``commit`` (one commit on the
    branch's tip) holds: the workers its commits since ``start`` name, and ``worker``; each by its
    record on disk (its role and diff), ``worker`` as it is now. A job with no required gate has
    none to apply (ResultGate.gates_for takes only the job's required ones): the candidate passes
    as it would there, without reading the tree's records and the branch's log under the tree's lock
    (each merge of a graph job paid that, O(workers) each)."""
    if not any(gate.get("required") for gate in job.config.gates):
        return [worker.name], Trial(True)
    try:
        _, workers = workspace.load_tree(job.root_id)
    except (OrchestratorError, OSError, ValueError):
        workers = []
    mine = [w for w in workers if w.job_id == job.id and w.name != worker.name]
    # Who is in the branch already: its commits' worker trailers (the orchestrator's own commits), oldest first
    fmt = f"--format=%(trailers:key={WORKER_TRAILER},valueonly,separator=%x20)"
    named = run_git(repo, "log", "--reverse", fmt, f"{start}..{commit}^", "--").stdout.split()
    holds = [*dict.fromkeys(n for n in named if n != worker.name), worker.name]
    gate = ResultGate(settings=settings, workspace=workspace, repo=repo, job=job, workers=[*mine, worker])
    try:
        return holds, gate.judge(holds, commit)
    finally:
        gate.close()


# root id (with what finds its repository) -> the host repository: a running tree's repository is
# the one its worktrees were made in, found once (find_host costs three git processes a merge).
_REPOS: dict[tuple[str, str, str, str], Path] = {}
_REPOS_GUARD = threading.Lock()


def _repository(settings: Settings, workspace: Workspace, root_id: str) -> Path:
    key = (root_id, str(settings.base_dir), str(workspace.root), settings.git.repo)
    with _REPOS_GUARD:
        found = _REPOS.get(key)
    if found is None:
        found = repository(settings, workspace)  # ConfigError when there is none: not remembered
        with _REPOS_GUARD:
            if len(_REPOS) >= 1024:  # a long-running server's finished trees: found again if asked
                _REPOS.clear()
            _REPOS[key] = found
    return found


def integrate_worker(
    settings: Settings,
    workspace: Workspace,
    job: JobRecord,
    worker: WorkerRecord,
    branch: str | None,
    commit: str | None,
    resolvers: ResolverFactory | None = None,
    drivers: DriverFactory | None = None,
) -> tuple[IntegrationRecord | None, str | None]:
    """Outside the engine's lock: ``worker``'s ``commit`` (on ``branch``) merged into ``job``'s
    integration branch, one merge per tree at a time, a line in its log. The record for
    ``WorkerRecord.integrated`` (None when nothing was tried) and why it failed (None: merged)."""
    integration = job.integration
    assert integration is not None
    if not commit or not branch:
        return None, f"not merged into {integration}: the worker has no committed work on a branch"
    start = job.start_commit or workspace.tree_base_file(job.root_id).read_text(encoding="utf-8").strip()
    repo = _repository(settings, workspace, job.root_id)
    resolver = None
    if resolvers is not None and job.config.merge_strategy == MergeStrategy.RESOLVE:
        resolver = resolvers(job, [worker], repo, start)
    log = workspace.worker_log(worker.root_id, worker.depth, worker.name)
    with tree_lock(job.root_id):
        done = integrate(
            repo,
            integration,
            start,
            Source(worker.name, branch, commit, worker.task, co_author_of(worker, settings)),
            job.config.merge_strategy,
            prefix=settings.git.branch_prefix,
            root_id=job.root_id,
            resolver=resolver,
            drivers=drivers(job) if drivers is not None else None,
            move=False,
        )
        if done.merged and done.added and done.commit is not None:
            # The branch moves only to a tree that passed (delivery/result_gate.py): this work with what it holds.
            holds, verdict = _gate_integration(settings, workspace, repo, job, worker, start, done.commit)
            if not verdict.passed:
                others = [w for w in holds if w != worker.name]
                why = f"breaks the combination with {', '.join(others)}: " if others else "fails on the merged result: "
                record = IntegrationRecord(Integrated(done.ref, None, False), time.time(), why + verdict.reason)
                workspace.append_line(log, f"[orchestrator] not merged into {integration}: {record.reason}")
                return record, f"not merged into {integration}: {record.reason}"
            old = ref_value(repo, branch_ref(integration))
            if done.commit != old:
                update_ref(
                    repo, branch_ref(integration), done.commit, old, under=job_prefix(settings.git.branch_prefix, job.root_id)
                )
    at = time.time()
    if not done.merged:
        shown = conflict_text.listed(done.conflicts)
        refused = f"; the resolver's resolution was refused: {done.resolution.reason}" if done.resolution is not None else ""
        record = IntegrationRecord(done, at, f"conflicts with work already merged into {integration} in: {shown}{refused}")
        workspace.append_line(log, f"[orchestrator] not merged into {integration}: {record.reason}")
        strategy = job.config.merge_strategy
        return record, f"merging into {integration} conflicts in: {shown} (merge_strategy {strategy}){refused}"
    if not done.added:
        said = f"commit {commit[:12]} is already in {integration} (at {str(done.commit)[:12]}): nothing to merge"
    else:
        extra = f"; {conflict_text.side_won(done.conflicts)}" if done.conflicts else ""
        if done.resolution is not None:
            extra = f"; conflicts in {conflict_text.listed(done.conflicts)} {done.resolution.reason}"
        said = f"merged commit {commit[:12]} into {integration} (now {str(done.commit)[:12]}){extra}"
    workspace.append_line(log, f"[orchestrator] {said}")
    return IntegrationRecord(done, at), None
