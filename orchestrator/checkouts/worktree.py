"""The worktree checkout: each worker's usual folder
``depth_<n>/worker_<k>/`` is a git worktree of the host repository, on its own branch
``<git.branch_prefix><root id>/<worker name>`` (a child job's worker branches from its parent
worker's branch; a root job's from ``git.base``, or a snapshot of the uncommitted changes with
``git.include_uncommitted``; a graph job's from its integration branch's tip once there is one,
so a task sees its prerequisites' merged work: delivery/integration.py). Git itself is git/repository.py's.

======== ================================================================================
prepare  a worktree as ``git worktree add`` makes it, with no lock of the repository (kept
         when it is already there: a worker re-adopted after a restart; made again when its
         add was cut off before the worker first ran; see repository.add_worktree), and the
         worker's TMPDIR as FolderCheckout makes it
reset    before a retry: the failed attempt's leftovers are committed (its checkpoint), then
         the worktree goes back to the checkpoint the failed attempt started from (``reset
         --hard`` + ``clean -fdx`` inside that worktree only), unless the failure's class is
         ``transient`` or ``feedback`` (a failed gate asked for another try) or the attempt timed out: then its partial work is kept (a retry of an
         AI CLI goes on from it). Each attempt's checkpoint and the decision go in the log.
changes  commits what the worker left (respecting .gitignore) as the orchestrator, then tells
         the branch, its commit and what changed since the worker's base
cleanup  empties its TMPDIR; the worktree and its branch stay (they are the deliverable)
retire   with ``git.remove_worker_worktrees`` (off by default: a worker's folder is then what it
         was), once its final record is on disk with its commit (engine/worker_thread.py), a worker
         with no child job (they merge into its worktree) and no candidate (the judge runs in
         its folder) has its worktree removed on a background thread (checkouts/retiring.py's
         ``Retirer``); its branch stays, and everything that reads its work reads the branch or
         the commit. So the
         repository's live worktrees are bounded by the workers running, not the workers run,
         and each ``worktree add`` (which reads every worktree) stays cheap.
======== ================================================================================

``recovered``: a worker a restarted server settles without running it (it ended, or was lost,
while no server ran) has what it left committed by ``changes``; a lost one with no work loses
its worktree (its branch stays at its base). Clean-up is checkouts/retiring.py's: ``remove_worktrees``
(a deleted job's worktrees and branches, never a ref outside its prefix) and ``prune_stale`` (at
start: the admin entries of this workspace's worktrees whose folders are gone, never a user's).
Which jobs get a worktree checkout at all (their ``isolation``) is checkouts/isolated.py's.

``prepare`` and ``cleanup`` also bootstrap the worktree (checkouts/bootstrap.py: ``.worktreeinclude``, the
worker's port, ``git.setup`` and ``git.teardown``); a reset keeps what the bootstrap made.

Commits are made after an attempt, not in an after-attempt step: ``changes`` runs after every
worker's last attempt whatever its outcome (a failed worker's partial work is committed too),
while steps run only after a successful one. The commit names the worker and its subtask,
carries ``Orchestrator-Job/Worker/Attempt`` trailers (the worker by its name, as on the result
branch's commits) and, for an AI kind's work, ``Co-authored-by:``; has a subject cut at a word's
end; skips the user's hooks (``--no-verify``, ``core.hooksPath``); and is by the user
(commits.identity_of: the host's ``user.name``/``user.email``, else the orchestrator's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..config import JobConfig, Settings
from ..git import invocation, job_refs, worker_objects, worker_refs
from ..git.commits import identity_of, subject_line, trailers
from ..git.refstore import read_refs
from ..git.repository import (
    BASE_FILE,
    CHECKPOINT_FILE,
    CheckoutRunner,
    GitError,
    add_worktree,
    check_ref,
    common_dir_of,
    git_dir_of,
    linked_git_dir,
    repo_op,
    resolve_commit,
    run_git,
    snapshot_commit,
)
from ..git.sandboxed import CheckoutGit
from ..git.tree_checks import BlobLimits, commit_problem
from ..models import EndReason, FailureClass, JobRecord, WorkerRecord
from ..process.cgroups import Limits
from ..process.sandbox import Backend
from ..workers import refusals
from ..workers.adapters import co_author_of
from ..workspace import checkout_place as place
from ..workspace import logs
from ..workspace.layout import Workspace
from . import untouched
from .bootstrap import Bootstrap, EnvFor
from .checkout import Changes, Checkout, CheckoutKind, FolderCheckout
from .retiring import retirer_of

log = logging.getLogger("orchestrator.worktree")

# Why an attempt failed, when its retry goes on from the leftovers: a transient failure, a timeout
# (its end reason), or feedback (a step, such as a failed gate, asked for another attempt on this
# work, with what to fix in the prompt).
KEEPS_PARTIAL_WORK = (FailureClass.TRANSIENT, EndReason.TIMEOUT, FailureClass.FEEDBACK)
STATUS_NAMES = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed", "C": "added", "T": "modified"}
MAX_FILES = 500  # files_changed listed per worker


class WorktreeCheckout(Checkout):
    """A git worktree per worker on its own branch (see the module docstring)."""

    name = CheckoutKind.WORKTREE

    def __init__(self, workspace: Workspace, settings: Settings, repo: Path, env: EnvFor | None = None) -> None:
        self.workspace = workspace
        self.settings = settings
        self.repo = repo
        self.bootstrap = Bootstrap(settings, workspace, repo, env)  # env: the worker's (the engine's), for its setup
        self.folder = FolderCheckout(workspace)  # the TMPDIR part
        self.confinement = self.bootstrap.confinement  # git on a worker's checkout runs in its sandbox
        self._configs: dict[str, JobConfig] = {}  # job id -> its config (its sandbox), from prepare
        self._marks: dict[Path, int] = {}  # worktree -> when the orchestrator last left it (checkouts/untouched.py)
        self._made: dict[Path, bool] = {}  # worktrees the running ``prepare`` made (not re-adopted ones)
        self._bases: dict[str, str] = {}  # root id -> the commit its root workers branch from
        self._lock = threading.Lock()
        self._dirs: dict[tuple[str, int, str], Path] = {}  # workers whose worktree is outside the workspace (place.py)
        # One lock per worktree: its commits (after an attempt, at a spawn) and a child job's
        # merge into it (engine/nesting.py) never interleave.
        self._held: dict[Path, threading.RLock] = {}
        self.retirer = retirer_of(repo)
        # worktree -> the last ``changes``' (base, commit, start) and what it found (until its cleanup)
        self._diffs: dict[Path, tuple[tuple[str, str, str], tuple[list[dict[str, str]], str, bool]]] = {}

    # -- names ---------------------------------------------------------------------------------
    def branch(self, record: WorkerRecord) -> str:
        return f"{self.settings.git.branch_prefix}{record.root_id}/{record.name}"

    def directory(self, record: WorkerRecord) -> Path:
        """The worker's checkout: its folder of the workspace, or, where that folder is a link
        (workspace/checkout_place.py), the folder outside the workspace its tree's worktrees live in."""
        key = (record.root_id, record.depth, record.name)
        found = self._dirs.get(key)
        if found is not None:
            return found
        inside = self.workspace.worker_dir(record.root_id, record.depth, record.name)
        if not inside.is_symlink():
            return inside
        found = place.tree_folder(self.settings, self.workspace, record.root_id) / f"depth_{int(record.depth)}" / record.name
        with self._lock:
            self._dirs[key] = found
        return found

    def _place(self, record: WorkerRecord, job: JobRecord) -> None:
        """A new worker whose sandbox shows no project view (Landlock, Seatbelt): its worktree goes
        outside the workspace (workspace/checkout_place.py), its folder of the workspace a link to it. Under
        bubblewrap, or with the sandbox off, it stays in the workspace."""
        inside = self.workspace.worker_dir(record.root_id, record.depth, record.name)
        if inside.is_symlink() or inside.exists():
            return
        spec = self.confinement.for_job(job.config).spec
        if spec is None or spec.backend is Backend.BUBBLEWRAP:
            return
        saved = self.workspace.tree_checkouts_file(record.root_id)
        if not saved.is_file():
            place.make_private(self.settings, self.workspace.root, (self.settings.base_dir, self.workspace.root, self.repo))
            self.workspace.write_text(saved, str(place.job_folder(self.settings, self.workspace.root, record.root_id)) + "\n")
        outside = place.tree_folder(self.settings, self.workspace, record.root_id) / f"depth_{int(record.depth)}" / record.name
        outside.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.symlink_to(outside, target_is_directory=True)

    def _root_base(self, root_id: str) -> str:
        """The commit a root job's workers start from, fixed at its first worker (and kept in
        its tree folder, so a restarted server uses the same one)."""
        with self._lock:
            if root_id in self._bases:
                return self._bases[root_id]
            saved = self.workspace.tree_base_file(root_id)
            if saved.is_file():
                commit = saved.read_text(encoding="utf-8").strip()
            else:
                g = self.settings.git
                commit = snapshot_commit(self.repo, g.base) if g.include_uncommitted else resolve_commit(self.repo, g.base)
                self.workspace.write_text(saved, commit + "\n")
            self._bases[root_id] = commit
            return commit

    def _tips(self, *refs: str) -> dict[str, str]:
        """Full branch refs (checked by check_ref) -> their commits, those that exist: one git
        process for all of them, or none where the ref files answer)."""
        found = read_refs(self.repo, refs)
        if found is not None:
            return found
        listed = run_git(self.repo, "for-each-ref", "--format=%(refname) %(objectname)", *refs).stdout
        wanted = set(refs)  # a pattern also lists the refs below it (refs/heads/a/b/...): exact names only
        return {ref: oid for ref, _, oid in (line.partition(" ") for line in listed.splitlines()) if ref in wanted}

    def _start_point(self, record: WorkerRecord, job: JobRecord, tips: dict[str, str] | None = None) -> str:
        if job.integration:  # a graph job: the work merged so far, its prerequisites' included (delivery/integration.py)
            integration = check_ref(job.integration)
            tip = (tips if tips is not None else self._tips(integration)).get(integration)
            if tip:
                return tip
        if job.start_commit:  # a child job: its parent worker's work, committed at the spawn (engine/nesting.py)
            return job.start_commit
        if job.parent_worker and record.depth > 0:  # (older records) its parent worker's branch as it stands now
            parent = f"{self.settings.git.branch_prefix}{record.root_id}/{job.parent_worker}"
            found = run_git(self.repo, "rev-parse", "--verify", "--quiet", "--end-of-options", check_ref(parent), check=False)
            if found.returncode == 0:
                return found.stdout.strip()
        return self._root_base(record.root_id)

    # -- the seam ------------------------------------------------------------------------------
    def prepare(self, record: WorkerRecord, job: JobRecord) -> Path:
        self._configs[record.job_id] = job.config
        self._place(record, job)
        self._marks.pop(self.directory(record), None)
        directory = self._prepare(record, job)
        if not record.attempts and self._made.pop(directory, False):
            # Made here, and no attempt of its has run: nothing in it is a worker's yet. (Never a
            # worktree re-adopted after a restart: what its worker wrote before it is not committed.)
            self._mark(record, directory)
        return directory

    def _prepare(self, record: WorkerRecord, job: JobRecord) -> Path:
        directory = self.directory(record)
        self.retirer.wait_for(directory)  # (a worker run again under the same name: its old worktree gone first)
        self.retirer.wait_below()  # removals that lag behind hold back new worktrees, not the disk
        self.workspace.make_worker_tmp(record.root_id, record.depth, record.name)
        if (directory / ".git").exists():
            if record.attempts or not _interrupted(directory):
                # re-adopted after a restart: its worktree is there (its port again; setup only if cut short)
                if self.bootstrap.prepare(record, job, directory, fresh=False):
                    self._write(directory, CHECKPOINT_FILE, self.commit(record, 0))
                return directory
            # Its ``worktree add`` never finished (the machine stopped mid-checkout): its files are
            # partial, and a commit would record the missing ones as deleted. The worker never ran
            # there (this comes before its first attempt), so it is made again from its branch.
            repo_op(self.repo, self.repo, "worktree", "remove", "--force", "--force", "--", str(directory))
        ref = check_ref(self.branch(record))
        directory.parent.mkdir(parents=True, exist_ok=True)
        # Its branch and (a graph job's) the integration branch it would start from, in one lookup.
        tips = self._tips(ref, *([check_ref(job.integration)] if job.integration else []))
        exists = ref in tips
        if exists:  # its branch outlived its worktree (a restart after a crash): check it out again
            start = tips[ref]
            add_worktree(self.repo, directory, self.branch(record), None, self._checkout_for(record))
        else:
            start = self._start_point(record, job, tips)
            # The tree's base is the user's commit (or the snapshot of their changes): checked out here,
            # with the pins. Anything else holds workers' work, checked out in the worker's sandbox.
            ours = start == self._root_base(record.root_id)
            add_worktree(self.repo, directory, self.branch(record), start, None if ours else self._checkout_for(record))
        self._made[directory] = True
        git_dir = git_dir_of(directory)
        if not (git_dir / BASE_FILE).exists():
            (git_dir / BASE_FILE).write_text(start + "\n", encoding="utf-8")
            # A new branch is made at ``start``: its tip is that commit, no git call needed.
            tip = self.tip(record) if exists else start
            (git_dir / CHECKPOINT_FILE).write_text(tip + "\n", encoding="utf-8")
        if self.bootstrap.prepare(record, job, directory, fresh=True):  # the setup's files start every attempt
            self._write(directory, CHECKPOINT_FILE, self.commit(record, 0))
        return directory

    def reset(self, record: WorkerRecord, attempt: int) -> None:
        with self.holding(record):  # no child job's merge into it meanwhile (engine/nesting.py)
            self._reset(record, attempt)
            self._mark(record, self.directory(record))

    def _reset(self, record: WorkerRecord, attempt: int) -> None:
        """Commit the failed attempt's work (its checkpoint), then keep it or go back."""
        failed = record.attempts[-1] if record.attempts else None
        directory = self.directory(record)
        before = self._read(directory, CHECKPOINT_FILE)
        left = self.commit(record, attempt - 1)
        kind = None
        if failed is not None:
            kind = failed.failure_class or (EndReason.TIMEOUT if failed.end_reason == EndReason.TIMEOUT else None)
        if kind in KEEPS_PARTIAL_WORK or not before:
            self._write(directory, CHECKPOINT_FILE, left)
            self._note(record, f"attempt {attempt} keeps attempt {attempt - 1}'s work ({kind}): checkpoint {left[:12]}")
            return
        self._back_to(record, before, "-fdxq")
        self._note(
            record,
            f"attempt {attempt} starts from checkpoint {before[:12]}; attempt {attempt - 1}'s work ({left[:12]}) was reset away",
        )

    def discard(self, record: WorkerRecord) -> None:
        """Back to the commit its last attempt started from, without committing what it left."""
        directory = self.directory(record)
        with self.holding(record):
            start = self._read(directory, CHECKPOINT_FILE) or self._base(record, directory)
            self._unlink_branch(record, directory)
            self._take(record, directory)
            self._back_to(record, start, "-fdxq")
        self._note(record, f"what its last attempt left was thrown away (disk cap): back to {start[:12]}")

    def changes(self, record: WorkerRecord) -> Changes:
        with self.holding(record):  # its commit and what it changed: no merge into it in between
            return self._changes(record)

    def _changes(self, record: WorkerRecord) -> Changes:
        directory = self.directory(record)
        if not (directory / ".git").exists():
            return Changes()
        commit = self.commit(record, len(record.attempts))
        base = self._base(record, directory)
        # Unchanged: the tree is the one its first attempt started from (after git.setup's files,
        # which are not the worker's); a child job's work merged into it is a change.
        start = next((a.checkpoint for a in record.attempts[:1] if a.checkpoint), base)
        # What follows depends on these three commits alone: asked again (the steps' context, then
        # finish_checkout) with nothing new committed, the last answer is the answer.
        key = (base, commit, start)
        known = self._diffs.get(directory)
        if known is not None and known[0] == key:
            files, stat, unchanged = known[1]
        else:
            files, stat, unchanged = self._diff(directory, base, commit, start)
            self._diffs[directory] = (key, (files, stat, unchanged))
        for path in self._written_submodules(record, directory):
            self._note(
                record,
                f"not committed: the files written inside submodule {path!r} (submodules are not checked out in"
                " worktrees; they stay in this folder only. See the README: Work in your repository)",
            )
        return Changes(
            files_created=sorted(f["path"] for f in files if f["change"] == "added"),
            branch=self.branch(record),
            commit=commit,
            files_changed=[dict(f) for f in files[:MAX_FILES]],
            diffstat=stat,
            unchanged=unchanged,
        )

    def _diff(self, directory: Path, base: str, commit: str, start: str) -> tuple[list[dict[str, str]], str, bool]:
        """The files changed from ``base`` to ``commit``, git's shortstat of it, and whether
        ``commit``'s tree is ``start``'s. The same commit twice needs no git."""
        files: list[dict[str, str]] = []
        if base == commit:
            stat = "no changes"
        else:
            out = run_git(
                self.repo, "diff", "--no-ext-diff", "--no-textconv", "--name-status", "-M", "-z", base, commit
            ).stdout.split("\0")
            i = 0
            while i < len(out) - 1:
                status = out[i]
                if status[:1] in ("R", "C"):
                    files.append({"path": out[i + 2], "change": STATUS_NAMES[status[0]], "from": out[i + 1]})
                    i += 3
                else:
                    files.append({"path": out[i + 1], "change": STATUS_NAMES.get(status[:1], "modified")})
                    i += 2
            stat = (
                run_git(self.repo, "diff", "--no-ext-diff", "--no-textconv", "--shortstat", base, commit).stdout.strip()
                or "no changes"
            )
        if start == commit:
            return files, stat, True
        trees = run_git(self.repo, "rev-parse", f"{start}^{{tree}}", f"{commit}^{{tree}}").stdout.split()
        return files, stat, trees[0] == trees[1]

    def cleanup(self, record: WorkerRecord, succeeded: bool) -> None:
        self._diffs.pop(self.directory(record), None)
        try:
            self.bootstrap.cleanup(record, self.directory(record))  # git.teardown; the port goes back
        finally:
            self.folder.cleanup(record, succeeded)

    def checkpoint(self, record: WorkerRecord) -> str | None:
        return self._read(self.directory(record), CHECKPOINT_FILE) or None

    def recovered(self, record: WorkerRecord, job: JobRecord, lost: bool) -> Changes:
        """A worker a restarted server settles without running it: what it left is committed
        (``changes``). A lost one that left no work (its branch still at its base) and started
        no child job has its worktree removed (a full checkout of disk for nothing); its branch
        stays, at its base, so its record names it like any other worker's, until the job is
        deleted."""
        self._configs[record.job_id] = job.config
        changes = self.changes(record)
        directory = self.directory(record)
        idle = changes.commit is not None and changes.commit == self._base(record, directory) and not record.child_job_ids
        if lost and idle:  # one with child jobs keeps it: their work is merged into its checkout
            repo_op(self.repo, self.repo, "worktree", "remove", "--force", "--force", "--", str(directory))
            self._note(record, f"lost with no work: its worktree was removed; branch {changes.branch} stays at its base")
        return changes

    def worktrees(self) -> WorktreeCheckout:
        return self

    def retire(self, record: WorkerRecord, job: JobRecord) -> bool:
        """A finished worker's worktree goes, on the retirer's thread, once its work is committed
        (``record.commit``, its final record on disk): not a worker with child jobs (their work
        is merged into its worktree) nor a candidate (the judge runs in its folder). Its branch
        stays. Returns whether it was queued."""
        if not self.settings.git.remove_worker_worktrees:
            return False  # kept until the job lands or git.keep_worktrees_days (retention/lifetime.py)
        if record.commit is None or record.child_job_ids or record.candidate is not None:
            return False
        directory = self.directory(record)
        if not (directory / ".git").is_file():
            return False
        self.retirer.put(directory)
        return True

    def finishing(self, record: WorkerRecord, job: JobRecord) -> contextlib.AbstractContextManager[None]:
        """Counted against the retirer's backlog while it finishes, if its worktree will go
        (as ``retire`` decides, before its commit is known)."""
        if not self.settings.git.remove_worker_worktrees or record.child_job_ids or record.candidate is not None:
            return contextlib.nullcontext()
        return self.retirer.finishing()

    def keep_args(self, directory: Path) -> list[str]:
        return self.bootstrap.keep_args(directory)

    # -- helpers -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def holding(self, record: WorkerRecord) -> Iterator[Path]:
        """The worker's worktree, locked against this server's other commits and merges into it."""
        directory = self.directory(record)
        with self._lock:
            held = self._held.setdefault(directory, threading.RLock())
        with held:
            yield directory

    def commit(self, record: WorkerRecord, attempt: int, subject: str | None = None) -> str:
        """Commit everything the worker left (``add -A`` respects .gitignore); the tip either way.
        ``subject``: the message's first line instead of the subtask's (a commit at a spawn)."""
        with self.holding(record):
            return self._commit(record, attempt, subject)

    def _commit(self, record: WorkerRecord, attempt: int, subject: str | None) -> str:
        """The worker's own commits taken (checked), then what it left committed in its sandbox
        (git/sandboxed.py) and taken the same way: the branch moves only to a checked commit. A
        sandboxed worker that wrote nothing since its checkout was marked needs no git
        (checkouts/untouched.py)."""
        directory = self.directory(record)
        since = self._marks.pop(directory, None)
        self._unlink_branch(record, directory)
        shown = self.tip(record) if since is not None else ""
        self._take(record, directory)
        private = linked_git_dir(directory)
        if since is not None and private is not None and self.tip(record) == shown:
            if not untouched.written_since(since, directory, private):
                return shown
        # Attempt 0's files are the setup's (git.setup, .worktreeinclude): no AI's work.
        co_author = co_author_of(record, self.settings) if attempt > 0 else None
        round_ = record.running_round  # a continue round's work says so, and the feedback it answers
        about = f"\n\nContinue round {round_.number}, on the feedback:\n{round_.feedback[:2000]}" if round_ else ""
        message = (
            f"{subject_line(subject or (round_.subject if round_ else record.task))}\n\n"
            f"The work of worker {record.name} (depth {record.depth}) on its subtask:\n{record.task[:2000]}{about}\n\n"
            + trailers(record.job_id, record.name, co_author, attempt=str(attempt))
        )
        before = self.tip(record)
        # By the user (their identity read from the host), never a copied .env.
        self.inside(record).commit_all(message, self.bootstrap.copied(directory), identity_of(self.repo).env())
        refused = self._take(record, directory)
        if refused:  # what it left cannot be committed as it is: the worker fails, saying why
            raise GitError(f"the work it left was not committed: {refused}")
        tip = self.tip(record)
        # Unsandboxed, the worker's commits moved its branch itself (nothing was taken and checked): its
        # files are still measured before anything merges or lands them.
        unsandboxed = self.confinement.for_job(self._configs.get(record.job_id)).spec is None
        base = self._base(record, directory) if unsandboxed else ""
        large = commit_problem(self.repo, base, tip, self._blob_limits()) if base and base != tip else ""
        if large:
            raise GitError(f"the work it left is refused: {large}")
        if tip != before:
            worker_refs.follow(directory, record.name, tip)  # a sandbox that runs now builds on this commit
        return tip

    def _checkout_for(self, record: WorkerRecord) -> CheckoutRunner:
        """A new worktree's checkout, in the worker's sandbox: the commit it checks out may be a
        worker's (a child job's worker starts from its parent worker's work)."""

        def run(argv: list[str], env: dict[str, str]) -> None:
            self.inside(record).run(*argv, env=env)
            self._take(record, self.directory(record))  # a new branch is made in its view: made real here

        return run

    def inside(self, record: WorkerRecord) -> CheckoutGit:
        """Git on the worker's checkout, in its sandbox (git/sandboxed.py): its job's, else the server's."""
        directory = self.directory(record)
        return CheckoutGit(directory, self.confinement.spec(record, directory, self._configs.get(record.job_id)))

    def tip(self, record: WorkerRecord) -> str:
        """The commit the worker's branch points at (read from the repository, not its checkout)."""
        found = job_refs.ref_value(self.repo, f"refs/heads/{self.branch(record)}")
        if found is None:
            raise GitError(f"the branch {self.branch(record)} of worker {record.name} does not exist")
        return found

    def restore(self, record: WorkerRecord, commit: str) -> None:
        """Back to ``commit`` on the worker's branch (after its gates): what a gate wrote or committed
        is dropped, what git ignores stays. A sandboxed gate cannot have switched branches (its HEAD
        is read-only there); an unconfined one may have, so there ``checkout -f -B``, a ``reset --hard``
        that also puts HEAD back on the worker's branch."""
        directory = self.directory(record)
        self._marks.pop(directory, None)
        git = self.inside(record)
        if git.sandbox is not None:
            self._back_to(record, commit, "-fdq")
            return
        git.run("checkout", "-q", "-f", "-B", self.branch(record), commit)
        git.run("clean", "-fdq", *self.keep_args(directory))
        worker_refs.follow(directory, record.name, commit)

    def bring_in(self, record: WorkerRecord, old: str, new: str) -> str:
        """The worker's branch moved from ``old`` to ``new`` (a child job's merge): its checkout follows
        (``read-tree -m -u``, which refuses to overwrite what changed since ``old``). "" when done,
        else git's reason."""
        directory = self.directory(record)
        self._marks.pop(directory, None)
        done = self.inside(record).run("read-tree", "-m", "-u", old, new, check=False)
        if done.returncode != 0:
            return invocation.text(done.stderr).strip()[:500]
        self._take(record, directory)  # (read-tree moves no ref; what its git wrote, taken)
        worker_refs.follow(directory, record.name, new)  # its sandbox's view of its branch
        return ""

    def before_attempt(self, record: WorkerRecord) -> None:
        directory = self.directory(record)
        since = self._marks.get(directory)
        if since is not None and not untouched.settle(since):
            self._marks.pop(directory, None)

    def _mark(self, record: WorkerRecord, directory: Path) -> None:
        """Note that the orchestrator is done writing the checkout of a sandboxed worker (about to run):
        its next commit runs git only if something was written since (checkouts/untouched.py), and
        ``before_attempt`` settles the clock past it."""
        self._marks.pop(directory, None)
        if self.confinement.for_job(self._configs.get(record.job_id)).spec is None:
            return  # unconfined: its git runs here anyway, and such a worker could set the clock
        since = untouched.mark(directory)
        if since is not None:
            self._marks[directory] = since

    def _back_to(self, record: WorkerRecord, commit: str, clean: str) -> None:
        """The checkout as ``commit`` has it, on the worker's branch, moved there."""
        directory = self.directory(record)
        self._marks.pop(directory, None)
        git = self.inside(record)
        git.run("reset", "--hard", "-q", commit)
        view = git.sandbox.project if git.sandbox is not None else None
        git.run("clean", clean, *self.bootstrap.keep_args(directory), *(view.clean_args() if view else ()))
        self._moved(record, directory, commit)

    def _moved(self, record: WorkerRecord, directory: Path, commit: str) -> None:
        """After git in the sandbox moved the branch (its view of it) to ``commit``: the real branch too."""
        refused = self._take(record, directory)
        if refused:
            raise GitError(f"its branch could not be moved back to {commit[:12]}: {refused}")
        if self.tip(record) != commit:  # unconfined, or no view: moved directly
            ref = f"refs/heads/{self.branch(record)}"
            run_git(self.repo, "update-ref", "-m", "orchestrator: back to a checkpoint", ref, commit)
        worker_refs.follow(directory, record.name, commit)

    def _written_submodules(self, record: WorkerRecord, directory: Path) -> list[str]:
        """Submodule folders a worker wrote into. ``git worktree add`` leaves them empty and git
        neither sees nor commits files there, so they would be dropped without a word."""
        if not (directory / ".gitmodules").is_file():
            return []
        listed = self.inside(record).text("config", "--file", ".gitmodules", "--get-regexp", r"\.path$", check=False)
        found = []
        for line in listed.splitlines():
            path = line.partition(" ")[2]
            folder = directory / path
            if path and folder.is_dir() and not (folder / ".git").exists() and any(folder.iterdir()):
                found.append(path)
        return found

    def _unlink_branch(self, record: WorkerRecord, directory: Path) -> None:
        """A worker that could write its tree's ref folder (an unsandboxed one: a sandboxed one writes
        only its view of it, git/worker_refs.py) can turn its branch into a link to another branch,
        which git follows as a symbolic ref: this server's commit would then move that branch (the
        user's ``main``). Such a link is replaced by the branch itself, at the commit its attempt
        started from, before any git runs here."""
        private = linked_git_dir(directory)
        common = common_dir_of(private) if private is not None else None
        ref = common / "refs" / "heads" / self.branch(record) if common is not None else None
        if ref is None or not ref.is_symlink():
            return
        start = self._read(directory, CHECKPOINT_FILE) or self._read(directory, BASE_FILE)
        self._refused(record, f"its branch ref had been made a link ({os.readlink(ref)}): set back to {start[:12]}")
        run_git(
            self.repo, "update-ref", "--no-deref", "-m", "orchestrator: a link undone", f"refs/heads/{self.branch(record)}", start
        )

    def _take(self, record: WorkerRecord, directory: Path) -> str:
        """What git wrote in the worker's sandbox taken into the repository, checked: its objects
        (git/worker_objects.py), then its branch where its view moved it (git/worker_refs.py), only
        to a commit that adds no submodule its base lacks. "" when taken (or nothing to take), else
        why the branch was left where it was (also in the worker's log)."""
        self._unlink_branch(record, directory)
        # Where its sandbox cannot pin its git files or hide its siblings' branches (Landlock), a link it
        # made of one is removed before git runs here; under bubblewrap only its own git dir is looked at.
        spec = self.confinement.for_job(self._configs.get(record.job_id)).spec
        tree = f"refs/heads/{self.settings.git.branch_prefix}{record.root_id}"
        in_place = spec is not None and spec.backend is not Backend.BUBBLEWRAP
        for planted in worker_refs.unlink_planted(directory, tree if in_place else None):
            self._refused(record, f"a file of its git dir had been made a link ({planted}): removed")
        # The store is every sandboxed worker's of the tree, and a take moves all of it: what this
        # take refused may be a sibling's, so it is the tree's to hear; the worker whose branch
        # names a refused object is told below, with why.
        for line in worker_objects.take(directory, self.repo, self.workspace.tree_objects(record.root_id)).refused:
            said = f"the workers' object store held an object not taken into the repository: {line}"
            log.warning("%s", said, extra=logs.context(record.job_id, record.name))
            self.workspace.log_event(record.root_id, said)
        ref = f"refs/heads/{self.branch(record)}"
        base, limits = self._read(directory, BASE_FILE), self._blob_limits()
        refused = worker_refs.take(directory, self.repo, record.name, ref, base=base, limits=limits)
        if refused:
            objects = worker_objects.refused_earlier(refused)
            if objects:  # why its objects are missing, not only that they are
                refused += f" (refused on the way in: {'; '.join(objects[:3])})"
            self._refused(record, refused)
            private = linked_git_dir(directory)
            if private is not None:  # its git's reflog lines naming what was refused: git fsck walks them
                worker_refs.forget_broken(self.repo, ref, private)
        return refused

    def _blob_limits(self) -> BlobLimits:
        """What a worker's commit may add (git/tree_checks.py): each file within its file-size limit,
        all its new files within its disk cap, counted inflated."""
        w = self.settings.workers
        limits = Limits.from_mb(0, 0, w.max_log_mb, w.max_disk_mb)
        return BlobLimits(limits.file_size, limits.disk)

    def _base(self, record: WorkerRecord, directory: Path) -> str:
        return self._read(directory, BASE_FILE) or self.tip(record)

    def _read(self, directory: Path, name: str) -> str:
        try:
            return (git_dir_of(directory) / name).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def _write(self, directory: Path, name: str, value: str) -> None:
        (git_dir_of(directory) / name).write_text(value + "\n", encoding="utf-8")

    def _note(self, record: WorkerRecord, line: str) -> None:
        self.workspace.append_line(self.workspace.worker_log(record.root_id, record.depth, record.name), f"[orchestrator] {line}")

    def _refused(self, record: WorkerRecord, line: str) -> None:
        """What the orchestrator would not take from the worker's sandbox: in its log, and in its record
        of refusals (workers/refusals.py), which its sandbox cannot write and which status shows."""
        self._note(record, line)
        refusals.record(self.workspace.worker_paths(record.root_id, record.depth, record.name).refusals, f"[orchestrator] {line}")


def _interrupted(directory: Path) -> bool:
    """Whether making the worktree ``directory`` was cut off before its checkout completed:
    git's own ``worktree add`` locks a new worktree ("initializing", in the C locale our git calls
    run in) until its checkout is done, and repository.add_worktree's checkout (after its own
    entry, which takes no lock, or after ``worktree add --no-checkout``) is the first to write the
    worktree's index. Read from the files, no git call."""
    admin = linked_git_dir(directory)
    if admin is None:
        return False
    try:
        if (admin / "locked").read_text(encoding="utf-8").strip() == "initializing":
            return True
    except OSError:
        pass
    return (admin / "HEAD").is_file() and not (admin / "index").exists()


def checkpoints(record: WorkerRecord) -> dict[str, object]:
    """A worker's checkpoints (GET .../workers/<worker>/checkpoints): the commit each attempt
    started from, and whether a retry went back to its predecessor's checkpoint ("reset") or went
    on from that attempt's work ("kept": after a timeout or a transient failure). A folder
    worker has none."""
    rows: list[dict[str, object]] = []
    previous = None
    for attempt in record.attempts:
        if previous is None:
            started = "base"
        elif attempt.checkpoint is not None and attempt.checkpoint == previous.checkpoint:
            started = "reset"
        else:
            started = "kept"
        rows.append(
            {
                "attempt": attempt.number,
                "checkpoint": attempt.checkpoint,
                "started_from": started,
                "end_reason": attempt.end_reason,
                "failure_class": attempt.failure_class,
            }
        )
        previous = attempt
    isolation = "worktree" if record.branch else "folder"
    return {"worker": record.key, "isolation": isolation, "branch": record.branch, "checkpoints": rows if record.branch else []}
