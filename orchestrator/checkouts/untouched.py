"""Whether a sandboxed worker left its checkout as the orchestrator last left it, without running git.

Committing what a worker left runs git in the worker's sandbox (git/sandboxed.py), a sandbox start
per commit even when the worker changed nothing (a no-op worker, a failed one that wrote nothing).
The kernel answers that question more cheaply: every write, creation, deletion, rename, link or mode
change sets the ctime of what it touched (a file, or the folder that holds a name) to the clock, and
a sandboxed worker can neither set a ctime nor the clock (no capabilities). So once the orchestrator
is done writing a checkout (its checkout at ``prepare``, a reset before a retry) it notes the time,
:func:`mark`, and before the worker's attempt starts waits until the kernel's clock has moved past it,
:func:`settle`; nothing in the checkout (or its git dir's index, config and info) with a later ctime
means nothing was written since.

Only where the clock that stamps the files is this machine's (a local file system: ext4, xfs,
btrfs, tmpfs, ...): a network file system stamps with its server's clock, and there the answer is
always "changed" (git runs).
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from pathlib import Path

_COARSE = 5  # CLOCK_REALTIME_COARSE: what the kernel stamps ctimes with (a finer value may be given; never a coarser one)
_LOCAL = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "overlay", "jfs", "reiserfs", "bcachefs"})
_WAIT = 0.05  # seconds a mark waits for the clock at most (a tick is 1-10 ms)
# Entries looked at in this process before a checkout is left to find(1): a walk here costs about
# a microsecond an entry, a process started from the server milliseconds (a worker's commit asks once).
_WALK_BUDGET = 2048


def mark(directory: Path) -> int | None:
    """The time (ns) at or after every ctime given so far in ``directory``'s file system, or None when
    that file system's clock is not this machine's. Anything written after :func:`settle` returned
    True for it has a later ctime."""
    if not _local(directory):
        return None
    return time.time_ns()  # (fine-grained: at or after any ctime already given, fine-grained stamps included)


def settle(since: int) -> bool:
    """Wait until the clock the kernel stamps with has moved past ``since`` (at most a tick, 1-10 ms,
    and usually already past): False if it did not in time (then ``since`` tells nothing)."""
    deadline = time.monotonic() + _WAIT
    while time.clock_gettime_ns(_COARSE) <= since:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)
    return True


def written_since(since: int, directory: Path, git_dir: Path) -> bool:
    """Whether anything in the checkout at ``directory`` (but its ``.git`` file) or in its own git
    dir's files that decide a commit (index, config.worktree, info/) has a ctime after ``since``.
    True when it cannot be told."""
    # (Not the git dir itself: the orchestrator writes its own files there as each sandbox starts.)
    for path in (git_dir / "index", git_dir / "config.worktree", git_dir / "info"):
        try:
            if os.lstat(path).st_ctime_ns > since:
                return True
        except FileNotFoundError:
            continue
        except OSError:
            return True
    found = _newer_within(directory, since, _WALK_BUDGET)
    if found is not None:
        return found
    stamp = f"@{since // 1_000_000_000}.{since % 1_000_000_000:09d}"
    # find: a walk in C that stops at the first hit, never following a link.
    argv = ["find", str(directory), "-path", str(directory / ".git"), "-prune", "-o", "-newerct", stamp, "-print", "-quit"]
    try:
        done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return done.returncode != 0 or bool(done.stdout.strip())


def _newer_within(directory: Path, since: int, budget: int) -> bool | None:
    """``find``'s answer for a small checkout, without its process: whether ``directory`` or anything
    below it but its top ``.git`` has a ctime after ``since``, never following a link; True when a
    folder cannot be read (find fails there too); None past ``budget`` entries (find walks it)."""
    top = str(directory)
    try:
        if os.lstat(top).st_ctime_ns > since:
            return True
        folders = [top]
        while folders:
            folder = folders.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    if folder == top and entry.name == ".git":
                        continue
                    budget -= 1
                    if budget < 0:
                        return None
                    if entry.stat(follow_symlinks=False).st_ctime_ns > since:
                        return True
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
    except OSError:
        return True
    return False


def _local(directory: Path) -> bool:
    try:
        return _fstype(os.stat(directory).st_dev) in _LOCAL
    except OSError:
        return False


@functools.lru_cache(maxsize=64)
def _fstype(device: int) -> str:
    """The file system type of the mount of ``device`` (``/proc/self/mountinfo``), "" when unknown."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and " - " in line:
            return line.split(" - ", 1)[1].split()[0]
    return ""


__all__ = ["mark", "settle", "written_since"]
