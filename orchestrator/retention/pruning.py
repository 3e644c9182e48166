"""Deleting old job trees: the rule, the offline deletion and the server's retention pass
(``orchestrator prune``, the command, is cli/prune.py; the server's retention thread, and the
worktrees' shorter lifetime, retention/lifetime.py).

One rule decides whether a tree may go (``refusal``): it is a root job's tree and every job
in it has ended. ``DELETE /api/v1/jobs/{id}`` (``Engine.delete``), ``orchestrator prune`` and the
server's retention (``orchestrator.retention_days``) all apply it, so a running tree is
never touched:

- with the server up, ``prune --yes`` deletes through ``DELETE /api/v1/jobs/{id}``, so the
  server judges each tree by what it holds in memory (a tree it still runs or finishes is
  refused with 409 and kept);
- with the server down, the records on disk are judged by the same rule, and a tree that
  still has live worker processes (a server killed mid-job leaves them running, to be
  re-adopted at its next start) is kept too.

Each way, a worktree job's worktrees and its branches under ``<git.branch_prefix><root id>/``
go with its folder, by the same removal (retiring.remove_worktrees), keeping its result
branch (``DELETE ...?branches=all`` removes that too); nothing outside the prefix is removed.
Every deletion is ``delete_tree``: the folder is set aside first, in one rename, so a crash
never leaves a tree half listed, and a server finishes at its start what a crash cut short.

A dry run (the default) lists what would go and deletes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import failpoints
from ..checkouts.checkout import Checkout, RemoveTree
from ..config import Isolation
from ..errors import Conflict, JobNotFound, OrchestratorError, ValidationError
from ..models import JobRecord, JobStatus
from ..workspace import logs

log = logging.getLogger("orchestrator.prune")

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Settings

FINISHED = tuple(s.value for s in JobStatus if s.terminal)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


RemoveGit = RemoveTree  # (root id, all branches too): a checkout's tree_remover


class Removes(str, Enum):
    """What a deletion removes beside the tree's folder. Its value is in the name of the folder
    set aside (Workspace.set_aside), so a deletion a crash cut short is finished the same way."""

    FOLDER = "folder"  # nothing else: a job whose workers ran in plain folders
    WORKERS = "workers"  # its worktrees and worker branches; its result branch stays
    ALL = "all"  # its worktrees and every branch under its prefix, the result's too


class Candidate(NamedTuple):
    """A finished root tree old enough to delete."""

    root_id: str
    status: str
    ended_at: float  # when its root job ended (its folder's time when the record lacks one)
    size: int  # bytes on disk


def refusal(job: JobRecord, tree_jobs: Iterable[JobRecord]) -> str | None:
    """Why the tree of ``job`` may not be deleted, or None when it may: only a root job's tree
    whose jobs (``tree_jobs``: the server's live view, or the records on disk) have all ended."""
    if not job.is_root:
        return f"job {job.id} is a child job; delete its root job {job.root_id} (the whole tree lives in one folder)"
    running = [j for j in tree_jobs if not j.status.terminal]
    if any(j.id == job.id and j.status is JobStatus.WAITING for j in running):
        return (
            f"job {job.id} waits for approval (nothing runs, nothing is merged); end it first: "
            f"./orchestrator.sh reject {job.id} --reason '...' (or ./orchestrator.sh cancel {job.id}), then delete it"
        )
    if running:
        return (
            f"job {job.id} is still running ({len(running)} job(s) of its tree not finished); "
            f"cancel it first: ./orchestrator.sh cancel {job.id} (POST /api/v1/jobs/{job.id}/cancel)"
        )
    return None


def jobs_on_disk(workspace: Any, job: JobRecord) -> list[JobRecord]:
    """The records of ``job``'s tree, for ``refusal``; a tree whose records cannot all be read
    is judged by the one already read (a finished root ends after its whole tree)."""
    if not job.is_root:
        return [job]
    try:
        return workspace.load_tree(job.root_id)[0] or [job]
    except (OSError, ValueError, OrchestratorError):
        return [job]


def parse_age(text: str) -> float:
    """``"7d"`` -> seconds. Units: s, m, h, d, w; parts add up (``"1d12h"``)."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or not re.fullmatch(f"(?:{_DURATION.pattern})+", cleaned):
        raise ValidationError(
            f"--older-than {text!r} is not an age: give a number and a unit (s, m, h, d or w), e.g. 30m, 12h, 7d, 2w or 1d12h"
        )
    return sum(float(n) * UNITS[unit] for n, unit in _DURATION.findall(cleaned))


def parse_statuses(text: str | None) -> tuple[str, ...]:
    """``"completed,failed"`` -> the statuses; default: every finished one."""
    if text is None:
        return FINISHED
    wanted = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    bad = [s for s in wanted if s not in FINISHED]
    if not wanted or bad:
        what = f"{', '.join(bad)} is not a finished status" if bad else "no status given"
        raise ValidationError(f"--status: {what}; choose from {', '.join(FINISHED)} (running trees are never pruned)")
    return wanted


def candidates(workspace: Any, older_than: float, statuses: Iterable[str], now: float | None = None) -> list[Candidate]:
    """Root trees in ``workspace`` whose root job ended (with one of ``statuses``) at least
    ``older_than`` seconds ago, oldest first. Only the root record is read; the rule is
    applied again, to the whole tree, when a tree is deleted."""
    now = time.time() if now is None else now
    wanted = set(statuses)
    found = []
    for root_id in workspace.root_ids():
        try:
            job = workspace.load_job(root_id)
            ended = job.ended_at or workspace.job_dir(root_id).stat().st_mtime
        except (OSError, ValueError, OrchestratorError):
            continue  # being created or deleted, or unreadable: never guess
        if job.status.value in wanted and now - ended >= older_than:
            found.append(Candidate(root_id, job.status.value, ended, size_of(workspace.job_dir(root_id))))
    return sorted(found, key=lambda c: c.ended_at)


def delete_offline(workspace: Any, root_id: str, settings: Settings | None = None) -> str | None:
    """With no server: delete the tree unless ``refusal`` (on its records) or a live process
    of it says no, with its worktrees and branches as the server's delete removes them
    (retiring.remove_worktrees: its result branch stays; ``settings`` finds the repository).
    Returns why it was kept, or None when deleted."""
    from ..process import procscan  # psutil / the process table: only this path needs it

    try:
        root = workspace.load_job(root_id)
    except (OSError, ValueError, OrchestratorError) as exc:
        return f"its record cannot be read ({exc or type(exc).__name__})"
    reason = refusal(root, jobs_on_disk(workspace, root))
    if reason:
        return reason
    # Any process carrying one of its tags: a worker under its shim or its supervisor, or what it started.
    running = sorted(pid for pids in procscan.scan(lambda tag: tag.startswith(f"{root_id}.")).values() for pid in pids)
    if running:
        return (
            f"{len(running)} worker process(es) of it still run (pid {', '.join(str(p) for p in running[:5])}); "
            "start the server to take them over"
        )
    checkout = None
    if settings is not None and root.config.isolation == Isolation.WORKTREE:
        from ..checkouts.isolated import make_checkout

        checkout = make_checkout(settings, workspace)
    delete_job(workspace, root, checkout)
    return None


def delete_job(workspace: Any, job: JobRecord, checkout: Checkout | None, all_branches: bool = False) -> None:
    """Delete a root job's tree (the rule already applied), with its worktrees and branches when it
    had them (its result branch too with ``all_branches``)."""
    remove = checkout.tree_remover() if checkout is not None and job.config.isolation == Isolation.WORKTREE else None
    removes = Removes.FOLDER if remove is None else Removes.ALL if all_branches else Removes.WORKERS
    delete_tree(workspace, job.root_id, removes, remove)
    where = logs.context(job.id, root_id=job.root_id)
    log.info("job tree %s (%s) deleted with its folder", job.root_id, job.status.value, extra=where)


def delete_tree(workspace: Any, root_id: str, removes: Removes, remove_git: RemoveGit | None) -> None:
    """Delete a tree (the rule already applied) so that no crash leaves half of it listed: its
    folder is set aside first, in one rename (from then on no listing, status, index or prune
    sees it), then its worktrees and branches go, then the set-aside folder. A crash after the
    rename is finished at the next server start (``finish_deletions``); one before it changed
    nothing on disk."""
    aside = workspace.set_aside(root_id, removes.value)
    failpoints.hit("delete_set_aside")
    _remove_aside(root_id, removes, remove_git, aside)


def finish_deletions(workspace: Any, remove_git: RemoveGit | None) -> list[str]:
    """At a server's start: finish every deletion a crash cut short (its folder set aside, not
    yet removed). Finished, not undone: the tree had passed the rule, and its worktrees,
    branches and files may be partly gone already, so putting it back would list a tree that
    lost part of what it recorded. Returns the root ids."""
    done = []
    for root_id, what, aside in workspace.set_aside_trees():
        try:
            removes = Removes(what)
        except ValueError:
            removes = Removes.WORKERS  # not a name we write: the default deletion's
        _remove_aside(root_id, removes, remove_git, aside)
        done.append(root_id)
    return done


def _remove_aside(root_id: str, removes: Removes, remove_git: RemoveGit | None, aside: Path | None) -> None:
    if removes is not Removes.FOLDER and remove_git is not None:
        # Its worktrees' folders moved with the tree: git's entries for them are removed by
        # their old paths (``worktree remove --force --force`` takes a missing folder).
        remove_git(root_id, removes is Removes.ALL)
    failpoints.hit("delete_git_removed")
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def prune_engine(engine: Any, older_than: float, statuses: Iterable[str] = FINISHED) -> list[str]:
    """Inside a server: delete old finished trees through ``Engine.delete`` (its rule, its
    lock). Returns the deleted root ids; refused ones are logged and kept."""
    deleted = []
    for c in candidates(engine.workspace, older_than, statuses):
        try:
            engine.delete(c.root_id)
        except (Conflict, JobNotFound) as exc:
            log.info("retention kept job tree %s: %s", c.root_id, exc.message)
            continue
        deleted.append(c.root_id)
    return deleted


def size_of(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total
