"""A sandboxed worker's git dir of its own, where no mount can show it a view of the repository's (Landlock).

Under bubblewrap a worker's git sees the repository's git dir with other job trees' branches,
reflogs and worktrees shown empty (git/worker_refs.py ``other_trees``). Landlock can only grant
paths, never hide a folder inside a granted one, and git renames new files over ``packed-refs`` and
the refs, so a rule per file would break a running git. So there the repository's git dir is not
granted at all, and the worker's git is told (``GIT_DIR``) a git dir made for it here, in its tree's
state folder (outside what it can replace: only its content is the worker's), holding:

* ``HEAD``: its branch, written anew at each sandbox's start (bubblewrap pins the worktree's HEAD
  read-only; here a worker that moves it moves its own copy, until the orchestrator's next git in
  its sandbox, which commits on its branch again);
* ``refs/heads/<prefix><root>``: a link to its worktree's view of its tree's branches (its own branch
  only: worker_refs ``show``), whose copy the orchestrator takes as it takes a bubblewrap worker's
  (worker_refs ``take``, ``follow``);
* ``packed-refs``: every ref of the repository but the branches under the prefix (the user's
  branches, tags and remotes as they were when the sandbox started);
* ``worktrees``: a link to the tree's list of its worktrees (:data:`WORKTREES`, kept by the orchestrator,
  read-only), each with a detached ``HEAD`` at the worktree's tip and its index (links to their files): a ``git gc`` or
  ``repack -ad`` in the tree's store keeps the siblings' commits not yet taken, as under bubblewrap;
* ``config`` (the repository's, with ``gc.packRefs`` off, so a ``git gc`` leaves its branch in its
  view), ``config.worktree`` and ``info/`` (the repository's exclude and attributes, its worktree's
  sparse-checkout), copied: what the worker writes there stays its own until its next sandbox starts;
* ``objects``: a link to its tree's store (git/worker_objects.py, which git is told by path too).

A detached worktree's process (a resolver, the result gate and its gates: worker-written code on the
merged files) gets one the same way, but for two things: its ``HEAD`` is the commit its worktree's
private ``HEAD`` names (the orchestrator's git set it, from the repository's side: the result gate moves
it there for its next candidate), copied at each sandbox's start, and it holds no branch of the tree
(its ``refs`` emptied at each start; a merge's ``MERGE_HEAD`` and the like stay, between the git runs of
one resolution).

The index stays its worktree's (``GIT_INDEX_FILE``), the work tree its checkout (``GIT_WORK_TREE``).
No other worktree is registered there and no other reflog lies there, so ``git log --all``,
``git worktree list`` and ``git reflog`` show nothing of another tree. A worker that drops the
variables reaches its worktree's real git dir, whose common dir it cannot read: its git fails.

Every write here goes through folders opened without following a link: the worker may have made
any entry a link, which is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from ..workspace.filesystem import FOLDER_FLAGS, remove_at
from .invocation import run_git
from .worker_refs import VIEW

_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OWN_CONFIG = b"\n[gc]\n\tpackRefs = false\n"  # its branch stays a file of its view (no pack-refs by a gc)
_MAX = 1 << 20  # bytes read of a file copied from a git dir
_COMMIT_ID = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")
WORKTREES = ".worktrees"  # beside the tree's git dirs: its worktrees as their git sees them (read-only there)


def prepare(
    own: Path,
    private: Path,
    common: Path,
    checkout: Path,
    prefix: str,
    root_id: str,
    branch: str,
    store: Path,
    worktrees_of_tree: Sequence[Path] = (),
) -> dict[str, str]:
    """Make ``own`` the git dir of the sandboxed worker ``branch`` (empty: a detached worktree's process,
    its HEAD its worktree's commit, no branch of the tree) of tree ``root_id`` whose worktree's
    private git dir is ``private`` (its checkout ``checkout``) in the repository whose common git dir
    is ``common`` (``prefix``: the branch prefix; ``store``: its tree's object store; ``worktrees_of_tree``:
    the private git dirs of its tree's worktrees, listed in :data:`WORKTREES` beside ``own``, which every
    such git dir of the tree links to: one made later is listed there for those made before). Returns what its environment must
    hold. The view (``private``/VIEW) must exist: worker_refs ``show`` made it."""
    tree_refs = f"refs/heads/{prefix}{root_id}"
    own.mkdir(parents=True, exist_ok=True)
    top = os.open(own, FOLDER_FLAGS)
    try:
        _put(top, "HEAD", f"ref: {tree_refs}/{branch}\n".encode() if branch else _detached_head(private))
        remove_at(top, "commondir")  # (one written here would lead its git to another git dir)
        _put(top, "config", _read(common / "config") + _OWN_CONFIG)
        worktree_config = _read(private / "config.worktree")
        if worktree_config:
            _put(top, "config.worktree", worktree_config)
        else:
            remove_at(top, "config.worktree")
        _put(top, "packed-refs", _packed_refs(common, f"refs/heads/{prefix}"))
        info = _folder(top, "info")
        try:
            for source in (common / "info" / "exclude", common / "info" / "attributes", private / "info" / "sparse-checkout"):
                text = _read(source)
                if text:
                    _put(info, source.name, text)
                else:
                    remove_at(info, source.name)
        finally:
            os.close(info)
        if not branch:  # no branch of its tree: none of their refs (one left by an earlier git dir of that name)
            remove_at(top, "refs")
        os.close(_folder(top, "refs"))
        logs = _folder(top, "logs")
        try:
            _unlink_links(logs)  # git appends through a link: the orchestrator's git in the sandbox too
        finally:
            os.close(logs)
        _link(top, "objects", str(store))
        shared = os.open(own.parent, FOLDER_FLAGS)
        try:
            worktrees = _folder(shared, WORKTREES)
        finally:
            os.close(shared)
        try:
            _siblings(worktrees, worktrees_of_tree, common, tree_refs)
        finally:
            os.close(worktrees)
        _link(top, "worktrees", str(own.parent / WORKTREES))
        if not branch:
            return _environment(own, checkout, private)
        parts = tree_refs.split("/")
        folder = top
        try:
            for part in parts[:-1]:
                inner = _folder(folder, part)
                if folder != top:
                    os.close(folder)
                folder = inner
            _link(folder, parts[-1], str(private / VIEW))
        finally:
            if folder != top:
                os.close(folder)
    finally:
        os.close(top)
    return _environment(own, checkout, private)


def _environment(own: Path, checkout: Path, private: Path) -> dict[str, str]:
    return {"GIT_DIR": str(own), "GIT_WORK_TREE": str(checkout), "GIT_INDEX_FILE": str(private / "index")}


def _detached_head(private: Path) -> bytes:
    """A detached worktree's HEAD as its git dir of its own holds it: the commit its private git dir's
    HEAD names, which the orchestrator's git set (``worktree add --detach``, the result gate's
    ``update-ref``); anything else (a name a process there wrote) holds nothing, and git there fails."""
    head = _read(private / "HEAD").strip()
    return head + b"\n" if _COMMIT_ID.fullmatch(head) else b""


def _packed_refs(common: Path, hidden: str) -> bytes:
    """The repository's refs (loose and packed) but every one starting with ``hidden`` (the branches
    under the prefix), as a packed-refs file: its tree's branch comes from the view, other trees'
    from nowhere."""
    listed = run_git(common, "for-each-ref", "--format=%(objectname) %(refname) %(*objectname)", check=False).stdout
    lines: list[tuple[bytes, bytes]] = []
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[1].startswith(hidden) or not fields[1].startswith("refs/"):
            continue
        peeled = f"^{fields[2]}\n" if len(fields) > 2 else ""
        lines.append((fields[1].encode(), f"{fields[0]} {fields[1]}\n{peeled}".encode()))
    body = b"".join(text for _, text in sorted(lines))
    return b"# pack-refs with: peeled fully-peeled sorted \n" + body


def _siblings(folder: int, siblings: Sequence[Path], common: Path, tree_refs: str) -> None:
    """``folder`` (the tree's :data:`WORKTREES`) holding one entry per worktree (its private git dir),
    and none whose worktree is gone: its own ``commondir`` and ``gitdir``, its ``HEAD`` a link to
    the file naming its tip (its view's copy of its branch, which its commits move: a detached HEAD
    here), its ``index`` a link to its index. Git reads a HEAD and an index through a link (never a
    reflog): their objects are what a ``git gc`` here keeps of the sibling's."""
    wanted = {private.name: private for private in siblings}
    for found in list(os.scandir(folder)):  # one whose worktree is gone (another's list may be older than this one)
        if found.name not in wanted and not (common / "worktrees" / found.name).is_dir():
            remove_at(folder, found.name)
    for name, private in wanted.items():
        entry = _folder(folder, name)
        try:
            _put(entry, "commondir", b"../..\n")
            _put(entry, "gitdir", _read(private / "gitdir"))
            _link(entry, "HEAD", str(_tip_file(private, tree_refs)))
            _link(entry, "index", str(private / "index"))
            remove_at(entry, "logs")  # (git reads no reflog through a link)
        finally:
            os.close(entry)


def _tip_file(private: Path, tree_refs: str) -> Path:
    """The file that names the tip of the worktree whose private git dir is ``private``: its view's copy
    of its branch when its HEAD names a branch of the tree, else its HEAD (a detached one names it)."""
    head = _read(private / "HEAD").decode("utf-8", "replace").strip()
    name = head.removeprefix(f"ref: {tree_refs}/")
    if name != head and name and "/" not in name:
        return private / VIEW / name
    return private / "HEAD"


def _unlink_links(folder: int) -> None:
    """Every symbolic link below the open ``folder`` removed (links to folders never followed)."""
    for entry in list(os.scandir(folder)):
        if entry.is_symlink():
            with contextlib.suppress(OSError):
                os.unlink(entry.name, dir_fd=folder)
        elif entry.is_dir(follow_symlinks=False):
            try:
                inner = os.open(entry.name, FOLDER_FLAGS, dir_fd=folder)
            except OSError:
                continue
            try:
                _unlink_links(inner)
            finally:
                os.close(inner)


def _read(path: Path) -> bytes:
    """A file's bytes ("" when missing, a link or unreadable): what the orchestrator copies."""
    try:
        fd = os.open(path, _FILE)
    except OSError:
        return b""
    try:
        return os.read(fd, _MAX)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _folder(parent: int, name: str) -> int:
    """The folder ``name`` in ``parent``, opened; whatever else is there (a link, a file) replaced."""
    try:
        return os.open(name, FOLDER_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        remove_at(parent, name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
    return os.open(name, FOLDER_FLAGS, dir_fd=parent)


def _put(folder: int, name: str, data: bytes) -> None:
    """``name`` in ``folder`` holds ``data``, renamed over what was there (a running git reads
    either version whole; a link or folder put there is replaced, never followed)."""
    temp = f".{name}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    _rename(folder, temp, name)


def _link(folder: int, name: str, target: str) -> None:
    """``name`` in ``folder`` a link to ``target``, renamed over what was there."""
    try:
        if os.readlink(name, dir_fd=folder) == target:
            return
    except OSError:
        pass
    temp = f".{name}.{secrets.token_hex(4)}"
    os.symlink(target, temp, dir_fd=folder)
    _rename(folder, temp, name)


def _rename(folder: int, temp: str, name: str) -> None:
    try:
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except IsADirectoryError:
        remove_at(folder, name)  # a folder put where a file goes
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        raise


__all__ = ["WORKTREES", "prepare"]
