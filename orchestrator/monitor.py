"""Resource caps that hold for a worker's whole process tree.

One thread samples every running worker each ``workers.monitor_interval``
seconds: one pass over the process table finds every process carrying a
worker's tag (so a double-forked grandchild counts against its worker), then
the tree's resident memory and process count, the log's size and the worker
folder's disk use (less often: walking a folder costs more). A breach ends the
worker through the kill ladder with a reason of its own, e.g.
``memory cap: 9.1 GB > 8 GB (workers.max_memory_mb)``; it is not retried.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .runner import ProcessRunner, rss_bytes

log = logging.getLogger("orchestrator.monitor")
MB = 1024 * 1024
DISK_EVERY = 8  # samples between two walks of a worker's folder


@dataclass(frozen=True)
class Watched:
    """A running worker as the monitor sees it."""

    key: str
    tag: str
    started_at: float
    log_path: Path
    worker_dir: Path
    abort: Callable[[str], None]  # ends the worker with this reason


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


class ResourceMonitor:
    """Samples running workers on one thread; calls ``abort`` on a breach."""

    def __init__(self, runner: ProcessRunner, caps: Caps, interval: float, running: Callable[[], list[Watched]],
                 tick: Callable[[], None] | None = None) -> None:
        self.tick = tick  # also run every interval (the engine's tree deadlines)
        self.runner = runner
        self.caps = caps
        self.interval = interval
        self.running = running
        self.peaks: dict[str, tuple[int, int]] = {}  # worker key -> (peak RSS bytes, peak processes)
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
        since = min(w.started_at for w in watched)
        pids = self.runner.tagged_many([w.tag for w in watched], since)
        walk_disk = self._samples % DISK_EVERY == 0
        for worker in watched:
            tree = pids.get(worker.tag, [])
            rss = sum(rss_bytes(pid) for pid in tree)
            peak_rss, peak_procs = self.peaks.get(worker.key, (0, 0))
            self.peaks[worker.key] = (max(peak_rss, rss), max(peak_procs, len(tree)))
            disk = folder_bytes(worker.worker_dir) if walk_disk else None
            reason = self.caps.breach(rss, len(tree), _size(worker.log_path), disk)
            if reason:
                log.warning("%s: %s", worker.key, reason)
                worker.abort(reason)


def folder_bytes(path: Path, limit: int = 200_000) -> int:
    """Bytes in a folder, links not followed; stops counting after ``limit`` entries."""
    total = 0
    seen = 0
    for base, dirs, files in os.walk(path, followlinks=False):
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


__all__ = ["Caps", "ResourceMonitor", "Watched", "folder_bytes"]
