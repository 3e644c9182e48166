"""Where a worker works: the Checkout seam.

The engine holds one Checkout and calls it at four points of a worker's run:

==========  =====================================  ==========================================
call        when                                   FolderCheckout (today's behaviour)
==========  =====================================  ==========================================
prepare     before its first attempt (once; also   makes ``depth_<d>/worker_<name>/`` and
            for a worker re-adopted after a        its private TMPDIR (both kept if there)
            restart, whose folder is already there)
reset       before each retry, after the failed    nothing: a retry sees what the failed
            attempt's leftovers were swept and     attempt left (an AI CLI can go on from
            its backoff waited; never otherwise    its partial work)
changes     after its last attempt, once nothing   ``files_created``: every file in its folder
            of it runs (and when a step asks)      (see ``Workspace.files_in``)
cleanup     after ``changes``, once per prepare,   empties its TMPDIR (the folder stays: it is
            whatever the outcome (cancelled and    the worker's deliverable)
            timed-out workers included)
==========  =====================================  ==========================================

A worker that never started (skipped) is neither prepared nor cleaned up; nor is one whose
process had ended before a server restart: the restart asks ``recovered`` what it left (a
worktree commits it), unless its record already holds that.

``prepare`` returns the directory the worker runs in (its cwd). The worker's prompt, its
``ORCHESTRATOR_WORKER_DIR`` and the resource monitor name ``Workspace.worker_dir``, so an
implementation puts the worker there (the git worktree checkout makes that folder
a worktree on a branch of its own, keeping the layout: checkouts/worktree.py; checkouts/isolated.py's
``make_checkout`` gives the engine its Checkout).

A worker's private TMPDIR (``Workspace.worker_tmp``, named in its environment) is made and
emptied here too: another implementation keeps that part (wrap or extend FolderCheckout). An
emptied one is set aside for the tree's next worker, which takes it by a rename instead of a new
folder (``Workspace.make_worker_tmp``, ``Workspace.release_worker_tmp``).

``changes`` and ``cleanup`` run after the worker's process has ended (through ``finish_checkout``),
where an exception must not leave the worker running forever: one that raises is logged and
the worker's changes are taken as none. ``prepare`` and ``reset`` may raise: the worker then
fails, before it runs (an engine error naming the exception; ``cleanup`` still runs) or
instead of the retry. ``CheckoutFailed`` from ``prepare`` is a failure of the user's making (a
worktree's ``git.setup`` failed, no free port): its message is the worker's exit reason.
"""

from __future__ import annotations

import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..config.keys import StrEnum
from ..models import JobRecord, WorkerRecord
from ..workspace.layout import Workspace

log = logging.getLogger("orchestrator.checkout")


class CheckoutFailed(Exception):
    """``prepare`` could not make the directory ready for a reason the user must see as the
    worker's exit reason ("setup failed: exit code 2"), not as an engine error. ``cancelled``:
    it stopped because the job was cancelled (the worker ends cancelled, not failed)."""

    def __init__(self, message: str, *, cancelled: bool = False) -> None:
        super().__init__(message)
        self.cancelled = cancelled


@dataclass(frozen=True)
class Changes:
    """What a worker changed in its directory (a worktree checkout adds the commit, the
    changed files with how each changed, and a diffstat)."""

    files_created: list[str] = field(default_factory=list)  # added files, relative to its directory
    branch: str | None = None  # a worktree's branch
    commit: str | None = None  # its tip after the orchestrator committed the worker's work
    files_changed: list[dict[str, str]] = field(default_factory=list)  # {"path", "change": added|modified|deleted|renamed}
    diffstat: str | None = None  # git's --shortstat since the worker's base, or "no changes"
    # The checkout is as the worker found it (WorkerRecord.no_changes); None: not known.
    unchanged: bool | None = None
    # Why what the worker left could not be read or committed: the worker fails with it, never "success".
    error: str | None = None

    def apply_to(self, record: WorkerRecord) -> None:
        """Put these changes in the worker's record (under the engine's lock when it runs)."""
        record.files_created = self.files_created
        record.no_changes = self.unchanged
        if self.branch is not None:  # a worktree's (checkouts/worktree.py)
            record.branch, record.commit, record.diffstat = self.branch, self.commit, self.diffstat
            record.files_changed = self.files_changed


def touched_paths(files_changed: Sequence[Mapping[str, str]]) -> list[str]:
    """Every path a worktree worker's diff touched (``files_changed``): each file's, and a
    rename's old path (moving a file away touches it too)."""
    paths = [f["path"] for f in files_changed if f.get("path")]
    return paths + [f["from"] for f in files_changed if f.get("from")]


# A deleted job tree's git worktrees and branches removed: (root id, all its branches too).
RemoveTree = Callable[[str, bool], None]


class Worktrees(Protocol):
    """What the engine (a commit at a spawn, a child job's merge: engine/nesting.py) and the
    quality gates use of the checkout that makes worktrees (checkouts/worktree.py's WorktreeCheckout)."""

    repo: Path  # the host repository

    def branch(self, record: WorkerRecord) -> str: ...

    def changes(self, record: WorkerRecord) -> Changes: ...

    def commit(self, record: WorkerRecord, attempt: int, subject: str | None = None) -> str: ...

    def tip(self, record: WorkerRecord) -> str:
        """The commit the worker's branch points at."""
        ...

    def restore(self, record: WorkerRecord, commit: str) -> None:
        """Its checkout and branch back to ``commit``, by git in the worker's sandbox."""
        ...

    def bring_in(self, record: WorkerRecord, old: str, new: str) -> str:
        """Its checkout follows its branch from ``old`` to ``new``; "" when done, else why not."""
        ...

    def holding(self, record: WorkerRecord) -> AbstractContextManager[Path]:
        """The worker's worktree, locked against the other commits and merges into it."""
        ...

    def keep_args(self, directory: Path) -> list[str]:
        """What ``git clean`` must keep in the worktree (its bootstrap's files)."""
        ...


class CheckoutKind(StrEnum):
    """A checkout's ``name``, and what ``isolated.make_checkout`` is asked for."""

    ISOLATED = "isolated"  # the engine's: each job's config.isolation chooses folder or worktree
    FOLDER = "folder"
    WORKTREE = "worktree"


class Checkout(ABC):
    """Prepares, resets, inspects and cleans up worker directories (see the module docstring)."""

    name: str = ""

    @abstractmethod
    def prepare(self, record: WorkerRecord, job: JobRecord) -> Path:
        """Before the worker's first attempt: make its directory ready; return it (its cwd).
        Idempotent: a worker re-adopted after a restart finds it there and keeps it."""

    @abstractmethod
    def reset(self, record: WorkerRecord, attempt: int) -> None:
        """Before retry ``attempt`` (2 or more) starts; ``record.attempts[-1]`` is the one
        that failed (its end, failure class and exit code say why)."""

    @abstractmethod
    def changes(self, record: WorkerRecord) -> Changes:
        """What the worker changed so far (after its last attempt, or for a step that asks)."""

    @abstractmethod
    def cleanup(self, record: WorkerRecord, succeeded: bool) -> None:
        """After its last attempt and ``changes``; ``succeeded``: that attempt succeeded
        (and no step failed it). Its child jobs may still be running."""

    def checkpoint(self, record: WorkerRecord) -> str | None:
        """What the attempt starting now starts from (a worktree's commit), recorded in the
        attempt; None for a checkout without checkpoints."""
        return None

    def before_attempt(self, record: WorkerRecord) -> None:  # noqa: B027 (a hook: most checkouts need none)
        """Just before the worker's attempt starts (a worktree makes sure the clock has moved past
        its last write of the checkout: checkouts/untouched.py)."""

    @abstractmethod
    def discard(self, record: WorkerRecord) -> None:
        """Throw away what its last attempt left instead of keeping it: it ended at the disk cap,
        and its excess files must not stay on disk (nor be committed)."""

    def recovered(self, record: WorkerRecord, job: JobRecord, lost: bool) -> Changes:
        """A worker a restarted server settles without running it (its process ended while
        no server ran, or it was lost: ``lost``, no exit status either): what it left, as
        ``changes`` tells it (a worktree commits it first), so nothing it wrote is lost."""
        return self.changes(record)

    def retire(self, record: WorkerRecord, job: JobRecord) -> bool:
        """A finished worker's final record is on disk: what it worked in may go (a worktree,
        its branch staying). Returns whether something is going; a folder stays."""
        return False

    def finishing(self, record: WorkerRecord, job: JobRecord) -> AbstractContextManager[None]:
        """Around a finished worker's end, from its slot going to the next worker up to its
        ``retire``: what it worked in counts as going (a worktree against the removal backlog)."""
        return nullcontext()

    def worktrees(self) -> Worktrees | None:
        """The checkout it makes worktrees with; None: it makes none. May raise GitError when it
        would but finds no host repository."""
        return None

    def worktrees_for(self, job: JobRecord | None) -> Worktrees | None:
        """The worktree checkout a worker of ``job`` works in; None: a plain folder."""
        return self.worktrees()

    def tree_remover(self) -> RemoveTree | None:
        """What removes a deleted job tree's git worktrees and branches; None: it makes none."""
        return None

    def prune_stale(self) -> list[str]:
        """At server start: the stale worktree entries it pruned (none: it makes no worktrees)."""
        return []


class FolderCheckout(Checkout):
    """A plain folder per worker in the workspace, kept as it is between attempts."""

    name = CheckoutKind.FOLDER

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def prepare(self, record: WorkerRecord, job: JobRecord) -> Path:
        directory = self.workspace.create_worker_dir(record.root_id, record.depth, record.name)
        # Its own temp folder, outside its directory, so files_created stays the worker's work.
        self.workspace.make_worker_tmp(record.root_id, record.depth, record.name)
        return directory

    def reset(self, record: WorkerRecord, attempt: int) -> None:
        """Nothing: the failed attempt's files stay for the retry (on purpose, see the table)."""

    def changes(self, record: WorkerRecord) -> Changes:
        """Its folder starts empty (its TMPDIR is elsewhere): unchanged when it holds no file and
        it started no child job (whose workers write in folders of their own). A folder with no
        entry at all (a worker that wrote nothing: one listing) is not walked; any other is
        listed by ``Workspace.files_in``, which never lists what a folder swapped for a link
        points at (an empty listing through such a link says no more: no file either way)."""
        folder = self.workspace.worker_dir(record.root_id, record.depth, record.name)
        files = [] if _empty(folder) else self.workspace.files_in(folder)
        return Changes(files_created=files, unchanged=not files and not record.child_job_ids)

    def cleanup(self, record: WorkerRecord, succeeded: bool) -> None:
        self.workspace.release_worker_tmp(record.root_id, record.depth, record.name)

    def discard(self, record: WorkerRecord) -> None:
        """Its folder emptied: a folder has no checkpoint to go back to."""
        folder = self.workspace.worker_dir(record.root_id, record.depth, record.name)
        with os.scandir(folder) as entries:
            for entry in list(entries):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)


def _empty(folder: Path) -> bool:
    """Whether ``folder`` lists no entry (False where it cannot be listed: ``files_in`` says why)."""
    try:
        return not os.listdir(folder)
    except OSError:
        return False


def discard(checkout: Checkout, record: WorkerRecord) -> None:
    """``checkout.discard``, never raising (the engine calls it where an exception would strand the worker)."""
    try:
        checkout.discard(record)
    except Exception:
        log.exception("checkout %s could not throw away what worker %s left", checkout.name, record.key)


def finish_checkout(checkout: Checkout, record: WorkerRecord, succeeded: bool, known: Changes | None = None) -> Changes:
    """After a worker's last attempt: its changes, then its cleanup. Never raises (see the
    module docstring): the engine calls this where an exception would strand the worker.
    ``known``: the changes its last attempt's steps already asked for, still current (nothing
    ran in its directory since): taken as they are, with no second commit step."""
    changes = Changes()
    try:
        changes = known if known is not None else checkout.changes(record)
    except Exception as exc:
        log.exception("checkout %s could not tell what worker %s changed", checkout.name, record.key)
        changes = Changes(error=f"what it left could not be committed: {exc}")
    try:
        checkout.cleanup(record, succeeded)
    except Exception:
        log.exception("checkout %s could not clean up after worker %s", checkout.name, record.key)
    return changes
