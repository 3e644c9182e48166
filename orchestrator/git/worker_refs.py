"""A sandboxed worker's view of its job tree's branches: its own branch only, in its worktree.

Inside a worker's sandbox (workers/confinement.py) the folder of its tree's branches
(``refs/heads/<prefix><root id>/``) is its worktree's ``orchestrator-refs`` folder, bound in its
place, writable: the orchestrator writes the worker's own branch there as the sandbox starts
(:func:`show`), and the worker's commits move that copy. Its siblings' branches and the result
branch are not in it: what the worker writes there under another name stays there.

Before the orchestrator runs git on the worktree outside the sandbox, :func:`take` moves the real
branch to where the worker moved its copy, if the copy names a commit the repository has and the
real branch is still where the copy was shown (the orchestrator moves a running worker's branch
too: its commit at a child job's spawn, the child job's merge; each shows the new tip again, with
:func:`follow`). Anything else leaves the real branch where it is, and says why.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from ..workspace.filesystem import atomic_write, remove_at
from .gitcmd import run_git
from .gitwork import linked_git_dir
from .tree_checks import added_gitlinks

VIEW = "orchestrator-refs"  # in the worktree's private git dir: the folder the sandbox shows as the tree's
SHOWN = "orchestrator-refs-shown"  # the tip last shown there (read-only in the sandbox)
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def show(private: Path, name: str, tip: str) -> None:
    """Make the view hold branch ``name`` at ``tip`` (none: "") and nothing else a worker left there, and
    record ``tip`` as shown. In place: a running sandbox has the folder itself bound (a new folder
    would not be what it sees), and every step goes through the folder opened without following a
    link (a worker may have put a link in its place: it is replaced, never written through)."""
    view = _open_view(private, make=True)
    assert view is not None
    try:
        for entry in os.scandir(view):
            if entry.name == name and entry.is_file(follow_symlinks=False):
                continue  # replaced below, atomically (its git may be reading it)
            remove_at(view, entry.name)
        if name and tip:
            _write(view, name, tip)
        elif name:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=view)
    finally:
        os.close(view)
    _shown(private, tip)


def follow(directory: Path, name: str, tip: str) -> None:
    """The orchestrator moved the branch of the worktree at ``directory`` to ``tip``: show it there
    too, where the worktree has a view (a sandboxed worker's), so its next commit builds on it."""
    private = linked_git_dir(directory)
    if private is not None and (private / VIEW).is_dir():
        show(private, name, tip)


def take(directory: Path, repo: Path, name: str, ref: str, *, base: str = "") -> str:
    """Move ``ref`` (the worker's real branch) to where the worker moved its copy in the view of
    the worktree at ``directory``, if that commit adds no submodule (a gitlink) where ``base`` (the
    commit the worker started from; "": not checked) had none. "" when done or nothing to do; else
    why ``ref`` was left."""
    private = linked_git_dir(directory)
    view = _open_view(private, make=False) if private is not None else None
    if private is None or view is None:
        return ""  # never sandboxed with a view
    try:
        copy = _read(name, view)
    finally:
        os.close(view)
    shown = _read(str(private / SHOWN))
    if copy == shown:
        return ""
    if not _OID.fullmatch(copy):
        what = "gone" if not copy else repr(copy[:80])
        return f"its branch in its sandbox is {what}, not a commit: {ref} was left where it was"
    # A commit, and every object of its new history here: one refused on the way in (git/worker_objects.py)
    # would leave the branch naming a history the repository does not have.
    known = [x for x in dict.fromkeys((shown, base)) if x] or ["--all"]  # (a new branch: what every ref has)
    walk = run_git(repo, "rev-list", "--objects", "--quiet", f"{copy}^{{commit}}", "--not", *known, check=False)
    if walk.returncode != 0:
        if run_git(repo, "cat-file", "-e", f"{copy}^{{commit}}", check=False).returncode != 0:
            return f"its branch in its sandbox names {copy[:12]}, not a commit the repository has: {ref} was left where it was"
        why = (walk.stderr.strip().splitlines() or [f"exit {walk.returncode}"])[-1]
        return f"its branch in its sandbox names {copy[:12]}, whose objects the repository does not all have ({why}): {ref} was left where it was"
    added = added_gitlinks(repo, base, copy) if base else []
    if added:
        listed = ", ".join(repr(path) for path in added[:5])
        return (
            f"its branch in its sandbox names {copy[:12]}, which adds a nested repository (a submodule) at {listed}: "
            f"{ref} was left where it was (a worker's checkout may hold a repository only where its base has one; "
            "remove its .git folder to commit its files)"
        )
    old = shown or "0" * len(copy)
    done = run_git(repo, "update-ref", "-m", "orchestrator: the worker's commits", ref, copy, old, check=False)
    if done.returncode != 0:
        return f"{ref} moved outside its sandbox while it committed ({done.stderr.strip()[:200]}): left where it was"
    _shown(private, copy)
    return ""


def _shown(private: Path, tip: str) -> None:
    """Record ``tip`` as the tip last shown (a file the sandbox binds read-only, so a worker never
    replaces it; renamed over, so a link put there before is replaced, not followed)."""
    atomic_write(private / SHOWN, f"{tip}\n".encode("ascii"), durable=False)


def _open_view(private: Path, *, make: bool) -> int | None:
    """The view's folder, opened (None: there is none and ``make`` is false). Something else in
    its place (a link, a file) is removed first when making it."""
    path = private / VIEW
    try:
        return os.open(path, _FOLDER)
    except FileNotFoundError:
        pass
    except OSError:
        if not make:
            return None
        with contextlib.suppress(OSError):
            os.unlink(path)
    if not make:
        return None
    path.mkdir(exist_ok=True)
    return os.open(path, _FOLDER)


def _read(name: str, folder: int | None = None) -> str:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        return ""
    try:
        return os.read(fd, 200).decode("ascii", "replace").strip()
    except OSError:
        return ""
    finally:
        os.close(fd)


def _write(folder: int, name: str, value: str) -> None:
    """``name`` in ``folder`` holds ``value``, replaced atomically (a temporary file renamed over it).
    Through the folder's descriptor: the view's path may be a worker's link by now."""
    temp = f".{name}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder)
    try:
        os.write(fd, (value + "\n").encode("ascii"))
    finally:
        os.close(fd)
    try:
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        raise


__all__ = ["SHOWN", "VIEW", "follow", "show", "take"]
