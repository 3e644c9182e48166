"""Recursion composes with worktrees: a child job of a worktree worker starts
from its parent worker's work, and its work comes back into the parent's checkout.

========== ==================================================================================
at spawn   (submission, outside the engine lock) the parent worker's work so far is committed
           on its branch (``commit_at_spawn``); the child job's workers branch from that
           commit (``JobRecord.start_commit``, read by checkouts/worktree.py). A commit that fails
           refuses the spawn: no child starts from a state nobody knows.
at its end (ending.Ending.end_job, before the child job's terminal status is visible, so the
           parent's ``spawn --wait`` returns only after it) the child's workers' branches (those
           ``gates.merge_block`` lets through, at their gated commits; the others are named in
           ``merge["left_out"]``) are merged in plan order into the parent worker's branch with the job's
           ``merge_strategy`` (merging.merge_branches, its MergeRequest's ``target``: the parent's branch), and
           the parent's worktree is brought to the merged commit (``merge_child``).
========== ==================================================================================

The parent's branch moves only to a tree that passed (DESIGN §15), as a root's result does: the
merge is written as a candidate first and gated as a whole with the required gates that applied to
the child's workers' work in it (delivery/result_gate.py, in the workers' sandbox with the child
job's caps and network; verdicts in the tree's stage ledger, so a restart gates no tree twice);
failing, its breakers are found by bisection (delivery/bisection.py) and left out with the
combination they broke (``merge["left_out"]``: ``{"worker", "reason", "combination"}``), and the
branch moves to the candidate of the rest. The child job then reads partial (engine/ending.py).

The parent may have edited files since the spawn (``spawn`` without ``--wait``). So, holding the
worktree's lock (checkouts/worktree.py takes it for its own commits too): its pending work is committed
first; the branch moves only by an atomic ``update-ref`` from that commit to the merge; then
``git read-tree -m -u <commit> <merge>`` inside that worktree brings its index and files along,
and refuses, changing nothing, if an edit made in the meantime would be overwritten: the branch
is then put back and the whole step tried again. Under ``auto`` a conflict stops the merge at
the last clean one (the parent's branch holds what merged cleanly; the report names each
conflicting file and the workers involved); ``manual`` merges nothing. A checkout the worker
switched off its branch is left alone (reported). Every git call runs in the parent's worktree
or the object store: the user's checkout is never touched.

The outcome is the child's ``JobRecord.merge`` (``MergeRecord``: ``MergeOutcome.to_dict()`` plus ``at`` and
``target``; ``error`` when it could not be done), a job note, and a line in the parent worker's
log. A parent whose process has already ended gets its record's commit and changes again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..checkouts.checkout import Worktrees
from ..config import Isolation, MergeStrategy
from ..delivery.landing import ResolverFactory, gated_candidate, mergeable, tree_lock
from ..delivery.result_gate import ResultGate
from ..errors import Conflict, OrchestratorError
from ..git import conflicts as conflict_text
from ..git.commits import Source
from ..git.invocation import GitFailed
from ..git.job_refs import RefMoved, is_ancestor, job_prefix, update_ref
from ..git.merging import MergeRequest, Resolver, merge_branches, pick
from ..git.repository import check_ref, head_ref, run_git
from ..models import JobRecord, WorkerRecord
from ..outcomes import MergeOutcome, MergeRecord
from ..workers.adapters import co_author_of
from .context import EngineContext, EnginePart
from .resolvers import driver_factory

log = logging.getLogger("orchestrator.nesting")
TRIES = 3  # merge attempts when the parent's checkout changed under it (an edit, its own git)


class NotMerged(OrchestratorError):
    """The child job's work could not be brought into its parent's checkout."""


class Nesting(EnginePart):
    """Commits a parent's work at a spawn and merges a child job's work back into it."""

    def __init__(self, ctx: EngineContext, resolvers: ResolverFactory | None = None) -> None:
        self.ctx = ctx  # what every part shares (EnginePart reads it)
        self.resolvers = resolvers  # merge_strategy resolve's resolver workers (None: resolve stops as auto)
        self.drivers = driver_factory(ctx)  # runs the user's trusted merge drivers (None: none runs)

    def worktrees(self) -> Worktrees | None:
        """The engine's worktree checkout (None: its checkout never makes worktrees)."""
        return self.checkout.worktrees()

    # -- at a spawn ----------------------------------------------------------------------------
    def commit_at_spawn(self, parent: WorkerRecord, child_id: str) -> str | None:
        """Outside the engine lock: the parent's work committed on its branch; the commit its
        child job's workers start from. Conflict (the spawn is refused) when it cannot be made."""
        try:
            wt = self.worktrees()
            if wt is None:
                return None
            subject = f"Work so far, as child job {child_id} starts"
            return wt.commit(parent, len(parent.attempts), subject=subject)
        except (GitFailed, OSError) as exc:
            raise Conflict(
                f"the work of worker {parent.name} could not be committed before starting its child job "
                f"(its children would start from an unknown state), so no child job was started: {exc}"
            ) from exc

    # -- at a retry's spawn of the same request ------------------------------------------------
    def bring_back(self, child: JobRecord, parent: WorkerRecord) -> str:
        """Outside the engine lock: an ended child job reused by a retry of its parent (engine/submission.py).
        Its merge into the parent's branch was made in an earlier attempt; when the retry's reset took it
        out of the checkout, what it added (its merge's base to its result) is squashed onto the branch
        again (merging.pick) and the checkout brought along. Returns what happened, in words ("" for
        nothing to bring); Conflict (the spawn is refused, nothing changed) when it cannot be done."""
        merge, wt = child.merge, self.worktrees()
        if wt is None or merge is None or merge.error or not merge.result_commit or merge.result_commit == merge.base:
            return ""
        prefix, root = self.settings.git.branch_prefix, child.root_id
        ref = check_ref(wt.branch(parent))
        attempt = len(parent.attempts)
        with wt.holding(parent):
            tip = wt.commit(parent, attempt, subject=f"Work so far, as child job {child.id} is reused")
            if is_ancestor(wt.repo, merge.result_commit, tip):
                return "its work is in your branch"
            strategy = MergeStrategy.THEIRS if child.config.merge_strategy == MergeStrategy.THEIRS else MergeStrategy.AUTO
            subject = f"Child job {child.id}'s work again, reused by attempt {attempt}"
            source = Source(parent.name, ref, merge.result_commit, subject, None)
            runner = self.drivers(child) if self.drivers is not None else None
            done = pick(wt.repo, ref, merge.base or tip, source, strategy, prefix=prefix, root_id=root, drivers=runner)
            if not done.merged:
                raise Conflict(
                    f"child job {child.id}, which an earlier attempt started for the same request, cannot be reused: its "
                    f"work conflicts with your checkout in: {conflict_text.listed(done.conflicts)}; nothing changed. "
                    "Spawn a changed request to start a new child job"
                )
            if not done.added or done.commit is None:
                return "its work is in your branch"
            problem = wt.bring_in(parent, tip, done.commit)
            if problem:
                update_ref(wt.repo, ref, tip, done.commit, under=job_prefix(prefix, root))
                raise Conflict(f"child job {child.id}'s work could not be brought into your checkout again: {problem}")
        line = f"child job {child.id} reused by attempt {attempt}: its work brought into {wt.branch(parent)} again as commit {done.commit[:12]}"
        with self.tables.locked():
            child.notes.append(line)
        self.workspace.append_line(self.workspace.worker_log(parent.root_id, parent.depth, parent.name), f"[orchestrator] {line}")
        return f"its work was brought into your branch again as commit {done.commit[:12]}"

    # -- at the child's end --------------------------------------------------------------------
    def merge_child(self, job: JobRecord) -> None:
        """Outside the engine lock, before ``job``'s terminal status is visible: its workers'
        branches into its parent worker's branch and checkout (see the module docstring). Never
        raises: a job whose merge broke still ends (and says so in its notes)."""
        if job.is_root or job.config.isolation != Isolation.WORKTREE:
            return
        try:
            self._merge_child(job)
        except Exception as exc:  # a bug here must not leave the child job, and its parent, hanging
            log.exception("merging child job %s into its parent's branch failed", job.id)
            with self.tables.locked():
                job.notes.append(f"merging child job {job.id} into its parent worker's branch failed: {exc}")

    def _merge_child(self, job: JobRecord) -> None:
        with self.tables.locked():
            family = self.tables.family(job)
        if family is None:
            return
        parent, children = family
        wt = None
        try:
            wt = self.worktrees()
            if wt is None:
                return
            target = wt.branch(parent)
            left_out: list[dict[str, str]] = []
            outcome, error = self._merge(wt, job, parent, children, target, left_out), None
        except (OrchestratorError, GitFailed, OSError) as exc:  # reported; the job still ends
            log.warning("child job %s was not merged into its parent's branch", job.id, exc_info=True)
            target = f"{self.settings.git.branch_prefix}{job.root_id}/{parent.name}"
            outcome, error = _not_merged(job.config.merge_strategy, target, [c.name for c in children]), str(exc)
        line = summary(job.id, target, outcome, error)
        if left_out and not error:
            line += "; left out: " + "; ".join(f"{w['worker']} ({w['reason']})" for w in left_out)
        record = MergeRecord.of(outcome, self.clock.time(), target=target, left_out=tuple(left_out), error=error or None)
        fresh = None
        if wt is not None and error is None and outcome.result_commit:
            with self.tables.locked():
                # Its process ended and its changes are in its record: they are read again. (One
                # still running reads them when it ends, after this merge: the worktree's lock.)
                ended = parent.commit is not None
            try:
                fresh = wt.changes(parent) if ended else None
            except (GitFailed, OSError):
                log.warning("worker %s's changes could not be read again after a merge", parent.key, exc_info=True)
        with self.tables.locked():
            job.merge = record
            job.notes.append(line)
            if fresh is not None:
                fresh.apply_to(parent)
        log_file = self.workspace.worker_log(parent.root_id, parent.depth, parent.name)
        self.workspace.append_line(log_file, f"[orchestrator] {line}")

    def _merge(
        self,
        wt: Worktrees,
        job: JobRecord,
        parent: WorkerRecord,
        children: list[WorkerRecord],
        target: str,
        left_out: list[dict[str, str]],
    ) -> MergeOutcome:
        prefix, root = self.settings.git.branch_prefix, job.root_id
        under = job_prefix(prefix, root)
        ref = check_ref(target)
        made = set(run_git(wt.repo, "for-each-ref", "--format=%(refname)", "--", under).stdout.split())
        # Plan order; a worker that never started has no branch. As landing merges: only a worker
        # gates.merge_block lets through (it succeeded and passed its gates; a graph job's too), at
        # its gated commit; the others are named in ``left_out``.
        sorted_ = mergeable(job, children, self.settings)
        branches = [(name, branch) for name, branch in sorted_.named if check_ref(branch) in made]
        left_out.extend(sorted_.left_out)
        with wt.holding(parent) as directory:
            on = head_ref(directory)
            if on != ref:
                raise NotMerged(
                    f"worker {parent.name}'s checkout is not on its branch {target} (it is on {on or 'a detached HEAD'}); "
                    f"nothing was merged: merge the children's branches yourself ({', '.join(b for _, b in branches)})"
                )
            problem = ""
            resolver = None
            # The resolver's diffs are shown against where the children started.
            if self.resolvers is not None and job.config.merge_strategy == MergeStrategy.RESOLVE:
                resolver = self.resolvers(job, children, wt.repo, job.start_commit or wt.tip(parent))
            drivers = self.drivers(job) if self.drivers is not None else None
            for attempt in range(TRIES):
                subject = f"Work so far, as child job {job.id} ends"
                tip = wt.commit(parent, len(parent.attempts), subject=subject)
                request = MergeRequest(
                    tip,
                    branches,
                    job.config.merge_strategy,
                    prefix=prefix,
                    root_id=root,
                    target=ref,
                    commits=sorted_.commits,
                    tasks={c.name: c.task for c in children},
                    credits={c.name: co_author_of(c, self.settings) for c in children},
                    drivers=drivers,
                )
                outcome, breakers = self._gated(wt.repo, job, children, request, resolver)
                outcome = sorted_.with_unchanged(outcome, job.worker_names)
                new = outcome.result_commit
                if new is None or new == tip:
                    left_out.extend(breakers)
                    return outcome
                try:  # the branch moves only from the commit the candidate was merged onto
                    update_ref(wt.repo, ref, new, tip, under=under)
                except RefMoved as exc:  # its own git moved it while the candidate was gated: again
                    problem = str(exc)
                    time.sleep(0.1 * (attempt + 1))
                    continue
                problem = wt.bring_in(parent, tip, new)
                if not problem:
                    left_out.extend(breakers)
                    return outcome
                # Its checkout changed since the commit (an edit, a git of its own): put the branch
                # back where the checkout is, and go again from a new commit.
                update_ref(wt.repo, ref, tip, new, under=under)
                time.sleep(0.1 * (attempt + 1))
        raise NotMerged(f"worker {parent.name}'s checkout kept changing while the merge was brought into it: {problem}")

    def _gated(
        self,
        repo: Path,
        job: JobRecord,
        children: list[WorkerRecord],
        request: MergeRequest,
        resolver: Resolver | None,
    ) -> tuple[MergeOutcome, list[dict[str, str]]]:
        """The child job's merge onto the parent's commit ``request.base``, written as a candidate (no
        ref moved): the parent's branch moves only to a tree that passed the gates that applied to
        the work in it (DESIGN §15; the root's rule, delivery/landing.gated_candidate: one gate run on
        the whole, bisection for its breakers, each left out with the combination it broke). Returns
        the outcome to move the branch to (its ``result_commit`` the base when nothing passed) and the
        breakers as ``left_out`` entries. ``manual`` merges nothing: nothing to gate."""
        if request.strategy == MergeStrategy.MANUAL:
            return merge_branches(repo, request, resolver), []
        gate = ResultGate(settings=self.settings, workspace=self.workspace, repo=repo, job=job, workers=children)
        with tree_lock(job.root_id):  # one merge of a tree at a time: the result gate's checkout is the tree's
            kept, breakers = gated_candidate(repo, request, resolver, gate)
        if kept is None:  # every worker's work broke the parent's branch: it stays where it was
            target, _ = request.destination()
            kept = MergeOutcome(request.strategy, request.base, target, request.base, (), (), (), (), "")
        return kept, breakers


def _not_merged(strategy: str, target: str, workers: list[str]) -> MergeOutcome:
    return MergeOutcome(strategy, "", f"refs/heads/{target}", None, (), tuple(workers), (), (), "")


def summary(job_id: str, target: str, outcome: MergeOutcome, error: str | None = None) -> str:
    """One line: what of the child job was merged into the parent's branch, what conflicted."""
    if error:
        return f"child job {job_id} was not merged into {target}: {error}"
    if outcome.strategy == MergeStrategy.MANUAL:
        return f"child job {job_id} was not merged into {target} (merge_strategy manual): {outcome.command}"
    done = [w for w in outcome.merged if w not in outcome.unchanged]
    if done:
        parts = [f"child job {job_id} merged into {target} ({outcome.strategy}): {', '.join(done)}"]
    else:
        parts = [f"child job {job_id}: nothing new merged into {target} ({outcome.strategy})"]
    if outcome.unchanged:
        parts.append(f"no changes from {', '.join(outcome.unchanged)}")
    parts += [conflict_text.describe(c) for c in outcome.conflicts if c.resolved_by or not c.predicted]
    parts += [conflict_text.resolution(r) for r in outcome.resolutions]  # what the resolver did, or why not
    if outcome.skipped:
        parts.append(f"not merged: {', '.join(outcome.skipped)}")
    return "; ".join(parts)
