"""Worktrees removed: a finished worker's, in the background (``Retirer``, one per repository:
``retirer_of``, ``flush_retired``), a deleted job tree's with its branches (``remove_worktrees``,
``job_worktrees``, ``remove_job_worktrees``), and at start the admin entries of this workspace's
worktrees whose folders are gone (``prune_stale``). Never a worktree of the user's, never a ref
outside a job's prefix. The worktrees themselves are made by checkouts/worktree.py."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..config import Settings
from ..errors import OrchestratorError
from ..git import job_refs, worker_objects
from ..git.invocation import GitFailed
from ..git.job_refs import Deleted
from ..git.repository import GitError, common_dir, linked_git_dir, repo_lock, repo_op, worktree_list
from ..git.worker_refs import RETIRED_MARK
from ..workspace import checkout_place as place
from ..workspace.layout import Workspace

log = logging.getLogger("orchestrator.worktree")  # one logger for worktrees: checkouts/worktree.py's

RETIRE_BACKLOG = 16  # finished worktrees waiting for removal before a new worktree waits
# How long a retired worktree's admin folder stays, hidden, before it is deleted: a git that had
# listed it just before (``git worktree list``, a branch deletion's check) reads its files for a
# few milliseconds more, and dies if they vanish under it ("Invalid path .../worktrees/<id>").
HIDDEN_GRACE = 5.0


class Retirer:
    """Removes finished workers' worktrees on one background thread, in batches: each folder is
    first renamed aside (atomic: the worker's folder is gone at once) and deleted outside any lock,
    then the batch's admin folders (``.git/worktrees/<id>``, each checked to be that folder's) are
    hidden under the repository's lock (their ``gitdir`` renamed: git skips an entry without one)
    and, ``HIDDEN_GRACE`` later, renamed out of ``.git/worktrees`` under it and deleted after it,
    so neither a git that was reading the entry nor one waiting for that lock waits or fails. What
    ``git worktree remove`` does, without its checks for changes (the work is committed) and its
    process per worktree. ``backlog``: how many may wait before a new worktree waits (``wait_below``),
    counting those of workers still ``finishing`` (their slot freed, their worktree not yet handed over)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._cond = threading.Condition()
        self._queue: list[Path] = []
        self._pending: set[Path] = set()  # queued or being removed
        self._finishing = 0  # workers whose slot went to the next one, their worktree not yet handed over
        self._hidden: list[tuple[float, Path]] = []  # (monotonic time hidden, admin folder), oldest first
        self._thread: threading.Thread | None = None
        self.removed = 0
        self.backlog = RETIRE_BACKLOG

    def put(self, directory: Path) -> None:
        with self._cond:
            if directory in self._pending:
                return
            self._pending.add(directory)
            self._queue.append(directory)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="worktree-retirer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_for(self, directory: Path) -> None:
        """Until ``directory`` is no longer queued nor being removed."""
        with self._cond:
            while directory in self._pending:
                self._cond.wait(1.0)

    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        """Around a finished worker's end, from its slot going to the next worker to its worktree
        handed over (``put``): its worktree counts as waiting for removal all that time. Under
        load that stretch (its sweep, its commit, its record) can outlast other workers' whole
        runs; uncounted, their worktrees piled up past the backlog."""
        with self._cond:
            self._finishing += 1
        try:
            yield
        finally:
            with self._cond:
                self._finishing -= 1
                self._cond.notify_all()

    def wait_below(self) -> None:
        """Until fewer than ``backlog`` worktrees wait for removal (queued, being removed, or their
        worker still ``finishing``): with workers that finish faster than their worktrees can be
        deleted, live worktrees stay bounded by the workers running plus this backlog."""
        with self._cond:
            while len(self._pending) + self._finishing >= self.backlog:
                self._cond.wait(1.0)

    def flush(self) -> None:
        """Until everything queued so far is removed (before a tree's clean-up lists its worktrees)."""
        with self._cond:
            while self._pending:
                self._cond.wait(1.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._due():
                    wait = self._hidden[0][0] + HIDDEN_GRACE - time.monotonic() if self._hidden else 30.0
                    if not self._cond.wait(max(0.01, wait)) and not self._queue and not self._hidden:
                        self._thread = None  # idle: a later put starts another
                        return
                batch, self._queue = self._queue, []
            try:
                self._remove(batch)
                self._delete_hidden()
            except Exception:
                log.exception("could not remove %d finished worktree(s)", len(batch))
            finally:
                with self._cond:
                    self._pending.difference_update(batch)
                    self._cond.notify_all()

    def _due(self) -> bool:
        return bool(self._hidden) and time.monotonic() - self._hidden[0][0] >= HIDDEN_GRACE

    def _remove(self, batch: list[Path]) -> None:
        admins = []
        for directory in batch:
            admin = linked_git_dir(directory)
            if admin is None:
                continue
            try:
                named = Path((admin / "gitdir").read_text(encoding="utf-8").strip())
            except OSError:
                continue
            if named != directory / ".git" and named.resolve() != (directory / ".git").resolve():
                continue  # not this folder's entry: never touch another worktree's
            aside = directory.with_name(f".retired_{directory.name}_{os.getpid()}_{threading.get_ident()}")
            try:
                os.rename(directory, aside)
            except OSError:
                log.warning("could not remove finished worktree %s", directory, exc_info=True)
                continue
            shutil.rmtree(aside, ignore_errors=True)
            admins.append(admin)
        if not admins:
            return
        # Hidden in one rename each, under the lock git's own adds and removes take (repository.repo_op).
        hidden = []
        with repo_lock(self.repo):
            for admin in admins:
                try:
                    os.rename(admin / "gitdir", admin / f"{RETIRED_MARK}-{os.getpid()}")
                    hidden.append(admin)
                except OSError:
                    log.warning("could not remove the worktree entry %s", admin, exc_info=True)
        with self._cond:
            self._hidden += [(time.monotonic(), admin) for admin in hidden]
        self.removed += len(hidden)

    def _delete_hidden(self) -> None:
        """The admin folders hidden ``HIDDEN_GRACE`` ago go (``_delete_entries``)."""
        with self._cond:
            now = time.monotonic()
            due = [admin for hidden_at, admin in self._hidden if now - hidden_at >= HIDDEN_GRACE]
            self._hidden = self._hidden[len(due) :]
        _delete_entries(self.repo, due)


def _delete_entries(repo: Path, admins: list[Path]) -> None:
    """Worktree admin folders: each leaves .git/worktrees in one rename (a git reading the folder's
    list meanwhile never meets a half-deleted entry), under the repository's lock; deleted after it."""
    if not admins:
        return
    gone = []
    with repo_lock(repo):
        for admin in admins:
            aside = admin.parent.parent / f"orchestrator-retired-{admin.name}-{os.getpid()}-{threading.get_ident()}"
            try:
                os.rename(admin, aside)
                gone.append(aside)
            except FileNotFoundError:
                continue  # gone already (a user's `git worktree prune` takes a hidden entry)
            except OSError:
                log.warning("could not remove the worktree entry %s", admin, exc_info=True)
    for aside in gone:
        shutil.rmtree(aside, ignore_errors=True)


_RETIRERS: dict[str, Retirer] = {}
_RETIRERS_GUARD = threading.Lock()


def retirer_of(repo: Path) -> Retirer:
    """The one Retirer of a repository in this server."""
    with _RETIRERS_GUARD:
        return _RETIRERS.setdefault(str(repo.resolve()), Retirer(repo))


def flush_retired(repo: Path | None = None) -> None:
    """Wait for the finished worktrees queued for removal in ``repo`` (None: every repository), if any."""
    with _RETIRERS_GUARD:
        found = list(_RETIRERS.values()) if repo is None else [_RETIRERS.get(str(repo.resolve()))]
    for retirer in found:
        if retirer is not None:
            retirer.flush()


def remove_worktrees(repo: Path, settings: Settings, workspace: Workspace, root_id: str, all_branches: bool = False) -> Deleted:
    """A deleted job's worktrees and branches: every worktree of the repository on a branch
    under ``<prefix><root id>/`` or inside the job's tree folder (a folder already deleted by
    hand included: its admin entry goes too), then the branches under that prefix in one
    transaction (job_refs.delete_job_refs), keeping ``<prefix><root id>/result`` unless
    ``all_branches``. Nothing outside the prefix is ever removed, and a branch the user
    checked out in a worktree of their own stays."""
    remove_job_worktrees(repo, settings, workspace, root_id)
    with repo_lock(repo):
        deleted = job_refs.delete_job_refs(repo, settings.git.branch_prefix, root_id, keep_result=not all_branches)
    if deleted.checked_out:
        log.warning(
            "job tree %s: kept branch(es) %s, checked out in a worktree that is not the job's (switch it away, then "
            "delete them with git branch -D)",
            root_id,
            ", ".join(deleted.checked_out),
        )
    return deleted


def job_worktrees(repo: Path, settings: Settings, workspace: Workspace, root_id: str) -> list[str]:
    """The paths of the repository's worktrees that are a job tree's: on a branch under
    ``<prefix><root id>/`` inside the workspace, or inside the tree's folder (one deleted by hand
    included). Never a worktree of the user's, wherever its branch."""
    prefix = job_refs.job_prefix(settings.git.branch_prefix, root_id)
    tree = workspace.job_dir(root_id).resolve()
    outside = place.tree_folder(settings, workspace, root_id)  # where no project view shows them (place.py)
    found = []
    for entry in worktree_list(repo):
        ours = entry.get("branch", "").startswith(prefix) and _inside(entry["worktree"], workspace.root)
        if ours or _inside(entry["worktree"], tree) or _inside(entry["worktree"], outside):
            found.append(entry["worktree"])
    return found


def remove_job_worktrees(repo: Path, settings: Settings, workspace: Workspace, root_id: str) -> list[str]:
    """Remove a job tree's worktrees (``job_worktrees``), folders and git's entries; their
    branches stay. Returns the paths removed."""
    flush_retired(repo)  # a finished worker's worktree being removed meanwhile is done first
    removed = []
    for path in job_worktrees(repo, settings, workspace, root_id):
        try:
            repo_op(repo, repo, "worktree", "remove", "--force", "--force", "--", path)
            removed.append(path)
        except GitError:
            log.warning("could not remove worktree %s", path, exc_info=True)
    # Its folder outside the workspace (place.py) goes with it, as the workspace's own folder does.
    shutil.rmtree(place.tree_folder(settings, workspace, root_id), ignore_errors=True)
    return removed


def prune_stale(repo: Path, workspace_root: Path, outside: Path | None = None) -> list[str]:
    """``git worktree prune``, for this workspace only: the admin entries of worktrees inside
    the workspace (or ``outside``, its folder of checkouts: place.py) whose folders are gone (a job folder deleted by hand, a server killed
    mid-delete). A plain ``git worktree prune`` would also drop the entry of a user's own
    worktree whose folder is only away for now (an unmounted disk), so each entry is removed
    by its path. Returns the paths whose entries went."""
    flush_retired(repo)
    _sweep_retired(repo)
    pruned = []
    for entry in worktree_list(repo):
        dead = "prunable" in entry or not Path(entry["worktree"]).exists()  # git < 2.31 does not say "prunable"
        ours = _inside(entry["worktree"], workspace_root.resolve()) or (
            outside is not None and _inside(entry["worktree"], outside)
        )
        if dead and ours:
            try:
                repo_op(repo, repo, "worktree", "remove", "--force", "--force", "--", entry["worktree"])
                pruned.append(entry["worktree"])
            except GitError:
                log.warning("could not prune the worktree entry of %s", entry["worktree"], exc_info=True)
    return pruned


def _sweep_retired(repo: Path) -> None:
    """Entries a Retirer hid in ``.git/worktrees`` or renamed out of it but did not get to delete,
    and entries repository.add_worktree was writing aside (a server stopped in between): deleted,
    unless their server (the pid in the name) still runs, or is this one and is still at it."""
    try:
        common = common_dir(repo)
        leftovers = [*common.glob("orchestrator-retired-*"), *common.glob("orchestrator-adding-*")]
        # Hidden: its ``gitdir`` renamed to the mark. A mark beside a ``gitdir`` (a file a worker could
        # have put in its own worktree's entry) hides nothing and deletes nothing.
        marks = common.glob(f"worktrees/*/{RETIRED_MARK}-*")
        hidden = {mark.parent: mark for mark in marks if not os.path.lexists(mark.parent / "gitdir")}
    except (GitFailed, OrchestratorError, OSError):
        return
    for folder in leftovers:
        parts = folder.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit():
            pid = int(parts[1])
            if (pid != os.getpid() and _alive(pid)) or (pid == os.getpid() and "-adding-" in folder.name):
                continue
        shutil.rmtree(folder, ignore_errors=True)
    owners = {admin: mark.name.rsplit("-", 1)[1] for admin, mark in hidden.items()}
    # One a live server hid, its Retirer deletes once the grace has passed.
    _delete_entries(
        repo, [a for a, pid in owners.items() if not (pid.isdigit() and (int(pid) == os.getpid() or _alive(int(pid))))]
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _inside(path: str, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def store_in_use(repo: Path, settings: Settings, workspace: Workspace, leaving: frozenset[str] = frozenset()) -> str | None:
    """Why the sandboxed workers' object store of the repository (git/worker_objects.py) is still
    needed, or None: no job tree is left in this workspace (but those in ``leaving``, about to be
    deleted) and no worktree of the repository is on a branch under the prefix (another folder's
    jobs may share the repository)."""
    left = [root_id for root_id in workspace.root_ids() if root_id not in leaving]
    if left:
        return f"{len(left)} job tree(s) remain in {workspace.root}"
    prefix = "refs/heads/" + settings.git.branch_prefix
    busy = [e["worktree"] for e in worktree_list(repo) if e.get("branch", "").startswith(prefix)]
    return f"{len(busy)} worktree(s) of the repository are the orchestrator's ({busy[0]} ...)" if busy else None


def workers_store(repo: Path) -> Path | None:
    """What of the sandboxes' object stores is in the repository's git dir, if anything: the store all
    trees shared before stores were per tree, else the folder sandboxes show the real store at."""
    stores = worker_objects.stores_at(common_dir(repo))
    return next((path for path in (stores.workers, stores.shown_at) if path.is_dir()), None)


def drop_workers_store(repo: Path, settings: Settings, workspace: Workspace) -> bool:
    """Remove the sandboxes' folders from the repository's git dir (the store all trees shared before
    stores were per tree, ``.git/orchestrator-objects``, and the folder the sandbox shows the real store
    at) once no job uses them (``store_in_use``). What the old store still holds is taken into the
    repository's store first. True when removed. (Each tree's own store goes with its tree's folder.)"""
    with repo_lock(repo):
        if workers_store(repo) is None or store_in_use(repo, settings, workspace) is not None:
            return False
        taken = worker_objects.remove(worker_objects.stores_at(common_dir(repo)), repo)
    if taken is not None and taken.refused:
        log.warning("the workers' object store of %s held objects that fail git's checks, dropped: %s", repo, taken.refused)
    log.info("removed the sandboxed workers' object store of %s: no job uses it any more", repo)
    return taken is not None
