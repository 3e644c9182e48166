"""The seam between the engine and the place a worker attempt runs.

An :class:`Executor` starts one attempt (an argv, a folder, an environment, a log file, a
tag and an exit file), waits for it with a timeout that a wake-up cuts short, ends it by
the kill ladder, re-adopts one a previous server started, samples what running attempts
use, and sweeps whatever is left carrying a tag. The engine and ``execution`` use nothing
else to run a worker. :class:`LocalExecutor` (processes on this machine: process/runner.py's
shim, kill ladder and sweep, process/procscan.py's process table) is today's only implementation;
orchestrator.testing.FakeExecutor is its test double, shipped for users' tests.

What the interface promises, whatever runs the attempt (the contract tests check both):

* ``start`` raises ``CommandNotFound`` (a missing command), ``OSError`` or ``ValueError``
  (an empty argv) when the attempt cannot start; nothing is left running then.
* An attempt's output (stdout and stderr) is appended to ``log_path`` as it is produced.
* ``wait`` returns the attempt's status once it has ended (>= 0: its exit code; < 0: killed
  by that signal), or None when ``timeout`` passed or ``wake`` was set first.
* ``terminate`` is the kill ladder: ``first_signal``, ``grace`` seconds, then SIGKILL; it
  returns the rung that ended the attempt ("none" when it had already ended), which the
  handle keeps as ``kill_rung``. "Already gone" is success.
* A remote executor's attempt may wait ``queued`` for a machine (its timeout starts when one
  starts it; ``wait`` returns None early when it does, so the record can name its ``node``), and
  may end ``lost`` (its machine stopped renewing its lease): retried, never counted twice.
  ``withhold`` takes queued attempts off every machine at once, before a cancel stops the running
  ones, whose freed slots would otherwise start them; each still ends by its ``terminate``.
* ``enforced`` says which enforcement held each cap (kernel cgroup v2 or v1, file-size limit, or
  sampled; None: not known), and ``cap_hit`` names a cap the kernel held the attempt at (its
  OOM killer, a refused fork, the file-size limit): the attempt failed by that cap.
* ``exit_file`` receives the true status; a restarted server finds a still-running attempt
  with ``find`` and takes it over with ``adopt``, or reads an ended one's exit file.

Handles are identified by ``id`` and ``tag``; ``pid`` is optional in spirit (a remote
executor's attempt has no local pid), though the local one always has it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .cgroups import Enforced, Limits
from .procscan import Memory, cpu_seconds, descendants, machine_memory, process_times, rss_bytes, sandbox_machinery
from .runner import CommandNotFound, ProcessHandle, ProcessRunner, Wakeup
from .sandbox import SandboxSpec
from .shim import Deadline, FoundAttempt


# A node as the seam's ``nodes()`` reports it; it lives here, not in the cluster package that
# publishes it, so the seam does not import the executors built on it.
@dataclass
class NodeInfo:
    """One node as it last described itself. ``alive`` is the server's reading: its heartbeat key
    still exists (it expires one lease after the node's last heartbeat)."""

    name: str
    host: str
    pid: int
    kinds: list[str]
    slots: int
    running: int = 0
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    attempts: list[str] = field(default_factory=list)  # ids of the attempts it runs now
    # Its machine's memory in bytes at its last heartbeat (0: a node too old to say): what the
    # server's admission by memory judges by (process/admission.py).
    memory_total: int = 0
    memory_available: int = 0
    version: str = ""  # its orchestrator version ("": a node too old to say)
    protocol: int = 1  # the cluster protocol it speaks (cluster/names.py; 1: a node too old to say)
    alive: bool = True
    # The server's reading: why it does not route to this node ("": it does), e.g. another protocol.
    refused: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


log = logging.getLogger("orchestrator.executor")


class AttemptHandle(Protocol):
    """One started (or re-adopted) attempt. Read-only to the engine; the executor updates it."""

    @property
    def id(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def tag(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def start_id(self) -> str | None: ...
    @property
    def exit_file(self) -> Path | None: ...
    @property
    def kill_rung(self) -> str | None: ...
    @property
    def code(self) -> int | None: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def exited(self) -> bool: ...
    @property
    def shim_pid(self) -> int | None: ...
    @property
    def node(self) -> str | None:
        """The machine that runs it (a remote executor's node name; None: this server)."""
        ...

    @property
    def queued(self) -> bool:
        """Waiting for a machine to start it (a remote executor); its timeout does not run yet."""
        ...

    @property
    def lost(self) -> bool:
        """Ended in an unknown state: the machine that ran it stopped answering (its lease expired).
        The attempt is retried under max_retries; a late result from it is ignored."""
        ...

    @property
    def enforced(self) -> Enforced | None:
        """Which enforcement held each cap (None: not known)."""
        ...

    @property
    def deadline_stop(self) -> str | None:
        """Who stopped it at its deadline, in words (its shim, its workspace's supervisor), as its exit
        file says: no server had. None: nothing did."""
        ...

    @property
    def cap_hit(self) -> str | None:
        """A cap the kernel held the attempt at, as a sentence (None: none)."""
        ...


class Sampled(Protocol):
    """What ``sample`` needs of a running attempt (monitor.Watched is one)."""

    @property
    def tag(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def shim_pid(self) -> int | None: ...
    @property
    def pid(self) -> int | None: ...


@dataclass(frozen=True)
class Sample:
    """One reading of an attempt's whole process tree (without the executor's own shim)."""

    rss: int = 0  # bytes
    processes: int = 0
    cpu_seconds: float = 0.0  # of the tree, shim included: CPU is the attempt's either way
    # From the attempt's cgroup, where it has one: what the kernel refused or killed at its caps,
    # and which enforcement held each cap (the monitor then leaves those caps to the kernel).
    oom_kills: int = 0
    forks_refused: int = 0
    enforced: Enforced | None = None


class Executor(Protocol):
    """Runs worker attempts. See the module docstring for what each method promises."""

    def start(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        tag: str,
        exit_file: Path | None = None,
        kind: str = "command",
        sandbox: SandboxSpec | None = None,
        deadline: Deadline | None = None,
    ) -> AttemptHandle:
        """Start an attempt of worker kind ``kind`` (a remote executor routes by it), inside
        ``sandbox`` when given (a machine that cannot sandbox refuses it: it never runs it unconfined).
        With ``deadline``, a local attempt's shim (or supervisor) stops it there if no server has
        (a remote attempt's node watches its own)."""
        ...

    def wait(self, handle: AttemptHandle, timeout: float | None, wake: Wakeup | None = None) -> int | None: ...

    def terminate(self, handle: AttemptHandle, *, grace: float, first_signal: int = signal.SIGTERM) -> str: ...

    def withhold(self, handles: Sequence[AttemptHandle]) -> None:
        """No machine starts the ``queued`` ones of ``handles`` from now; each still waits for its
        ``terminate`` (which then returns "none") to end, so its waiter sees it cancelled."""
        ...

    def release(self, handle: AttemptHandle) -> None:
        """Free what the handle holds (descriptors) once its attempt has ended."""
        ...

    def adopt(
        self, pid: int | None, start_id: str | None, *, tag: str, started_at: float, exit_file: Path | None
    ) -> AttemptHandle:
        """A handle on an attempt a previous server started; already ended if it has."""
        ...

    def find(self, tag_prefix: str) -> list[FoundAttempt]:
        """Attempts still running whose tag starts with ``tag_prefix`` (after a restart)."""
        ...

    def sample(self, attempts: Sequence[Sampled]) -> dict[str, Sample]:
        """What each running attempt's tree uses now, by tag (absent: nothing found)."""
        ...

    def sweep(self, tag: str, since: float = 0.0) -> None:
        """End whatever still carries ``tag`` (an ended attempt's leftovers)."""
        ...

    def sweep_prefix(self, prefix: str, *, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """End whatever carries a tag starting with ``prefix``, except tags in ``keep``; how many."""
        ...

    def nodes(self) -> list[NodeInfo] | None:
        """The machines that run attempts (a remote executor's node registry); None: this server."""
        ...

    def memory(self) -> list[Memory]:
        """The memory admission by memory reads: this machine's, or each live node's (a remote executor)."""
        ...

    def queue_outage(self) -> float | None:
        """Since when (epoch seconds) the queue that carries attempts to other machines has not
        answered; None: it answers, or there is none (attempts run here)."""
        ...

    def local_runner(self) -> ProcessRunner | None:
        """The runner its attempts run through on this machine (the AI planner runs its CLI
        through it too); None: they run elsewhere."""
        ...

    def close(self) -> None:
        """Stop what it runs of its own (the rq executor's listener thread): the engine's shutdown."""
        ...


class LocalExecutor:
    """Attempts as processes on this machine, under process/runner.py's shim; with ``limits``, each in a
    cgroup of its own where the machine allows (process/cgroups.py)."""

    def __init__(self, runner: ProcessRunner | None = None, limits: Limits | None = None) -> None:
        self.runner = runner or ProcessRunner()
        self.limits = limits
        if self.runner.perl is None:
            log.warning(
                "no perl on this machine: %s run under the /bin/sh shim, which records a worker "
                "killed by signal N as exit code 128+N (install perl to tell them apart)",
                "sandboxed workers" if self.runner.supervisor is not None else "workers",
            )

    def start(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        tag: str,
        exit_file: Path | None = None,
        kind: str = "command",
        sandbox: SandboxSpec | None = None,
        deadline: Deadline | None = None,
    ) -> ProcessHandle:
        return self.runner.spawn(
            argv,
            cwd=cwd,
            env=env,
            log_path=log_path,
            tag=tag,
            exit_file=exit_file,
            limits=self.limits,
            sandbox=sandbox,
            deadline=deadline,
        )

    def wait(self, handle: AttemptHandle, timeout: float | None, wake: Wakeup | None = None) -> int | None:
        return self.runner.wait(_local(handle), timeout, wake)

    def terminate(self, handle: AttemptHandle, *, grace: float, first_signal: int = signal.SIGTERM) -> str:
        return self.runner.terminate(_local(handle), grace=grace, first_signal=first_signal)

    def withhold(self, handles: Sequence[AttemptHandle]) -> None:
        """Nothing: a local attempt starts as it is started, never queued."""

    def release(self, handle: AttemptHandle) -> None:
        self.runner.release(_local(handle))

    def adopt(
        self, pid: int | None, start_id: str | None, *, tag: str, started_at: float, exit_file: Path | None
    ) -> ProcessHandle:
        return self.runner.adopt(pid or 0, start_id, tag=tag, started_at=started_at, exit_file=exit_file, limits=self.limits)

    def find(self, tag_prefix: str) -> list[FoundAttempt]:
        return self.runner.find(tag_prefix)

    def sample(self, attempts: Sequence[Sampled]) -> dict[str, Sample]:
        return sample_trees(self.runner, attempts)

    def sweep(self, tag: str, since: float = 0.0) -> None:
        self.runner.sweep(tag, since)

    def sweep_prefix(self, prefix: str, *, keep: set[str] | frozenset[str] = frozenset()) -> int:
        return self.runner.sweep_prefix(prefix, keep=keep)

    def nodes(self) -> list[NodeInfo] | None:
        return None  # this server runs every attempt

    def memory(self) -> list[Memory]:
        return [machine_memory()]

    def queue_outage(self) -> float | None:
        return None  # no queue: this server runs every attempt

    def local_runner(self) -> ProcessRunner | None:
        return self.runner

    def close(self) -> None:
        """Let go of the workers' supervisor, if any (it leaves once its last worker has ended)."""
        self.runner.close()


def _own_and_cpu(pids: Iterable[int], attempt: Sampled, bridged: bool) -> tuple[list[int], float]:
    """Of an attempt's processes ``pids``: the worker's own (not our shim, nor a sandbox's launcher,
    its init, the shim inside and, ``bridged``, its bridge), and the CPU of all of them (CPU is the
    attempt's either way), from one read of each one's stat."""
    own, cpu = [], 0.0
    for pid in pids:
        times = process_times(pid)
        if times is None:
            continue  # gone since the list was read
        cpu += times[0]
        if pid != attempt.shim_pid and not sandbox_machinery(pid, bridged=bridged, start_id=times[1]):
            own.append(pid)
    return own, cpu


def _local(handle: AttemptHandle) -> ProcessHandle:
    if not isinstance(handle, ProcessHandle):
        raise TypeError(f"LocalExecutor got a handle it did not make: {type(handle).__name__}")
    return handle


def sample_trees(runner: ProcessRunner, attempts: Sequence[Sampled]) -> dict[str, Sample]:
    """What each of ``attempts`` that ``runner`` started uses now, by tag: its cgroup's reading where it
    has one, else its tagged processes and its top process's descendants (one pass over the process table)."""
    found = {}
    scan = []  # attempts without a cgroup: found by their tag
    for attempt in attempts:
        cgroup = runner.confined.cgroup_of(attempt.tag)
        if cgroup is None:
            scan.append(attempt)
            continue
        # The cgroup counts every process of the tree, tagless ones too, and each page once.
        usage = cgroup.usage()
        own, cpu = _own_and_cpu(usage.pids, attempt, attempt.tag in runner.bridged)
        enforced = runner.confined.enforced_of(attempt.tag)
        found[attempt.tag] = Sample(usage.rss, len(own), cpu, usage.oom_kills, usage.forks_refused, enforced)
    if scan:
        since = min(a.started_at for a in scan)
        pids = runner.tagged_many([a.tag for a in scan], since)  # one pass over the process table
        # A confined attempt without a cgroup: also its top process's descendants (one that dropped its tag)
        limited = [a.pid for a in scan if a.pid and runner.confined.enforced_of(a.tag)]
        below = descendants(limited) if limited else {}
        for attempt in scan:
            top = [attempt.pid] if attempt.shim_pid is None and attempt.pid in below else []  # the worker itself
            tree = sorted(set(pids.get(attempt.tag, [])) | set(below.get(attempt.pid or 0, [])) | set(top))
            own, cpu = _own_and_cpu(tree, attempt, attempt.tag in runner.bridged)
            found[attempt.tag] = Sample(
                sum(rss_bytes(pid) for pid in own), len(own), cpu, enforced=runner.confined.enforced_of(attempt.tag)
            )
    return found


__all__ = [
    "AttemptHandle",
    "CommandNotFound",
    "Executor",
    "FoundAttempt",
    "LocalExecutor",
    "Sample",
    "Sampled",
    "Wakeup",
    "cpu_seconds",
    "sample_trees",
]
