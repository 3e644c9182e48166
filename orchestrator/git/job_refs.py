"""The job's refs: reading commits and refs, moving refs atomically under the job's prefix, taking
the result into the user's branch as a fast-forward, deleting a job's branches.

A ref moves only by ``git update-ref <ref> <new> <old>`` (old value checked: a concurrent change
fails instead of being overwritten) and only under ``refs/heads/<prefix><root id>/``, except in
:func:`advance`, which moves the one branch the user named, only as a fast-forward.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, Conflict, ValidationError
from .invocation import GitFailed, git_bytes, run_git
from .refstore import OBJECT_ID, read_refs
from .repository import worktree_list

ZERO = "0" * 40
_ROOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RefMoved(Conflict):
    """A ref was not at the value expected: someone else moved it, nothing was changed."""


class MergeRefused(Conflict):
    """``advance`` will not move the branch (not a fast-forward, or its checkout is dirty)."""

    def __init__(self, message: str, command: str) -> None:
        super().__init__(message, command=command)
        self.command = command


# -- names and refs ---------------------------------------------------------------------------


def branch_ref(name: str) -> str:
    return name if name.startswith("refs/") else f"refs/heads/{name}"


def job_prefix(prefix: str, root_id: str) -> str:
    """``refs/heads/<prefix><root id>/``, validated: the only refs a job may move or delete."""
    if not _ROOT_ID.match(root_id):
        raise ValidationError(f"job id {root_id!r} cannot name a branch: use letters, digits, '.', '_' or '-'")
    _check_prefix(prefix)
    return f"refs/heads/{prefix}{root_id}/"


@functools.lru_cache(maxsize=8)
def _check_prefix(prefix: str) -> None:
    done = run_git(".", "check-ref-format", f"refs/heads/{prefix}x/result", check=False)
    if done.returncode != 0 or ".." in prefix:
        raise ConfigError(
            f"git.branch_prefix {prefix!r} does not make a valid branch name: use something like 'orchestrator/' "
            "(see 'git help check-ref-format')"
        )


def result_ref(prefix: str, root_id: str) -> str:
    return job_prefix(prefix, root_id) + "result"


def resolve(repo: str | Path, name: str) -> str:
    """The commit id ``name`` names; user text never reaches git as an option."""
    return resolve_all(repo, [name])[0]


def resolve_remembered(repo: str | Path, name: str) -> str:
    """``resolve``, with a full commit id's answer (itself, once git says it names a commit)
    remembered: an object never changes, and a graph job's every merge asks for its start."""
    return _resolved_id(str(repo), name) if OBJECT_ID.fullmatch(name) else resolve(repo, name)


@functools.lru_cache(maxsize=1024)
def _resolved_id(repo: str, oid: str) -> str:
    return resolve(repo, oid)  # (a failure raises, and is not remembered)


def resolve_all(repo: str | Path, names: list[str]) -> list[str]:
    """The commit ids of ``names`` (names go in on stdin, never as options)."""
    found = []
    for name, commit in zip(names, read_commits(repo, names)):
        if commit is None:
            raise ValidationError(f"{name!r} is not a commit in {repo}: check the branch name ('git branch --list')")
        found.append(commit.oid)
    return found


@dataclass(frozen=True)
class CommitInfo:
    oid: str
    tree: str
    time: int  # committer timestamp


def read_commits(repo: str | Path, names: list[str]) -> list[CommitInfo | None]:
    """Each name's commit (None: no such commit), all in one ``cat-file --batch``."""
    if not names:
        return []
    for name in names:
        if not name or "\n" in name or "\0" in name:
            raise ValidationError(f"{name!r} is not a commit name")
    out = git_bytes(repo, "cat-file", "--batch", input="".join(f"{n}^{{commit}}\n" for n in names).encode())
    found: list[CommitInfo | None] = []
    at = 0
    for _ in names:
        end = out.index(b"\n", at)
        header = out[at:end].decode("utf-8", "replace").split(" ")
        at = end + 1
        if len(header) != 3 or header[1] != "commit":
            found.append(None)
            continue
        body = out[at : at + int(header[2])]
        at += int(header[2]) + 1
        lines = body.split(b"\n\n", 1)[0].decode("utf-8", "replace").splitlines()
        tree = next(line[5:] for line in lines if line.startswith("tree "))
        when = next(int(line.rsplit(" ", 2)[1]) for line in lines if line.startswith("committer "))
        found.append(CommitInfo(header[0], tree, when))
    return found


def ref_value(repo: str | Path, ref: str) -> str | None:
    """The commit ``ref`` (a full name) points at, None when it does not exist: read from the
    ref files where they answer (no process), else asked of git."""
    found = read_refs(repo, [ref])
    if found is not None:
        return found.get(ref)
    done = run_git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", ref, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def update_ref(repo: str | Path, ref: str, new: str | None, old: str | None, *, under: str) -> None:
    """Move ``ref`` from ``old`` (None: must not exist) to ``new`` (None: delete it) atomically,
    only under ``under``."""
    if not ref.startswith(under):
        raise ValidationError(f"refusing to move {ref}: only refs under {under} belong to this job")
    zero = "0" * len(new or old or ZERO)  # "must not exist", in the repository's hash's length (sha256: 64)
    change = ["-d", ref, old or zero] if new is None else [ref, new, old or zero]
    done = run_git(repo, "update-ref", "-m", "orchestrator merge", *change, check=False)
    if done.returncode != 0:
        if ".lock" in done.stderr and "File exists" in done.stderr:
            raise RefMoved(
                f"{ref} is locked by another git, or by one killed mid-update: if no git is running, "
                f"remove the stale lock file ({done.stderr.strip()})"
            )
        now = ref_value(repo, ref)
        raise RefMoved(f"{ref} is at {now or 'nothing'}, not {old or 'nothing'} as expected: someone moved it; nothing changed")


def remove_ref(repo: str | Path, ref: str, old: str, *, under: str) -> str | None:
    """Delete ``ref`` (at ``old``), only under ``under``, unless a worktree has it checked out:
    then nothing is deleted and that worktree's path is returned."""
    tree = checkouts(repo).get(ref)
    if tree is None:
        update_ref(repo, ref, None, old, under=under)
    return tree


def is_ancestor(repo: str | Path, older: str, newer: str) -> bool:
    done = run_git(repo, "merge-base", "--is-ancestor", older, newer, check=False)
    if done.returncode not in (0, 1):
        raise GitFailed(["merge-base", "--is-ancestor", older, newer], done.returncode, done.stderr)
    return done.returncode == 0


# -- taking the result, cleaning up -------------------------------------------------------------


def checkouts(repo: str | Path) -> dict[str, str]:
    """branch ref -> the worktree that has it checked out (every worktree of the repository)."""
    return {entry["branch"]: entry["worktree"] for entry in worktree_list(Path(repo)) if entry.get("branch")}


def advance(repo: str | Path, into_branch: str, result_commit: str) -> str:
    """Fast-forward ``into_branch`` to ``result_commit``; the only ref outside the prefix that
    ever moves. Returns what was done; raises MergeRefused with the user's command otherwise."""
    ref = branch_ref(into_branch)
    if run_git(repo, "check-ref-format", ref, check=False).returncode != 0 or not ref.startswith("refs/heads/"):
        raise ValidationError(f"{into_branch!r} is not a branch name")
    name = ref.removeprefix("refs/heads/")
    new = resolve(repo, result_commit)
    current = ref_value(repo, ref)
    if current is None:
        raise MergeRefused(
            f"branch {name} does not exist; create it from the result yourself", f"git branch {shlex.quote(name)} {new}"
        )
    if current == new:
        return f"{name} is already at {new[:12]}"
    if not is_ancestor(repo, current, new):
        raise MergeRefused(
            f"{name} has commits the result lacks: not a fast-forward, so it was left alone; merge it yourself",
            f"git switch {shlex.quote(name)} && git merge {new}",
        )
    tree = checkouts(repo).get(ref)
    if tree is None:
        update_ref(repo, ref, new, current, under=ref)
        return f"moved {name} from {current[:12]} to {new[:12]}"
    # A filter of the user's runs as the result's files are checked out (smudge, process), and as git
    # checks which files changed (clean: ``status``, and the merge's own check), in their checkout, with
    # their rights, on the workers' files; one that resolves a name there (``python -m x``) would run a
    # worker's module unreviewed. Asked first: with one configured, not even ``status`` runs.
    found = run_git(tree, "config", "--get-regexp", r"^filter\..*\.(clean|smudge|process)$", check=False).stdout
    filters = [line.split(" ", 1)[0] for line in found.split("\n") if line.strip()]
    if filters:
        raise MergeRefused(
            f"{name} is checked out in {tree}, whose git runs filters as files are checked out "
            f"({', '.join(filters)}): they would run on the workers' files before anyone reviewed them, so it was "
            "left alone; review the result, then take it",
            f"git -C {shlex.quote(tree)} merge --ff-only {new}",
        )
    status = run_git(tree, "status", "--porcelain").stdout
    if status.strip():
        raise MergeRefused(
            f"{name} is checked out in {tree}, which has uncommitted changes: commit or stash them, then take the result",
            f"git -C {shlex.quote(tree)} merge --ff-only {new}",
        )
    run_git(tree, "merge", "--ff-only", "-q", new)
    return f"fast-forwarded {name} in {tree} from {current[:12]} to {new[:12]}"


@dataclass(frozen=True)
class Deleted:
    deleted: tuple[str, ...]
    kept: tuple[str, ...]
    checked_out: tuple[str, ...]  # left alone: a worktree still uses them (remove it first)


def delete_job_refs(repo: str | Path, prefix: str, root_id: str, keep_result: bool = True) -> Deleted:
    """Delete the job's branches under ``<prefix><root id>/`` (nothing outside it), each only
    if still at the value just read, all in one ``update-ref --stdin`` transaction."""
    under = job_prefix(prefix, root_id)
    out = run_git(repo, "for-each-ref", "--format=%(refname) %(objectname)", under).stdout
    used = checkouts(repo)
    deleted, kept, busy, commands = [], [], [], []
    for line in out.splitlines():
        ref, oid = line.rsplit(" ", 1)
        if not ref.startswith(under):
            continue
        if keep_result and ref == under + "result":
            kept.append(ref)
        elif ref in used:
            busy.append(ref)
        else:
            deleted.append(ref)
            commands.append(f"delete {ref} {oid}\n")
    if commands:
        done = run_git(repo, "update-ref", "--stdin", input="start\n" + "".join(commands) + "commit\n", check=False)
        if done.returncode != 0:
            raise RefMoved(
                f"the branches of job {root_id} changed while deleting them; nothing was deleted: {done.stderr.strip()}"
            )
    return Deleted(tuple(deleted), tuple(kept), tuple(busy))
