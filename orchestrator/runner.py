"""Process control: spawn, wait, the kill ladder and the tag sweep.

The only module that imports subprocess, signal or psutil. Every worker runs
in its own session (so its process group is its own), with stdin closed and
stdout+stderr written straight to its log file by the kernel: the engine
never drains a pipe, and ``tail -f`` sees output as it is produced.

Every worker also carries a unique ``ORCHESTRATOR_TAG`` in its environment.
Descendants inherit it, so a grandchild that ``setsid``s and double-forks out
of the process group is still found by the sweep and killed.
"""
from __future__ import annotations

import errno
import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from .groupsync import GroupCommit

TAG_VAR = "ORCHESTRATOR_TAG"
_PROC = Path("/proc")


class Wakeup:
    """A flag like threading.Event that a worker thread can also select() on, so one blocking
    wait ends on whichever comes first: the process exiting, a timeout, or this being set.
    Its pipe is made on first use and closed by ``close``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            if self._pipe is not None:
                os.write(self._pipe[1], b"x")

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def fileno(self) -> int:
        with self._lock:
            if self._pipe is None:
                self._pipe = os.pipe()
                if self._event.is_set():
                    os.write(self._pipe[1], b"x")
            return self._pipe[0]

    def close(self) -> None:
        with self._lock:
            if self._pipe is not None:
                for fd in self._pipe:
                    os.close(fd)
                self._pipe = None


class CommandNotFound(FileNotFoundError):
    """The worker's command is not on PATH (or not executable)."""


@dataclass
class ProcessHandle:
    """A started worker process."""

    pid: int
    tag: str
    popen: subprocess.Popen[bytes]
    started_at: float
    kill_rung: str | None = None  # set by terminate(): which signal ended it
    pidfd: int | None = None  # Linux: a descriptor that becomes readable when the process exits
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()


@functools.lru_cache(maxsize=256)
def _which(argv0: str, path_env: str | None) -> str | None:
    return shutil.which(argv0, path=path_env)


def resolve_command(argv0: str, path_env: str | None) -> str:
    """The absolute path of a command, or CommandNotFound with the shell's wording.
    Found paths are cached; a miss is looked up again next time (it may be installed since)."""
    if os.sep in argv0:
        if os.path.isfile(argv0) and os.access(argv0, os.X_OK):
            return argv0
    else:
        found = _which(argv0, path_env)
        if found is None or not os.access(found, os.X_OK):
            _which.cache_clear()  # missing or gone: look again, it may have been installed since
            found = shutil.which(argv0, path=path_env)
        if found:
            return found
    raise CommandNotFound(errno.ENOENT, f"No such file or directory: {argv0}", argv0)


def signal_name(signum: int | None) -> str:
    if signum is None:
        return ""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class ProcessRunner:
    """Starts, watches and signals worker processes."""

    def spawn(self, argv: list[str], *, cwd: Path, env: Mapping[str, str], log_path: Path, tag: str) -> ProcessHandle:
        """Start ``argv`` (a list, never a shell string) with its output appended to ``log_path``."""
        if not argv:
            raise ValueError("empty command")
        full_env = dict(env)
        full_env[TAG_VAR] = tag
        program = resolve_command(argv[0], full_env.get("PATH"))
        started_at = time.time()  # before the fork: every descendant is younger than this
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            popen = subprocess.Popen(
                [program, *argv[1:]],
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(log_fd)
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(popen.pid)
            except OSError:  # old kernel: fall back to polling
                pidfd = None
        return ProcessHandle(pid=popen.pid, tag=tag, popen=popen, started_at=started_at, pidfd=pidfd)

    def wait(self, handle: ProcessHandle, timeout: float | None, wake: Wakeup | None = None) -> int | None:
        """The return code, or None if still running after ``timeout`` seconds (or once ``wake``
        is set). With a pidfd this blocks without polling, so idle worker threads cost nothing."""
        if handle.pidfd is not None and handle.popen.returncode is None:
            fds = [handle.pidfd] + ([wake.fileno()] if wake is not None else [])
            ready, _, _ = select.select(fds, [], [], timeout)
            if handle.pidfd not in ready:
                return handle.popen.poll()
            return handle.popen.wait()
        if wake is not None and timeout is not None:
            timeout = min(timeout, 0.25)  # no pidfd: poll so a set wake is seen soon
        try:
            return handle.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def release(self, handle: ProcessHandle) -> None:
        """Close the handle's descriptors once its process is gone."""
        if handle.pidfd is not None:
            os.close(handle.pidfd)
            handle.pidfd = None

    def terminate(self, handle: ProcessHandle, *, grace: float, first_signal: int = signal.SIGTERM) -> str:
        """The kill ladder: ``first_signal`` to the group, ``grace`` seconds, SIGKILL to the
        group, then SIGKILL to every process still carrying the tag. Returns the rung that
        ended the leader. Safe to call from several threads; "already gone" is success."""
        with handle._lock:
            if handle.kill_rung is not None:
                return handle.kill_rung
            if handle.popen.poll() is not None:
                self.sweep(handle.tag, handle.started_at)
                handle.kill_rung = "none"
                return handle.kill_rung
            rung = signal_name(first_signal)
            _killpg(handle.pid, first_signal)
            deadline = time.monotonic() + grace
            if self.wait(handle, grace) is None:
                rung = "SIGKILL"
            # The leader is gone (or about to be); give the rest of its group what is left of the grace.
            while time.monotonic() < deadline and _group_alive(handle.pid):
                time.sleep(0.02)
            _killpg(handle.pid, signal.SIGKILL)
            self.wait(handle, 5.0)
            self.sweep(handle.tag, handle.started_at)
            handle.kill_rung = rung
            return rung

    def __init__(self) -> None:
        # Workers finishing together share one scan of the process table (group commit).
        self._sweeper: GroupCommit[tuple[str, float]] = GroupCommit(self._sweep_batch)

    def sweep(self, tag: str, since: float = 0.0) -> None:
        """SIGKILL every process carrying ``tag``, by a scan that started after this call;
        repeated until none is left (they may be forking). ``since``: when the tagged
        process was started; older processes cannot carry the tag and are skipped cheaply."""
        self._sweeper((tag, since))

    def _sweep_batch(self, batch: list[tuple[str, float]], rounds: int = 20) -> None:
        tags = [tag for tag, _ in batch]
        since = min(when for _, when in batch)
        for _ in range(rounds):
            pids = [pid for found in self.tagged_many(tags, since).values() for pid in found]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def sweep_prefix(self, prefix: str, rounds: int = 20) -> int:
        """SIGKILL every process whose tag starts with ``prefix`` (a whole job tree's, after a
        server crash); returns how many were found."""
        needle = f"{TAG_VAR}={prefix}".encode()
        killed = 0
        for _ in range(rounds):
            pids = _scan_proc_prefix(needle) if _PROC.is_dir() else [
                pid for tag, found in _scan_psutil_all().items() if tag.startswith(prefix) for pid in found]
            if not pids:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        return killed

    def tagged(self, tag: str) -> list[int]:
        """Live (non-zombie) processes whose environment carries ``tag``."""
        return self.tagged_many([tag]).get(tag, [])

    def tagged_many(self, tags: list[str], since: float = 0.0) -> dict[str, list[int]]:
        """For each tag, the live processes carrying it, from one pass over the process table."""
        if _PROC.is_dir():
            return _scan_proc({f"{TAG_VAR}={tag}".encode(): tag for tag in tags}, since)
        return _scan_psutil(set(tags))  # macOS: no /proc


# /proc/<pid> inodes are stamped with a coarse clock (a few ms); allow for it.
INODE_CLOCK_SLACK = 0.1


def _tagged_environs(since: float = 0.0) -> Iterator[tuple[str, bytes]]:
    """(pid, environment) of every other process that carries some orchestrator tag. A
    /proc/<pid> inode is made when the pid is first looked up, so one made before ``since``
    belongs to a process that existed before the tagged worker started and cannot be its
    descendant: one stat() instead of reading its environment."""
    me = os.getpid()
    cutoff = since - INODE_CLOCK_SLACK if since else 0.0
    for name in os.listdir(_PROC):
        if not name.isdigit() or int(name) == me:
            continue
        if cutoff:
            try:
                if os.stat(f"/proc/{name}").st_ctime < cutoff:
                    continue
            except OSError:
                continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        if b"ORCHESTRATOR_TAG=" in data:
            yield name, data


def _scan_proc(needles: dict[bytes, str], since: float = 0.0) -> dict[str, list[int]]:
    """One pass over /proc: for each needle (``ORCHESTRATOR_TAG=<tag>``), the live processes carrying it."""
    found: dict[str, list[int]] = {}
    for pid, data in _tagged_environs(since):
        for needle, tag in needles.items():
            if (needle + b"\0" in data or data.endswith(needle)) and not _is_zombie(pid):
                found.setdefault(tag, []).append(int(pid))
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _is_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X")


def _scan_proc_prefix(needle: bytes) -> list[int]:
    return [int(pid) for pid, data in _tagged_environs()
            if (b"\0" + needle in data or data.startswith(needle)) and not _is_zombie(pid)]


def _scan_psutil_all() -> dict[str, list[int]]:
    import psutil

    found: dict[str, list[int]] = {}
    for proc in psutil.process_iter():
        try:
            tag = proc.environ().get(TAG_VAR) if proc.pid != os.getpid() else None
            if tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.setdefault(tag, []).append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _scan_psutil(tags: set[str]) -> dict[str, list[int]]:
    import psutil

    found: dict[str, list[int]] = {}
    for proc in psutil.process_iter():
        try:
            tag = proc.environ().get(TAG_VAR) if proc.pid != os.getpid() else None
            if tag in tags and proc.status() != psutil.STATUS_ZOMBIE:
                found.setdefault(tag, []).append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def python_executable() -> str:
    """The interpreter running us: children start with it, not a PATH shim."""
    return sys.executable
