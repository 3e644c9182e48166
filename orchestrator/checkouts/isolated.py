"""The engine's Checkout (``make_checkout``): each job's workers work in a plain folder or in a git
worktree, as the job's ``isolation`` says (``IsolatedCheckout``); ``auto`` is resolved at submission
(``resolve_isolation``), and the host repository's WorktreeCheckout is found when a job first asks
for one (``WorktreeFactory``, which prunes stale worktree entries then)."""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from ..config import Isolation, Settings
from ..errors import ConfigError, OrchestratorError
from ..git.invocation import GitFailed
from ..git.repository import GitError, find_host
from ..models import JobRecord, WorkerRecord
from ..workspace import checkout_place as place
from ..workspace.layout import Workspace
from .bootstrap import EnvFor
from .checkout import Changes, Checkout, CheckoutKind, FolderCheckout, RemoveTree
from .retiring import drop_workers_store, prune_stale, remove_worktrees
from .worktree import WorktreeCheckout

log = logging.getLogger("orchestrator.worktree")  # one logger for worktrees: checkouts/worktree.py's


class IsolatedCheckout(Checkout):
    """The engine's Checkout: each job's workers go to the checkout its ``isolation`` names
    (folder or worktree; ``auto`` was resolved at submission)."""

    name = CheckoutKind.ISOLATED

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
        if getattr(job.config, "isolation", Isolation.FOLDER) == Isolation.WORKTREE:
            chosen = self._worktree_for()
        with self._lock:
            self._by_worker[(record.root_id, record.key)] = chosen
        return chosen.prepare(record, job)

    def reset(self, record: WorkerRecord, attempt: int) -> None:
        self._of(record).reset(record, attempt)

    def changes(self, record: WorkerRecord) -> Changes:
        return self._of(record).changes(record)

    def discard(self, record: WorkerRecord) -> None:
        self._of(record).discard(record)

    def checkpoint(self, record: WorkerRecord) -> str | None:
        return self._of(record).checkpoint(record)

    def before_attempt(self, record: WorkerRecord) -> None:
        self._of(record).before_attempt(record)

    def retire(self, record: WorkerRecord, job: JobRecord) -> bool:
        if getattr(job.config, "isolation", Isolation.FOLDER) != Isolation.WORKTREE:
            return False
        try:
            return self._worktree_for().retire(record, job)
        except (GitFailed, OrchestratorError, OSError):
            log.warning("could not queue the worktree of worker %s for removal", record.key, exc_info=True)
            return False

    def finishing(self, record: WorkerRecord, job: JobRecord) -> AbstractContextManager[None]:
        if getattr(job.config, "isolation", Isolation.FOLDER) != Isolation.WORKTREE:
            return nullcontext()
        try:
            return self._worktree_for().finishing(record, job)
        except (GitFailed, OrchestratorError, OSError):
            return nullcontext()  # (its retire finds no repository either)

    def worktrees(self) -> WorktreeCheckout:
        """The host repository's worktree checkout (GitError when there is none)."""
        return self._worktree_for()

    def worktrees_for(self, job: JobRecord | None) -> WorktreeCheckout | None:
        """The worktree checkout when ``job`` asks for worktrees (its ``isolation``), else None."""
        return self.worktrees() if job is not None and job.config.isolation == Isolation.WORKTREE else None

    def tree_remover(self) -> RemoveTree | None:
        return self.remove_tree

    def remove_tree(self, root_id: str, all_branches: bool = False) -> None:
        """A deleted job's worktrees and branches go (never a ref outside its prefix; its
        result branch only with ``all_branches``); with the last job, the workers' object store."""
        try:
            worktrees = self._worktree_for()
            remove_worktrees(worktrees.repo, worktrees.settings, worktrees.workspace, root_id, all_branches)
            drop_workers_store(worktrees.repo, worktrees.settings, worktrees.workspace)
        except (GitFailed, OrchestratorError, OSError):
            log.warning("could not remove the worktrees of job tree %s", root_id, exc_info=True)

    def prune_stale(self) -> list[str]:
        """At server start: the admin entries of this workspace's worktrees whose folders are
        gone (``prune_stale``, run when the host repository is first found). Not asked for
        when git.isolation is ``folder`` (no git at start): then the first job that asks for
        worktrees prunes. Nothing when the folder is in no git repository."""
        if self._worktree_for.settings.git.isolation == Isolation.FOLDER:
            return []
        try:
            self._worktree_for()
        except GitError:
            return []  # no host repository (or no git): no worktrees either
        return self._worktree_for.pruned

    def recovered(self, record: WorkerRecord, job: JobRecord, lost: bool) -> Changes:
        if getattr(job.config, "isolation", Isolation.FOLDER) != Isolation.WORKTREE:
            return self.folder.recovered(record, job, lost)
        return self._worktree_for().recovered(record, job, lost)

    def cleanup(self, record: WorkerRecord, succeeded: bool) -> None:
        try:
            self._of(record).cleanup(record, succeeded)
        finally:
            with self._lock:
                self._by_worker.pop((record.root_id, record.key), None)


def resolve_isolation(settings: Settings, workspace_root: Path, mode: str) -> tuple[Isolation, str | None]:
    """A root job's isolation (``auto`` resolved) and the note that says why; ConfigError when
    ``worktree`` is asked for and not possible. The repository is always the one holding this
    folder, or git.repo: a request names only the mode, never a path."""
    if mode == Isolation.FOLDER:
        return Isolation.FOLDER, None
    host = find_host(settings.base_dir, workspace_root, settings.git.repo)
    if mode == Isolation.WORKTREE:
        if isinstance(host, str):
            raise ConfigError(f"isolation worktree is not possible: {host}. Use isolation folder (or auto).")
        return Isolation.WORKTREE, None
    if isinstance(host, str):
        return Isolation.FOLDER, f"isolation auto: folder, because {host}"
    return Isolation.WORKTREE, f"isolation auto: worktree, because {host.reason}"


def make_checkout(
    settings: Settings, workspace: Workspace, kind: str = CheckoutKind.ISOLATED, env: EnvFor | None = None
) -> Checkout:
    """The engine's Checkout: by default each job's ``config.isolation`` chooses (a plain
    folder, or a git worktree per worker); "folder" forces today's folders for every job.
    ``env``: a worker's environment, which a worktree's git.setup and git.teardown run with."""
    if kind == CheckoutKind.ISOLATED:
        return IsolatedCheckout(FolderCheckout(workspace), WorktreeFactory(settings, workspace, env))
    if kind == FolderCheckout.name:
        return FolderCheckout(workspace)
    raise ConfigError(f"unknown checkout {kind!r}: expected one of isolated, folder")


class WorktreeFactory:
    """The WorktreeCheckout of the host repository, found when a job first asks for one."""

    def __init__(self, settings: Settings, workspace: Workspace, env: EnvFor | None = None) -> None:
        self.settings = settings
        self.workspace = workspace
        self.env = env
        self._made: WorktreeCheckout | None = None
        self._lock = threading.Lock()
        self.pruned: list[str] = []  # the stale worktree entries pruned when the repository was found

    def __call__(self) -> WorktreeCheckout:
        with self._lock:
            if self._made is None:
                host = find_host(self.settings.base_dir, self.workspace.root, self.settings.git.repo)
                if isinstance(host, str):
                    raise GitError(f"worktree isolation is not possible: {host}")
                self._made = WorktreeCheckout(self.workspace, self.settings, host.repo, self.env)
                try:  # once per server run, before its first worktree: a dead entry would block its branch
                    self.pruned = prune_stale(
                        host.repo, self.workspace.root, place.workspace_folder(self.settings, self.workspace.root)
                    )
                except GitFailed:
                    log.warning("could not prune stale worktree entries in %s", host.repo, exc_info=True)
            return self._made
