"""Who is at the other end of an accepted Unix socket, in the kernel's words: its cgroups.

The shared egress listener (network/egress.py) tells attempts apart by the cgroup each attempt's
processes run in (process/cgroups.py: one per attempt, which no sandboxed process can leave: its
/sys is read-only). The peer is named by a pidfd the kernel hands out for the process that connected
(``SO_PEERPIDFD``, Linux 6.5), never by a bare pid, which can be reused: the pid is read from the
pidfd's fdinfo, then ``/proc/<pid>/cgroup``, then the pidfd is signalled with 0 *after* that read.
A pid is only reused once its process is reaped, and a pidfd whose process is gone fails the signal,
so the cgroups read were that process's. Anything unexpected reads as "unknown": the caller refuses.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux >= 6.5 (Python 3.11 does not name it)


def peer_cgroups(sock: socket.socket) -> dict[str, str] | None:
    """The cgroup paths of the process that connected ``sock`` (hierarchy -> path, as
    ``/proc/<pid>/cgroup`` says them to this process: "" is the v2 one, else the controllers'
    names), or None when the kernel cannot say (no pidfd, the process is gone, another namespace)."""
    try:
        pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return None
    try:
        pid = _pid_of(pidfd)
        if pid is None or pid <= 0:  # 0: gone; -1: in a PID namespace this process cannot see into
            return None
        text = _read(f"/proc/{pid}/cgroup")
        signal.pidfd_send_signal(pidfd, 0)  # after the read: the pid was still this process's
        return cgroups_of(text)
    except (OSError, ValueError):
        return None
    finally:
        os.close(pidfd)


def cgroups_of(text: str) -> dict[str, str]:
    """hierarchy -> path, from a ``/proc/<pid>/cgroup``'s text ("" is the v2 one; a v1 line naming
    several controllers gives each of them)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for name in parts[1].split(",") if parts[1] else [""]:
            found[name] = parts[2]
    return found


@functools.lru_cache(maxsize=1)
def supported() -> bool:
    """Whether this kernel names a Unix socket's peer by a pidfd (checked once, on a socket pair)."""
    if not hasattr(signal, "pidfd_send_signal"):
        return False
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pidfd = left.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return False
    finally:
        left.close()
        right.close()
    try:
        return _pid_of(pidfd) == os.getpid()
    except (OSError, ValueError):
        return False
    finally:
        os.close(pidfd)


def _pid_of(pidfd: int) -> int | None:
    for line in _read(f"/proc/self/fdinfo/{pidfd}").splitlines():
        if line.startswith("Pid:"):
            return int(line[4:].strip())
    return None


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
