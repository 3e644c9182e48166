"""Process control: spawn, wait, the kill ladder and the tag sweep.

The only module that starts or signals a process (reading the process table is procscan.py's). Every worker runs
in its own session (so its process group is its own), with stdin closed and
stdout+stderr written straight to its log file by the kernel: the engine
never drains a pipe, and ``tail -f`` sees output as it is produced.

Every worker also carries a unique ``ORCHESTRATOR_TAG`` in its environment.
Descendants inherit it, so a grandchild that ``setsid``s and double-forks out
of the process group is still found by the sweep (a procscan pass) and killed.

A worker runs under a shim (like containerd's per-container shim or podman's
conmon): a few lines of Perl (POSIX sh where there is no Perl) that run the command
as its child and write its true wait status (exited with N, or killed by signal S)
to an exit file, which the runner reads once the shim has ended. The shim lives in the
worker's session, not the server's, so a worker's result survives the server
being killed, and a restarted server re-adopts the shim by pid and start time.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procscan, protocol
from .groupsync import GroupCommit
from .procscan import TAG_VAR, process_alive, process_start_id, read_small


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


# The shim records the worker's true wait status in its exit file: "exit N" (it exited with N)
# or "signal S" (killed by signal S). A shell cannot tell those apart ($? is 128+S for a signal
# death and also for an exit with 128+S: the Gemini CLI exits 147 for an HTTP 403), so the shim
# is a few lines of Perl (Essential on Debian as perl-base, shipped with macOS; it starts in
# about 2 ms, Python in 16), which gets the real status from waitpid. It re-raises nothing and
# exits 128+S for a signal death (what a shell would report); the runner reads the true status
# from the exit file. Its handlers are no-op subs, never IGNORE: a caught signal is reset to its
# default by exec, so the same signal, sent to the whole group, still reaches the worker, while
# the shim lives on to record how the worker ended. argv: SHIM_NAME, the exit file, the worker's
# argv (run by exec, never parsed by a shell). The script loads no module: each would cost every
# worker milliseconds. (Perl retries a waitpid that a caught signal interrupts by itself; the loop
# covers PERL_SIGNALS=unsafe in the user's environment.)
#
# Perl starts in its own environment (SHIM_START_ENV): no PERL5OPT (a user's -M would load a module
# into the shim, or fail it), LC_ALL=C (else it reads ~13 locale files at start: ~0.3 ms of the
# ~2 ms it costs per worker) and a fixed hash seed (no /dev/urandom reads; the shim hashes nothing
# that comes from outside). The runner keeps the worker's own values of these under SHIM_STASH +
# name, and the shim puts them back (or removes what the worker did not have) before the exec.
SHIM_SIGNALS = "HUP INT QUIT TERM USR1 USR2 ALRM PIPE"
SHIM_START_ENV: dict[str, str | None] = {"PERL5OPT": None, "LC_ALL": "C", "PERL_HASH_SEED": "0"}
PERL_SHIM = (
    "shift; my $f = shift;\n"
    f"$SIG{{$_}} = sub {{}} for qw({SHIM_SIGNALS});\n"
    f"for (qw({' '.join(SHIM_START_ENV)})) {{ my $k = '{protocol.SHIM_STASH}' . $_;"
    " if (exists $ENV{$k}) { $ENV{$_} = delete $ENV{$k} } else { delete $ENV{$_} } }\n"
    f"my $d = delete $ENV{{'{protocol.SHIM_STASH}PDEATHSIG'}};\n"  # "SYSCALL SIGNAL": a node's worker dies with its shim
    "my $p = fork;\n"
    'defined $p or die "orchestrator-shim: cannot fork: $!\\n";\n'
    "if (!$p && $d) { my ($n, $s) = split / /, $d; syscall($n + 0, 1, $s + 0) }\n"  # prctl(PR_SET_PDEATHSIG, s)
    'if (!$p) { exec {$ARGV[0]} @ARGV; print STDERR "orchestrator-shim: cannot run $ARGV[0]: $!\\n"; exit 127 }\n'
    "1 while waitpid($p, 0) < 0 && $! == 4;\n"  # EINTR (4 on Linux, macOS, the BSDs): $!{EINTR} would load Errno.pm, 3 ms
    "my $s = $?; exit 255 if $s == -1;\n"
    "my $sig = $s & 127;\n"
    "if (open my $h, '>', $f) { print $h ($sig ? \"signal $sig\\n\" : 'exit ' . ($s >> 8) . \"\\n\"); close $h }\n"
    "exit($sig ? 128 + $sig : $s >> 8);\n"
)
# Without Perl: a shell shim, which records $? as an exit code and never signals itself. There a
# worker killed by signal N reads as "exited with 128+N" (the shell cannot know better).
SHIM_SCRIPT = f'f=$1; shift; trap : {SHIM_SIGNALS}; "$@"; r=$?; printf \'exit %s\\n\' "$r" >"$f"; exit "$r"'
SHIM_NAME = "orchestrator-shim"  # the shim's first argument: how it shows in ps, and how a restarted server knows it
SHELL = "/bin/sh"


def find_perl() -> str | None:
    """The Perl the shim runs under (the system's first: a user's perlbrew on PATH may be slow
    to start), or None when the machine has none (then the shell shim is used)."""
    for candidate in ("/usr/bin/perl", shutil.which("perl")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


PERL = find_perl()


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
    ended_at: float | None = None  # an adopted process's end: when its shim wrote the exit file
    # A local process has no node, never waits in a queue and is never lost (executor.AttemptHandle).
    node: str | None = None
    queued: bool = False
    lost: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
                found = read_exit_file(self.exit_file) if self.exit_file is not None else None
                self.code = shim if found is None else found
            return self.code
        if not process_alive(self.pid, self.start_id):
            found = read_exit_file(self.exit_file) if self.exit_file else None
            self.code = -signal.SIGKILL if found is None else found
            try:
                self.ended_at = os.stat(self.exit_file).st_mtime if found is not None and self.exit_file else time.time()
            except OSError:
                self.ended_at = time.time()
        return self.code

    @property
    def exited(self) -> bool:
        """Whether it is known to have ended, without reaping it (safe from any thread)."""
        if self.popen is not None:
            return self.popen.returncode is not None
        return self.code is not None or not process_alive(self.pid, self.start_id)


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
    ) -> ProcessHandle:
        """Start ``argv`` (a list, never a shell string) with its output appended to ``log_path``.
        With ``exit_file``, under the shim, which writes the exit status there. With
        ``parent_death_signal`` (Linux; a cluster node's attempts), the shim gets that signal when
        the calling thread ends, and the perl shim sets the same for the worker it starts."""
        if not argv:
            raise ValueError("empty command")
        full_env = dict(env)
        full_env[TAG_VAR] = tag
        program = resolve_command(argv[0], full_env.get("PATH"))
        command = [program, *argv[1:]]
        if exit_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(exit_file)  # a stale status must never pass for this run's
            if self.perl is not None:
                command = [self.perl, "-e", PERL_SHIM, SHIM_NAME, str(exit_file), *command]
                if parent_death_signal is not None and PRCTL_SYSCALL is not None:
                    full_env[protocol.SHIM_STASH + "PDEATHSIG"] = f"{PRCTL_SYSCALL} {int(parent_death_signal)}"
                for name, value in SHIM_START_ENV.items():  # the shim's own start; the worker gets its own back
                    if name in full_env:
                        full_env[protocol.SHIM_STASH + name] = full_env.pop(name)
                    if value is not None:
                        full_env[name] = value
            else:
                command = [SHELL, "-c", SHIM_SCRIPT, SHIM_NAME, str(exit_file), *command]
        if parent_death_signal is not None and sys.platform.startswith("linux"):
            _prctl()  # loaded before the fork: the child only calls it
        started_at = time.time()  # before the fork: every descendant is younger than this
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            popen = subprocess.Popen(
                command,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                close_fds=True,
                preexec_fn=None
                if parent_death_signal is None
                else functools.partial(set_parent_death_signal, parent_death_signal),
            )
        finally:
            os.close(log_fd)
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(popen.pid)
            except OSError:  # old kernel: fall back to polling
                pidfd = None
        return ProcessHandle(
            pid=popen.pid,
            tag=tag,
            popen=popen,
            started_at=started_at,
            pidfd=pidfd,
            start_id=process_start_id(popen.pid),
            exit_file=exit_file,
        )

    def adopt(self, pid: int, start_id: str | None, *, tag: str, started_at: float, exit_file: Path | None) -> ProcessHandle:
        """A handle on a shim a previous server started. If it has ended (or ``pid`` now belongs
        to another process), the handle's status is already read from the exit file."""
        handle = ProcessHandle(pid=pid, tag=tag, popen=None, started_at=started_at, start_id=start_id, exit_file=exit_file)
        if hasattr(os, "pidfd_open"):
            try:
                handle.pidfd = os.pidfd_open(pid)
            except OSError:
                handle.pidfd = None
        # Checked after the pidfd is open: a pidfd on a reused pid is closed again at once.
        if not process_alive(pid, start_id):
            self.release(handle)
        handle.poll()
        return handle

    def wait(self, handle: ProcessHandle, timeout: float | None, wake: Wakeup | None = None) -> int | None:
        """The return code, or None if still running after ``timeout`` seconds (or once ``wake``
        is set). With a pidfd this blocks without polling, so idle worker threads cost nothing."""
        if handle.popen is None:
            return self._wait_adopted(handle, timeout, wake)
        if handle.pidfd is not None and handle.popen.returncode is None:
            fds = [handle.pidfd] + ([wake.fileno()] if wake is not None else [])
            ready, _, _ = select.select(fds, [], [], timeout)
            if handle.pidfd not in ready:
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
        """Not our child, so no waitpid: its pidfd (or polling) says when it ends, its exit file how."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while handle.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if handle.pidfd is not None:
                fds = [handle.pidfd] + ([wake.fileno()] if wake is not None else [])
                select.select(fds, [], [], left)
            else:
                step = 0.05 if left is None else min(0.05, left)
                if wake is not None and wake.wait(step):
                    return handle.poll()
                if wake is None:
                    time.sleep(step)
            if wake is not None and wake.is_set():
                return handle.poll()
        return handle.code

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
            if handle.poll() is not None:
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

    def __init__(self, *, perl: str | None = PERL) -> None:
        self.perl = perl  # None: the shell shim (a signal death then reads as exit 128+N)
        # Workers finishing together share one scan of the process table (group commit); a
        # scan costs the same for one tag or twenty, so each waits SWEEP_GATHER for company.
        self._sweeper: GroupCommit[tuple[str, float]] = GroupCommit(self._sweep_batch, gather=SWEEP_GATHER)

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

    def sweep_prefix(self, prefix: str, rounds: int = 20, *, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """SIGKILL every process whose tag starts with ``prefix`` (a whole job tree's, after a
        server crash), except those whose tag is in ``keep``; returns how many were found."""
        kept = frozenset(keep)
        killed = 0
        for _ in range(rounds):
            found = procscan.scan(lambda tag: tag.startswith(prefix) and tag not in kept)
            pids = [pid for tagged in found.values() for pid in tagged]
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
        return procscan.scan(set(tags).__contains__, since)


@dataclass
class FoundShim:
    """A live shim found by its tag, e.g. one spawned just before a server was killed."""

    pid: int
    tag: str
    start_id: str | None
    exit_file: Path
    attempt: int | None


def find_shims(tag_prefix: str) -> list[FoundShim]:
    """Live shims whose tag starts with ``tag_prefix``: the process table is the truth about
    what runs, whatever the records managed to say before a crash."""
    found = []
    for proc in procscan.tagged_processes(lambda tag: tag.startswith(tag_prefix), details=True):
        pid, tag, env, argv = proc.pid, proc.tag, proc.environ or {}, proc.argv or []
        if len(argv) < 6 or argv[1] not in ("-c", "-e") or argv[3] != SHIM_NAME:
            continue  # a worker or its descendant, not the shim (of this server or an earlier one)
        attempt = env.get(protocol.ATTEMPT, "")
        found.append(
            FoundShim(
                pid=pid,
                tag=tag,
                start_id=process_start_id(pid),
                exit_file=Path(argv[4]),
                attempt=int(attempt) if attempt.isdigit() else None,
            )
        )
    return found


def read_exit_file(path: Path) -> int | None:
    """The status a shim recorded, in Popen's convention (negative: killed by that signal);
    None when there is none or it is incomplete (the shim was killed while writing it).

    The one reader of exit files. ``exit N`` / ``signal S`` is what the shim writes; a bare
    number is a file from an earlier server's shell shim, which wrote ``$?`` and re-raised
    129-192 on itself as signals: it reads as that server meant it. (A bare number could not
    be the new format: "147" meant SIGSTOP then and would mean exit 147 now.)"""
    try:
        text = read_small(path).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.endswith("\n"):
        return None
    word, _, number = text[:-1].partition(" ")
    if not number:
        word, number = "old", word
    if not number.isdigit() or len(number) > 3 or int(number) > 255:
        return None
    code = int(number)
    if word == "exit":
        return code
    if word == "signal":
        return -code if code > 0 else None
    if word == "old":
        return -(code - 128) if 128 < code < 193 else code
    return None


# How long the first of several finishing workers waits for others to share its /proc scan.
# The engine sweeps after a worker's slot is free, so nobody waits on this for a slot.
SWEEP_GATHER = 0.01


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


# prctl's system call number, for the perl shim (which loads no module to find it); None: not Linux
# or an architecture not listed (the shim's worker then does not die with it; the tag sweep remains).
PRCTL_SYSCALL = (
    {"x86_64": 157, "aarch64": 167, "riscv64": 167, "i686": 172, "armv7l": 172}.get(os.uname().machine)
    if sys.platform.startswith("linux")
    else None
)
_PR_SET_PDEATHSIG = 1


@functools.lru_cache(maxsize=1)
def _prctl() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def set_parent_death_signal(signum: int) -> bool:
    """Linux: have the kernel send ``signum`` to this process when the thread that started it ends
    (prctl PR_SET_PDEATHSIG), so a cluster node's processes die with it. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(_prctl()(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def python_executable() -> str:
    """The interpreter running us: children start with it, not a PATH shim."""
    return sys.executable
