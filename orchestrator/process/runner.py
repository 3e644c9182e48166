"""Process control: spawn, wait, the kill ladder and the tag sweep.

The only module that starts (itself, or through the supervisor) or signals a process (reading the process table is
process/procscan.py's). Every worker runs
in its own session (so its process group is its own), with stdin closed and
stdout+stderr written straight to its log file by the kernel: the engine
never drains a pipe, and ``tail -f`` sees output as it is produced.

Every worker also carries a unique ``ORCHESTRATOR_TAG`` in its environment.
Descendants inherit it, so a grandchild that ``setsid``s and double-forks out
of the process group is still found by the sweep (a procscan pass) and killed.

A worker spawned with ``limits`` joins a cgroup of its own before it execs where the machine allows
(process/cgroups.py): the kernel holds its caps, and stopping it ends every process in it, tagless ones too.

A server's worker is started by its workspace's supervisor (process/supervisor.py), which writes the
worker's true wait status to its exit file before it reaps it; elsewhere (a runner without one: a
cluster node's, a test's) the worker runs under a shim (process/shim.py), a few lines of Perl that
run it as their child and write the same file. The runner reads it once the process has ended; a
restarted server re-adopts a running worker (or shim) by pid and start time. A sandboxed worker
(process/sandbox.py) runs with the shim inside bubblewrap, whose launcher is the process started here, or
under Landlock's launcher, which restricts itself and execs the shim (no process of its own, no PID namespace:
the tag sweep and the cgroup find its tree, as an unconfined worker's).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import protocol
from ..config.schema import SandboxNetwork
from ..network import direct
from ..network.egress import Egress, EgressPlan, forget_egress, judge_attempts, open_egress, reopen_egress, sweep_dead
from ..workspace.groupsync import GroupCommit
from . import backends, procscan
from .cgroups import (
    Cgroup,
    ChildSetup,
    Confined,
    Enforced,
    Limits,
    cap_hit,
    hierarchies,
    holds_processes,
    kill_all,
    remove_dead_spares,
)
from .prctl import libc_prctl, set_parent_death_signal
from .procscan import TAG_VAR, process_alive, process_start_id
from .sandbox import Backend, ProjectView, SandboxSpec, connect_filter, connect_guard_words, worker_filter
from .shim import (
    PERL,
    SHELL,
    SHIM_NAME,
    SHIM_SCRIPT,
    SHIM_SIGNALS,
    SHIM_START_ENV,
    Deadline,
    ExitStatus,
    FoundAttempt,
    find_shims,
    perl_shim,
    read_exit,
    reserve_exit_file,
    shim_parts,
)
from .supervisor import LIFELINE_FD, Spawned, SupervisorClient, SupervisorError


class Wakeup:
    """A flag like threading.Event that a worker thread can also select() on, so one blocking
    wait ends on whichever comes first: the process exiting, a timeout, or this being set.
    Its descriptor (an eventfd, else a pipe) is made on first use and closed by ``close``; its
    ``threading.Event`` is made on first use too (the
    engine holds one per worker, 10,000 in a large job, and most are never waited on: an
    Event with its Condition is ~1.3 KB, this flag without one ~0.2 KB)."""

    __slots__ = ("_event", "_flag", "_lock", "_pipe")

    def __init__(self) -> None:
        self._flag = False
        self._event: threading.Event | None = None
        self._pipe: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def set(self) -> None:
        with self._lock:
            self._flag = True
            if self._event is not None:
                self._event.set()
            if self._pipe is not None:
                os.write(self._pipe[1], _WAKE)

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._flag:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def fileno(self) -> int:
        with self._lock:
            if self._pipe is None:
                self._pipe = _wake_fds()
                if self._flag:
                    os.write(self._pipe[1], _WAKE)
            return self._pipe[0]

    def close(self) -> None:
        with self._lock:
            if self._pipe is not None:
                for fd in set(self._pipe):
                    os.close(fd)
                self._pipe = None


# What ``Wakeup.set`` writes: 8 bytes, an eventfd's count of 1 (a pipe takes them as well).
_WAKE = (1).to_bytes(8, sys.byteorder)


def _wake_fds() -> tuple[int, int]:
    """A ``Wakeup``'s descriptors to select() on and to write to: one eventfd (Linux: one descriptor
    made and closed, where a pipe is two), else a pipe. Never read: once written, readable for good."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_CLOEXEC)
        return fd, fd
    return os.pipe()


class CommandNotFound(FileNotFoundError):
    """The worker's command is not on PATH (or not executable); ``filename`` the path looked at for
    a program named by a path (``.venv/bin/python``), as the host has it."""

    def reason(self, program: str, where: str = "the worker's PATH") -> str:
        """Why ``program`` did not start, and what to do about it."""
        if os.sep not in program:
            return f"{program!r} was not found on {where}"
        looked = self.filename or program
        fix = "give its absolute path" if not os.path.isabs(program) else "check the path"
        return (
            f"{program!r} was not found: no executable file at {looked} (a relative program is taken from "
            f"the worker's checkout, where it runs); {fix}, or run it with shell: true, or, for an environment "
            "at the top of your repository that the checkout lacks (a venv git ignores), list its folder in "
            "workers.sandbox_env_folders (the sandbox shows it in the checkout)"
        )


@dataclass
class ProcessHandle:
    """A started (or re-adopted) worker process: with the shim, the shim's pid, which is also
    the worker's process group and session id."""

    pid: int
    tag: str
    popen: subprocess.Popen[bytes] | None  # None: adopted from a previous server, not our child
    started_at: float
    kill_rung: str | None = None  # set by terminate(): which signal ended it
    pidfd: int | None = None  # Linux: a descriptor that becomes readable when the process exits
    start_id: str | None = None  # the kernel's start time of ``pid``: tells it from a reused pid
    exit_file: Path | None = None  # where the shim writes the exit status
    code: int | None = None  # the worker's true status once it ended (from the exit file, if any)
    ended_at: float | None = None  # when its exit file was written (the worker's end), once it is read
    deadline_stop: str | None = None  # who stopped it at its Deadline, as its exit file says (no server had)
    # ``pid`` is the orchestrator's own process at the top of a sandbox: bubblewrap's launcher (the shim
    # and the worker run inside), or under Landlock the shim its launcher became
    sandboxed: bool = False
    private_exit: bool = False  # its exit file is the runner's own (removed by ``release``)
    # A local process has no node, never waits in a queue and is never lost (executor.AttemptHandle).
    node: str | None = None
    queued: bool = False
    lost: bool = False
    limits: Limits | None = None  # the caps it runs under (None: spawned without, e.g. a gate)
    cgroup: Cgroup | None = None  # its cgroup (process/cgroups.py), where the machine allows one
    enforced: Enforced | None = None  # which enforcement held each cap
    log_path: Path | None = None
    # Started by the workspace's supervisor (process/supervisor.py): ``pid`` is the worker's own (or a
    # sandbox's launcher), and ``reaper`` the supervisor's, which writes the exit file before it reaps.
    reaper: int | None = None
    reaped: bool = False  # its pidfd said its reaper reaped it (``_wait_reaped``): its exit file is written
    adopted: bool = False  # from a previous server (without an exit file, its end is when it was found ended)
    shimmed: bool = False  # supervised, yet ``pid`` is the shim (a node's attempt, tied to its node by the lifeline)
    lifeline: int | None = None  # a node's attempt: the write end of the shim's lifeline (shim.py), held until released
    watched_from: float = field(default_factory=time.time)  # made (spawned or adopted): an end before it was not seen live
    egress: Egress | None = None  # its proxy's listeners (workers.sandbox_network: allow), closed once it has ended
    watch: direct.Watch | None = None  # Landlock: its connect() calls, decided outside (network/direct.py)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pidfd_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # its pidfd's closing, and a look at it

    @property
    def id(self) -> str:
        """The attempt's identity (executor.AttemptHandle): its pid and kernel start time."""
        return f"{self.pid}@{self.start_id}"

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        """The worker's exit status (negative: killed by that signal), or None while it runs.
        Under the shim, the true status its exit file records; without one (the shim was
        SIGKILLed before writing it), the shim's own status, or ``-SIGKILL`` when adopted."""
        if self.code is not None:
            return self.code
        if self.popen is not None:
            shim = self.popen.poll()
            if shim is not None:
                found = read_exit(self.exit_file) if self.exit_file is not None else None
                self._ended(shim, found)
            return self.code
        if not procscan.HAS_PROC:
            if process_alive(self.pid, self.start_id):
                return None
            found = read_exit(self.exit_file) if self.exit_file else None
        else:
            # One look at its stat, then its exit file: a zombie its supervisor has not reaped was
            # looked at before the read, so a read that finds no status means it is not written yet
            # (the supervisor writes it, then reaps); gone at the look, it was written before then.
            # (once it is reaped, nothing of it is left to look at: its pid may be another's by now)
            seen = None if self.reaped else procscan.look(self.pid)
            if seen is not None and seen.running(self.start_id):
                return None
            found = read_exit(self.exit_file) if self.exit_file else None
            if found is None and self.reaper is not None and self.exit_file is not None and seen is not None:
                if seen.zombie_of(self.start_id) == self.reaper:
                    return None  # ended; its supervisor is writing how, then reaps it
        self._ended(-signal.SIGKILL, found)
        if self.ended_at is None and self.adopted:  # ended unseen, with no exit file: now is all we know
            self.ended_at = time.time()
        return self.code

    def _ended(self, otherwise: int, found: ExitStatus | None) -> None:
        """Its end, from its exit file (``otherwise``: the status when it has none)."""
        self.code = otherwise if found is None else found.code
        self.deadline_stop = found.stopped_by if found is not None else None
        self.ended_at = self._written_at(found)

    def _written_at(self, found: ExitStatus | None) -> float | None:
        """When the worker ended, by its exit file's time: the shim (or the supervisor) writes it as the
        worker ends, whenever the server sees it (it may have been stopped, or restarting). None
        without one: the caller's clock is then the best there is."""
        if found is None or self.exit_file is None:
            return None
        written = found.written  # (its time as read with it: one descriptor, no second look by path)
        if written is None:
            try:
                written = os.stat(self.exit_file).st_mtime
            except OSError:
                return None
        # Seen as it happened (within SEEN_AT_ONCE): now, on the server's fine clock (the file's stamp
        # is the kernel's coarse one, up to a tick behind). Seen late (the server was stopped, or
        # restarting): the file's time, a tick on, which is never before the real end.
        # (An exit file written before this handle was made, e.g. found by a restarted server, was seen late.)
        now = time.time()
        live = now - written <= SEEN_AT_ONCE and written >= self.watched_from - _STAMP_TICK
        ended = now if live else written + _STAMP_TICK
        return max(ended, self.started_at)

    @property
    def supervised(self) -> bool:
        """Whether the workspace's supervisor started it (and reaps it)."""
        return self.reaper is not None

    @property
    def shim_pid(self) -> int | None:
        """The orchestrator's own process at the top of the attempt (its shim, or a sandbox's launcher),
        which the worker's caps do not count; None when ``pid`` is the worker itself (supervised)."""
        if self.exit_file is None or (self.supervised and not self.sandboxed and not self.shimmed):
            return None
        return self.pid

    @property
    def cap_hit(self) -> str | None:
        """The cap the kernel held this attempt at, as a sentence (cgroups.cap_hit); None when none.
        Once it has ended its cgroup's emptiness is read first, so counts read when it is empty are its
        last (its end reads them no more); not for a sandboxed one, whose bubblewrap launcher is
        hardly ever gone yet at that moment (a read that would only miss)."""
        if not self.limits or not self.enforced:
            return None
        final = self.code is not None and not self.sandboxed
        return cap_hit(self.limits, self.enforced, self.cgroup, self.code, self.log_path, final)

    @property
    def exited(self) -> bool:
        """Whether it is known to have ended, without reaping it (safe from any thread). While its pidfd
        is not readable it runs: told without ``poll``'s look at /proc (the monitor asks each interval)."""
        if self.popen is not None:
            return self.popen.returncode is not None
        if self.code is None and not self.reaped:
            with self._pidfd_lock:  # (not closed by ``release`` meanwhile: its number could be another file's)
                running = self.pidfd is not None and not _readable(self.pidfd)
            if running:
                return False
        return self.poll() is not None


@functools.lru_cache(maxsize=256)
def _which(argv0: str, path_env: str | None) -> str | None:
    return shutil.which(argv0, path=path_env)


def resolve_command(argv0: str, path_env: str | None, cwd: Path | None = None, view: ProjectView | None = None) -> str:
    """The absolute path of a command, or CommandNotFound with the shell's wording.
    Found paths are cached; a miss is looked up again next time (it may be installed since).

    A program named by a relative path (``.venv/bin/python``, ``./run-tests``) is taken from ``cwd``
    (its process's, not this server's), as the process sees it: in a project ``view`` at the
    repository's path, where the checkout is shown with the host's environment folders bound in
    (checked at the host's file the view shows there; the path returned is the view's)."""
    if os.sep in argv0:
        path = argv0
        if not os.path.isabs(argv0) and cwd is not None:
            path = os.path.normpath(os.path.join(view.place(str(cwd)) if view is not None else str(cwd), argv0))
        host = view.source(path) if view is not None else path
        if os.path.isfile(host) and os.access(host, os.X_OK):
            return path
        raise CommandNotFound(errno.ENOENT, f"No such file or directory: {argv0}", host)
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


@dataclass(eq=False)
class _Launch:
    """What one start holds between its preparation and its process (ProcessRunner.spawn)."""

    command: list[str]
    env: dict[str, str]
    exit_file: Path | None
    private_exit: bool  # the exit file is the runner's own, not the caller's
    limits: Limits | None
    launcher: bool  # bubblewrap's launcher stays as the session leader
    supervised: bool  # started by the supervisor (no lifeline to this process)
    tethered: bool = False  # a node's attempt started by the supervisor, tied to this process by its lifeline
    held: bool = False  # ... whose lifeline the supervisor holds (no shim: an unconfined attempt)
    sandbox: SandboxSpec | None = None  # as confined (its way out and guard added)
    lifeline: tuple[int, int] | None = None  # (the child's end, ours)
    egress: Egress | None = None
    guard: tuple[socket.socket, socket.socket] | None = None  # (the guard's listener, the launcher's end)
    cgroup: Cgroup | None = None
    child_setup: ChildSetup | None = None
    enforced: Enforced | None = None

    def close_child_ends(self) -> None:
        """This process's copies of what the child takes: its lifeline's end and its cgroup descriptors."""
        if self.lifeline is not None:
            os.close(self.lifeline[0])
        for fd in self.child_setup.fds if self.child_setup is not None else []:
            os.close(fd)


class ProcessRunner:
    """Starts, watches and signals worker processes."""

    def spawn(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        tag: str,
        exit_file: Path | None = None,
        parent_death_signal: int | None = None,
        sandbox: SandboxSpec | None = None,
        limits: Limits | None = None,
        deadline: Deadline | None = None,
    ) -> ProcessHandle:
        """Start ``argv`` (a list, never a shell string) with its output appended to ``log_path``.
        With ``exit_file``, under the shim, which writes the exit status there. With
        ``parent_death_signal`` (Linux; a cluster node's attempts), a lifeline to this process: its
        group is killed once this process is gone. Started by the supervisor (a node's own) when there
        is one, which holds that lifeline itself for an unconfined worker (no shim); else the perl
        shim holds it and sets that signal for the worker it starts (a sandboxed one's, or a fork of
        this process's, when it also gets that signal itself when the calling thread ends). With
        ``sandbox``, the shim and the worker run inside it (process/sandbox.py), under bubblewrap's launcher. With
        ``limits``, in a cgroup of its own where the machine allows (cgroups.Confined). With ``deadline``
        (and an exit file), whatever writes that file (the perl shim, or the supervisor) stops the
        worker at it if it still runs: the backstop for its timeout while no server watches."""
        if not argv:
            raise ValueError("empty command")
        launch = self._prepare(argv, cwd, env, log_path, tag, exit_file, parent_death_signal, sandbox, limits, deadline)
        started_at = time.time()  # before the fork: every descendant is younger than this
        try:
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except BaseException:
            self._abandon(launch, tag)
            launch.close_child_ends()
            raise
        pid, start_id, popen, reaper, guarded, pidfd = self._start(
            launch, cwd, log_fd, tag, parent_death_signal, deadline, log_path
        )
        return ProcessHandle(
            pid=pid,
            tag=tag,
            popen=popen,
            started_at=started_at,
            # the supervisor's (opened before it could reap the worker), else one opened and checked here
            pidfd=pidfd if pidfd is not None else _pidfd_of(pid, start_id, supervised=popen is None),
            start_id=start_id,
            lifeline=launch.lifeline[1] if launch.lifeline is not None else None,
            exit_file=launch.exit_file,
            sandboxed=launch.sandbox is not None,
            private_exit=launch.private_exit,
            reaper=reaper,
            shimmed=launch.tethered and not launch.held,
            limits=limits,
            cgroup=launch.cgroup,
            enforced=launch.enforced,
            log_path=log_path,
            egress=launch.egress,
            watch=self._hand_over_guard(launch, guarded, log_path),
        )

    def _prepare(
        self,
        argv: list[str],
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        tag: str,
        exit_file: Path | None,
        parent_death_signal: int | None,
        sandbox: SandboxSpec | None,
        limits: Limits | None,
        deadline: Deadline | None,
    ) -> _Launch:
        """Everything a start needs before the process: its argv and environment, its exit file, its
        cgroup, its sandbox's way out and connect guard, the shim; on a failure, what was made is released."""
        full_env = dict(env)
        full_env[TAG_VAR] = tag
        full_env["PWD"] = str(cwd)  # a program that trusts $PWD over getcwd() (opencode did) must not see the server's
        program = resolve_command(argv[0], full_env.get("PATH"), cwd, sandbox.project if sandbox is not None else None)
        # Where the supervisor runs, it starts every process but one tied to this one's life (a node's
        # attempt without the shim's lifeline): a process with no exit file of the caller's gets one of
        # the runner's own, as does a sandboxed one, whose shim inside tells the true status (bubblewrap
        # would say 128+N for signal N).
        through_supervisor = self.supervisor is not None and parent_death_signal is None
        # A node's unconfined attempt needs no shim: the supervisor holds its lifeline, writes its exit
        # file and keeps its deadline, and the worker dies with the supervisor (supervisor.Tether).
        held = self.supervisor is not None and parent_death_signal is not None and sandbox is None
        private_exit = exit_file is None and (sandbox is not None or through_supervisor or held)
        if private_exit:
            fd, name = tempfile.mkstemp(prefix="orchestrator-", suffix=".exit")
            os.close(fd)
            exit_file = Path(name)
        if exit_file is not None:  # a stale status must never pass for this run's; its room is made now
            reserve_exit_file(exit_file)  # (before the sandbox's argv: only a path that exists is bound)
        # bubblewrap's launcher stays (the session leader) and its PID namespace ends the tree; Landlock's
        # execs the shim and leaves no process of its own, and the tree is tracked as an unconfined one's.
        launcher = sandbox is not None and sandbox.backend is Backend.BUBBLEWRAP
        bridged = launcher and sandbox is not None and sandbox.network is SandboxNetwork.ALLOW  # the shim's bridge
        launch = _Launch([program, *argv[1:]], full_env, exit_file, private_exit, limits, launcher, through_supervisor)
        # The orchestrator's processes in the cgroup besides the worker's: the shim (or, for a moment,
        # the supervisor starting it), and a sandbox's launcher and init.
        own = (1 if exit_file else 0) + (2 if launcher else 0) + (1 if bridged else 0)
        try:
            if limits:  # first: a sandbox's way out tells its connections apart by it (network/egress.py)
                launch.cgroup, launch.child_setup, launch.enforced = self.confined.start(tag, limits, own)
            if sandbox is not None:
                install_worker_filter(full_env, self.perl, sandbox)
                sandbox, launch.egress = self._open_egress(sandbox, full_env, tag, log_path, launch.cgroup)
                if parent_death_signal is None and through_supervisor:
                    sandbox, launch.guard = self._connect_guard(sandbox, full_env)
            # Through the supervisor, which writes the exit file (a sandbox's shim inside does); a sandboxed
            # node attempt's shim also holds its lifeline, an unconfined one's the supervisor holds.
            if held:
                launch.lifeline, launch.held = os.pipe(), True  # (both ends close-on-exec; the read end goes to the supervisor)
            elif exit_file is not None and (sandbox is not None or not through_supervisor):
                launch.command, launch.lifeline = self._shim(launch.command, full_env, exit_file, parent_death_signal, deadline)
            # A node's attempt through the supervisor (no fork of this large process): its tie to this
            # process is the lifeline alone, which the shim (a sandboxed one's) or the supervisor checks
            # before starting the worker and watches while the worker runs.
            launch.tethered = self.supervisor is not None and parent_death_signal is not None and launch.lifeline is not None
            if launch.tethered and not launch.held:
                full_env[protocol.SHIM_STASH + "LIFELINE"] = str(LIFELINE_FD)
            if sandbox is not None:
                sandbox, launch.command = _confined(
                    sandbox, launch.command, full_env, cwd, exit_file, log_path, parent_death_signal
                )
            launch.sandbox = sandbox
            if parent_death_signal is not None and sys.platform.startswith("linux"):
                libc_prctl()  # loaded before the fork: the child only calls it
        except BaseException:
            self._abandon(launch, tag)
            launch.close_child_ends()
            raise
        return launch

    def _start(
        self,
        launch: _Launch,
        cwd: Path,
        log_fd: int,
        tag: str,
        parent_death_signal: int | None,
        deadline: Deadline | None,
        log_path: Path,
    ) -> tuple[int, str | None, subprocess.Popen[bytes] | None, int | None, bool, int | None]:
        """The process started, by the supervisor or a fork of this one: its pid, start id, Popen (a
        fork's), the supervisor's reaper, whether the supervisor took the connect guard and the pidfd
        the supervisor sent (None: a fork's, or an older supervisor's that sends none). The ends
        the child took are closed here whatever happens; on a failure, the rest of the launch too."""
        sandbox, guard, lifeline, child_setup = launch.sandbox, launch.guard, launch.lifeline, launch.child_setup
        popen: subprocess.Popen[bytes] | None = None
        reaper: int | None = None
        guarded = False  # the supervisor holds its guard's listener
        pidfd: int | None = None
        try:
            if launch.supervised or launch.tethered:
                assert self.supervisor is not None
                spawned = self.supervisor.spawn(
                    launch.command,
                    cwd=cwd,
                    env=launch.env,
                    log_fd=log_fd,
                    tag=tag,
                    # the supervisor writes an unconfined worker's status; a sandbox's shim, inside, its own
                    exit_file=launch.exit_file if sandbox is None else None,
                    cgroup_fds=child_setup.fds if child_setup is not None else [],
                    file_size=child_setup.file_size if child_setup is not None else 0,
                    ignore=LAUNCHER_IGNORES if launch.launcher else (),
                    lifeline=lifeline[0] if launch.tethered and lifeline is not None else guard[1].fileno() if guard else None,
                    tether=launch.held,
                    deadline=deadline if sandbox is None else None,  # else the shim's
                    guard=(guard[0].fileno(), self._direct_policy(sandbox, launch.egress, log_path))
                    if guard and sandbox
                    else None,
                )
                pid, start_id, reaper, guarded, pidfd = spawned[:5]
                if launch.held and not spawned.tethered:  # it passed the lifeline on to a worker that ignores it
                    _end_untethered(spawned)
                    raise SupervisorError("the worker supervisor predates held lifelines: the attempt is started otherwise")
            else:
                popen = subprocess.Popen(
                    launch.command,
                    cwd=cwd,
                    env=launch.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(lifeline[0],) if lifeline is not None else (guard[1].fileno(),) if guard else (),
                    preexec_fn=_preexec(child_setup, parent_death_signal, launcher=launch.launcher),
                )
                pid, start_id = popen.pid, process_start_id(popen.pid)
        except BaseException:
            self._abandon(launch, tag)
            raise
        finally:
            os.close(log_fd)
            launch.close_child_ends()
        return pid, start_id, popen, reaper, guarded, pidfd

    def _hand_over_guard(self, launch: _Launch, guarded: bool, log_path: Path) -> Any:
        """The connect guard's listener after the start: the supervisor's (this process's copies closed),
        or this process's guard thread's (the launcher's end is the child's now); its watch, if ours."""
        guard, sandbox = launch.guard, launch.sandbox
        if guarded:
            _close_pair(guard)
            return None
        if guard is None or sandbox is None:
            return None
        guard[1].close()
        policy = self._direct_policy(sandbox, launch.egress, log_path)
        return direct.shared().watch(
            guard[0], launch.egress.ports if launch.egress else (), str(policy["log"]), str(policy["record"])
        )

    def _abandon(self, launch: _Launch, tag: str) -> None:
        """A start that never began: no exit file says it did, and its cgroup, way out, connect guard
        and this process's end of the lifeline go."""
        _never_began(launch.exit_file)
        if launch.limits:
            self.confined.end(tag)
        self._end_egress(launch.egress, tag)
        _close_pair(launch.guard)
        if launch.lifeline is not None:
            os.close(launch.lifeline[1])

    def _open_egress(
        self, sandbox: SandboxSpec, env: dict[str, str], tag: str, log_path: Path, cgroup: Cgroup | None
    ) -> tuple[SandboxSpec, Egress | None]:
        """With ``sandbox_network: allow``, its proxy, listening before it starts: in its network
        namespace, Unix sockets the shim's bridge carries in (the shared ones, which tell its
        connections apart by its ``cgroup``, where it has one; else its own); without one (Landlock),
        ports of the host's loopback its rules allow. ``env`` gets the proxy's variables."""
        if sandbox.network is not SandboxNetwork.ALLOW:
            return sandbox, None
        namespace = sandbox.backend is Backend.BUBBLEWRAP
        cgroups = hierarchies().proc_paths(cgroup) if cgroup is not None and namespace else None
        egress = open_egress(sandbox.egress or EgressPlan(), key=tag, log_path=log_path, namespace=namespace, cgroups=cgroups)
        env.update(egress.env)
        if namespace:
            env[protocol.SHIM_STASH + "BRIDGE"] = egress.bridge
            self.bridged.add(tag)
            return sandbox.replaced(egress_dir=str(egress.folder)), egress
        return sandbox.replaced(egress_ports=tuple(egress.ports)), egress

    def _connect_guard(
        self, sandbox: SandboxSpec, env: dict[str, str]
    ) -> tuple[SandboxSpec, tuple[socket.socket, socket.socket] | None]:
        """A restricted network, started through the supervisor: every connect() of its processes
        decided outside it (network/direct.py), the listener of its filter (Landlock's launcher's;
        bubblewrap: the shim's, inside) sent over a socket pair whose worker end is its descriptor
        LIFELINE_FD; the supervisor holds the listener (it outlives this server). None where no filter
        can be installed (a node's attempt, which has the lifeline there, is not watched)."""
        if (
            sandbox.network is SandboxNetwork.HOST
            or connect_filter() is None
            or not (sandbox.backend is Backend.LANDLOCK or (sandbox.backend is Backend.BUBBLEWRAP and self.perl is not None))
        ):
            return sandbox, None
        guard = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if sandbox.backend is Backend.LANDLOCK:
            return sandbox.replaced(connect_guard=LIFELINE_FD), guard
        env[protocol.SHIM_STASH + "GUARD"] = connect_guard_words(LIFELINE_FD) or ""
        return sandbox, guard

    def _shim(
        self,
        command: list[str],
        env: dict[str, str],
        exit_file: Path,
        parent_death_signal: int | None,
        deadline: Deadline | None = None,
    ) -> tuple[list[str], tuple[int, int] | None]:
        """``command`` under the shim (process/shim.py), which writes its status to ``exit_file``;
        with ``parent_death_signal``, also the lifeline pipe (read end for the shim, write end kept);
        with ``deadline``, the perl shim stops the worker at it (the shell shim has no clock)."""
        if self.perl is None:
            return [SHELL, "-c", SHIM_SCRIPT, SHIM_NAME, str(exit_file), *command], None
        if deadline is not None:
            env[protocol.SHIM_STASH + "DEADLINE"] = deadline.shim_value()
        lifeline = None
        if parent_death_signal is not None and PRCTL_SYSCALL is not None:
            env[protocol.SHIM_STASH + "PDEATHSIG"] = f"{PRCTL_SYSCALL} {int(parent_death_signal)}"
            lifeline = os.pipe()  # both ends close-on-exec: the read end reaches the shim alone (pass_fds)
            env[protocol.SHIM_STASH + "LIFELINE"] = str(lifeline[0])
        for name, value in SHIM_START_ENV.items():  # the shim's own start; the worker gets its own back
            if name in env:
                env[protocol.SHIM_STASH + name] = env.pop(name)
            if value is not None:
                env[name] = value
        return [self.perl, "-e", perl_shim(shim_parts(env)), SHIM_NAME, str(exit_file), *command], lifeline

    def adopt(
        self, pid: int, start_id: str | None, *, tag: str, started_at: float, exit_file: Path | None, limits: Limits | None = None
    ) -> ProcessHandle:
        """A handle on a shim a previous server started. If it has ended (or ``pid`` now belongs
        to another process), the handle's status is already read from the exit file. With
        ``limits`` (what it was started under), its cgroup is found again by its tag."""
        handle = ProcessHandle(
            pid=pid, tag=tag, popen=None, started_at=started_at, start_id=start_id, exit_file=exit_file, adopted=True
        )
        if self.supervisor is not None and pid:  # a supervised worker is a running supervisor's child
            parent = procscan.parent_of(pid)
            if parent is not None and parent in self.supervisor.running():
                handle.reaper = parent
        if limits is not None:
            handle.limits = limits
            handle.cgroup, handle.enforced = self.confined.adopt(tag, limits)
        if hasattr(os, "pidfd_open"):
            try:
                handle.pidfd = os.pidfd_open(pid)
            except OSError:
                handle.pidfd = None
        # Checked after the pidfd is open: a pidfd on a reused pid is closed again at once.
        if not process_alive(pid, start_id):
            self.release(handle)
            forget_egress(tag)  # its registration on the previous server's shared doors, if any, ended
        elif (egress := reopen_egress(tag)) is not None:  # its proxy's sockets, listened on again
            handle.egress = egress
            if egress.bridge:
                self.bridged.add(tag)
        handle.poll()
        return handle

    def wait(self, handle: ProcessHandle, timeout: float | None, wake: Wakeup | None = None) -> int | None:
        """The return code, or None if still running after ``timeout`` seconds (or once ``wake``
        is set). With a pidfd this blocks without polling, so idle worker threads cost nothing."""
        if handle.popen is None:
            return self._wait_adopted(handle, timeout, wake)
        if handle.pidfd is not None and handle.popen.returncode is None:
            fds = [handle.pidfd] + ([wake.fileno()] if wake is not None else [])
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                ready, _, _ = select.select(fds, [], [], _slice(deadline))
                if handle.pidfd in ready:
                    break
                if ready or (deadline is not None and time.monotonic() >= deadline):
                    return handle.poll()
            handle.popen.wait()
            return handle.poll()
        if wake is not None and timeout is not None:
            timeout = min(timeout, 0.25)  # no pidfd: poll so a set wake is seen soon
        try:
            handle.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return handle.poll()

    def _wait_adopted(self, handle: ProcessHandle, timeout: float | None, wake: Wakeup | None) -> int | None:
        """Not our child, so no waitpid: its pidfd (or polling) says when it ends, its exit file how.
        ``poll`` looks at its /proc stat (three system calls and a parse) only once the pidfd has said
        it ended: a pidfd names this very process, so while it is not readable the process runs
        (the look before each wait found it running, a worker's start and its wait alike)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ended = handle.pidfd is None  # its pidfd seen readable (without one: poll looks each time)
        while handle.code is None and (not ended or handle.poll() is None):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None if ended or not _readable(handle.pidfd) else handle.poll()  # (ended: polled just now)
            if handle.pidfd is not None and not ended and handle.reaper is not None and reaping_wakes_pidfd():
                # Its supervisor writes how it ended, then reaps it: one wait for the reaping (POLLHUP),
                # not one for its exit and another for the reaping that follows (a wake-up more a worker,
                # a third of them under load). One that ended unreaped through a whole slice (its
                # supervisor gone, and nothing reaps it) is looked at as before.
                if _wait_reaped(handle.pidfd, wake, WAIT_SLICE if deadline is None else _slice(deadline)):
                    ended = handle.reaped = True
                elif wake is None or not wake.is_set():
                    ended = _readable(handle.pidfd)
            elif handle.pidfd is not None:
                fds = [handle.pidfd] + ([wake.fileno()] if wake is not None else [])
                ready, _, _ = select.select(fds, [], [], _slice(deadline))
                ended = ended or handle.pidfd in ready
                if handle.pidfd in ready:  # it has ended: its supervisor is writing how (see poll)
                    if handle.reaper is not None and reaping_wakes_pidfd():
                        handle.reaped = _wait_reaped(
                            handle.pidfd, wake, REAP_SLICE if deadline is None else min(REAP_SLICE, _slice(deadline) or 0.0)
                        )
                    else:
                        time.sleep(0.0005)
            else:
                step = 0.05 if left is None else min(0.05, left)
                if wake is not None and wake.wait(step):
                    return handle.poll()
                if wake is None:
                    time.sleep(step)
            if wake is not None and wake.is_set():
                return handle.poll() if ended or _readable(handle.pidfd) else None
        return handle.code

    def release(self, handle: ProcessHandle) -> None:
        """Close the handle's descriptors once its process is gone (and remove a private exit file, read by then)."""
        with handle._pidfd_lock:
            if handle.pidfd is not None:
                os.close(handle.pidfd)
                handle.pidfd = None
        if handle.lifeline is not None and handle.poll() is not None:
            os.close(handle.lifeline)
            handle.lifeline = None
        if handle.private_exit and handle.exit_file is not None and handle.poll() is not None:
            handle.exit_file.unlink(missing_ok=True)
        if handle.egress is not None and handle.poll() is not None:
            self._end_egress(handle.egress, handle.tag)
            handle.egress = None
        if handle.watch is not None and handle.poll() is not None:
            direct.shared().forget(handle.watch)
            handle.watch = None

    @staticmethod
    def _direct_policy(sandbox: SandboxSpec, egress: Egress | None, log_path: Path) -> dict[str, object]:
        """An attempt's connect() guard's policy (network/direct.py): the ports it may connect to, and
        where its refusals go (its log and its network record, as its proxy's)."""
        record = sandbox.network_record or (sandbox.egress.record if sandbox.egress is not None else "")
        return {"ports": sorted(egress.ports) if egress else [], "log": str(log_path), "record": record}

    def _end_egress(self, egress: Egress | None, tag: str) -> None:
        """An attempt's way out closed (it ended, or never began): its listeners, and its bridge forgotten."""
        if egress is not None:
            egress.close()
            self.bridged.discard(tag)

    def terminate(self, handle: ProcessHandle, *, grace: float, first_signal: int = signal.SIGTERM) -> str:
        """The kill ladder: ``first_signal`` to the group, ``grace`` seconds, SIGKILL to the
        group, then SIGKILL to every process still carrying the tag. Returns the rung that
        ended the leader. Safe to call from several threads; "already gone" is success."""
        with handle._lock:
            if handle.kill_rung is not None:
                return handle.kill_rung
            if handle.poll() is not None:
                self.sweep(handle.tag, handle.started_at)
                handle.kill_rung = "none"
                return handle.kill_rung
            rung = signal_name(first_signal)
            deadline = time.monotonic() + grace
            if handle.sandboxed and not handle.adopted:
                _await_taker(handle.pid, first_signal, deadline)
            _killpg(handle.pid, first_signal)
            tree = self.confined.tree(handle.tag, handle.pid) if handle.limits else []  # tagless ones too
            # Only to those that left the group: a second SIGTERM would run a worker's handler twice.
            kill_all([pid for pid in tree if _pgid(pid) != handle.pid], first_signal)
            if self.wait(handle, max(0.0, deadline - time.monotonic())) is None:
                rung = "SIGKILL"
            # The leader is gone (or about to be); give the rest of its group what is left of the grace.
            while time.monotonic() < deadline and _group_alive(handle.pid):
                time.sleep(0.02)
            _killpg(handle.pid, signal.SIGKILL)
            kill_all(tree, signal.SIGKILL)
            self.wait(handle, 5.0)
            self.sweep(handle.tag, handle.started_at)
            handle.kill_rung = rung
            return rung

    def __init__(
        self, *, perl: str | None = PERL, sweep_gather: float | None = None, supervisor: SupervisorClient | None = None
    ) -> None:
        self.perl = perl  # None: the shell shim (a signal death then reads as exit 128+N)
        # A server's workers are started by its workspace's supervisor (process/supervisor.py), without
        # a shim each; without one (a gate, a test, a cluster node's attempt), under the shim.
        self.supervisor = supervisor
        # Workers finishing together share one scan of the process table (group commit); a
        # scan costs the same for one tag or twenty, so each waits SWEEP_GATHER for company
        # (0: a runner with one worker at a time, a cluster node's attempt, does not wait).
        self._sweeper: GroupCommit[tuple[str, float]] = GroupCommit(
            self._sweep_batch, gather=SWEEP_GATHER if sweep_gather is None else sweep_gather
        )
        self.confined = Confined()  # the cgroups of the attempts started (or adopted) with limits
        self.bridged: set[str] = set()  # tags of the attempts whose shim runs a network bridge (pid 3 inside)
        judge_attempts(holds_processes)  # a dead server's registrations judged by their cgroups (network/egress.py)

    def sweep(self, tag: str, since: float = 0.0) -> None:
        """SIGKILL every process in the cgroup of ``tag`` (then removed) and every process carrying
        ``tag``, by a scan that started after this call; repeated until none is left (they may be
        forking). ``since``: when the tagged process was started; older processes cannot carry the
        tag and are skipped cheaply. An attempt whose cgroup the kernel removed has no process left
        (``Confined.end``): the scan of the process table is for those without one, or whose cgroup
        would not go."""
        if self.confined.end(tag):
            return
        self._sweeper((tag, since))

    def tree_gone(self, tag: str) -> bool:
        """Whether the kernel says no process of ``tag``'s attempt is left: it has a cgroup here
        (every process of the attempt was born in it) and that cgroup holds no task, not even a
        zombie (``Cgroup.empty``). False when it cannot tell (no cgroup): ``sweep`` then decides."""
        cgroup = self.confined.cgroup_of(tag)
        return cgroup is not None and bool(cgroup.dirs) and cgroup.empty()

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

    def sweep_prefix(self, prefix: str, rounds: int = 20, *, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """SIGKILL every process whose tag starts with ``prefix`` (a whole job tree's, after a
        server crash), except those whose tag is in ``keep``; returns how many were found."""
        kept = frozenset(keep)
        confined = self.confined.end_prefix(prefix, kept)
        signalled: set[int] = set()  # a process found again before it died (a busy machine) counts once
        for _ in range(rounds):
            found = procscan.scan(lambda tag: tag.startswith(prefix) and tag not in kept)
            pids = [pid for tagged in found.values() for pid in tagged]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    signalled.add(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        return confined + len(signalled)

    def find(self, tag_prefix: str) -> list[FoundAttempt]:
        """Live attempts whose tag starts with ``tag_prefix``, each with the file its status goes to:
        shims found in the process table, and the workers the supervisor runs."""
        found = find_shims(tag_prefix)
        if self.supervisor is not None:
            found += self.supervisor.found(tag_prefix)
        return found

    def close(self) -> None:
        """Let go of the supervisor (it leaves once its last worker has ended); remove the spare cgroups."""
        if self.supervisor is not None:
            self.supervisor.close()
        self.confined.close()

    def tagged(self, tag: str) -> list[int]:
        """Live (non-zombie) processes whose environment carries ``tag``."""
        return self.tagged_many([tag]).get(tag, [])

    def tagged_many(self, tags: list[str], since: float = 0.0) -> dict[str, list[int]]:
        """For each tag, the live processes carrying it, from one pass over the process table."""
        return procscan.scan(set(tags).__contains__, since)


def sweep_dead_servers(*, for_forks: bool = False) -> None:
    """What servers of this user's that died left behind, gone: their network registrations of
    attempts that have ended, their registrations files and shared folders (network/egress.py), their
    spare cgroups (process/cgroups.py). Each judged dead by the kernel, never by a pid alone. At a
    server's start (cli/server.py, after its takeover, which ends the attempts of its trees that no
    record names) and a node's (cluster/node.py, ``for_forks``: before it forks its workers, for
    which it stands in at their first attempt)."""
    try:
        sweep_dead(holds_processes, for_forks=for_forks)
        remove_dead_spares(for_forks=for_forks)
    except OSError as exc:  # (nothing of this process's own depends on it: the next start tries again)
        logging.getLogger("orchestrator.process").warning("could not clear what ended servers left: %s", exc)


def _preexec(setup: ChildSetup | None, parent_death_signal: int | None, *, launcher: bool = False) -> Any:
    """The child's preexec_fn: its cgroup and rlimits, its parent-death signal, and (a sandbox's
    launcher) the signals it ignores, each if any (None: none, so subprocess keeps its faster spawn)."""
    death = None if parent_death_signal is None else functools.partial(set_parent_death_signal, parent_death_signal)
    steps = [step for step in (setup, death, _ignore_ladder if launcher else None) if step is not None]
    return None if not steps else steps[0] if len(steps) == 1 else lambda: [step() for step in steps]


# The longest one select() of a wait with a deadline blocks. A process stopped in select() (SIGSTOP,
# a debugger, Ctrl-Z) is put back into it by the kernel with the time it had left when it stopped,
# so a single select for the whole timeout would push a worker's deadline back by the whole stop
# (a server stopped for 30 s let a worker run 30 s past its timeout). Each slice ends on
# CLOCK_MONOTONIC, which counts the stop: the deadline is missed by one slice at most.
WAIT_SLICE = 1.0


def _slice(deadline: float | None) -> float | None:
    """How long the next select of a wait may block: up to ``deadline`` (monotonic), at most WAIT_SLICE."""
    return None if deadline is None else min(max(0.0, deadline - time.monotonic()), WAIT_SLICE)


# The longest a wait for an ended supervised worker's reaping blocks before it looks again (_wait_reaped).
REAP_SLICE = 0.1
# How long the first of several finishing workers waits for others to share its /proc scan.
# The engine sweeps after a worker's slot is free, so nobody waits on this for a slot.
SWEEP_GATHER = 0.01
SEEN_AT_ONCE = 0.5  # seconds after its exit file's time within which a worker's end counts as seen live
# The resolution of the clock file times are stamped with (CLOCK_REALTIME_COARSE, 5 on Linux).
_STAMP_TICK = time.clock_getres(5) if sys.platform.startswith("linux") else 0.0


def _confined(
    sandbox: SandboxSpec,
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    exit_file: Path | None,
    log_path: Path,
    parent_death_signal: int | None,
) -> tuple[SandboxSpec, list[str]]:
    """The spec as it starts (what it writes besides its rules, dying with its parent) and ``command``
    inside it; ``env`` gets the backend's variables."""
    if exit_file is not None:  # the shim writes it from inside (it exists, reserved, before the start)
        sandbox = sandbox.with_writable(exit_file)
    if sandbox.backend is not Backend.BUBBLEWRAP:  # reopened by path (``> /dev/stderr``): Landlock checks the log file's own
        sandbox = sandbox.with_writable(log_path)
    if parent_death_signal is not None:
        sandbox = sandbox.replaced(die_with_parent=True)
    env.update(backends.environment(sandbox))
    return sandbox, backends.argv(sandbox.replaced(chdir=str(cwd)), command)


def _pidfd_of(pid: int, start_id: str | None, *, supervised: bool) -> int | None:
    """A pidfd for the started ``pid`` (None: an old kernel, then polling). A supervised worker (not
    this process's child) reaped before it was opened gets none: the pid may be another process's now."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # old kernel, or a supervised worker already ended and reaped
        return None
    if supervised and not _running_or_unreaped(pid, start_id):
        os.close(pidfd)
        return None
    return pidfd


def _running_or_unreaped(pid: int, start_id: str | None) -> bool:
    """Whether the process ``pid`` and ``start_id`` name runs or is a zombie not yet reaped (one look
    at its stat on Linux)."""
    if not procscan.HAS_PROC:
        return process_alive(pid, start_id)
    seen = procscan.look(pid)
    return seen is not None and (seen.running(start_id) or seen.zombie_of(start_id) is not None)


def _readable(pidfd: int | None) -> bool:
    """Whether the process of ``pidfd`` has ended (its pidfd readable now; True without one: look)."""
    return pidfd is None or bool(select.select([pidfd], [], [], 0)[0])


def _wait_reaped(pidfd: int, wake: Wakeup | None, timeout: float | None) -> bool:
    """Block until the process of ``pidfd`` is reaped, ``wake`` is set or ``timeout`` (seconds; None:
    no bound) passes; True when it was reaped. A pidfd polled for no event reports only POLLHUP, which
    the kernel raises when the process is reaped, not when it exits: a supervised worker's end is
    waited for in one call, where polling it from its exit until its supervisor had written the exit
    file and reaped it took a wake-up every 0.5 ms (30 a worker on a loaded machine: a fifth of the
    server's CPU). Bounded: an orphan whose supervisor died is reaped by whatever adopts it, maybe
    never (a server that is a container's pid 1 reaps none), and the caller's look then finds it no
    longer the supervisor's."""
    poller = select.poll()
    poller.register(pidfd, 0)
    if wake is not None:
        poller.register(wake.fileno(), select.POLLIN)
    ready = poller.poll(None if timeout is None else math.ceil(timeout * 1000))
    return any(fd == pidfd and events & select.POLLHUP for fd, events in ready)


@functools.cache
def reaping_wakes_pidfd() -> bool:
    """Whether this kernel raises POLLHUP on a pidfd when its process is reaped (and only then: not
    while it is a zombie), found once by trying it on a child of our own; False where it does not
    (older kernels), which then poll."""
    if not hasattr(os, "pidfd_open") or not hasattr(select, "poll"):
        return False
    try:
        child = subprocess.Popen(["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return False
    pidfd = -1
    try:
        pidfd = os.pidfd_open(child.pid)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped
        poller = select.poll()
        poller.register(pidfd, 0)
        zombie = poller.poll(0)
        child.wait()  # reaped
        return not zombie and bool(poller.poll(0))
    except OSError:
        return False
    finally:
        child.wait()
        if pidfd >= 0:
            os.close(pidfd)


def _close_pair(pair: tuple[socket.socket, socket.socket] | None) -> None:
    for end in pair or ():
        end.close()


def _end_untethered(spawned: Spawned) -> None:
    """A worker an older supervisor started untethered: killed with its group, and waited for until
    that supervisor has reaped it (it writes the exit file first: no late status over the next start's)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(spawned.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        seen = procscan.look(spawned.pid)
        if seen is None or (spawned.start_id is not None and seen.start_id != spawned.start_id):  # reaped
            break
        time.sleep(0.01)
    if spawned.pidfd is not None:
        os.close(spawned.pidfd)


def _never_began(exit_file: Path | None) -> None:
    """A spawn failed: no exit file may say its attempt began (a restart would count it lost)."""
    if exit_file is not None:
        with contextlib.suppress(OSError):
            os.unlink(exit_file)


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _await_taker(pgid: int, signum: int, until: float) -> None:
    """Until a process of a sandboxed attempt's group would take ``signum`` (procscan.group_takes): in its
    first milliseconds every one of them ignores it, and a signal sent then is lost. Not past ``until``
    (the grace's end: the ladder goes on as it would have)."""
    while not procscan.group_takes(pgid, signum) and time.monotonic() < until:
        time.sleep(0.005)


def _group_alive(pgid: int) -> bool:
    """Whether the group has a member that is not a zombie (procscan.group_alive)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return procscan.group_alive(pgid)


def install_worker_filter(env: dict[str, str], perl: str | None, sandbox: SandboxSpec) -> None:
    """Have the perl shim install the worker's seccomp program (process/sandbox.py) on itself before it
    starts the worker: ``socket(AF_UNIX)`` refused unless ``workers.sandbox_unix_sockets``, no reaching
    into another process. Without Perl, or on an architecture the filter does not know, there is none:
    logged once (docs/sandbox.md says so)."""
    found = worker_filter(sandbox)
    if found is not None and perl is not None:
        env[protocol.SHIM_STASH + "SECCOMP"] = found
    else:
        _unfiltered("no Perl for the shim" if perl is None else f"no seccomp filter for {os.uname().machine}")


@functools.lru_cache(maxsize=2)
def _unfiltered(why: str) -> None:
    logging.getLogger("orchestrator.sandbox").warning(
        "sandboxed workers run without a seccomp filter here (%s): they can make Unix sockets, and the host "
        "sockets they can see stay reachable",
        why,
    )


# prctl's system call number, for the perl shim (which loads no module to find it); None: not Linux
# or an architecture not listed (the shim's worker then does not die with it; the tag sweep remains).
PRCTL_SYSCALL = (
    {"x86_64": 157, "aarch64": 167, "riscv64": 167, "i686": 172, "armv7l": 172}.get(os.uname().machine)
    if sys.platform.startswith("linux")
    else None
)

# The signals the launcher of a sandbox ignores: the kill ladder's first rung goes to the whole group,
# and bubblewrap's launcher would die of it at once, its PID namespace with it, before the worker had
# its grace. Ignored signals stay ignored across exec, into bubblewrap's init too; the shim inside sets
# handlers of its own, which exec resets to the default for the worker.
LAUNCHER_IGNORES = tuple(getattr(signal, f"SIG{name}") for name in SHIM_SIGNALS.split())


def _ignore_ladder() -> None:
    for signum in LAUNCHER_IGNORES:
        signal.signal(signum, signal.SIG_IGN)
