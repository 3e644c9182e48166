"""Which workers of a pull request break its failed check, when the check's log names none of their
files: the forge's CI judges candidates of subsets of their work (engine/pr_checks.py calls it).

The search is delivery/bisection.py's, over the workers merged in the result, in merge order; its
judge is the forge. The whole set is the pull request's commit, whose check failed: known, never
pushed. Any other set is a candidate: the job's base with that subset of the workers' work merged
in order by the orchestrator's git on objects (git/merging.py's ``move=False``, as the result gate
makes its candidates: commits written, no ref moved), pushed to a side branch under the job's own
prefix on the remote, ``<branch_prefix><root id>/checks-bisect/<n>`` (never a branch the user owns;
no pull request is opened for it), whose checks are read by its commit (GitHub: its check runs and
combined status; GitLab: its pipelines, ``?sha=``) until they pass or fail. Every side branch of
the job is deleted from the remote at the end, those a stopped server left too.

Bounded: at most ``git.check_bisect_max`` candidates are pushed (a single breaker among N takes at
most 2⌈log2 N⌉ of them, the whole set being known), and the search ends with the watch's
``git.checks_timeout`` counted from its start. A search that cannot go on (the bound, no check
reported on a candidate within ``git.checks_appear_within``, a candidate that does not merge
without the trusted drivers, the forge's answers unreadable, the server stopping) raises
``Stopped``; the caller goes back to each worker in turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import MergeStrategy, Settings
from ..git import merging
from ..git.job_refs import job_prefix
from ..models import JobRecord, WorkerRecord
from ..workers.adapters import co_author_of
from ..workspace.layout import Workspace
from . import bisection, forge, landing, pull_requests
from .pr_checks import ReadingState
from .publishing import push_url, remote_git

SIDE = "checks-bisect/"  # under the job's prefix: the side branches of its candidates
MAX_FAILED_READS = 5  # a candidate's readings in a row that cannot be read before the search stops


class Stopped(Exception):
    """The search could not go on; ``closing``: because the server is stopping (nothing to record)."""

    def __init__(self, why: str, *, closing: bool = False) -> None:
        super().__init__(why)
        self.closing = closing


@dataclass(frozen=True)
class Found:
    """What the search found: the breakers (in merge order, with why) and the candidates pushed."""

    breakers: list[bisection.Breaker]
    pushes: int


@dataclass
class Search:
    """One search over a failed pull request commit's workers (see the module docstring).
    ``wait(seconds)`` sleeps and says whether the server is stopping; ``clock`` reads the time."""

    settings: Settings
    workspace: Workspace
    job: JobRecord
    workers: Sequence[WorkerRecord]
    project: forge.ForgeProject
    wait: Callable[[float], bool]
    clock: Callable[[], float]
    pushed: list[str] = dataclasses.field(default_factory=list)  # the candidate commits pushed, in turn

    def run(self, names: Sequence[str], reason: str) -> Found:
        """The breakers among ``names`` (merge order) of the failure ``reason`` of the pull request's commit."""
        repo = landing.repository(self.settings, self.workspace)
        url = push_url(repo, self.settings.git.push)
        if not url:
            raise Stopped(f"no remote named {self.settings.git.push!r} to push candidates to (git.push)")
        whole = tuple(names)
        started = self.clock()

        def judge(subset: tuple[str, ...], before: int) -> bisection.Trial:
            if subset == whole and before == 0:
                return bisection.Trial(False, reason)  # the pull request's own commit: its check failed
            return self._judge(repo, url, subset, started)

        try:
            settled = bisection.settle(whole, judge)
        finally:
            self.clean(repo, url)
        return Found(settled.breakers, len(self.pushed))

    # -- one candidate ----------------------------------------------------------------------------
    def _judge(self, repo: Path, url: str, subset: tuple[str, ...], started: float) -> bisection.Trial:
        g = self.settings.git
        if len(self.pushed) >= g.check_bisect_max:
            raise Stopped(f"{len(self.pushed)} candidates pushed, the most git.check_bisect_max allows")
        commit = self.candidate(repo, subset)
        ref = f"{job_prefix(g.branch_prefix, self.job.root_id)}{SIDE}{len(self.pushed) + 1}"
        done = remote_git(repo, "push", "--porcelain", "--no-verify", "--force", "--end-of-options", url, f"{commit}:{ref}")
        if done.returncode != 0:
            raise Stopped(f"the candidate of {', '.join(subset) or 'the base'} could not be pushed (exit {done.returncode})")
        self.pushed.append(commit)
        pushed_at, bad = self.clock(), 0
        while True:
            if self.wait(g.checks_poll_interval):
                raise Stopped("the server is stopping", closing=True)
            try:
                reading = pull_requests.forge_of(self.project.forge).checks(self.project, commit, None)
            except forge.ForgeError as exc:
                bad += 1
                if bad >= MAX_FAILED_READS:
                    raise Stopped(f"the checks of candidate {commit[:12]} could not be read: {exc}") from None
                continue
            bad = 0
            now = self.clock()
            if reading.state == ReadingState.PASSED:
                return bisection.Trial(True)
            if reading.state == ReadingState.FAILED:
                return bisection.Trial(False, ", ".join(c.name for c in reading.failed) + " failed")
            if reading.total == 0 and now - pushed_at > g.checks_appear_within:
                raise Stopped(f"no check was reported on candidate {commit[:12]} (git.checks_appear_within)")
            if now - started > g.checks_timeout:
                raise Stopped(f"the candidates' checks took longer than git.checks_timeout ({g.checks_timeout:g}s)")

    def candidate(self, repo: Path, subset: tuple[str, ...]) -> str:
        """The commit of the job's base with ``subset``'s work merged in order (no ref moved)."""
        merge = self.job.merge
        base = merge.base if merge is not None and merge.base else None
        if base is None:
            base = self.workspace.tree_base_file(self.job.root_id).read_text(encoding="utf-8").strip()
        if not subset:
            return base
        sorted_ = landing.mergeable(self.job, list(self.workers), self.settings)
        mine = [w for w in self.workers if w.job_id == self.job.id]
        strategy = MergeStrategy.THEIRS if self.job.config.merge_strategy == MergeStrategy.THEIRS else MergeStrategy.AUTO
        request = merging.MergeRequest(
            base,
            [(w, b) for w, b in sorted_.named if w in subset],
            strategy,
            prefix=self.settings.git.branch_prefix,
            root_id=self.job.root_id,
            commits=sorted_.commits,
            tasks={w.name: w.task for w in mine},
            credits={w.name: co_author_of(w, self.settings) for w in mine},
            move=False,
        )
        made = merging.merge_branches(repo, request, None)
        if set(made.merged) != set(subset) or made.result_commit is None:
            raise Stopped(f"the work of {', '.join(subset)} does not merge without the trusted merge drivers")
        return made.result_commit

    def clean(self, repo: Path, url: str) -> None:
        """Every side branch of the job deleted from the remote (a stopped server's left ones too)."""
        side = f"{job_prefix(self.settings.git.branch_prefix, self.job.root_id)}{SIDE}"
        listed = remote_git(repo, "ls-remote", "--end-of-options", url, f"{side}*")
        refs = [line.split("\t")[-1] for line in listed.stdout.splitlines() if "\t" in line]
        refs = [r for r in refs if r.startswith(side)]
        if refs:
            remote_git(repo, "push", "--porcelain", "--no-verify", "--end-of-options", url, *(f":{r}" for r in refs))
