"""Git for the worktree checkout: the host repository, its version check, and the
few repository-level operations a worker's worktree needs.

Every call is an argv list (never a shell string) run as ``git -C <dir> ...`` with
``GIT_TERMINAL_PROMPT=0`` (never a credential prompt), auto-gc off and the user's hooks
skipped; user text (a path, a branch name) always follows ``--`` or is checked first
(``git check-ref-format``, or its documented rules where a name has only plain characters).
Operations that take a lock of the whole repository (worktree remove, branch deletion) are
serialised by one lock per repository and retried on git's own ``index.lock``/``.lock``
errors, so sixteen workers at once never fail on them. A new worker's worktree needs no such
lock (``add_worktree``): sixteen are made side by side instead of queueing.

Minimum git: 2.17 (``git worktree remove``; ``worktree add`` is 2.5, ``-C`` 1.8.5). Item 6's
merges (``merge-tree --write-tree``) need 2.38: that check is git/merging.py's.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from . import invocation
from .commits import identity_of
from .invocation import GitFailed

MIN_GIT = (2, 17)
GIT_TIMEOUT = 120.0  # seconds any one git call may take
LOCK_RETRIES = 20  # attempts of a repository-level operation that met another process's lock
BASE_FILE = "orchestrator-base"  # in a worktree's own git dir: the commit its branch started from
CHECKPOINT_FILE = "orchestrator-checkpoint"  # beside it: the commit the next attempt starts from
_LOCKED = re.compile(r"\.lock'?: File exists|Unable to create .*\.lock|cannot lock ref|is locked", re.IGNORECASE)


class GitError(GitFailed):
    """A git command failed; the message names the command and git's own words."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.argv, self.returncode, self.stderr = [], -1, message


# What every worktree-side call pins beyond invocation's: a known identity, and no system config
# (hooks, signing or a pager could come from it).
_PINNED_ENV = {**invocation.IDENTITY_ENV, "GIT_CONFIG_NOSYSTEM": "1"}
# Beyond invocation's pins (no hook, fsmonitor or submodule command): auto-gc never starts, commits are
# never signed, paths are as written.
PINNED_CONFIG = ("-c", "gc.auto=0", "-c", "commit.gpgSign=false", "-c", "core.quotePath=false")


def git_env() -> dict[str, str]:
    """The environment of every worktree-side git call (invocation's, with the pins above)."""
    return invocation.git_env(_PINNED_ENV)


def run_git(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = GIT_TIMEOUT,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``git -C cwd -c ... args`` through invocation.run_git; GitError when it fails and ``check``."""
    try:
        done = invocation.run_git(
            cwd, *PINNED_CONFIG, *args, input=input_text, check=False, env=env or _PINNED_ENV, timeout=timeout
        )
    except FileNotFoundError:
        raise GitError("git is not installed (not on PATH)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args[:2])} took more than {timeout:g}s") from None
    if check and done.returncode != 0:
        raise GitError(f"git {' '.join(args[:3])} failed (exit {done.returncode}): {done.stderr.strip()[:500]}")
    return done


@functools.lru_cache(maxsize=1)
def git_version() -> tuple[int, ...] | None:
    """The installed git's version, or None when there is no git (asked once per process)."""
    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(invocation.command(None, "--version"), capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return invocation.parse_version(out)


def toplevel(folder: Path) -> Path | None:
    """The root of the git work tree holding ``folder``, or None (not in one, or no git)."""
    try:
        done = run_git(folder, "rev-parse", "--show-toplevel", check=False)
    except GitError:
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def check_ref(name: str) -> str:
    """``name`` as a full branch ref, after ``git check-ref-format`` accepts it (asked once per
    name and process: the answer depends on the name alone)."""
    ref = f"refs/heads/{name}"
    if not _valid_ref(ref):
        raise ConfigError(f"{name!r} is not a valid git branch name (git check-ref-format); check git.branch_prefix")
    return ref


# A ref of these characters alone is valid exactly when ``_valid_plain`` says so: of git's rules
# (git-check-ref-format(1)) the others are about characters outside this set.
_PLAIN_REF = re.compile(r"[A-Za-z0-9._/-]+")


def _valid_plain(ref: str) -> bool:
    parts = ref.split("/")
    return (
        len(parts) >= 2
        and all(p and not p.startswith(".") and not p.endswith(".lock") for p in parts)
        and ".." not in ref
        and not ref.endswith(".")
    )


def is_plain_ref(ref: str) -> bool:
    """A valid ref made of plain characters only (every ref of the orchestrator's own)."""
    return bool(_PLAIN_REF.fullmatch(ref)) and _valid_plain(ref)


@functools.lru_cache(maxsize=4096)
def _valid_ref(ref: str) -> bool:
    if _PLAIN_REF.fullmatch(ref):  # every worker's branch: no git process
        return _valid_plain(ref)
    done = subprocess.run(
        invocation.command(None, "check-ref-format", ref), capture_output=True, text=True, env=git_env(), timeout=30
    )
    return done.returncode == 0


@dataclass(frozen=True)
class Host:
    """The repository a job's worktrees come from, once its checks passed."""

    repo: Path  # its work tree's root
    reason: str  # why worktree isolation applies (the auto note)


def find_host(folder: Path, workspace: Path, repo_setting: str) -> Host | str:
    """The host repository for worktree isolation, or the reason there is none (a sentence).
    ``repo_setting``: git.repo (relative to the folder), else the repository holding the folder.
    A folder that is a repository of its own (``git clone`` of the orchestrator) is not its own
    host: the repository enclosing it is, and with none, there is no host (its worktrees would
    branch the orchestrator's code). The workspace must be ignored by the repository whose work
    tree holds it (its worktrees must never show in ``git status``)."""
    version = git_version()
    if version is None:
        return "git is not installed"
    if version < MIN_GIT:
        need = ".".join(map(str, MIN_GIT))
        return f"git {'.'.join(map(str, version))} is older than {need}, the least worktree isolation needs"
    start = (folder / repo_setting).resolve() if repo_setting else folder.resolve()
    if not start.is_dir():
        return f"git.repo {repo_setting!r} is not a folder" if repo_setting else f"{start} is not a folder"
    top = toplevel(start)
    if top is None:
        return f"{start} is not inside a git work tree"
    why = f"{top} is a git repository"
    if not repo_setting and top.resolve() == start:
        outer = toplevel(start.parent)
        if outer is None:
            return (
                f"this folder {start} is a git repository of its own (as a clone is) and no repository encloses it: set "
                'git.repo to the repository the workers should change (git.repo: "." for this one)'
            )
        why = f"this folder {start} is a git repository of its own (as a clone is) inside the git repository {outer}, the host"
        top = outer
    why += f" (git {'.'.join(map(str, version))})"
    ws = workspace.resolve()
    try:
        ws.relative_to(top.resolve())
    except ValueError:
        return Host(top, why)
    # Asked of the repository whose work tree holds the workspace: when that is a repository of
    # its own inside ``top`` (a cloned folder), ``top`` never looks inside it (it sees one
    # untracked folder, or a gitlink, and refuses paths in a submodule).
    holder = toplevel(next(p for p in (ws, *ws.parents) if p.is_dir())) or top
    if run_git(holder, "check-ignore", "-q", "--", str(ws / "probe"), check=False).returncode != 0:
        return (
            f"the workspace {ws} is inside the repository {holder} but not ignored by it: add it to the folder's "
            ".gitignore (or the repository's .git/info/exclude), so the worktrees never show in git status"
        )
    by = "it" if holder == top else "this folder's own repository" if holder == folder.resolve() else str(holder)
    return Host(top, f"{why}; the workspace is ignored by {by}")


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def repo_lock(repo: Path) -> threading.Lock:
    """The one lock of a repository's repository-level operations in this server."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(repo.resolve()), threading.Lock())


def repo_op(repo: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A repository-level git operation: under the repository's lock, retried while another
    process (the user's own git) holds one of git's lock files."""
    with repo_lock(repo):
        return retry_locked(cwd, *args)


def add_detached_worktree(repo: Path, tree: Path, commit: str) -> None:
    """A worktree at ``tree`` with ``commit`` detached and nothing checked out: its HEAD set by the
    orchestrator's git as it is added (git in a sandbox cannot move a detached HEAD), its files the
    caller's to check out where it runs what may read them (in the sandbox). ``--force``: an earlier
    entry whose folder is gone (its removal failed) is replaced rather than refused; the path is the
    orchestrator's own. No hook runs."""
    repo_op(
        repo,
        repo,
        "-c",
        "core.hooksPath=/dev/null",
        "worktree",
        "add",
        "-q",
        "--no-checkout",
        "--force",
        "--detach",
        "--",
        str(tree),
        commit,
    )


def retry_locked(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A git call retried while another process holds one of git's lock files."""
    for attempt in range(LOCK_RETRIES):
        try:
            return run_git(cwd, *args, env=env)
        except GitError as exc:
            if attempt + 1 == LOCK_RETRIES or not _LOCKED.search(str(exc)):
                raise
            time.sleep(min(1.0, 0.05 * 2**attempt))
    raise AssertionError("unreachable")


# Runs git's checkout of a new worktree (``reset --hard ...``: its argv after ``git``, and the
# environment naming its git dir and work tree) where the caller says: in the worker's sandbox.
CheckoutRunner = Callable[[list[str], dict[str, str]], None]


def add_worktree(repo: Path, directory: Path, branch: str, start: str | None, checkout: CheckoutRunner | None = None) -> None:
    """A linked worktree of ``repo`` at ``directory`` on ``branch`` (a new branch from ``start``;
    None: the branch exists), checked out, as ``git worktree add`` makes it. ``checkout`` runs the
    checkout (the files it writes may be a worker's, and a filter of the user's that resolves a
    name from the folder it runs in would run them: the caller runs it in the worker's sandbox);
    None: here, with the pins.

    A new branch in a repository of the usual layout (``plain_layout``) is made without ``git
    worktree add``: its admin entry (``HEAD``, ``commondir``, ``gitdir``) is written aside and
    renamed into ``.git/worktrees`` in one step, and one ``reset --hard <start>`` makes the
    branch (HEAD names it, unborn) and checks it out. No lock of the repository is needed: the
    rename is atomic (a git listing the worktrees meanwhile never meets a half-made entry, which
    makes concurrent ``worktree add`` runs fail) and names never collide, so sixteen workers'
    worktrees are made side by side and the cost does not grow with the worktrees already
    there. The entry takes no "initializing" lock, as git's does: ``directory/.git`` is there
    before the entry, so no ``worktree prune`` takes it meanwhile, and a lock removed after the
    checkout would fail a ``git worktree list`` that saw it a moment before it went. Otherwise
    git's own two steps: ``worktree add --no-checkout`` under the repository's lock, then the
    same checkout outside it. A checkout that fails
    removes the worktree again, as git does."""
    admin: Path | None
    target: list[str] = []  # what the checkout resets to: the new branch's start, else its tip
    if start is not None and plain_layout(str(repo)):
        admin, target = _make_entry(repo, directory, branch), [start]
    else:
        # A new branch (``-b``) cannot be checked out anywhere yet, so its add skips that check
        # (``--force``): git reads every worktree of the repository for it, under the lock.
        place = (
            ("--", str(directory), branch)
            if start is None
            else ("--force", "--no-track", "-b", branch, "--", str(directory), start)
        )
        repo_op(repo, repo, "worktree", "add", "--no-checkout", *place)
        admin = linked_git_dir(directory)
    try:
        # Named explicitly, as git names them for its own checkout: a directory that somehow
        # were not a worktree must never let ``reset --hard`` find the host's own work tree.
        if admin is None:
            raise GitError(f"git worktree add made no readable {directory / '.git'}")
        env = {**_PINNED_ENV, "GIT_DIR": str(admin), "GIT_WORK_TREE": str(directory)}
        argv = ["reset", "--hard", "--no-recurse-submodules", "-q"]
        if checkout is not None:
            if target:  # the branch made here (its reflog too: a sandbox cannot make a folder for it), at ``start``
                zero = "0" * len(target[0])
                run_git(repo, "update-ref", "-m", "orchestrator: a worker's branch", f"refs/heads/{branch}", target[0], zero)
            checkout(argv, env)
        else:
            retry_locked(directory, *argv, *target, env=env)
    except GitError:
        try:
            repo_op(repo, repo, "worktree", "remove", "--force", "--force", "--", str(directory))
        except GitError:
            pass  # the first error is the one to report
        raise


# Settings under which git's ``worktree add`` writes more than the three files of an entry: a
# per-worktree config copied from the main one, sparse-checkout patterns, refs kept in reftable.
_LAYOUT_KEYS = r"^(extensions\.(worktreeconfig|refstorage)|core\.sparsecheckout)$"


@functools.lru_cache(maxsize=64)
def plain_layout(repo: str) -> bool:
    """Whether ``repo``'s linked worktrees are made of the files ``_make_entry`` writes, and its
    refs are files (refstore.py); asked once per repository and process."""
    done = run_git(Path(repo), "config", "--get-regexp", _LAYOUT_KEYS, check=False)
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key.lower() == "extensions.refstorage" and value.strip().lower() != "files":
            return False
        if key.lower() != "extensions.refstorage" and value.strip().lower() not in ("false", "no", "off", "0"):
            return False
    return done.returncode in (0, 1)  # 1: none of them is set


def _make_entry(repo: Path, directory: Path, branch: str) -> Path:
    """``directory``'s admin entry in ``repo``'s ``worktrees`` folder, and ``directory/.git``
    pointing to it, written first (an entry whose folder is missing is prunable). Returns the
    entry."""
    if directory.exists() and any(directory.iterdir()):
        raise GitError(f"git worktree add: {directory} already exists and is not empty")
    common = common_dir(repo)
    where = Path(os.path.realpath(directory))
    staging = common / f"orchestrator-adding-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(staging, ignore_errors=True)  # this thread's own, left by a failure
    staging.mkdir()
    for name, text in (
        ("commondir", "../..\n"),
        ("gitdir", f"{where / '.git'}\n"),
        ("HEAD", f"ref: refs/heads/{branch}\n"),
    ):
        (staging / name).write_text(text, encoding="utf-8")
    worktrees = common / "worktrees"
    worktrees.mkdir(exist_ok=True)
    # git names an entry after its folder, with a number when that name is taken; the folder's
    # hash keeps names from colliding (every tree has a worker_1).
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", directory.name).lstrip(".") or "worktree"
    stem += "-" + hashlib.sha1(str(where).encode("utf-8")).hexdigest()[:8]
    directory.mkdir(parents=True, exist_ok=True)
    dot_git, real_worktrees = directory / ".git", Path(os.path.realpath(worktrees))
    for n in range(100):
        admin = worktrees / (stem if n == 0 else f"{stem}{n}")
        dot_git.write_text(f"gitdir: {real_worktrees / admin.name}\n", encoding="utf-8")
        try:
            os.rename(staging, admin)  # fails on an existing, non-empty entry: never replaces one
            return admin
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                dot_git.unlink(missing_ok=True)
                shutil.rmtree(staging, ignore_errors=True)
                raise GitError(f"could not make the worktree entry {admin}: {exc}") from None
    dot_git.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    raise GitError(f"could not name a worktree entry for {directory} in {worktrees}")


def common_dir(repo: Path) -> Path:
    """``repo``'s common git dir: its ``.git`` folder, or for a linked worktree or a submodule
    (a ``.git`` file) what that names; asked of git when neither reads."""
    dot = repo / ".git"
    if dot.is_dir():
        return dot.resolve()
    private = linked_git_dir(repo)
    found = common_dir_of(private) if private is not None and (private / "commondir").is_file() else private
    if found is not None and found.is_dir():
        return found
    return Path(run_git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").stdout.strip())


def snapshot_commit(repo: Path, base: str) -> str:
    """A commit of the user's uncommitted changes to tracked files on top of ``base`` (as
    ``git stash create`` makes it), or ``base``'s commit when there are none. Runs on a copy
    of the index, so the user's index, working tree and stash list are never touched
    (untracked files are not included: ``stash create`` leaves them out)."""
    head = resolve_commit(repo, base)
    git_dir = Path(run_git(repo, "rev-parse", "--absolute-git-dir").stdout.strip())
    with tempfile.TemporaryDirectory(prefix="orchestrator-index-") as tmp:
        index = Path(tmp) / "index"
        if (git_dir / "index").exists():
            shutil.copyfile(git_dir / "index", index)
        env = {**git_env(), "GIT_INDEX_FILE": str(index), "GIT_OPTIONAL_LOCKS": "0"}
        made = run_git(repo, "stash", "create", "orchestrator snapshot", env=env).stdout.strip()
    if not made:
        return head
    # The stash commit's tree is the working tree; its first parent is HEAD. Based on ``base``
    # when that is not HEAD: a commit of that tree on top of base.
    tree = run_git(repo, "rev-parse", "--verify", "--end-of-options", f"{made}^{{tree}}").stdout.strip()
    message = "Uncommitted changes the job started from"  # the user's work: by the user, as the job's commits
    env = {**git_env(), **identity_of(repo).env()}
    return run_git(repo, "commit-tree", tree, "-p", head, "-m", message, env=env).stdout.strip()


def resolve_commit(repo: Path, rev: str) -> str:
    """The commit ``rev`` names (git.base); ConfigError when it names none."""
    done = run_git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False)
    if done.returncode != 0:
        raise ConfigError(f"git.base {rev!r} names no commit in {repo}: set git.base to a branch, tag or commit")
    return done.stdout.strip()


def worktree_list(repo: Path) -> list[dict[str, str]]:
    """``git worktree list --porcelain`` as one dict per worktree (key -> value; a bare
    key such as ``prunable`` or ``locked`` maps to its reason or "")."""
    found: list[dict[str, str]] = []
    nul = (git_version() or (0,)) >= (2, 36)  # -z is git 2.36+; before, one a line (a newline in a path misreads)
    listed = run_git(repo, "worktree", "list", "--porcelain", *(["-z"] if nul else [])).stdout
    for line in listed.split("\0" if nul else "\n"):
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key == "worktree":
            found.append({})
        if found:
            found[-1][key] = value
    return found


def linked_git_dir(directory: Path) -> Path | None:
    """A linked worktree's own git dir, read from its ``.git`` file (``gitdir: <path>``, relative
    with worktree.useRelativePaths) without starting git; None when it has no such file."""
    try:
        text = (directory / ".git").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir: "):
        return None
    found = Path(text.removeprefix("gitdir: ").strip())
    return found if found.is_absolute() else (directory / found).resolve()


def common_dir_of(private: Path) -> Path | None:
    """The repository's common git dir, from a linked worktree's own git dir (its ``commondir``
    file), without starting git; None when it cannot be read."""
    try:
        return (private / (private / "commondir").read_text(encoding="utf-8").strip()).resolve()
    except OSError:
        return None


def git_dir_of(directory: Path) -> Path:
    """``directory``'s git dir: a linked worktree's from its ``.git`` file, else asked of git."""
    return linked_git_dir(directory) or Path(run_git(directory, "rev-parse", "--absolute-git-dir").stdout.strip())


def head_ref(directory: Path) -> str:
    """The branch a linked worktree's HEAD names (``refs/heads/...``), read from its git dir without
    starting git (the file is the orchestrator's: read-only in the sandbox); "" when detached or unread."""
    private = linked_git_dir(directory)
    try:
        text = (private / "HEAD").read_text(encoding="utf-8") if private is not None else ""
    except (OSError, UnicodeDecodeError):
        return ""
    return text.removeprefix("ref: ").strip() if text.startswith("ref: ") else ""
