"""The worker's API key on its way to a node: never through Redis, in a file only this user reads,
beside the attempt's exit file in the shared workspace (cluster/leases.py), read once by the node.

The node empties the file it has read and hands it back to its folder's spares (``.secret-spares``),
which the server's next attempt there takes by a rename: in steady state no inode is made or freed
per attempt (on ext4 without a journal each new inode steps over every inode deleted in the last
minutes, 0.1-0.3 ms on the way to a worker's start here, and each deletion costs the creations after
it). A spare is taken only as a fresh file would be: this user's regular file, empty, mode 0600, no
other name (a hard link planted there would carry the key elsewhere); any other is deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

SPARES = ".secret-spares"  # in the folder of the secret files: emptied ones, handed back by the nodes
_NO_LINK = getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


def write_secret_file(path: Path, secret: Mapping[str, str]) -> None:
    """The secret variables at ``path``, readable by this user only (the node runs as the same user)."""
    fd = _spare_at(path)
    if fd is None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NO_LINK, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(dict(secret), out)


def read_secret_file(path: str | None) -> dict[str, str]:
    """The secret variables a node's worker gets; the file, read and emptied through one descriptor
    (never through a link), is then handed back: it is needed once."""
    if not path:
        return {}
    try:
        fd = os.open(path, os.O_RDWR | _NO_LINK)
    except OSError:
        return {}
    try:
        data = json.loads(b"".join(iter(lambda: os.read(fd, 1 << 16), b"")))
        os.ftruncate(fd, 0)
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    _hand_back(Path(path))
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _hand_back(path: Path) -> None:
    """``path``, emptied, moved to its folder's spares; deleted where it cannot be (no spares folder)."""
    try:
        os.rename(path, path.parent / SPARES / secrets.token_hex(8))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _spare_at(path: Path) -> int | None:
    """A spare of ``path``'s folder renamed to ``path`` and opened for writing; None when there is none
    (the spares folder is made then, for the nodes to hand theirs back)."""
    spares = path.parent / SPARES
    try:
        names = os.listdir(spares)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            spares.mkdir(mode=0o700)
        return None
    except OSError:
        return None
    for name in names:
        try:
            if not stat.S_ISREG(os.lstat(spares / name).st_mode):
                continue  # not one a node handed back: left where it is
            os.rename(spares / name, path)  # (another thread's already: the next)
        except OSError:
            continue
        try:
            fd = os.open(path, os.O_WRONLY | _NO_LINK)
        except OSError:
            fd = -1
        if fd >= 0:
            found = os.fstat(fd)
            fresh = stat.S_ISREG(found.st_mode) and found.st_nlink == 1 and found.st_size == 0
            if fresh and found.st_uid == os.getuid() and stat.S_IMODE(found.st_mode) == 0o600:
                return fd
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
    return None
