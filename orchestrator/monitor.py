"""Resource caps that hold for a worker's whole process tree.

One thread samples every running worker each ``workers.monitor_interval``
seconds through the executor (locally: one pass over the process table finds every
process carrying a worker's tag, so a double-forked grandchild counts against its worker), then
the tree's resident memory and process count, the log's size and the worker
folder's disk use (less often: walking a folder costs more). A breach ends the
worker through the kill ladder with a reason of its own, e.g.
``memory cap: 9.1 GB > 8 GB (workers.max_memory_mb)``; it is not retried.

Each pass also keeps a worker's :class:`Usage`: peak memory and processes, and the
CPU time of its tree (user + system, plus the children_* times of descendants already
reaped). CPU is sampled, so a worker's figure misses at most what it burnt after the
last sample before it exited.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .executor import Executor, Sample, cpu_seconds

log = logging.getLogger("orchestrator.monitor")
MB = 1024 * 1024
DISK_EVERY = 8  # samples between two walks of a worker's folder
# A usage entry not sampled for this long belongs to a worker whose end the engine
# already handled (it popped the entry and a late sample made it again): dropped.
STALE_USAGE = 120.0


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


@dataclass(frozen=True)
class Caps:
    memory_mb: int
    processes: int
    log_mb: int
    disk_mb: int

    def breach(self, rss: int, procs: int, log_size: int, disk: int | None) -> str | None:
        """The first cap the sample is over, as a sentence; None when within every cap."""
        if self.memory_mb and rss > self.memory_mb * MB:
            return f"memory cap: {rss / MB:.0f} MB > {self.memory_mb} MB (workers.max_memory_mb)"
        if self.processes and procs > self.processes:
            return f"process cap: {procs} processes > {self.processes} (workers.max_processes)"
        if self.log_mb and log_size > self.log_mb * MB:
            return f"log cap: {log_size / MB:.0f} MB > {self.log_mb} MB (workers.max_log_mb)"
        if self.disk_mb and disk is not None and disk > self.disk_mb * MB:
            return f"disk cap: {disk / MB:.0f} MB in its folder > {self.disk_mb} MB (workers.max_disk_mb)"
        return None


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
        # Keyed by the worker's tag: unique across root trees, whose worker keys repeat. Written
        # by this thread, taken by worker threads (``take_usage``): both under ``_usage_lock``.
        self.usage: dict[str, Usage] = {}
        self._usage_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-monitor", daemon=True)
        self._samples = 0

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
        self._samples += 1
        found = self.executor.sample(watched)
        walk_disk = self._samples % DISK_EVERY == 0
        now = time.monotonic()
        for worker in watched:
            got = found.get(worker.tag) or Sample()
            with self._usage_lock:
                usage = self.usage.setdefault(worker.tag, Usage())
                usage.record(worker.started_at, got.rss, got.processes, got.cpu_seconds)
                usage.seen = now
            disk = folder_bytes(worker.worker_dir) if walk_disk else None
            reason = self.caps.breach(got.rss, got.processes, _size(worker.log_path), disk)
            if reason:
                log.warning("%s: %s", worker.key, reason)
                worker.abort(reason)
        with self._usage_lock:
            for tag in [t for t, u in self.usage.items() if now - u.seen > STALE_USAGE]:
                del self.usage[tag]

    def take_usage(self, tag: str) -> Usage | None:
        """What a worker used, removed from the monitor (its process ended); None if never sampled.
        Safe from any thread: the sample that may be running holds the same lock."""
        with self._usage_lock:
            return self.usage.pop(tag, None)


def folder_bytes(path: Path, limit: int = 200_000) -> int:
    """Bytes in a folder, links not followed; stops counting after ``limit`` entries."""
    total = 0
    seen = 0
    for base, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                continue
            seen += 1
            if seen >= limit:
                return total
    return total


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


__all__ = ["Caps", "ResourceMonitor", "Usage", "Watched", "cpu_seconds", "folder_bytes"]
