"""Live progress in a terminal: a redrawn table on a TTY, one line per change otherwise."""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .models import JobRecord, WorkerRecord

ICONS = {
    "pending": "·", "running": "▶", "success": "✔", "recursive_success": "✔", "failed": "✘",
    "timeout": "⏱", "cancelled": "■", "skipped": "–",
}


class ProgressView:
    """Shows a job tree's workers as they change."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._drawn = 0
        self._seen: dict[str, str] = {}
        self._started = time.monotonic()

    def update(self, jobs: list[JobRecord], workers: list[WorkerRecord]) -> None:
        if self.tty:
            self._redraw(jobs, workers)
        else:
            self._lines(workers)

    def _lines(self, workers: list[WorkerRecord]) -> None:
        for worker in workers:
            state = worker.status.value
            if self._seen.get(worker.key) == state:
                continue
            self._seen[worker.key] = state
            extra = f" ({worker.exit_reason})" if worker.status.terminal and worker.exit_reason else ""
            self.stream.write(f"[{self._elapsed()}] {worker.key:<28} {state}{extra}\n")
        self.stream.flush()

    def _redraw(self, jobs: list[JobRecord], workers: list[WorkerRecord]) -> None:
        done = sum(1 for w in workers if w.status.terminal)
        rows = [f"{len(jobs)} job(s), {done}/{len(workers)} workers done  [{self._elapsed()}]"]
        for worker in workers[-40:]:
            icon = ICONS.get(worker.status.value, "?")
            took = f"{worker.duration:.1f}s" if worker.duration is not None else ""
            indent = "  " * worker.depth
            rows.append(f" {icon} {indent}{worker.name:<18} {worker.status.value:<18} {took:>7}  {worker.task[:50]}")
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
        self.stream.write("\n".join(rows) + "\n")
        self.stream.flush()
        self._drawn = len(rows)

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._started:6.1f}s"


def summary(doc: dict[str, Any]) -> str:
    progress = doc["progress"]
    tree = doc.get("tree", {})
    return (
        f"Job {doc['job_id']} {doc['status']}: {progress['succeeded']}/{progress['total']} workers succeeded"
        + (f" ({tree['workers']} in the whole tree, {tree['jobs']} job(s), depth {tree['max_depth']})" if tree.get("jobs", 1) > 1 else "")
    )
