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
import secrets
import stat
import threading
import time
from pathlib import Path

from ..workspace.filesystem import FOLDER_FLAGS, atomic_write, remove_at
from .invocation import run_git
from .refstore import OBJECT_ID
from .repository import common_dir_of, linked_git_dir
from .tree_checks import UNLIMITED, BlobLimits, added_gitlinks, commit_problem

VIEW = "orchestrator-refs"  # in the worktree's private git dir: the folder the sandbox shows as the tree's
SHOWN = "orchestrator-refs-shown"  # the tip last shown there (read-only in the sandbox)
IN_PLACE = "orchestrator-refs-shown"  # in the common git dir: per worktree, the tip shown where there is no view
# A view's writes and its record of what was shown go together, one caller at a time per worktree
# (a selection builds a candidate's sandbox while its retry's reset shows its branch again: each
# removing what is not the branch took the other's temporary file). Striped: bounded, never freed.
_VIEW_LOCKS = tuple(threading.Lock() for _ in range(64))


def _view_lock(private: Path) -> threading.Lock:
    return _VIEW_LOCKS[hash(str(private)) % len(_VIEW_LOCKS)]


def show(private: Path, name: str, tip: str) -> None:
    """Make the view hold branch ``name`` at ``tip`` (none: "") and nothing else a worker left there, and
    record ``tip`` as shown. In place: a running sandbox has the folder itself bound (a new folder
    would not be what it sees), and every step goes through the folder opened without following a
    link (a worker may have put a link in its place: it is replaced, never written through)."""
    with _view_lock(private):
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
    record = _in_place(private)
    if record is not None:
        record.unlink(missing_ok=True)


def show_in_place(private: Path, tip: str) -> None:
    """No view (Landlock cannot bind one): the worker's commits move its real branch, and ``tip`` is
    recorded as shown, what :func:`take` checks the branch against. A view left by an earlier
    sandbox goes (its absence says the branch is the worker's copy). The record lies in the common git
    dir, which such a sandbox cannot write (its private dir it can, whole)."""
    _remove(private, VIEW)
    record = _in_place(private)
    if record is not None:
        record.parent.mkdir(exist_ok=True)
        atomic_write(record, f"{tip}\n".encode("ascii"), durable=False)


def follow(directory: Path, name: str, tip: str) -> None:
    """The orchestrator moved the branch of the worktree at ``directory`` to ``tip``: show it there
    too, where the worktree has a view (a sandboxed worker's), so its next commit builds on it
    (without a view, the worker sees the real branch: only what was shown is recorded)."""
    private = linked_git_dir(directory)
    if private is not None and (private / VIEW).is_dir():
        show(private, name, tip)
    elif private is not None and (record := _in_place(private)) is not None and record.is_file():
        atomic_write(record, f"{tip}\n".encode("ascii"), durable=False)


def take(directory: Path, repo: Path, name: str, ref: str, *, base: str = "", limits: BlobLimits = UNLIMITED) -> str:
    """Move ``ref`` (the worker's real branch) to where the worker moved its copy in the view of
    the worktree at ``directory``, if that commit adds no submodule (a gitlink) where ``base`` (the
    commit the worker started from; "": not checked) had none, nor files larger than ``limits``
    (inflated: git/tree_checks.py). "" when done or nothing to do; else why ``ref`` was left."""
    private = linked_git_dir(directory)
    view = _open_view(private, make=False) if private is not None else None
    if private is None:
        return ""
    if view is None:
        record = _in_place(private)
        return _take_in_place(private, record, repo, ref, base, limits) if record is not None and record.is_file() else ""
    try:
        copy = _read(name, view)
    finally:
        os.close(view)
    shown = _read(str(private / SHOWN))
    if copy == shown:
        return ""
    why = _refused(repo, copy, shown, base, ref, limits)
    if why:
        return why
    old = shown or "0" * len(copy)
    done = run_git(repo, "update-ref", "-m", "orchestrator: the worker's commits", ref, copy, old, check=False)
    if done.returncode != 0:
        return f"{ref} moved outside its sandbox while it committed ({done.stderr.strip()[:200]}): left where it was"
    _shown(private, copy)
    return ""


def _in_place(private: Path) -> Path | None:
    """Where the tip shown to a worker without a view is recorded: in the common git dir, by worktree."""
    common = common_dir_of(private)
    return common / IN_PLACE / private.name if common is not None else None


def _take_in_place(private: Path, record: Path, repo: Path, ref: str, base: str, limits: BlobLimits) -> str:
    """:func:`take` where the worker moved the real branch (Landlock: its tree's ref folder is writable
    whole). Its move stands if :func:`take`'s checks pass and the branch's reflog, which only this
    worker's git and the orchestrator write (a sibling's sandbox cannot), ends at it: a sibling that
    moved it left no such line. Otherwise the branch goes back to where it was shown, and why is said."""
    common = record.parent.parent
    shown = _read(str(record))
    loose = common / ref
    copy = _read(str(loose)) if loose.is_file() and not loose.is_symlink() else ""
    if not loose.exists() and not loose.is_symlink():  # only in packed-refs, which no sandbox writes
        copy = run_git(repo, "rev-parse", "--verify", "--quiet", ref, check=False).stdout.strip()
    if copy == shown:
        return ""
    why = _refused(repo, copy, shown, base, ref, limits)
    if not why and _reflog_tip(common / "logs" / ref) != copy:
        why = f"its branch names {copy[:12]}, which its own git did not write there (its reflog does not end at it: another worker of its tree may have moved it): {ref} was put back"
    if not why:
        atomic_write(record, f"{copy}\n".encode("ascii"), durable=False)
        return ""
    if loose.is_symlink() or (loose.exists() and not loose.is_file()):
        _remove(loose.parent, loose.name)
    message = "orchestrator: a refused move of the worker's branch, undone"
    if shown:
        run_git(repo, "update-ref", "--no-deref", "-m", message, ref, shown, check=False)
    else:
        run_git(repo, "update-ref", "--no-deref", "-d", ref, check=False)
    return why.replace("was left where it was", "was put back where it was")


def _remove(folder: Path, name: str) -> None:
    """``name`` in ``folder`` removed without following a link (filesystem.remove_at)."""
    try:
        fd = os.open(folder, FOLDER_FLAGS)
    except OSError:
        return
    try:
        remove_at(fd, name)
    finally:
        os.close(fd)


def _reflog_tip(path: Path) -> str:
    """The commit the last line of a reflog moved its ref to ("" without one; a link is not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, 4096, max(0, size - 4096))
    except OSError:
        return ""
    finally:
        os.close(fd)
    lines = tail.decode("ascii", "replace").rstrip("\n").splitlines()
    fields = lines[-1].split(" ", 2) if lines else []
    return fields[1] if len(fields) > 1 else ""


def _refused(repo: Path, copy: str, shown: str, base: str, ref: str, limits: BlobLimits) -> str:
    """Why the worker's move of its branch to ``copy`` is not taken ("": it is): not a commit, one
    whose history the repository does not all have, one that adds a submodule ``base`` lacked, files
    larger than ``limits`` or a ``.gitmodules`` git fsck refuses."""
    if not OBJECT_ID.fullmatch(copy):
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
    why = commit_problem(repo, base, copy, limits) if base else ""
    if why:
        return f"its branch in its sandbox names {copy[:12]}, whose {why.removeprefix('its ')}: {ref} was left where it was"
    return ""


def forget_broken(repo: Path, ref: str, private: Path) -> None:
    """Drop from the reflogs of ``ref`` (a worker's branch) and of the HEAD of the worktree whose
    private git dir is ``private`` every entry naming a commit whose objects the repository does not
    all have (one refused on the way in, git/worker_objects.py): the worker's git wrote them in its
    sandbox, and ``git fsck`` walks reflogs, so the repository would fail it (and a push to a remote
    that checks objects). A log that is not a plain file (a worker's link) is removed, never read."""
    common = common_dir_of(private)
    logs = [common / "logs" / ref if common is not None else None, private / "logs" / "HEAD"]
    for log in logs:
        if log is not None and (log.is_symlink() or (log.exists() and not log.is_file())):
            _remove(log.parent, log.name)
    names = (ref, f"worktrees/{private.name}/HEAD")
    run_git(repo, "reflog", "expire", "--stale-fix", "--expire=never", "--expire-unreachable=never", *names, check=False)


def _shown(private: Path, tip: str) -> None:
    """Record ``tip`` as the tip last shown (a file the sandbox binds read-only, so a worker never
    replaces it; renamed over, so a link put there before is replaced, not followed). A plain file
    already saying ``tip`` is left as it is: another sandbox of the same worktree may be starting,
    and bubblewrap fails to bind a file renamed over meanwhile ("Unable to find ... in mount table")."""
    path = private / SHOWN
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(path).st_mode) and _read(str(path)) == tip:
            return
    atomic_write(path, f"{tip}\n".encode("ascii"), durable=False)


def _open_view(private: Path, *, make: bool) -> int | None:
    """The view's folder, opened (None: there is none and ``make`` is false). Something else in
    its place (a link, a file) is removed first when making it."""
    path = private / VIEW
    try:
        return os.open(path, FOLDER_FLAGS)
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
    return os.open(path, FOLDER_FLAGS)


def _read(name: str, folder: int | None = None) -> str:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        return ""
    try:
        return os.read(fd, 4096).decode("utf-8", "replace").strip()
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


def other_trees(common: Path, prefix: str, root_id: str, tree_folder: Path, private: Path) -> tuple[list[Path], list[Path]]:
    """What a sandbox of job tree ``root_id`` (its folder of the workspace ``tree_folder``; its own
    worktree's git dir ``private``) shows of the repository's git dir (``common``) as (emptied, kept):
    the folders that name other trees' branches and commits, shown empty (issue 48, item 8), and what
    of its own tree is bound back in them, read-only. Emptied: the branches under ``prefix`` and their
    reflogs, where ``prefix`` is a folder of its own (ends with "/": else the folder holds the user's
    branches too), every worktree's git dir (their ``HEAD``s and reflogs name their commits; ``git log
    --all`` walks them), the tips shown to sandboxes without a view (:data:`IN_PLACE`) and the store
    all trees shared before stores were per tree (git/worker_objects.py). Kept: its tree's reflogs and
    its siblings' worktrees' git dirs (those whose checkout is in ``tree_folder``; the folder is shown
    whole where every worktree is its tree's, or the user's main checkout's alone): a worker's ``git
    repack -ad`` or ``git gc`` in the tree's shared store keeps what they name, its siblings' commits.
    Its own branch and worktree git dir the sandbox binds itself. Those that exist (a sibling's worktree
    retired before the sandbox starts is skipped there: process/sandbox.py binds them with ``-try``)."""
    emptied = [common / IN_PLACE, common / "orchestrator-objects"]
    kept: list[Path] = []
    if prefix.endswith("/") and prefix.strip("/"):
        folder = prefix.strip("/")
        emptied += [common / "refs" / "heads" / folder, common / "logs" / "refs" / "heads" / folder]
        kept.append(common / "logs" / "refs" / "heads" / f"{prefix}{root_id}")
    ours, others = worktrees_in(common / "worktrees", tree_folder)
    if others:  # (none: nothing to hide there, and no bind per sibling to pay for: one tree running alone)
        emptied.append(common / "worktrees")
        kept += [path for path in ours if path != private]
    exists = [path for path in (*emptied, *kept) if path.is_dir() and not path.is_symlink()]
    return [p for p in emptied if p in exists], [p for p in kept if p in exists]


# A retired worktree's entry in ``worktrees`` is hidden first (checkouts/retiring.py): its ``gitdir``
# renamed to this, with "-<pid of the server>". git skips such an entry; so does ``worktrees_in``.
RETIRED_MARK = "orchestrator-retired"


def worktrees_in(worktrees: Path, folder: Path) -> tuple[list[Path], list[Path]]:
    """The worktree git dirs in ``worktrees`` whose checkout (their ``gitdir`` file, which git writes
    and a sandbox pins read-only) lies in ``folder``, and the others.

    Every sandbox's start asks this of every worktree (a graph of N tasks: N times N), so what each
    ``gitdir`` names is remembered by the file's identity (:func:`_worktree_at`): one ``stat`` each."""
    ours: list[Path] = []
    others: list[Path] = []
    try:
        entries = list(os.scandir(worktrees))
    except OSError:
        return ours, others
    within = str(folder)
    within = within if within.endswith("/") else within + "/"
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        where, named = _worktree_at(entry.path)
        if named is None and _retired(entry.path):
            continue  # no worktree: an entry waiting for its deletion
        mine = named is not None and (named == within[:-1] or named.startswith(within))
        (ours if mine else others).append(where)
    return ours, others


def _retired(private: str) -> bool:
    """Whether the entry ``private`` is a retired worktree's (``RETIRED_MARK``), or gone."""
    try:
        return any(name.startswith(RETIRED_MARK + "-") for name in os.listdir(private))
    except FileNotFoundError:
        return True
    except OSError:
        return False


# A worktree's git dir -> (its ``gitdir`` file's identity when read, the git dir as a Path, what the file
# names as a normalised absolute path or None: nothing usable). A file changed since has another
# identity (a rewrite in place changes its ctime, a rename its inode) and is read again; one written so
# recently that a change within the file system's timestamp granularity would not show is not
# remembered (git's "racy" rule).
_WORKTREES: dict[str, tuple[tuple[int, int, int, int, int], Path, str | None]] = {}
_WORKTREES_GUARD = threading.Lock()
_RACY_NS = 100_000_000  # well over a coarse file timestamp's tick (jiffies: 1-10 ms)


def _worktree_at(private: str) -> tuple[Path, str | None]:
    """The worktree git dir ``private`` as a Path, and what its ``gitdir`` file names (see
    ``_WORKTREES``): None when that is not a plain file (a link is never followed) or does not name
    an absolute path."""
    file = f"{private}/gitdir"
    try:
        info = os.stat(file, follow_symlinks=False)
    except OSError:
        return Path(private), None
    if not stat.S_ISREG(info.st_mode):
        return Path(private), None
    identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    with _WORKTREES_GUARD:
        known = _WORKTREES.get(private)
    if known is not None and known[0] == identity:
        return known[1], known[2]
    read_at = time.time_ns()
    text = _read(file)
    named = str(Path(text)) if text and os.path.isabs(text) else None
    where = Path(private)
    if max(info.st_mtime_ns, info.st_ctime_ns) < read_at - _RACY_NS:
        with _WORKTREES_GUARD:
            if len(_WORKTREES) >= 65536:  # a long-running server's retired worktrees: read again if asked
                _WORKTREES.clear()
            _WORKTREES[private] = (identity, where, named)
    return where, named


def packed_without_trees(common: Path, prefix: str, root_id: str, copy: Path) -> Path | None:
    """The repository's ``packed-refs`` less every branch under ``prefix`` but tree ``root_id``'s (other
    job trees'), written to ``copy`` for a sandbox of that tree to see in its place; None when there is
    no ``packed-refs`` or it names no other tree's branch (the common case, no ``git gc`` since). Each sandbox's start writes it anew (renamed over: one already bound keeps its own),
    so it holds the user's branches as they were when the worker started."""
    try:
        packed = (common / "packed-refs").read_bytes()
    except OSError:
        return None
    hidden, own = f" refs/heads/{prefix}".encode(), f" refs/heads/{prefix}{root_id}/".encode()
    kept: list[bytes] = []
    dropping = False
    for line in packed.splitlines(keepends=True):
        if line.startswith(b"^"):  # a tag's peeled line follows its tag
            if not dropping:
                kept.append(line)
            continue
        dropping = not line.startswith(b"#") and hidden in line and own not in line
        if not dropping:
            kept.append(line)
    if len(kept) == len(packed.splitlines()):
        return None  # no other tree's branch in it: nothing to bind over the file git renames new ones over
    copy.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(copy, b"".join(kept), durable=False, mode=0o444)
    return copy


__all__ = ["SHOWN", "VIEW", "follow", "forget_broken", "other_trees", "packed_without_trees", "show", "take", "worktrees_in"]


# What git writes or follows in a worktree's private git dir on a commit, reset or ref move: a link a
# worker made of one (where its sandbox cannot pin them: Landlock) would have a git run outside its
# sandbox write, or read, the link's target with the server's rights.
_PRIVATE_FILES = ("HEAD", "ORIG_HEAD", "FETCH_HEAD", "MERGE_HEAD", "index", "commondir", "gitdir")


def unlink_planted(directory: Path, tree_refs: str | None) -> list[str]:
    """Remove every symbolic link a worker made where git follows one: the files of its worktree's
    private git dir (``HEAD``, ``index``, ``commondir``...), everything below its ``logs/``, and the
    tree's branches and their reflogs in the common git dir (``tree_refs``: ``refs/heads/<prefix><root>``,
    where the worker could write them; None: not looked at).
    Returns what was removed, each as ``path -> target``. (Under bubblewrap none can be a link: they
    are pinned, or outside what the worker may write; this costs a few lstat calls.)"""
    private = linked_git_dir(directory)
    common = common_dir_of(private) if private is not None else None
    if private is None:
        return []
    found: list[Path] = [private / name for name in _PRIVATE_FILES]
    walked = [private / "logs"]
    if common is not None and tree_refs is not None:
        walked += [common / tree_refs, common / "logs" / tree_refs]
    for top in walked:
        if top.is_symlink():
            found.append(top)
            continue
        for folder, folders, files in os.walk(top):  # links to folders are listed, never followed
            found += [Path(folder, name) for name in (*folders, *files)]
    removed = []
    for path in found:
        if path.is_symlink():
            with contextlib.suppress(OSError):
                target = os.readlink(path)
                path.unlink()
                removed.append(f"{path} -> {target}")
    return removed
