"""The supervisor: one long-lived process per workspace that starts the workers and records how each ended.

A server forking each worker itself pays for its own size on every spawn: the fork copies the page
tables of a large threaded process, and every thread then takes copy-on-write faults (a preexec
step, to join a cgroup, rules out vfork). A per-worker shim (process/shim.py) costs a process start
of its own. The supervisor is small and single-threaded, so it may change its own state around a
``posix_spawn`` (vfork and exec, no copy): it steps into the worker's cgroup (the child is born in
it, with no moment outside), into the worker's folder, and ignores the signals a sandbox's launcher
must ignore, then steps back. A worker's RLIMIT_FSIZE is the supervisor's own (a hard limit cannot
be raised again): a supervisor serves one file-size limit, named in its socket's name. It records
each worker's true wait status in its exit file (``exit N`` or ``signal S``, the shim's format)
before it reaps it, so a process seen gone has its status on disk. It also keeps the deadline a spawn
request may carry (shim.Deadline, the backstop for the worker's timeout while no server watches, as
the perl shim does for the workers it runs): past it, SIGTERM to the worker's process group, SIGKILL
after the grace, and the exit file's second line says so (shim.DEADLINE_MARK). A cluster node has one of its
own (cluster/node.py), its attempts tied to the node's worker by a lifeline the request carries (the
attempt's process holds the write end): a sandboxed attempt's shim gets it and writes the status
itself; an unconfined attempt has no shim (one process start fewer per attempt), the supervisor
holds its lifeline (``Tether``: the start refused if it has closed, the worker's group killed once
it closes, no status written then) and the worker gets a parent-death signal, as nothing else
watches that lifeline once the supervisor is gone. It runs in a session of its own, so a server killed
or restarted leaves it, and its workers, running; the restarted server connects again and adopts
them (``list``). It is the subreaper of its workers' trees (``become_subreaper``): their orphans are
its children, reaped as they exit. It exits once no server is connected and no worker runs.

A sandboxed worker with a restricted network has its ``connect()`` calls handed over by a seccomp
filter (network/direct.py): the spawn request carries the policy (the ports it may connect to, its log
and network record) and the socket its launcher sends the filter's listener over. The supervisor
holds that listener and answers each call itself (network/direct.py's ``answer`` and ``record``,
between requests, in this same loop), so a worker keeps its guard while no server runs and after a
restarted server adopts it; the listener is closed when the worker is reaped.

Requests come over a Unix stream socket in the workspace's supervisor folder (mode 0700: the
user's own; a sandboxed worker sees that folder empty): a 4-byte length, then JSON, the first
bytes carrying the descriptors (the log, the cgroup's join files). The server's side is
``SupervisorClient``, below. It starts in a fresh interpreter once per server, so it imports little.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import heapq
import json
import math
import os
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .. import protocol
from ..descriptors import recv_fds
from ..network import direct
from .interpreter import package_argv
from .prctl import become_subreaper, libc_prctl, set_parent_death_signal
from .procscan import process_start_id
from .shim import DEADLINE_MARK, Deadline, FoundAttempt

LOCK = "supervisor.lock"  # held to start a supervisor, connect to one, or for one to leave
HEADER = struct.Struct("!I")
MAX_REQUEST = 64 << 20  # argv and environment; far above the kernel's own ARG_MAX
MAX_FDS = 8
LIFELINE_FD = 3  # where a worker gets the lifeline a request may carry (a cluster node's attempt: process/shim.py)
IDLE_START = 10.0  # a supervisor nobody connects to within this leaves


# Signals the supervisor ignores (a terminal's); a worker gets them back at their default.
IGNORED = (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)


def socket_name(file_size: int) -> str:
    """The socket of the supervisor whose workers get RLIMIT_FSIZE ``file_size`` (0: none)."""
    return f"supervisor-{file_size}.sock"


def address(dir_fd: int, name: str) -> str:
    """A socket's address through an open descriptor of its folder: a workspace's path may be
    longer than the 107 bytes a socket address holds."""
    return f"/proc/self/fd/{dir_fd}/{name}"


# Bytes the first read of a message asks for: a whole request (argv and environment, a few KB) or
# reply in one read where it has come whole; a longer one's rest is read after (a read allocates what it asks for).
FIRST_READ = 16 << 10


def send(sock: socket.socket, message: dict[str, object], fds: list[int] | tuple[int, ...] = ()) -> None:
    """One message (its length, then its JSON) in one system call where the socket takes it whole,
    its descriptors with its first byte (where ``receive``'s first read finds them)."""
    data = json.dumps(message, separators=(",", ":")).encode()
    frame = HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [frame], list(fds)) if fds else sock.send(frame)
    if sent < len(frame):
        sock.sendall(frame[sent:])


def receive(sock: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """One message and the descriptors sent with it (close-on-exec); None at the end of the stream.
    Its first read takes up to FIRST_READ bytes: a connection carries one request, then its reply,
    so nothing follows a message until it is answered, and a first read that runs past its end is
    a peer out of step (ValueError, as for any message that cannot be read)."""
    got, fds = recv_fds(sock, FIRST_READ, MAX_FDS)
    if not got:
        return None
    try:
        if len(got) < HEADER.size:
            got += _exactly(sock, HEADER.size - len(got))
        (length,) = HEADER.unpack(got[: HEADER.size])
        if length > MAX_REQUEST:
            raise ValueError(f"a message of {length} bytes")
        body = got[HEADER.size :]
        if len(body) > length:
            raise ValueError(f"{len(body) - length} bytes after a message, before its answer")
        message = json.loads(body + _exactly(sock, length - len(body)) if len(body) < length else body)
        if not isinstance(message, dict):
            raise ValueError("a message that is not an object")
    except BaseException:
        for fd in fds:  # (the caller gets none to close)
            os.close(fd)
        raise
    return message, fds


def _exactly(sock: socket.socket, size: int) -> bytes:
    parts = []
    while size:
        part = sock.recv(min(size, 1 << 20))
        if not part:
            raise ConnectionError("the other side closed mid-message")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def status_line(code: int, status: int) -> bytes:
    """The exit file's line for a waitid result (the shim's format: process/shim.py)."""
    if code == os.CLD_EXITED:
        return f"exit {status}\n".encode()
    return f"signal {status}\n".encode()


@dataclass
class Child:
    pid: int
    tag: str
    start_id: str | None
    exit_file: str | None  # None: another process writes its status (a sandbox's shim)
    attempt: str | None
    stop_at: float | None = None  # monotonic: its deadline's next step (SIGTERM, then SIGKILL); None: none left
    grace: float = 0.0
    stopping: bool = False  # SIGTERM went out at its deadline (its exit file will say so)
    tether: Tether | None = None  # a node's attempt: the lifeline this supervisor watches for it


@dataclass
class Tether:
    """A node's attempt started without a shim: the read end of the lifeline whose write end only
    the attempt's process holds (readable with nothing written: that process is gone), and the
    worker's log, where its cut is said."""

    lifeline: int
    log: int
    cut: bool = False  # its process went: its group was killed, and no exit file says how it ended


@dataclass
class GuardedWorker:
    """A worker's connect() guard (network/direct.py): the socket its launcher sends the listener
    over, until it has, then the listener; the ports it may connect to, where its refusals go."""

    pid: int
    ports: frozenset[int]
    log_path: str
    record_path: str
    channel: socket.socket | None
    listener: int | None = None
    counts: dict[tuple[str, int], int] = field(default_factory=dict)

    def fd(self) -> int:
        return self.listener if self.listener is not None else self.channel.fileno() if self.channel else -1


class Supervisor:
    """The serving loop (``serve``) and the workers it started."""

    def __init__(self, directory: str, file_size: int) -> None:
        if file_size:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        self.home = home_fds()  # where it steps back to after starting a worker in its cgroup
        self.socket = socket_name(file_size)
        self.dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket, dir_fd=self.dir_fd)
        self.listener.bind(address(self.dir_fd, self.socket))
        os.chmod(self.socket, 0o600, dir_fd=self.dir_fd)
        self.listener.listen(64)
        self.clients: dict[int, socket.socket] = {}
        self.children: dict[int, Child] = {}
        self.guards: dict[int, GuardedWorker] = {}  # by the descriptor polled: its channel, then its listener
        self.tethers: dict[int, int] = {}  # a tethered worker's pid by its lifeline's descriptor
        self.poller = select.poll()
        self.due: list[tuple[float, int]] = []  # (stop_at, pid) of each deadline's next step, a heap: no scan of every child
        self.served = False
        self.started = time.monotonic()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for signum in IGNORED:
            signal.signal(signum, signal.SIG_IGN)

    def serve(self) -> None:
        poller = self.poller
        poller.register(self.listener, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while True:
            for fd, event in poller.poll(self._next_stop_ms()):
                if fd in self.guards:
                    guarded = self.guards[fd]
                    try:
                        self._guard(guarded, event)
                    except Exception:  # noqa: BLE001 - one worker's guard must not end the supervisor of all
                        self._unguard(guarded)  # its calls then fail (ENOSYS): none goes on unseen
                elif fd in self.tethers:
                    self._cut(self.tethers[fd])
                elif fd == self.wake_r:
                    os.read(self.wake_r, 4096)
                elif fd == self.listener.fileno():
                    conn, _ = self.listener.accept()
                    conn.settimeout(5.0)  # a request is sent whole at once: a client stuck mid-request is dropped
                    self.clients[conn.fileno()] = conn
                    poller.register(conn, select.POLLIN)
                    self.served = True
                elif fd in self.clients and not self._answer(self.clients[fd]):
                    poller.unregister(fd)
                    self.clients.pop(fd).close()
            self._reap()
            self._stop_overdue()
            if not self.clients and not self.children and (self.served or time.monotonic() - self.started > IDLE_START):
                if self._leave():
                    return

    def _guard(self, guarded: GuardedWorker, event: int) -> None:
        """A guarded worker's descriptor is ready: the listener its launcher sent (or nothing: it
        failed before starting anything), a connect() to answer, or every process of its filter ended."""
        if guarded.listener is None:
            assert guarded.channel is not None
            listener = direct.receive_listener(guarded.channel)
            self._unguard(guarded)
            if listener is not None:
                guarded.listener = listener
                self.guards[listener] = guarded
                self.poller.register(listener, select.POLLIN)
            return
        if not event & select.POLLIN:
            self._unguard(guarded)
            return
        try:
            tally = functools.partial(direct.tally, guarded.counts, guarded.log_path, guarded.record_path)
            direct.answer(guarded.listener, guarded.ports, tally)
        except OSError:  # its calls then fail (ENOSYS): none goes on unseen
            self._unguard(guarded)

    def _cut(self, pid: int) -> None:
        """A tethered worker's process is gone (its lifeline reads as closed): the worker's process
        group is killed, said in its log, and no exit file will say how it ended (the perl shim's way)."""
        child = self.children.get(pid)
        if child is None or child.tether is None:
            return
        with contextlib.suppress(OSError):
            os.write(
                child.tether.log, b"orchestrator-supervisor: the node process that started it is gone: the worker is killed\n"
            )
        child.tether.cut = True
        _killpg(pid, signal.SIGKILL)
        self._untether(child.tether)

    def _untether(self, tether: Tether) -> None:
        if self.tethers.pop(tether.lifeline, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(tether.lifeline)
        for fd in (tether.lifeline, tether.log):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _unguard(self, guarded: GuardedWorker) -> None:
        """Its descriptor no longer polled and closed (the channel once the listener came, or both)."""
        fd = guarded.fd()
        if self.guards.get(fd) is guarded:
            del self.guards[fd]
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(fd)
        if guarded.channel is not None:
            guarded.channel.close()
            guarded.channel = None
        elif guarded.listener is not None:
            with contextlib.suppress(OSError):
                os.close(guarded.listener)
            guarded.listener = None

    def _answer(self, conn: socket.socket) -> bool:
        """Serve one request; False when the client is gone (or sent what cannot be read)."""
        try:
            got = receive(conn)
        except (OSError, ValueError):
            return False
        if got is None:
            return False
        message, fds = got
        out: list[int] = []  # descriptors sent with the reply (a spawned worker's pidfd), closed once sent
        try:
            op = message.get("op")
            if op == "spawn":
                reply: dict[str, object] = self._spawn(message, fds, out)
            elif op == "list":
                reply = {"children": [vars(c) for c in self.children.values() if c.exit_file is not None]}
            else:
                reply = {"error": f"unknown request {op!r}"}
        except OSError as exc:  # the client raises it again, as the same kind of OSError
            reply = {"error": exc.strerror or str(exc), "errno": exc.errno, "filename": optional_text(exc.filename)}
        except Exception as exc:  # noqa: BLE001 - said to the client, which raises it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        try:
            send(conn, reply, out)
        except OSError:
            return False
        finally:
            for fd in out:
                os.close(fd)
        return True

    def _spawn(self, spec: dict[str, object], fds: list[int], out: list[int]) -> dict[str, object]:
        argv = [str(a) for a in spec["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in spec["env"].items()}  # type: ignore[attr-defined]
        exit_file = spec.get("exit_file")
        # The descriptors: the log, then the lifeline if the request says it carries one (the
        # worker gets it as LIFELINE_FD), then each cgroup's join file (cgroups.join_file), then the
        # channel its connect() guard's listener comes by, if it has one (last: one this supervisor
        # did not know would be taken for a join file, and the server then guards it itself).
        lifeline = fds[1] if spec.get("lifeline") else None
        policy = spec.get("guard")
        guard_fd = fds[-1] if isinstance(policy, dict) and len(fds) > 1 + (lifeline is not None) else None
        joins = fds[2 if lifeline is not None else 1 : -1 if guard_fd is not None else None]
        tether = None
        if spec.get("tether") and lifeline is not None:  # a node's attempt: the lifeline is held here, not passed on
            if _closed(lifeline):
                raise ProcessLookupError(errno.ESRCH, "the node process that asked for it is gone: the worker is not started")
            tether = Tether(os.dup(lifeline), os.dup(fds[0]))
            lifeline = None
        dies_with = tether is not None and not pdeathsig_exec()  # the fork's child sets its parent-death signal itself
        if tether is not None and not dies_with:
            argv = [*pdeathsig_exec(), *argv]
        if dies_with or (joins and not self.home):  # the child sets its tie, or joins its cgroup, itself
            if dies_with:
                libc_prctl()  # loaded before the fork: the child only calls it
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:
                _exec_child(argv, env, str(spec["cwd"]), fds[0], lifeline, joins, spec, parent if dies_with else None)
        else:
            ignore = [int(s) for s in spec.get("ignore") or ()]  # type: ignore[attr-defined]
            pid = self._posix_spawn(argv, env, str(spec["cwd"]), fds[0], lifeline, joins, ignore)
        self.children[pid] = Child(
            pid,
            str(spec.get("tag", "")),
            process_start_id(pid),
            str(exit_file) if exit_file else None,
            optional_text(spec.get("attempt")),
            tether=tether,
        )
        reply: dict[str, object] = {"pid": pid, "start_id": self.children[pid].start_id}
        if tether is not None:
            self.tethers[tether.lifeline] = pid
            self.poller.register(tether.lifeline, select.POLLIN)
            reply["tethered"] = True
        # Its pidfd, opened before this loop can reap it (so it names this very process), goes with the
        # reply: the server then neither opens one nor looks at its /proc stat to rule out a reused pid.
        with contextlib.suppress(OSError):
            out.append(os.pidfd_open(pid))
            reply["pidfd"] = True
        if guard_fd is not None and isinstance(policy, dict):
            ports = frozenset(int(p) for p in policy.get("ports") or ())
            channel = socket.socket(fileno=os.dup(guard_fd))
            guarded = GuardedWorker(pid, ports, str(policy.get("log") or ""), str(policy.get("record") or ""), channel)
            self.guards[channel.fileno()] = guarded
            self.poller.register(channel.fileno(), select.POLLIN)
            reply["guarded"] = True
        deadline = spec.get("deadline")
        if isinstance(deadline, list) and len(deadline) == 2 and exit_file:  # [at (epoch), grace]
            child = self.children[pid]
            child.stop_at = time.monotonic() + float(deadline[0]) - time.time()  # (a clock step later moves it not)
            heapq.heappush(self.due, (child.stop_at, pid))
            child.grace = float(deadline[1])
        return reply

    def _posix_spawn(
        self, argv: list[str], env: dict[str, str], cwd: str, log: int, lifeline: int | None, joins: list[int], ignore: list[int]
    ) -> int:
        """Start a worker by vfork and exec, born in its cgroup and folder, ignoring ``ignore``;
        whatever fails, the supervisor ends back in its own cgroup, folder and signal handling."""
        previous: dict[int, object] = {}
        actions: list[tuple[object, ...]] = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log, 1),
            (os.POSIX_SPAWN_DUP2, log, 2),
        ]
        moved = None
        if lifeline is not None:
            if lifeline == LIFELINE_FD:  # dup2 onto itself would leave it close-on-exec
                lifeline = moved = os.dup(lifeline)
            actions.append((os.POSIX_SPAWN_DUP2, lifeline, LIFELINE_FD))
        try:
            for signum in ignore:
                previous[signum] = signal.signal(signum, signal.SIG_IGN)
            os.chdir(cwd)
            for fd in joins:
                os.write(fd, b"0")
            return os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=actions,
                setsid=True,
                setsigdef=[s for s in IGNORED if s not in ignore],
            )
        finally:
            if moved is not None:
                os.close(moved)
            if joins:
                for fd in self.home:
                    os.write(fd, b"0")
            os.chdir("/")
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]

    def _reap(self) -> None:
        """Each ended child: its status into its exit file, then reaped (a process gone has its status on disk)."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            child = self.children.pop(info.si_pid, None)
            for guarded in [g for g in self.guards.values() if g.pid == info.si_pid]:
                self._unguard(guarded)  # the worker's launcher ended: its guard with it
            cut = child is not None and child.tether is not None and child.tether.cut
            if child is not None and child.exit_file is not None and not cut:
                mark = f"{DEADLINE_MARK} supervisor\n".encode() if child.stopping else b""
                _write_status(child.exit_file, status_line(info.si_code, info.si_status) + mark)
            if child is not None and (child.stopping or cut):  # the rest of its group, while its pid (a zombie) holds the id
                _killpg(child.pid, signal.SIGKILL)
            if child is not None and child.tether is not None:
                self._untether(child.tether)
            os.waitpid(info.si_pid, 0)

    def _next_stop_ms(self) -> int:
        """How long the next poll may block: a second at most, less when a deadline's step is due sooner."""
        while self.due and self._stale(*self.due[0]):
            heapq.heappop(self.due)
        if not self.due:
            return 1000
        return max(0, min(1000, math.ceil((self.due[0][0] - time.monotonic()) * 1000)))

    def _stale(self, at: float, pid: int) -> bool:
        """Whether a heap entry is no step still to take (its worker was reaped, or the step was taken)."""
        child = self.children.get(pid)
        return child is None or child.stop_at != at

    def _stop_overdue(self) -> None:
        """Each worker past its deadline: SIGTERM to its process group (its own: it leads a session),
        then SIGKILL once the grace has passed (the kill ladder of process/runner.py, with no server)."""
        now = time.monotonic()
        while self.due and self.due[0][0] <= now:
            at, pid = heapq.heappop(self.due)
            if self._stale(at, pid):
                continue
            child = self.children[pid]
            if not child.stopping:
                child.stopping, child.stop_at = True, now + child.grace
                heapq.heappush(self.due, (child.stop_at, pid))
                _killpg(pid, signal.SIGTERM)
            else:
                child.stop_at = None
                _killpg(pid, signal.SIGKILL)

    def _leave(self) -> bool:
        """Leave unless a server is connecting: under the lock a server connects with, and only
        with no connection waiting (one that came in between is served instead)."""
        lock = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=self.dir_fd)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            return False
        ready, _, _ = select.select([self.listener], [], [], 0)
        if ready:
            os.close(lock)
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket, dir_fd=self.dir_fd)
        self.listener.close()
        return True  # the lock goes with the process


def _closed(lifeline: int) -> bool:
    """Whether a lifeline reads as closed now (poll, not select: a busy supervisor's descriptors
    may be numbered past select's 1024)."""
    probe = select.poll()
    probe.register(lifeline, select.POLLIN)
    return bool(probe.poll(0))


@functools.cache
def pdeathsig_exec() -> tuple[str, ...]:
    """The argv prefix that gives a worker SIGKILL when the supervisor ends and then execs it:
    util-linux's ``setpriv --pdeathsig`` (2.33 on), about half a millisecond of CPU where a fork of
    this Python process and its child's steps to the exec cost some 3.5 ms; () where there is none
    (the worker is then started by a fork that sets it). The kernel keeps the signal across the exec."""
    found = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if found is None:
        return ()
    try:
        usage = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (found, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else ()


def home_fds() -> list[int]:
    """Descriptors on the join files (cgroups.join_file) of this process's own cgroups, where
    attempts' cgroups are made (process/cgroups.py): writing "0" there brings it back. Empty
    where none is writable."""
    from .cgroups import hierarchies, join_file

    fds = []
    for directory in sorted({str(base) for _, base in hierarchies().bases.values()}):
        with contextlib.suppress(OSError):
            fds.append(os.open(join_file(directory), os.O_WRONLY | os.O_CLOEXEC))
    return fds


def optional_text(value: object) -> str | None:
    """``value`` as text, None staying None (a JSON field that may be null)."""
    return None if value is None else str(value)


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _write_status(path: str, line: bytes) -> None:
    """Over the room its spawn reserved (shim.reserve_exit_file), then cut to the line: no block to
    allocate, so the status is written on a full disk too."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
            os.ftruncate(fd, len(line))
        finally:
            os.close(fd)


def _exec_child(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    log: int,
    lifeline: int | None,
    joins: list[int],
    spec: dict[str, object],
    parent: int | None = None,
) -> None:
    """In the forked child (where the supervisor has no way back from a cgroup, or a tethered worker):
    its own session, the log as stdout and stderr, the lifeline if any, its cgroup joined (each join
    file), the signals a sandbox's launcher ignores; with ``parent`` (the supervisor), SIGKILL when
    the supervisor ends (its tether is watched nowhere else); then the exec. Never returns."""
    try:
        if parent is not None:
            set_parent_death_signal(signal.SIGKILL)  # (kept across the exec)
            if os.getppid() != parent:  # the supervisor ended before the line above
                os._exit(127)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, *IGNORED):
            signal.signal(signum, signal.SIG_DFL)
        for signum in spec.get("ignore") or ():  # type: ignore[attr-defined]
            signal.signal(int(signum), signal.SIG_IGN)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        for fd in joins:
            os.write(fd, b"0")
        if lifeline is not None:  # after the joins: one of them may be LIFELINE_FD
            os.dup2(lifeline, LIFELINE_FD)  # inheritable (dup2 onto itself: set so by hand)
            os.set_inheritable(LIFELINE_FD, True)
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - said in the worker's log; 127 as a shell would
        with contextlib.suppress(OSError):
            os.write(2, f"orchestrator-supervisor: cannot run {argv[0]}: {exc}\n".encode())
    os._exit(127)


def main() -> int:
    """argv: the supervisor's folder and its workers' file-size limit. Forks once (the server's child returns at once, so the
    supervisor is nobody's child to reap), prints ``ready PID`` when it listens, then serves."""
    directory, file_size = sys.argv[1], int(sys.argv[2])
    os.chdir("/")  # its umask stays the server's: its workers inherit it (its own folder is 0700)
    ready_r, ready_w = os.pipe()
    if os.fork():
        os.close(ready_w)
        line = os.read(ready_r, 64)
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        return 0 if line.startswith(b"ready ") else 1
    os.close(ready_r)
    os.setsid()
    # A sandbox's launcher exits once its init inside has told it the worker's status; whoever inherits
    # that init reaps it. An init that reaps late (a container's, a microVM's: up to 2 s) kept the attempt's
    # cgroup counting a task that long, so it was never kept as a spare, and one that never reaps would
    # gather zombies: the supervisor reaps them (``_reap`` reaps any child).
    become_subreaper()
    try:
        supervisor = Supervisor(directory, file_size)
    except OSError as exc:
        os.write(ready_w, f"failed: {exc}\n".encode()[:63])
        return 1
    null = os.open(os.devnull, os.O_RDWR)
    os.write(ready_w, f"ready {os.getpid()}\n".encode())
    os.close(ready_w)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    supervisor.serve()
    return 0


# -- the server's side: started on first use, found again by a restarted server, asked to start
# workers and to list the ones it runs.
START_TIMEOUT = 30.0
ANSWER_TIMEOUT = 30.0  # a supervisor that does not answer a request in this long is stuck (stopped, swapped out)


class Spawned(NamedTuple):
    """A worker the supervisor started: its pid, its kernel start time, the supervisor's pid, and
    whether the supervisor holds its connect() guard (False: none was asked for, or this supervisor
    predates them, and the caller guards it itself)."""

    pid: int
    start_id: str | None
    supervisor: int
    guarded: bool = False
    pidfd: int | None = None  # the worker's pidfd, from its supervisor (None: an older supervisor sent none)
    tethered: bool = False  # the supervisor holds its lifeline (asked with ``tether``; False: an older one does not)


class SupervisorError(OSError):
    """The supervisor could not be started or reached, or refused a request (the message says which)."""


def supported() -> bool:
    """Linux with pidfds and descriptor passing: a server waits on a worker it did not fork by its pidfd."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


class SupervisorClient:
    """A server's connections to the supervisors of one folder (one per file-size limit, in practice
    one), shared by its worker threads: a connection carries one request at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Made now, so a sandbox built before the first spawn already hides it (workers/confinement.py);
        # where it cannot be (an unwritable workspace), the first spawn says why.
        with contextlib.suppress(OSError):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # file-size limit -> idle connections, each with its supervisor's pid
        self._idle: dict[int, list[tuple[socket.socket, int]]] = {}

    def spawn(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log_fd: int,
        tag: str,
        exit_file: Path | None,
        cgroup_fds: list[int],
        file_size: int,
        ignore: tuple[int, ...] = (),
        lifeline: int | None = None,
        tether: bool = False,
        deadline: Deadline | None = None,
        guard: tuple[int, dict[str, object]] | None = None,
    ) -> Spawned:
        """Start ``argv`` (an absolute path first) with RLIMIT_FSIZE ``file_size`` (0: none): its pid,
        its kernel start time and the supervisor's pid. With ``exit_file``, the supervisor writes the
        worker's status there before reaping it. With ``lifeline`` (a descriptor), the worker gets
        it as descriptor supervisor.LIFELINE_FD; with ``tether`` too, the supervisor keeps it instead (a
        node's attempt without a shim): it refuses the start if the lifeline has closed, kills the worker's
        process group once it closes (no exit file then), and the worker dies with the supervisor
        (``Spawned.tethered``: False from a supervisor that predates this). With ``deadline`` (and ``exit_file``), the supervisor
        stops the worker at it if it still runs (the module's docstring). With ``guard`` (the socket its
        launcher sends its connect() filter's listener over, and the policy: ``ports``, ``log``,
        ``record``), the supervisor holds that listener and answers the worker's calls (network/direct.py)."""
        message: dict[str, object] = {
            "op": "spawn",
            "argv": argv,
            "cwd": str(cwd),
            "env": env,
            "tag": tag,
            "attempt": env.get(protocol.ATTEMPT),
            "exit_file": str(exit_file) if exit_file is not None else None,
            "ignore": list(ignore),
            "lifeline": lifeline is not None,
            "tether": tether,
            "deadline": [deadline.at, deadline.grace] if deadline is not None else None,
            "guard": guard[1] if guard is not None else None,
        }
        fds = [log_fd, *([lifeline] if lifeline is not None else []), *cgroup_fds, *([guard[0]] if guard is not None else [])]
        got = self._call(file_size, message, fds, keep=1)
        assert got is not None
        reply, supervisor, kept = got
        pidfd = kept[0] if kept and reply.get("pidfd") is True else None
        for fd in kept:
            if fd != pidfd:
                os.close(fd)
        return Spawned(
            int(str(reply["pid"])),
            optional_text(reply.get("start_id")),
            supervisor,
            reply.get("guarded") is True,
            pidfd,
            reply.get("tethered") is True,
        )

    def found(self, tag_prefix: str) -> list[FoundAttempt]:
        """The workers a running supervisor started whose tag starts with ``tag_prefix`` (none when
        no supervisor runs: one is not started to be asked)."""
        children: list[dict[str, object]] = []
        for size in self._sizes():
            got = self._call(size, {"op": "list"}, [], start=False)
            listed = got[0].get("children", []) if got is not None else []
            children += listed if isinstance(listed, list) else []
        out = []
        for child in children:
            tag = str(child.get("tag", ""))
            if not tag.startswith(tag_prefix) or not child.get("exit_file"):
                continue
            attempt = str(child.get("attempt") or "")
            out.append(
                FoundAttempt(
                    pid=int(str(child["pid"])),
                    tag=tag,
                    start_id=optional_text(child.get("start_id")),
                    exit_file=Path(str(child["exit_file"])),
                    attempt=int(attempt) if attempt.isdigit() else None,
                )
            )
        return out

    def running(self) -> set[int]:
        """The pids of the supervisors running for this folder (connecting to each)."""
        found = set()
        for size in self._sizes():
            connected = self._take(size, start=False)
            if connected is not None:
                found.add(connected[1])
                self._give(size, connected)
        return found

    def close(self) -> None:
        """Let go of the supervisors: each leaves once its last worker has ended."""
        with self._lock:
            idle = [sock for pool in self._idle.values() for sock, _ in pool]
            self._idle.clear()
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()

    def _sizes(self) -> list[int]:
        """The file-size limits of the supervisors whose sockets are in the folder."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        sizes = [
            name[len("supervisor-") : -len(".sock")]
            for name in names
            if name.startswith("supervisor-") and name.endswith(".sock")
        ]
        return sorted(int(size) for size in sizes if size.isdigit())

    def _call(
        self, file_size: int, message: dict[str, object], fds: list[int], *, start: bool = True, keep: int = 0
    ) -> tuple[dict[str, object], int, list[int]] | None:
        """The supervisor's reply, its pid and the first ``keep`` descriptors sent with the reply (the
        caller's to close; any others are closed here) (None: none runs, and ``start`` is false). Each
        request has a connection to itself: the supervisor answers them one after another, while
        the threads that asked wait for their answers in parallel."""
        for _ in range(2):
            connected = self._take(file_size, start=start)
            if connected is None:
                return None
            sock, pid = connected
            try:
                send(sock, message, fds)
            except (BrokenPipeError, ConnectionResetError):
                sock.close()  # it went away before reading the request: nothing started; once more,
                self._forget(file_size)  # with none of its other connections either
                continue
            try:
                got = receive(sock)
            except (OSError, ValueError) as exc:
                sock.close()
                raise SupervisorError(f"the worker supervisor did not answer ({exc})") from exc
            if got is None:
                sock.close()
                raise SupervisorError("the worker supervisor closed the connection without answering")
            self._give(file_size, connected)
            reply, extra = got
            failed = isinstance(reply.get("errno"), int) or "error" in reply
            kept = [] if failed else extra[:keep]
            for fd in extra[len(kept) :]:
                os.close(fd)
            if isinstance(reply.get("errno"), int):  # as Popen would have raised it (FileNotFoundError, ...)
                raise OSError(reply["errno"], str(reply["error"]), optional_text(reply.get("filename")))
            if "error" in reply:
                raise SupervisorError(f"the worker supervisor refused: {reply['error']}")
            return reply, pid, kept
        raise SupervisorError(f"the worker supervisor in {self.directory} went away twice")

    def _take(self, file_size: int, *, start: bool) -> tuple[socket.socket, int] | None:
        """An idle connection to the supervisor for ``file_size``, or a new one (the supervisor
        started first, with ``start``, if none runs); None when none runs and ``start`` is false."""
        with self._lock:
            pool = self._idle.get(file_size)
            if pool:
                return pool.pop()
            return self._connect(file_size, start=start)

    def _give(self, file_size: int, connected: tuple[socket.socket, int]) -> None:
        with self._lock:
            self._idle.setdefault(file_size, []).append(connected)

    def _forget(self, file_size: int) -> None:
        with self._lock:
            stale = self._idle.pop(file_size, [])
        for sock, _ in stale:
            sock.close()

    def _connect(self, file_size: int, *, start: bool) -> tuple[socket.socket, int] | None:
        """Inside ``_lock``: a new connection and the supervisor's pid (the supervisor started first,
        with ``start``, if none runs)."""
        name = socket_name(file_size)
        if start:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _check_private(dir_fd, self.directory)
            lock = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)  # no supervisor leaves, and no other server starts one, meanwhile
                sock = _try_connect(dir_fd, name)
                if sock is None and start:
                    _launch(self.directory, file_size)
                    sock = _try_connect(dir_fd, name)
                    if sock is None:
                        raise SupervisorError(f"the worker supervisor started in {self.directory} does not listen")
            finally:
                os.close(lock)
        finally:
            os.close(dir_fd)
        if sock is None:
            return None
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.geteuid():
            sock.close()
            raise SupervisorError(f"the socket in {self.directory} is served by user {uid}, not this server's")
        return sock, pid


def _check_private(dir_fd: int, directory: Path) -> None:
    """The folder must be this user's alone: whoever can reach the socket can start processes as them."""
    info = os.fstat(dir_fd)
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise SupervisorError(
            f"{directory} must belong to this user with mode 0700 (it is {oct(stat.S_IMODE(info.st_mode))}, "
            f"owner {info.st_uid}); fix it with: chmod 700 {directory}"
        )


def _try_connect(dir_fd: int, name: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ANSWER_TIMEOUT)
    try:
        sock.connect(address(dir_fd, name))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def _launch(directory: Path, file_size: int) -> None:
    """Start a supervisor for ``directory`` and wait until it listens (its first process says so and exits)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        done = subprocess.run(
            package_argv("orchestrator.process.supervisor", "main", [str(directory), str(file_size)]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=START_TIMEOUT,
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SupervisorError(f"the worker supervisor could not be started: {exc}") from exc
    if done.returncode != 0 or not done.stdout.startswith(b"ready "):
        said = (done.stdout + done.stderr).decode(errors="replace").strip()[-500:]
        raise SupervisorError(f"the worker supervisor could not be started in {directory}: {said or done.returncode}")
