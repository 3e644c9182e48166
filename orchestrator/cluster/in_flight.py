"""A node's attempts in flight, on its host's own disk: what a node that finds it dead sweeps, what
its heartbeat publishes and what it signals when it stops (cluster/node.py).

Each node worker process keeps one file in its node's attempts folder, ``<pid>.json``: the attempt
it runs (its id, its run's tag, its start and the process's pid), written in place before the
worker is started and emptied at its end (a node worker runs one attempt at a time). Where a file
per attempt was made, renamed over and deleted, no inode is made per attempt: on ext4 without a
journal each new inode steps over every inode deleted in the last minutes (0.1-0.3 ms of the way to
the worker's start here), and each deletion costs the creations after it. An empty file is no
attempt; a file left by a dead process of the same pid is set aside under another name, kept for
the sweep, never written over. A record is written before its worker starts, so one cut short
by a crash (unreadable) stands for no process to sweep.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_kept: tuple[int, Path, int] | None = None  # (the pid that opened it, its folder, its descriptor): a fork opens its own


@dataclass(frozen=True)
class InFlight:
    """One attempt a node worker process runs."""

    id: str
    tag: str
    started_at: float
    pid: int


def begin(folder: Path, attempt_id: str, tag: str) -> None:
    """This process runs attempt ``attempt_id`` (its run's tag ``tag``) from now: written in its file."""
    data = json.dumps({"id": attempt_id, "tag": tag, "started_at": time.time(), "pid": os.getpid()}).encode()
    fd = _descriptor(folder)
    os.ftruncate(fd, 0)
    if os.pwrite(fd, data, 0) != len(data):
        raise OSError(f"{folder}: the in-flight record of attempt {attempt_id} was cut short")


def end(folder: Path) -> None:
    """This process's attempt has ended (its processes swept): its file emptied."""
    os.ftruncate(_descriptor(folder), 0)


def read_all(folder: Path) -> list[InFlight]:
    """The attempts the processes of the node whose folder is ``folder`` run (or ran, when they died)."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_bytes())
            found.append(InFlight(str(data["id"]), str(data["tag"]), float(data["started_at"]), int(data["pid"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # empty (no attempt), or cut short before its worker started
    return found


def _descriptor(folder: Path) -> int:
    """This process's file in ``folder``, opened at its first attempt."""
    global _kept
    pid = os.getpid()
    if _kept is not None and _kept[0] == pid and _kept[1] == folder:
        return _kept[2]
    path = folder / f"{pid}.json"
    try:
        fd = os.open(path, _FLAGS, 0o600)
    except FileExistsError:  # a dead process's of this pid: its record kept for the sweep, under another name
        os.rename(path, folder / f"{pid}-{secrets.token_hex(4)}.json")
        fd = os.open(path, _FLAGS, 0o600)
    _kept = (pid, folder, fd)
    return fd
