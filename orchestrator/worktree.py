"""The worktree checkout (issue 12, items 1-4): each worker's usual folder
``depth_<n>/worker_<k>/`` is a git worktree of the host repository, on its own branch
``<git.branch_prefix><root id>/<worker name>`` (a child job's worker branches from its parent
worker's branch; a root job's from ``git.base``, or a snapshot of the uncommitted changes with
``git.include_uncommitted``). Git itself is gitwork.py's.

======== ================================================================================
prepare  ``git worktree add`` (kept when it is already there: a worker re-adopted after a
         restart; its checkout runs outside the repository's lock, see gitwork.add_worktree),
         and the worker's TMPDIR as FolderCheckout makes it
reset    before a retry: the failed attempt's leftovers are committed (its checkpoint), then
         the worktree goes back to the checkpoint the failed attempt started from (``reset
         --hard`` + ``clean -fdx`` inside that worktree only), unless the failure's class is
         ``transient`` or the attempt timed out: then its partial work is kept (a retry of an
         AI CLI goes on from it). Each attempt's checkpoint and the decision go in the log.
changes  commits what the worker left (respecting .gitignore) as the orchestrator, then tells
         the branch, its commit and what changed since the worker's base
cleanup  empties its TMPDIR; the worktree and its branch stay (they are the deliverable)
======== ================================================================================

Commits are made after an attempt, not in an after-attempt step: ``changes`` runs after every
worker's last attempt whatever its outcome (a failed worker's partial work is committed too),
while steps run only after a successful one. The commit names the worker and its subtask,
carries ``Orchestrator-Job/Worker/Attempt`` trailers, skips the user's hooks (``--no-verify``,
``core.hooksPath``) and is made by a fixed identity (gitcmd.IDENTITY_ENV).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .checkout import Changes, Checkout, FolderCheckout
from .config import Settings
from .errors import ConfigError
from .gitwork import GitError, add_worktree, check_ref, find_host, repo_op, resolve_commit, run_git, snapshot_commit
from .models import JobRecord, WorkerRecord
from .workspace import Workspace

log = logging.getLogger("orchestrator.worktree")

BASE_FILE = "orchestrator-base"  # in the worktree's own git dir: the commit its branch started from
CHECKPOINT_FILE = "orchestrator-checkpoint"  # beside it: the commit the next attempt starts from
KEEPS_PARTIAL_WORK = ("transient", "timeout")  # failure classes whose retry goes on from the leftovers
STATUS_NAMES = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed", "C": "added", "T": "modified"}
MAX_FILES = 500  # files_changed listed per worker


class WorktreeCheckout(Checkout):
    """A git worktree per worker on its own branch (see the module docstring)."""

    name = "worktree"

    def __init__(self, workspace: Workspace, settings: Settings, repo: Path) -> None:
        self.workspace = workspace
        self.settings = settings
        self.repo = repo
        self.folder = FolderCheckout(workspace)  # the TMPDIR part
        self._bases: dict[str, str] = {}  # root id -> the commit its root workers branch from
        self._lock = threading.Lock()

    # -- names ---------------------------------------------------------------------------------
    def branch(self, record: WorkerRecord) -> str:
        return f"{self.settings.git.branch_prefix}{record.root_id}/{record.name}"

    def directory(self, record: WorkerRecord) -> Path:
        return self.workspace.worker_dir(record.root_id, record.depth, record.name)

    def _root_base(self, root_id: str) -> str:
        """The commit a root job's workers start from, fixed at its first worker (and kept in
        its tree folder, so a restarted server uses the same one)."""
        with self._lock:
            if root_id in self._bases:
                return self._bases[root_id]
            saved = self.workspace.job_dir(root_id) / "git_base"
            if saved.is_file():
                commit = saved.read_text(encoding="utf-8").strip()
            else:
                g = self.settings.git
                commit = snapshot_commit(self.repo, g.base) if g.include_uncommitted else resolve_commit(self.repo, g.base)
                self.workspace.write_text(saved, commit + "\n")
            self._bases[root_id] = commit
            return commit

    def _start_point(self, record: WorkerRecord, job: JobRecord) -> str:
        if job.parent_worker and record.depth > 0:  # its parent worker's branch as it stands now
            parent = f"{self.settings.git.branch_prefix}{record.root_id}/{job.parent_worker}"
            found = run_git(self.repo, "rev-parse", "--verify", "--quiet", "--end-of-options", check_ref(parent), check=False)
            if found.returncode == 0:
                return found.stdout.strip()
        return self._root_base(record.root_id)

    # -- the seam ------------------------------------------------------------------------------
    def prepare(self, record: WorkerRecord, job: JobRecord) -> Path:
        directory = self.directory(record)
        self.workspace.worker_tmp(record.root_id, record.depth, record.name).mkdir(parents=True, exist_ok=True)
        if (directory / ".git").exists():
            return directory  # re-adopted after a restart: its worktree is there
        ref = check_ref(self.branch(record))
        directory.parent.mkdir(parents=True, exist_ok=True)
        exists = run_git(self.repo, "rev-parse", "--verify", "--quiet", "--end-of-options", ref, check=False).returncode == 0
        if exists:  # its branch outlived its worktree (a restart after a crash): check it out again
            start = resolve_commit(self.repo, ref)
            add_worktree(self.repo, directory, self.branch(record), None)
        else:
            start = self._start_point(record, job)
            add_worktree(self.repo, directory, self.branch(record), start)
        git_dir = Path(run_git(directory, "rev-parse", "--absolute-git-dir").stdout.strip())
        if not (git_dir / BASE_FILE).exists():
            (git_dir / BASE_FILE).write_text(start + "\n", encoding="utf-8")
            (git_dir / CHECKPOINT_FILE).write_text(self._tip(directory) + "\n", encoding="utf-8")
        return directory

    def reset(self, record: WorkerRecord, attempt: int) -> None:
        """Commit the failed attempt's work (its checkpoint), then keep it or go back."""
        failed = record.attempts[-1] if record.attempts else None
        directory = self.directory(record)
        before = self._read(directory, CHECKPOINT_FILE)
        left = self.commit(record, attempt - 1)
        kind = None
        if failed is not None:
            kind = failed.failure_class or ("timeout" if failed.end_reason == "timeout" else None)
        if kind in KEEPS_PARTIAL_WORK or not before:
            self._write(directory, CHECKPOINT_FILE, left)
            self._note(record, f"attempt {attempt} keeps attempt {attempt - 1}'s work ({kind}): checkpoint {left[:12]}")
            return
        run_git(directory, "reset", "--hard", "-q", before)
        run_git(directory, "clean", "-fdxq")
        self._note(
            record,
            f"attempt {attempt} starts from checkpoint {before[:12]}; attempt {attempt - 1}'s work ({left[:12]}) was reset away",
        )

    def changes(self, record: WorkerRecord) -> Changes:
        directory = self.directory(record)
        if not (directory / ".git").exists():
            return Changes()
        commit = self.commit(record, len(record.attempts))
        base = self._base(directory)
        files: list[dict[str, str]] = []
        out = run_git(directory, "diff", "--name-status", "-M", "-z", base, commit).stdout.split("\0")
        i = 0
        while i < len(out) - 1:
            status = out[i]
            if status[:1] in ("R", "C"):
                files.append({"path": out[i + 2], "change": STATUS_NAMES[status[0]], "from": out[i + 1]})
                i += 3
            else:
                files.append({"path": out[i + 1], "change": STATUS_NAMES.get(status[:1], "modified")})
                i += 2
        stat = run_git(directory, "diff", "--shortstat", base, commit).stdout.strip() or "no changes"
        return Changes(
            files_created=sorted(f["path"] for f in files if f["change"] == "added"),
            branch=self.branch(record),
            commit=commit,
            files_changed=files[:MAX_FILES],
            diffstat=stat,
        )

    def cleanup(self, record: WorkerRecord, succeeded: bool) -> None:
        self.folder.cleanup(record, succeeded)

    def checkpoint(self, record: WorkerRecord) -> str | None:
        return self._read(self.directory(record), CHECKPOINT_FILE) or None

    # -- helpers -------------------------------------------------------------------------------
    def commit(self, record: WorkerRecord, attempt: int) -> str:
        """Commit everything the worker left (``add -A`` respects .gitignore); the tip either way."""
        directory = self.directory(record)
        run_git(directory, "add", "-A", "--", ".")
        staged = run_git(directory, "diff", "--cached", "--quiet", check=False)
        if staged.returncode != 0:
            subject = " ".join(record.task.split())[:60]
            message = (
                f"{record.name}: {subject}\n\nThe work of worker {record.name} (depth {record.depth}) on its subtask:\n"
                f"{record.task[:2000]}\n\n"
                f"Orchestrator-Job: {record.job_id}\nOrchestrator-Worker: {record.key}\nOrchestrator-Attempt: {attempt}\n"
            )
            run_git(directory, "commit", "-q", "--no-verify", "--no-gpg-sign", "-F", "-", input_text=message)
        return self._tip(directory)

    def _tip(self, directory: Path) -> str:
        return run_git(directory, "rev-parse", "HEAD").stdout.strip()

    def _base(self, directory: Path) -> str:
        return self._read(directory, BASE_FILE) or self._tip(directory)

    def _git_dir(self, directory: Path) -> Path:
        return Path(run_git(directory, "rev-parse", "--absolute-git-dir").stdout.strip())

    def _read(self, directory: Path, name: str) -> str:
        try:
            return (self._git_dir(directory) / name).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def _write(self, directory: Path, name: str, value: str) -> None:
        (self._git_dir(directory) / name).write_text(value + "\n", encoding="utf-8")

    def _note(self, record: WorkerRecord, line: str) -> None:
        self.workspace.append_line(self.workspace.worker_log(record.root_id, record.depth, record.name), f"[orchestrator] {line}")


def remove_worktrees(checkout: WorktreeCheckout, root_id: str) -> list[str]:
    """A deleted job's worktrees and branches (only refs under ``<prefix><root id>/``, and
    never its merged result, ``<prefix><root id>/result``); returns the branches removed."""
    repo = checkout.repo
    prefix = f"refs/heads/{checkout.settings.git.branch_prefix}{root_id}/"
    listed = run_git(repo, "worktree", "list", "--porcelain").stdout
    for block in listed.split("\n\n"):
        lines = dict(line.split(" ", 1) for line in block.splitlines() if " " in line)
        if lines.get("branch", "").startswith(prefix):
            try:
                repo_op(repo, repo, "worktree", "remove", "--force", "--force", "--", lines["worktree"])
            except GitError:
                log.warning("could not remove worktree %s", lines["worktree"], exc_info=True)
    repo_op(repo, repo, "worktree", "prune")
    refs = run_git(repo, "for-each-ref", "--format=%(refname)", "--", prefix).stdout.split()
    refs = [ref for ref in refs if ref.startswith(prefix) and ref != prefix + "result"]
    for ref in refs:
        repo_op(repo, repo, "update-ref", "-d", "--", ref)
    return refs


class IsolatedCheckout(Checkout):
    """The engine's Checkout: each job's workers go to the checkout its ``isolation`` names
    (folder or worktree; ``auto`` was resolved at submission)."""

    name = "isolated"

    def __init__(self, folder: FolderCheckout, worktree_for: WorktreeFactory) -> None:
        self.folder = folder
        self._worktree_for = worktree_for
        self._by_worker: dict[tuple[str, str], Checkout] = {}
        self._lock = threading.Lock()

    def _of(self, record: WorkerRecord) -> Checkout:
        with self._lock:
            return self._by_worker.get((record.root_id, record.key), self.folder)

    def prepare(self, record: WorkerRecord, job: JobRecord) -> Path:
        chosen: Checkout = self.folder
        if getattr(job.config, "isolation", "folder") == "worktree":
            chosen = self._worktree_for()
        with self._lock:
            self._by_worker[(record.root_id, record.key)] = chosen
        return chosen.prepare(record, job)

    def reset(self, record: WorkerRecord, attempt: int) -> None:
        self._of(record).reset(record, attempt)

    def changes(self, record: WorkerRecord) -> Changes:
        return self._of(record).changes(record)

    def checkpoint(self, record: WorkerRecord) -> str | None:
        return self._of(record).checkpoint(record)

    def remove_tree(self, root_id: str) -> None:
        """A deleted job's worktrees and branches go (never a ref outside its prefix)."""
        try:
            remove_worktrees(self._worktree_for(), root_id)
        except GitError:
            log.warning("could not remove the worktrees of job tree %s", root_id, exc_info=True)

    def cleanup(self, record: WorkerRecord, succeeded: bool) -> None:
        try:
            self._of(record).cleanup(record, succeeded)
        finally:
            with self._lock:
                self._by_worker.pop((record.root_id, record.key), None)


def resolve_isolation(settings: Settings, workspace_root: Path, mode: str) -> tuple[str, str | None]:
    """A root job's isolation (``auto`` resolved) and the note that says why; ConfigError when
    ``worktree`` is asked for and not possible. The repository is always the one holding this
    folder, or git.repo: a request names only the mode, never a path."""
    if mode == "folder":
        return mode, None
    host = find_host(settings.base_dir, workspace_root, settings.git.repo)
    if mode == "worktree":
        if isinstance(host, str):
            raise ConfigError(f"isolation worktree is not possible: {host}. Use isolation folder (or auto).")
        return mode, None
    if isinstance(host, str):
        return "folder", f"isolation auto: folder, because {host}"
    return "worktree", f"isolation auto: worktree, because {host.reason}"


def make_checkout(settings: Settings, workspace: Workspace, kind: str = "isolated") -> Checkout:
    """The engine's Checkout: by default each job's ``config.isolation`` chooses (a plain
    folder, or a git worktree per worker); "folder" forces today's folders for every job."""
    if kind == "isolated":
        return IsolatedCheckout(FolderCheckout(workspace), WorktreeFactory(settings, workspace))
    if kind == FolderCheckout.name:
        return FolderCheckout(workspace)
    raise ConfigError(f"unknown checkout {kind!r}: expected one of isolated, folder")


class WorktreeFactory:
    """The WorktreeCheckout of the host repository, found when a job first asks for one."""

    def __init__(self, settings: Settings, workspace: Workspace) -> None:
        self.settings = settings
        self.workspace = workspace
        self._made: WorktreeCheckout | None = None
        self._lock = threading.Lock()

    def __call__(self) -> WorktreeCheckout:
        with self._lock:
            if self._made is None:
                host = find_host(self.settings.base_dir, self.workspace.root, self.settings.git.repo)
                if isinstance(host, str):
                    raise GitError(f"worktree isolation is not possible: {host}")
                self._made = WorktreeCheckout(self.workspace, self.settings, host.repo)
            return self._made


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
