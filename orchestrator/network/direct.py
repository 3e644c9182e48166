"""A sandboxed worker's direct TCP connections, decided and recorded outside its reach.

With ``workers.sandbox_network`` ``allow`` or ``none``, a worker may connect to its proxy's port and
the forwarded endpoints' ports only. Under Landlock it shares the host's loopback and its rules refuse
any other port with EACCES; under bubblewrap its own network namespace has nothing listening there. In
both the kernel keeps no record. So a seccomp filter hands every ``connect()`` of the worker's
processes to the orchestrator (a seccomp user notification, Linux 5.5+): Landlock's launcher installs it,
under bubblewrap the shim inside, just before the worker starts; either sends the filter's listener
over a socket pair and closes its own copy before the exec, so no process of the worker holds it. For
each connection to an IPv4 or IPv6 address, the :class:`Guard` reads its destination from the worker's
memory and

* lets a port the worker may reach go on to the kernel (which, under Landlock, checks it again);
* refuses any other port itself (EACCES, as Landlock would) and writes the refusal to the worker's
  network record (``state/workers/<key>.network.jsonl``, network/egress.py's record and its reporter:
  a ``[orchestrator] network: refused HOST:PORT: ...`` line in its log too), before any packet leaves.

Another family (a Unix socket the worker may have, AF_UNSPEC) goes on unseen. What it cannot promise:
the destination is read from the worker's memory while it waits, so a worker that rewrites it from a
second thread between that read and the kernel's own can make an allowed port's connection go to
another port, which Landlock then refuses, or the namespace leaves unanswered, unrecorded.

Who holds the listener: the workspace's supervisor (process/supervisor.py), for every worker it
starts. It outlives the server, so a worker a restarted server adopts keeps its guard. It imports this
module, so this module imports the standard library only. Where the server starts a worker itself
(no supervisor: an injected runner, a platform without pidfds), :class:`Guard`, a thread of the
server, holds it; a worker such a server's successor adopts has none then, and each of its
``connect()`` calls fails ("Function not implemented", never a connection unseen) until it ends.
Both answer with :func:`answer` and record with :func:`record`: one decision, one record format.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import ipaddress
import json
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..descriptors import recv_fds

log = logging.getLogger("orchestrator.network")

# <linux/seccomp.h>: struct seccomp_notif (id, pid, flags, then seccomp_data: nr, arch, ip, args[6])
# and struct seccomp_notif_resp (id, val, error, flags), and the ioctls on a listener.
_NOTIF = struct.Struct("=QIIiIQ6Q")
_RESP = struct.Struct("=QqiI")
_RECV = 0xC0000000 | (_NOTIF.size << 16) | 0x2100  # SECCOMP_IOCTL_NOTIF_RECV: _IOWR('!', 0, ...)
_SEND = 0xC0000000 | (_RESP.size << 16) | 0x2101  # SECCOMP_IOCTL_NOTIF_SEND: _IOWR('!', 1, ...)
_ID_VALID = 0x40000000 | (8 << 16) | 0x2102  # SECCOMP_IOCTL_NOTIF_ID_VALID: _IOW('!', 2, __u64)
_CONTINUE = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel carries the call out itself
_SOCKADDR_MAX = 28  # sockaddr_in6, the largest read
REASON = "a direct connection (not through its proxy) to a port its sandbox does not allow"
# network/egress.py's record and log line (its REFUSED, its reporter's throttle): written the same here,
# without importing it (it imports the proxy, and asyncio), so the supervisor may (tests/test_direct_connections.py
# compares the two).
REFUSED_LINE = "[orchestrator] network: refused "
LOG_EVERY = 10


def allowed(ports: frozenset[int], destination: tuple[str, int] | None) -> bool:
    """The policy: a connection goes on unless it names an IP address at a port the worker may not
    reach (``None``: another family, or unreadable, which the kernel's own rules still decide)."""
    return destination is None or destination[1] in ports


def answer(
    listener: int, ports: frozenset[int], on_refusal: Callable[[tuple[str, int]], None] | None = None
) -> tuple[str, int] | None:
    """Answer the ``connect()`` waiting on ``listener`` (one is: it polled readable): let it go on, or
    refuse it with EACCES, ``on_refusal`` told first (:func:`tally`): the notice is in the worker's
    log before the worker learns of the refusal, so nothing it writes on learning it (its own line
    about the failed connection, written piece by piece) comes before the notice or is cut by it.
    The destination refused, None otherwise (nothing was waiting, its caller died meanwhile, or it
    went on)."""
    buffer = bytearray(_NOTIF.size)
    try:
        fcntl.ioctl(listener, _RECV, buffer, True)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EINTR):  # its caller died, or was interrupted, meanwhile
            return None
        raise
    call_id, pid, _, _, _, _, *args = _NOTIF.unpack(buffer)
    destination = _destination(pid, args[1], args[2])
    # Read before this check: a pid that ended meanwhile (and was reused) made nothing worth reading.
    if not _valid(listener, call_id):
        return None
    if destination is None or allowed(ports, destination):
        _send(listener, call_id, 0, _CONTINUE)
        return None
    if on_refusal is not None:
        on_refusal(destination)
    _send(listener, call_id, -errno.EACCES, 0)
    return destination


def tally(counts: dict[tuple[str, int], int], log_path: str, record_path: str, destination: tuple[str, int]) -> None:
    """One more refusal of ``destination`` counted in ``counts`` and recorded (:func:`record`)."""
    count = counts[destination] = counts.get(destination, 0) + 1
    record(log_path, record_path, destination, count)


def record(log_path: str, record_path: str, destination: tuple[str, int], count: int) -> None:
    """The ``count``-th refusal of ``destination`` in the worker's network record and its log, as its
    proxy's (network/egress.py's reporter): the first ten of a host and then each power of ten."""
    if count > LOG_EVERY and str(count).rstrip("0") != "1":
        return
    host, port = destination
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if log_path:
        append(log_path, f"{REFUSED_LINE}{authority}: {REASON} ({count} so far)\n", create=False)
    if record_path:
        entry = {"outcome": "refused", "host": host, "port": port, "reason": REASON, "count": count}
        append(record_path, json.dumps(entry) + "\n", create=True)


def append(path: str, line: str, *, create: bool) -> None:
    """``line`` at the end of ``path`` (never through a link; ``create``: made where missing, private)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except OSError:
        return
    try:
        os.write(fd, line.encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Watch:
    """One worker's listener (or, until the launcher has sent it, the socket it comes by), the TCP
    ports it may connect to, and where its refusals go."""

    ports: frozenset[int]
    log_path: str  # the worker's log and its network record ("": none), where refusals go (:func:`record`)
    record_path: str
    channel: socket.socket | None = None
    listener: int | None = None
    counts: dict[tuple[str, int], int] = field(default_factory=dict)

    def fd(self) -> int:
        return self.listener if self.listener is not None else self.channel.fileno() if self.channel else -1


class Guard:
    """The thread that answers every watched worker's ``connect()`` (one per process, started with
    its first watch). A worker blocked in ``connect()`` waits for it: each answer is a read of a few
    bytes of the worker's memory and one ioctl."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, Watch] = {}
        self._poll = select.poll()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._poll.register(self._wake_r, select.POLLIN)
        self._thread: threading.Thread | None = None

    def watch(self, channel: socket.socket, ports: Iterable[int], log_path: str, record_path: str) -> Watch:
        """Watch the worker whose launcher sends its listener over ``channel`` (this side of the pair;
        the guard owns it from now): its connections to ``ports`` go on, any other is refused and
        recorded (:func:`record`)."""
        found = Watch(frozenset(ports), log_path, record_path, channel=channel)
        with self._lock:
            self._add(found)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="orchestrator-direct-guard", daemon=True)
                self._thread.start()
        self._wake()
        return found

    def forget(self, found: Watch) -> None:
        """Stop watching (its worker ended): its listener and socket closed."""
        with self._lock:
            self._drop(found)
        self._wake()

    def _add(self, found: Watch) -> None:
        self._watches[found.fd()] = found
        self._poll.register(found.fd(), select.POLLIN)

    def _drop(self, found: Watch) -> None:
        fd = found.fd()
        if self._watches.get(fd) is found:
            del self._watches[fd]
            with contextlib.suppress(KeyError, ValueError):
                self._poll.unregister(fd)
        if found.channel is not None:
            found.channel.close()
            found.channel = None
        if found.listener is not None:
            with contextlib.suppress(OSError):
                os.close(found.listener)
            found.listener = None

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            try:
                events = self._poll.poll()
            except InterruptedError:
                continue
            for fd, event in events:
                if fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    found = self._watches.get(fd)
                    if found is None:
                        continue
                    try:
                        if found.listener is None:
                            self._take_listener(found)
                        elif event & select.POLLIN:
                            self._answer(found)
                        elif event & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                            self._drop(found)  # every process of its filter ended
                    except Exception:  # one worker's trouble must not end the guard of the others
                        log.exception("the direct-connection guard failed on one worker's call")

    def _take_listener(self, found: Watch) -> None:
        """The listener the launcher sent (or nothing: it failed before, and starts nothing)."""
        assert found.channel is not None
        channel, found.channel = found.channel, None
        del self._watches[channel.fileno()]
        self._poll.unregister(channel.fileno())
        found.listener = receive_listener(channel)
        channel.close()
        if found.listener is not None:
            self._add(found)

    def _answer(self, found: Watch) -> None:
        assert found.listener is not None
        answer(found.listener, found.ports, functools.partial(tally, found.counts, found.log_path, found.record_path))


def receive_listener(channel: socket.socket) -> int | None:
    """The listener a worker's launcher sent over ``channel`` (readable: it did, or it ended having
    sent nothing, when it failed before starting anything): None then."""
    try:
        _, fds = recv_fds(channel, 1, 1)
    except OSError:
        fds = []
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else None


def _destination(pid: int, address: int, length: int) -> tuple[str, int] | None:
    """The IP address and port ``pid``'s ``connect()`` names (None: another family, or unreadable)."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.pread(fd, min(max(length, 0), _SOCKADDR_MAX), address)
    except (OSError, OverflowError, ValueError):
        return None
    finally:
        os.close(fd)
    if len(raw) < 8:
        return None
    family, port = struct.unpack_from("=H", raw)[0], struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[4:8])), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return str(ipaddress.IPv6Address(raw[8:24])), port
    return None


def _valid(listener: int, call_id: int) -> bool:
    try:
        fcntl.ioctl(listener, _ID_VALID, struct.pack("=Q", call_id))
    except OSError:
        return False
    return True


def _send(listener: int, call_id: int, error: int, flags: int) -> None:
    with contextlib.suppress(OSError):  # ENOENT: its caller died meanwhile
        fcntl.ioctl(listener, _SEND, _RESP.pack(call_id, 0, error, flags))


_shared: Guard | None = None
_shared_lock = threading.Lock()


def shared() -> Guard:
    """This process's guard."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Guard()
        return _shared


__all__ = ["REASON", "Guard", "Watch", "allowed", "answer", "append", "receive_listener", "record", "shared"]
