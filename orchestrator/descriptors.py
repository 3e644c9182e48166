"""Descriptors received over a Unix socket, close-on-exec from the moment they arrive.

CPython's ``socket.recv_fds`` drops its ``flags`` argument (python/cpython gh-107898), so
``MSG_CMSG_CLOEXEC`` passed there never reached ``recvmsg``: every descriptor the supervisor
received (a worker's log, its cgroup's join files, its lifeline, a seccomp listener) stayed
inheritable, and each process it started next held copies of them."""

from __future__ import annotations

import array
import os
import socket

_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)  # Linux's; elsewhere set by hand once received


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """Up to ``bufsize`` bytes and up to ``maxfds`` descriptors sent with them, each close-on-exec."""
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(bufsize, socket.CMSG_LEN(maxfds * fds.itemsize), _CLOEXEC)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    received = list(fds)
    if not _CLOEXEC:
        for fd in received:
            os.set_inheritable(fd, False)
    return data, received
