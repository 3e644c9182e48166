"""How long a job's worktrees and branches live, in one place.

================ =====================================================================================
worktrees        the checkouts the workers ran in: a finished root job's go once its result is in the
                 branch the user named (``merge_into``, or ``merge --into``), or once it ended
                 ``git.keep_worktrees_days`` ago (0: no age limit). Everything they
                 held is committed on their branches by then, so nothing is lost but ignored files.
worker branches  stay until the job is deleted (``delete``, ``prune --older-than``, retention): a
                 merge again (``merge --strategy``), ``diff --worker`` and ``conflicts`` read them,
                 and a loser's or a rejected job's branch is what a person reviews.
result branch    ``<prefix><root id>/result`` stays until the job is deleted with ``--branches all``.
================ =====================================================================================

Only a finished root tree is touched (the rule is prune.refusal's, on the records on disk, which
say finished only after the tree's landing is done), only worktrees git lists as the tree's
(retiring.job_worktrees), and never a ref: removing a worktree moves no branch. The server
applies it at a landing that moved the user's branch and at each retention pass; ``prune``
lists it (a dry run) and applies it with ``--yes``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkouts.retiring import job_worktrees, prune_stale, remove_job_worktrees
from ..config import Isolation
from ..errors import OrchestratorError
from ..git import job_refs
from ..git.invocation import GitFailed
from ..git.repository import check_ref, find_host, run_git
from ..models import JobRecord
from ..outcomes import MergeRecord
from ..workspace import checkout_place as place
from .pruning import UNITS, jobs_on_disk, prune_engine, refusal, size_of

if TYPE_CHECKING:
    from ..config import Settings
    from ..workspace.layout import Workspace

log = logging.getLogger("orchestrator.lifetime")
KEEP_KEY = "git.keep_worktrees_days"
RETENTION_INTERVAL = 3600.0  # seconds between two retention passes of a running server


@dataclass(frozen=True)
class Held:
    """What a job tree holds in the host repository now."""

    worktrees: tuple[str, ...] = ()  # paths
    branches: tuple[str, ...] = ()  # short names, <prefix><root id>/...
    bytes: int = 0  # on disk, in its worktrees' folders

    @property
    def worker_branches(self) -> tuple[str, ...]:
        return tuple(b for b in self.branches if not b.endswith("/result"))

    def to_dict(self) -> dict[str, Any]:
        return {"worktrees": list(self.worktrees), "branches": list(self.branches), "bytes": self.bytes}


@dataclass
class Release:
    """A finished job whose worktrees are due to go, and why."""

    root_id: str
    status: str
    reason: str
    held: Held = field(default_factory=Held)


def host_repo(settings: Settings, workspace: Workspace) -> Path | None:
    """The host repository worktree jobs use, or None (no git, or no repository)."""
    host = find_host(settings.base_dir, workspace.root, settings.git.repo)
    return None if isinstance(host, str) else host.repo


def held(repo: Path, settings: Settings, workspace: Workspace, root_id: str) -> Held:
    """The tree's worktrees (and their bytes) and its branches, as git lists them now."""
    trees = tuple(job_worktrees(repo, settings, workspace, root_id))
    under = job_refs.job_prefix(settings.git.branch_prefix, root_id)
    refs = run_git(repo, "for-each-ref", "--format=%(refname)", under).stdout.split()
    return Held(trees, tuple(r.removeprefix("refs/heads/") for r in refs), sum(size_of(Path(t)) for t in trees))


def has_worktrees(workspace: Workspace, root_id: str) -> bool:
    """Whether a worker folder of the tree is still a worktree (a ``.git`` file): read from the
    files, so a pass over many released trees costs no git call."""
    return any(workspace.job_dir(root_id).glob("depth_*/worker_*/.git"))


def release_reason(job: JobRecord, repo: Path, settings: Settings, now: float) -> str | None:
    """Why a finished root job's worktrees may go now, or None while they stay."""
    if job.config.isolation != Isolation.WORKTREE or not job.is_root or not job.status.terminal:
        return None
    merge = job.merge
    branch = (merge.into.branch if merge is not None and merge.into is not None else None) or job.config.merge_into
    result = merge.result_commit if merge is not None else None
    if branch and result and _contains(repo, branch, result):
        return f"its result is in {branch}"
    days = settings.git.keep_worktrees_days
    if days and job.ended_at is not None and now - job.ended_at >= days * UNITS["d"]:
        return f"it ended more than {days:g} day(s) ago ({KEEP_KEY})"
    return None


def _contains(repo: Path, branch: str, commit: str) -> bool:
    try:
        ref = check_ref(f"refs/heads/{branch}")
    except OrchestratorError:
        return False
    return run_git(repo, "merge-base", "--is-ancestor", commit, ref, check=False).returncode == 0


def due(repo: Path, settings: Settings, workspace: Workspace, now: float, skip: frozenset[str] = frozenset()) -> list[Release]:
    """The finished trees (other than ``skip``) that still have worktrees due to go, oldest first."""
    found = []
    for root_id in workspace.root_ids():
        if root_id in skip or not has_worktrees(workspace, root_id):
            continue
        try:
            job = workspace.load_job(root_id)
            if refusal(job, jobs_on_disk(workspace, job)):
                continue  # a tree still running keeps every worktree
            reason = release_reason(job, repo, settings, now)
            if reason:
                found.append(Release(root_id, job.status.value, reason, held(repo, settings, workspace, root_id)))
        except (OSError, ValueError, OrchestratorError, GitFailed):
            continue  # being written or deleted: never guess
    return found


def release(repo: Path, settings: Settings, workspace: Workspace, root_id: str, reason: str) -> list[str]:
    """Remove a finished tree's worktrees (its branches stay); returns the paths removed."""
    removed = remove_job_worktrees(repo, settings, workspace, root_id)
    if removed:
        log.info("job tree %s: %d worktree(s) removed, %s; its branches stay", root_id, len(removed), reason)
    return removed


def release_landed(settings: Settings, workspace: Workspace, job: JobRecord, merge: MergeRecord | None) -> str | None:
    """After a landing that moved the branch the user named: the tree's worktrees go at once.
    Returns a note for the job when they went."""
    into = merge.into if merge is not None else None
    if into is None or not into.moved or not job.is_root:
        return None
    repo = host_repo(settings, workspace)
    if repo is None:
        return None
    removed = release(repo, settings, workspace, job.root_id, f"its result is in {into.branch}")
    return f"worktrees removed ({len(removed)}): its result is in {into.branch}; its branches stay" if removed else None


def expire(settings: Settings, workspace: Workspace, now: float) -> list[Release]:
    """A server's pass: release every due tree's worktrees, then drop git's stale entries of
    this workspace's worktrees. Returns what it released."""
    repo = host_repo(settings, workspace)
    if repo is None:
        return []
    found = due(repo, settings, workspace, now)
    for item in found:
        release(repo, settings, workspace, item.root_id, item.reason)
    if found:
        prune_stale(repo, workspace.root, place.workspace_folder(settings, workspace.root))
    return found


def start_retention(engine: Any, settings: Settings) -> threading.Event | None:
    """With ``orchestrator.retention_days`` > 0: prune at start, then every RETENTION_INTERVAL
    seconds, on a daemon thread; with ``git.keep_worktrees_days`` > 0, each pass also removes the
    worktrees past their lifetime (``expire``). Set the returned event to stop it."""
    days = settings.orchestrator.retention_days
    if not days and not settings.git.keep_worktrees_days:
        return None
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                expire(settings, engine.workspace, time.time())  # worktrees' lifetime (git.keep_worktrees_days)
            except Exception:
                log.exception("worktree expiry pass failed")
            try:
                gone = prune_engine(engine, days * UNITS["d"]) if days else []
                if gone:
                    log.info(
                        "retention: deleted %d job tree(s) finished more than %g day(s) ago (orchestrator.retention_days): %s",
                        len(gone),
                        days,
                        ", ".join(gone),
                    )
            except Exception:  # a bad pass must not end retention for the server's lifetime
                log.exception("retention pass failed")
            if stop.wait(RETENTION_INTERVAL):
                return

    threading.Thread(target=loop, name="retention", daemon=True).start()
    return stop


def shown(settings: Settings, workspace: Workspace, job: JobRecord) -> dict[str, Any] | None:
    """What a root worktree job holds in the repository now and when each part goes (``status``
    shows it), or None for a job without worktrees or a repository."""
    if job.config.isolation != Isolation.WORKTREE or not job.is_root:
        return None
    repo = host_repo(settings, workspace)
    if repo is None:
        return None
    now_held = held(repo, settings, workspace, job.root_id)
    days = settings.git.keep_worktrees_days
    until = [f"its result is in {job.config.merge_into}"] if job.config.merge_into else []
    if days and job.ended_at is not None:
        until.append(time.strftime("%Y-%m-%d %H:%M", time.localtime(job.ended_at + days * UNITS["d"])))
    elif days:
        until.append(f"{days:g} day(s) after it ends ({KEEP_KEY})")
    return {
        **now_held.to_dict(),
        "worktrees_go": " or ".join(until) or "the job is deleted",
        "branches_go": "the job is deleted; its result branch: delete --branches all",
    }


def lines(doc: dict[str, Any]) -> list[str]:
    """``shown``'s document as ``status`` prints it."""
    size = f", {doc['bytes'] / 1e6:.1f} MB" if doc["worktrees"] else ""
    return [
        f"worktrees: {len(doc['worktrees'])}{size} (kept until {doc['worktrees_go']})",
        f"branches: {len(doc['branches'])} (kept until {doc['branches_go']})",
    ]
