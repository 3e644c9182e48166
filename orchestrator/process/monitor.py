"""Resource caps that hold for a worker's whole process tree.

Where the machine allows, the kernel holds the memory and process caps (each attempt in a cgroup
of its own, process/cgroups.py): the monitor reads the cgroup and ends a worker whose cgroup's OOM killer
fired or whose fork was refused at ``pids.max`` (a fork bomb would otherwise sit at the cap), e.g.
``memory cap: killed by the kernel at 200 MB (workers.max_memory_mb, cgroup v1)``.

Elsewhere (an ordinary user on a cgroup v1 machine, no delegated v2 subtree) those caps are
sampled: one thread samples every running worker each ``workers.monitor_interval`` seconds
through the executor (locally: the cgroup where there is one, else one pass over the process
table finds every process carrying a worker's tag), and a breach ends the worker, e.g.
``memory cap: 9.1 GB > 8 GB (workers.max_memory_mb, sampled)``.

The log's size is read every interval too, and the worker's disk use (:class:`Footprint`: its
folder, its worktree's private git dir, its TMPDIR, and what the workers' object store grew by since
its attempt began) as well unless walking those folders would take more than DISK_SHARE of a CPU
(:class:`DiskPacer`: a large checkout is walked seconds apart); and no single file
the worker writes can grow past the larger of the two caps (RLIMIT_FSIZE, when both are set). So
a writer is stopped at the cap plus at most what it writes between two readings (and the kill ladder's
first rung: a cap breach ends the worker with SIGKILL at once, it has nothing left to save); a
log whose cap is that file-size limit stops at the cap exactly. Each breach ends the worker
through the kill ladder with its own reason; it is not retried.

Each pass also keeps a worker's :class:`Usage`: peak memory and processes, and the
CPU time of its tree (user + system, plus the children_* times of descendants already
reaped). CPU is sampled, so a worker's figure misses at most what it burnt after the
last sample before it exited.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..workspace.filesystem import FOLDER_FLAGS
from .cgroups import DISK_CAP, Enforced, Limits, kernel_breach
from .cgroups import Usage as CgroupUsage
from .executor import Executor, Sample, cpu_seconds, sample_trees
from .runner import ProcessHandle, ProcessRunner, Wakeup

log = logging.getLogger("orchestrator.monitor")
MB = 1024 * 1024
# A usage entry not sampled for this long belongs to a worker whose end the engine
# already handled (it popped the entry and a late sample made it again): dropped.
STALE_USAGE = 120.0
CAPPED = "stopped at a worker's cap"  # how a helper's reason starts when a cap ended it (HelperWatch; the cap after)
# The most of one CPU that reading the workers' disk use may take, on average: a walk of a checkout
# of tens of thousands of files costs tens of milliseconds, every interval, for every worker.
DISK_SHARE = 0.1


@dataclass(frozen=True)
class Footprint:
    """What ``workers.max_disk_mb`` counts of one attempt: the folders that are the worker's alone
    (its checkout, its worktree's private git dir, its TMPDIR) whole, and the growth of a folder
    it shares (``shared``: its job tree's object store, git/worker_objects.py)
    since the attempt began (``shared_before``, read then).

    The store is one for every sandboxed worker of the tree and says nothing of who wrote what, so
    its growth counts against each worker running while it grew: a worker never pays for what was
    there before it started, and a writer cannot hide its objects there; a sibling running beside a
    writer may be stopped with it (the lesser wrong: taken objects move into the repository's store)."""

    own: tuple[Path, ...]
    shared: Path | None = None
    shared_before: int = 0

    @classmethod
    def start(cls, own: tuple[Path, ...], shared: Path | None) -> Footprint:
        """At an attempt's start: the shared folder's size now is what the attempt is not charged for."""
        return cls(own, shared, folder_bytes(shared) if shared is not None else 0)

    def bytes(self, shared_sizes: dict[Path, int] | None = None) -> int:
        """What the cap counts now. ``shared_sizes``: the shared folders' sizes already read in this
        pass (one walk of a repository's store serves all its workers), filled in as they are read."""
        total = sum(folder_bytes(path) for path in self.own)
        if self.shared is not None:
            sizes = {} if shared_sizes is None else shared_sizes
            if self.shared not in sizes:
                sizes[self.shared] = folder_bytes(self.shared)
            total += max(0, sizes[self.shared] - self.shared_before)
        return total


class DiskPacer:
    """When each worker's (or helper's) disk use is read again: every interval while its walk is
    cheap; when walking all that are watched would take more than DISK_SHARE of a CPU, each as often
    as that allows (checkouts of tens of thousands of files: seconds apart). Between readings its disk
    cap is not judged; RLIMIT_FSIZE still stops every single file at the cap."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._cost: dict[str, float] = {}  # CPU seconds its last walk took
        self._due: dict[str, float] = {}  # monotonic time its next walk is due

    def read(self, key: str, reading: Callable[[], int]) -> int | None:
        """``reading()`` when ``key``'s walk is due (timed, and the next one set by what all the
        walks cost), else None."""
        now = time.monotonic()
        if now < self._due.get(key, 0.0):
            return None
        started = time.thread_time()
        value = reading()
        self._cost[key] = time.thread_time() - started
        self._due[key] = now + max(self.interval, sum(self._cost.values()) / DISK_SHARE)
        return value

    def keep(self, keys: Iterable[str]) -> None:
        """Forget every key but ``keys`` (the ended workers'), so their walks no longer count."""
        kept = set(keys)
        for table in (self._cost, self._due):
            for key in [k for k in table if k not in kept]:
                del table[key]


@dataclass(frozen=True)
class Watched:
    """A running worker as the monitor sees it."""

    key: str
    tag: str
    started_at: float
    log_path: Path
    worker_dir: Path
    abort: Callable[[str], None]  # ends the worker with this reason
    shim_pid: int | None = None  # the orchestrator's own shim: not counted against the worker's caps
    pid: int | None = None  # the attempt's top process (its shim, a sandbox's launcher, or the worker)
    footprint: Footprint | None = None  # what its disk cap counts (None: its folder alone)

    def disk_bytes(self, shared_sizes: dict[Path, int] | None = None) -> int:
        return self.footprint.bytes(shared_sizes) if self.footprint is not None else folder_bytes(self.worker_dir)


@dataclass(frozen=True)
class Caps:
    memory_mb: int
    processes: int
    log_mb: int
    disk_mb: int

    @property
    def limits(self) -> Limits:
        return Limits.from_mb(self.memory_mb, self.processes, self.log_mb, self.disk_mb)

    def breach(self, rss: int, procs: int, log_size: int, disk: int | None, sample: Sample | None = None) -> str | None:
        """The first cap the sample is over, as a sentence; None when within every cap. A cap the
        kernel holds (``sample.enforced``) is judged by what the kernel did, not by the reading.
        The log and the folder breach at their cap: the file-size limit may hold one exactly there."""
        enforced = sample.enforced if sample is not None and sample.enforced is not None else Enforced()
        if sample is not None:
            from_kernel = kernel_breach(_usage(sample), self.limits, enforced)
            if from_kernel:
                return from_kernel
        if self.memory_mb and not enforced.memory.kernel and rss > self.memory_mb * MB:
            return f"memory cap: {rss / MB:.0f} MB > {self.memory_mb} MB (workers.max_memory_mb, sampled)"
        if self.processes and not enforced.processes.kernel and procs > self.processes:
            return f"process cap: {procs} processes > {self.processes} (workers.max_processes, sampled)"
        if self.log_mb and log_size >= self.log_mb * MB:
            return f"log cap: {log_size / MB:.0f} MB >= {self.log_mb} MB (workers.max_log_mb, {enforced.log.value})"
        if self.disk_mb and disk is not None and disk >= self.disk_mb * MB:
            return (
                f"{DISK_CAP}: {disk / MB:.0f} MB in its folder, git dir, TMPDIR and new objects >= {self.disk_mb} MB "
                "(workers.max_disk_mb, sampled)"
            )
        return None

    def files_breach(self, log_path: Path, footprint: Footprint) -> str | None:
        """The log or disk cap a worker's files are at now (one walk of what its cap counts), or None."""
        if not self.log_mb and not self.disk_mb:
            return None
        return self.breach(0, 0, _size(log_path), footprint.bytes() if self.disk_mb else None)


@dataclass(frozen=True)
class HelperWatch:
    """The workers' caps on a process the orchestrator starts on a worker's work (a quality gate,
    ``git.setup`` and ``git.teardown``, a scoring command, a resolver): the same caps by the same
    means as the worker's own attempt. ``runner.spawn(limits=watch.limits)`` has the kernel hold what
    it can (a cgroup's memory and process caps, RLIMIT_FSIZE); :meth:`wait` reads it every
    ``interval`` as the monitor reads a worker: a fork refused at ``pids.max`` or an OOM kill ends it
    (a fork bomb would otherwise sit at the cap), and where no cgroup holds them its memory and
    processes are sampled, as are its log and its disk use (``footprint``), each breach named as
    the monitor names it (``... (workers.max_processes, sampled)``)."""

    caps: Caps
    interval: float
    footprint: Footprint | None = None  # what its disk cap counts (None: none counted)

    @classmethod
    def of(cls, limits: Limits, interval: float, folders: tuple[Path, ...] = ()) -> HelperWatch:
        """The watch of ``limits`` (a worker's caps, Confinement.limits), its disk cap counting ``folders``."""
        caps = Caps(limits.memory // MB, limits.processes, limits.log // MB, limits.disk // MB)
        return cls(caps, interval, Footprint(folders) if folders else None)

    @property
    def limits(self) -> Limits:
        return self.caps.limits

    def breach(self, runner: ProcessRunner, handle: ProcessHandle, pacer: DiskPacer) -> str | None:
        """The cap ``handle``'s running tree is over now, or None (its disk use read when ``pacer``
        says it is due)."""
        sample = sample_trees(runner, [handle]).get(handle.tag) or Sample()
        disk = None
        if self.footprint is not None and self.caps.disk_mb:
            disk = pacer.read(handle.tag, self.footprint.bytes)
        log_size = _size(handle.log_path) if handle.log_path is not None else 0
        return self.caps.breach(sample.rss, sample.processes, log_size, disk, sample)

    def ended(self, handle: ProcessHandle) -> str | None:
        """The cap an ended ``handle`` was at: what the kernel held it at (a refused fork, an OOM
        kill, SIGXFSZ), else its log or disk footprint at the cap (a writer quicker than a sample)."""
        found = handle.cap_hit
        if found is None and self.footprint is not None:
            found = self.caps.files_breach(handle.log_path or Path(os.devnull), self.footprint)
        return found

    def wait(
        self, runner: ProcessRunner, handle: ProcessHandle, timeout: float | None, wake: Wakeup | None = None
    ) -> tuple[int | None, str | None]:
        """``runner.wait`` with the caps read every ``interval``: (its code, None) once it ended; (None,
        the breach) when it is over a cap (the caller ends it); (None, None) at ``timeout`` or ``wake``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pacer = DiskPacer(self.interval)
        while True:
            step = self.interval if deadline is None else min(self.interval, max(0.0, deadline - time.monotonic()))
            code = runner.wait(handle, step, wake)
            if code is not None:
                return code, None
            reason = self.breach(runner, handle, pacer)
            if reason:
                log.warning("%s: %s", handle.tag, reason)
                return None, reason
            if (wake is not None and wake.is_set()) or (deadline is not None and time.monotonic() >= deadline):
                return None, None


@dataclass
class Usage:
    """What a worker's process tree used, over all its attempts (the engine copies it
    into the WorkerRecord when the worker's process ends)."""

    peak_rss: int = 0  # bytes
    peak_processes: int = 0
    cpu_before: float = 0.0  # CPU seconds of the attempts before the current one
    cpu_attempt: float = 0.0  # the most CPU seconds seen for the current attempt
    attempt_started: float = 0.0  # identifies the current attempt
    seen: float = 0.0  # monotonic time of the last sample

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_before + self.cpu_attempt

    def record(self, attempt_started: float, rss: int, processes: int, cpu: float) -> None:
        """Fold in one sample. CPU only grows within an attempt, so the largest sample is
        the best estimate (a descendant reaped by init takes its time with it); a new
        attempt starts counting from zero on top of the earlier ones."""
        if attempt_started != self.attempt_started:
            self.cpu_before += self.cpu_attempt
            self.cpu_attempt = 0.0
            self.attempt_started = attempt_started
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_processes = max(self.peak_processes, processes)
        self.cpu_attempt = max(self.cpu_attempt, cpu)


class ResourceMonitor:
    """Samples running workers on one thread; calls ``abort`` on a breach."""

    def __init__(
        self,
        executor: Executor,
        caps: Caps,
        interval: float,
        running: Callable[[], list[Watched]],
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.tick = tick  # also run every interval (the engine's tree deadlines)
        self.executor = executor  # measures the attempts (executor.Executor.sample)
        self.caps = caps
        self.interval = interval
        self.running = running
        self._disk = DiskPacer(interval)  # this thread's alone
        # Keyed by the worker's tag: unique across root trees, whose worker keys repeat. Written
        # by this thread, taken by worker threads (``take_usage``): both under ``_usage_lock``.
        self.usage: dict[str, Usage] = {}
        self._usage_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.tick is not None:
                    self.tick()
                self.sample()
            except Exception:  # a monitor that dies silently would lift every cap
                log.exception("resource sample failed; trying again next interval")

    def sample(self) -> None:
        """One pass: measure every running worker and stop those over a cap."""
        watched = self.running()
        if not watched:
            return
        found = self.executor.sample(watched)
        now = time.monotonic()
        shared_sizes: dict[Path, int] = {}  # a repository's object store, walked once a pass
        self._disk.keep(worker.tag for worker in watched)
        for worker in watched:
            got = found.get(worker.tag) or Sample()
            with self._usage_lock:
                usage = self.usage.setdefault(worker.tag, Usage())
                usage.record(worker.started_at, got.rss, got.processes, got.cpu_seconds)
                usage.seen = now
            disk = self._disk.read(worker.tag, functools.partial(worker.disk_bytes, shared_sizes)) if self.caps.disk_mb else None
            reason = self.caps.breach(got.rss, got.processes, _size(worker.log_path), disk, got)
            if reason:
                log.warning("%s: %s", worker.key, reason)
                worker.abort(reason)
        with self._usage_lock:
            for tag in [t for t, u in self.usage.items() if now - u.seen > STALE_USAGE]:
                del self.usage[tag]

    def peaks(self, tags: Iterable[str]) -> dict[str, int]:
        """The peak RSS sampled so far of each of these workers that has been sampled (process/admission.py)."""
        with self._usage_lock:
            return {tag: usage.peak_rss for tag in tags if (usage := self.usage.get(tag)) is not None}

    def take_usage(self, tag: str) -> Usage | None:
        """What a worker used, removed from the monitor (its process ended); None if never sampled.
        Safe from any thread: the sample that may be running holds the same lock."""
        with self._usage_lock:
            return self.usage.pop(tag, None)


def folder_bytes(path: Path, limit: int = 200_000) -> int:
    """Bytes in the files below ``path`` (each file's own size; a link's own: none below ``path`` is
    followed, ``path`` itself may be one, a checkout outside the workspace); stops counting after
    ``limit`` files. Each folder is opened by its name in the one above it, so a file's
    size costs one look-up of its own name, not of its whole path again, and a folder a worker swaps
    for a link while it is walked is not followed. At most HELD_FOLDERS are held open at once (the
    chain down to the one being read); a folder deeper than that is opened by its path below the
    deepest one held (one whose path from there passes PATH_MAX is not reached, as no walk by path
    reaches one whose whole path does)."""
    try:
        top = os.open(path, FOLDER_FLAGS & ~os.O_NOFOLLOW)
    except OSError:
        return 0
    count = _Count(limit)
    chain = [(top, count.read(top))]  # the folders held open, each with the subfolders still to read
    try:
        while chain and not count.full:
            fd, subfolders = chain[-1]
            if not subfolders:
                os.close(chain.pop()[0])
            elif len(chain) < HELD_FOLDERS:
                with contextlib.suppress(OSError):  # gone, or swapped for a link, since it was listed
                    child = os.open(subfolders.pop(), FOLDER_FLAGS, dir_fd=fd)
                    chain.append((child, count.read(child)))
            else:
                count.below(fd, subfolders.pop())
    finally:
        for fd, _ in chain:
            os.close(fd)
    return count.total


HELD_FOLDERS = 32  # folders one walk holds open at once: a worker's deep nesting costs no more descriptors


class _Count:
    """The files a walk (folder_bytes) has counted, and their bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.seen = 0

    @property
    def full(self) -> bool:
        return self.seen >= self.limit

    def read(self, fd: int) -> list[str]:
        """Count the files of the open folder ``fd``; the names of its subfolders."""
        subfolders: list[str] = []
        total, seen, limit = self.total, self.seen, self.limit  # (locals: this loop runs once a file)
        with contextlib.suppress(OSError), os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append(entry.name)
                        continue
                    total += entry.stat(follow_symlinks=False).st_size  # (by its name in ``fd``)
                except OSError:
                    continue
                seen += 1
                if seen >= limit:
                    break
        self.total, self.seen = total, seen
        return subfolders

    def below(self, anchor: int, name: str) -> None:
        """Count the folder ``name`` of ``anchor`` and every folder below it, each opened by its path
        from ``anchor`` and closed once read (deeper than a walk holds folders open)."""
        pending = [name]
        while pending and not self.full:
            relative = pending.pop()
            try:
                fd = os.open(relative, FOLDER_FLAGS, dir_fd=anchor)
            except OSError:
                continue
            try:
                pending.extend(f"{relative}/{sub}" for sub in self.read(fd))
            finally:
                os.close(fd)


def _usage(sample: Sample) -> CgroupUsage:
    return CgroupUsage(oom_kills=sample.oom_kills, forks_refused=sample.forks_refused)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


__all__ = [
    "CAPPED",
    "Caps",
    "DiskPacer",
    "Footprint",
    "HelperWatch",
    "ResourceMonitor",
    "Usage",
    "Watched",
    "cpu_seconds",
    "folder_bytes",
]
