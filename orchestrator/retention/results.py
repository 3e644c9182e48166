"""The result branches ``prune --results`` may delete, and their deletion.

A job's result is the branch ``<prefix><root id>/result`` (DESIGN §12). Deleting a job tree keeps
it (the work may be merged nowhere else), so a repository gathers one per job for ever. This
module lists those of jobs that ended (or whose tree is gone from the workspace) and deletes
them when asked, under these rules:

- only branches named ``<prefix><root id>/result``, under the prefix: nothing else is looked at;
- never the branch of a job that has not ended (running, pending, or waiting for approval);
- never a branch a job of this workspace names as ``merge_into``, nor one checked out in a
  worktree;
- a branch whose commit no ref outside the prefix contains (no branch, tag or remote branch of the
  user's) is listed with a warning: its work is only there;
- each is deleted only if it still points where it was listed (``update-ref -d REF OLD``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import OrchestratorError
from ..git import job_refs
from ..git.repository import repo_lock, run_git
from ..models import JobStatus
from ..workspace.ids import ROOT_ID_RE
from ..workspace.layout import Workspace

GONE = "deleted"  # the status shown for a result branch whose job tree is no longer in the workspace


@dataclass(frozen=True)
class ResultBranch:
    """One result branch: its name (without ``refs/heads/``), job, commit, the job's status
    (``deleted``: its tree is gone) and the refs outside the prefix that contain its commit."""

    branch: str
    root_id: str
    commit: str
    status: str
    merged_in: tuple[str, ...]

    @property
    def ref(self) -> str:
        return "refs/heads/" + self.branch

    def line(self) -> str:
        where = (
            f"in {', '.join(self.merged_in[:3])}{' ...' if len(self.merged_in) > 3 else ''}"
            if self.merged_in
            else "WARNING: merged into no branch, tag or remote branch of yours: its work is only on this branch"
        )
        return f"{self.branch}  {self.status:<9}  {self.commit[:12]}  {where}"


def finished_results(
    repo: Path, settings: Settings, workspace: Workspace, statuses: tuple[str, ...]
) -> tuple[list[ResultBranch], list[str]]:
    """(the result branches that may go, a sentence for each one that stays and why). ``statuses``:
    the finished statuses whose jobs' branches go (a job gone from the workspace: always)."""
    prefix = settings.git.branch_prefix
    pattern = re.compile(re.escape("refs/heads/" + prefix) + f"({ROOT_ID_RE.pattern})/result")
    listed = run_git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/" + prefix).stdout
    used = job_refs.checkouts(repo)
    named = _merge_targets(workspace)
    found: list[ResultBranch] = []
    kept: list[str] = []
    for line in listed.splitlines():
        ref, _, oid = line.rpartition(" ")
        match = pattern.fullmatch(ref)
        if match is None:
            continue
        root_id, branch = match.group(1), ref.removeprefix("refs/heads/")
        status = _status(workspace, root_id)
        if status is None or (status != GONE and not JobStatus(status).terminal):
            kept.append(f"{branch}: its job has not ended ({status or 'its record cannot be read'})")
        elif ref in used:
            kept.append(f"{branch}: checked out in the worktree {used[ref]}")
        elif ref in named:
            kept.append(f"{branch}: a job names it as merge_into")
        elif status == GONE or status in statuses:
            found.append(ResultBranch(branch, root_id, oid, status, _merged_in(repo, oid, "refs/heads/" + prefix)))
    return found, kept


def delete(repo: Path, branches: list[ResultBranch]) -> list[str]:
    """Delete each branch if it still points at the commit listed; a sentence per branch."""
    said = []
    with repo_lock(repo):
        for b in branches:
            done = run_git(repo, "update-ref", "-d", b.ref, b.commit, check=False)
            if done.returncode == 0:
                said.append(f"deleted branch {b.branch} (was {b.commit[:12]})")
            else:
                said.append(f"kept branch {b.branch}: it moved or went meanwhile ({done.stderr.strip()})")
    return said


def _status(workspace: Workspace, root_id: str) -> str | None:
    """The root job's status; GONE when its tree is not in the workspace; None: unreadable."""
    if not workspace.job_dir(root_id).exists():
        return GONE
    try:
        return workspace.load_job(root_id).status.value
    except (OSError, ValueError, OrchestratorError):
        return None


def _merge_targets(workspace: Workspace) -> set[str]:
    """The refs the jobs of this workspace name as ``merge_into``."""
    named = set()
    for root_id in workspace.root_ids():
        try:
            into = workspace.load_job(root_id).config.merge_into
        except (OSError, ValueError, OrchestratorError):
            continue
        if into:
            named.add(into if into.startswith("refs/") else "refs/heads/" + into)
    return named


def _merged_in(repo: Path, commit: str, prefix: str) -> tuple[str, ...]:
    """The refs outside ``prefix`` (branches, tags, remote branches) that contain ``commit``."""
    out = run_git(repo, "for-each-ref", "--format=%(refname:short) %(refname)", "--contains", commit).stdout
    return tuple(short for short, _, full in (line.partition(" ") for line in out.splitlines()) if not full.startswith(prefix))
