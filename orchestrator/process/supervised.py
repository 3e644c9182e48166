"""A server's side of its workspace's supervisor (process/supervisor.py): started on first use,
found again by a restarted server, asked to start workers and to list the ones it runs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

from .. import protocol
from .interpreter import package_argv
from .shim import FoundAttempt
from .supervisor import LOCK, address, optional_text, receive, send, socket_name

START_TIMEOUT = 30.0
ANSWER_TIMEOUT = 30.0  # a supervisor that does not answer a request in this long is stuck (stopped, swapped out)


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
    ) -> tuple[int, str | None, int]:
        """Start ``argv`` (an absolute path first) with RLIMIT_FSIZE ``file_size`` (0: none): its pid,
        its kernel start time and the supervisor's pid. With ``exit_file``, the supervisor writes the
        worker's status there before reaping it. With ``lifeline`` (a descriptor), the worker gets
        it as descriptor supervisor.LIFELINE_FD."""
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
        }
        fds = [log_fd, *([lifeline] if lifeline is not None else []), *cgroup_fds]
        got = self._call(file_size, message, fds)
        assert got is not None
        reply, supervisor = got
        return int(str(reply["pid"])), optional_text(reply.get("start_id")), supervisor

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
        self, file_size: int, message: dict[str, object], fds: list[int], *, start: bool = True
    ) -> tuple[dict[str, object], int] | None:
        """The supervisor's reply and its pid (None: none runs, and ``start`` is false). Each
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
            for fd in extra:
                os.close(fd)
            if isinstance(reply.get("errno"), int):  # as Popen would have raised it (FileNotFoundError, ...)
                raise OSError(reply["errno"], str(reply["error"]), optional_text(reply.get("filename")))
            if "error" in reply:
                raise SupervisorError(f"the worker supervisor refused: {reply['error']}")
            return reply, pid
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
