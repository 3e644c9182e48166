"""Performance figures for one job tree, computed from its records.

Pure functions: no clock and no I/O, so the same records always give the same
numbers. The caller passes ``now`` for attempts still running.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.models import JobRecord, WorkerRecord, WorkerStatus

# Statuses counted as failures in the totals. PENDING and RUNNING are neither.
FAILED_STATUSES = frozenset(
    {WorkerStatus.FAILED, WorkerStatus.TIMEOUT, WorkerStatus.CANCELLED, WorkerStatus.SKIPPED}
)


@dataclass(frozen=True)
class TimelineRow:
    """One worker attempt, in seconds from the tree's start, for a timeline."""

    worker_key: str
    worker: str
    job_id: str
    depth: int
    attempt: int
    start: float
    end: float
    status: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class TreeAnalytics:
    """Totals and timing figures for a job tree (or for one depth of it)."""

    started_at: float | None
    ended_at: float | None
    wall: float  # seconds, 0 when unknown
    busy: float  # sum of all attempts' durations (worker time)
    peak_concurrency: int  # most attempts running at the same instant
    parallel_efficiency: float | None  # busy / (wall * peak); None if wall == 0 or no attempts
    slowest_worker: str | None  # key of the worker with the longest duration
    slowest_duration: float | None
    level_waits: dict[int, float]  # per depth: first attempt start -> last attempt end
    bottleneck_level: int | None  # the depth with the longest span
    counts: dict[str, int]  # worker status value -> count
    total: int
    succeeded: int
    failed: int  # failed + timeout + cancelled + skipped
    success_rate: float  # succeeded / total, 0 when total is 0
    cost_usd: float | None  # None when no worker reported a cost
    tokens_in: int | None
    tokens_out: int | None
    rows: list[TimelineRow]


def analyse(
    jobs: list[JobRecord], workers: list[WorkerRecord], now: float | None = None
) -> TreeAnalytics:
    """Compute the tree's figures.

    Running attempts and jobs end at ``now``. Without ``now`` they end at the
    latest timestamp found in the records, which keeps this function pure.
    """
    if now is None:
        now = _latest_timestamp(jobs, workers)
    started_at, ended_at = _tree_span(jobs, workers, now)
    rows = timeline_rows(workers, now, origin=started_at or 0.0)
    wall = 0.0 if started_at is None or ended_at is None else max(0.0, ended_at - started_at)
    busy = sum(row.duration for row in rows)
    peak = peak_concurrency(rows)
    slowest, slowest_duration = _slowest(workers, now)
    waits = level_waits(rows)
    counts = Counter(w.status for w in workers)
    succeeded = sum(n for status, n in counts.items() if status.ok)
    failed = sum(n for status, n in counts.items() if status in FAILED_STATUSES)
    return TreeAnalytics(
        started_at=started_at,
        ended_at=ended_at,
        wall=wall,
        busy=busy,
        peak_concurrency=peak,
        parallel_efficiency=busy / (wall * peak) if rows and wall > 0 and peak > 0 else None,
        slowest_worker=slowest,
        slowest_duration=slowest_duration,
        level_waits=waits,
        bottleneck_level=max(waits, key=lambda d: (waits[d], -d)) if waits else None,
        counts={s.value: counts[s] for s in WorkerStatus if counts[s]},
        total=len(workers),
        succeeded=succeeded,
        failed=failed,
        success_rate=succeeded / len(workers) if workers else 0.0,
        cost_usd=_sum_known(w.cost_usd for w in workers),
        tokens_in=_sum_known(w.tokens_in for w in workers),
        tokens_out=_sum_known(w.tokens_out for w in workers),
        rows=rows,
    )


def worker_elapsed(worker: WorkerRecord, now: float | None) -> float | None:
    """A worker's duration; a running one counts up to ``now``."""
    if worker.duration is not None:
        return worker.duration
    if worker.started_at is None or now is None or worker.status.terminal:
        return None
    return max(0.0, now - worker.started_at)


def timeline_rows(
    workers: Iterable[WorkerRecord], now: float | None, *, origin: float = 0.0
) -> list[TimelineRow]:
    """One row per attempt, sorted by start; a running attempt ends at ``now``."""
    rows = []
    for w in workers:
        for attempt in w.attempts:
            end = attempt.ended_at if attempt.ended_at is not None else now
            end = attempt.started_at if end is None else max(end, attempt.started_at)
            rows.append(
                TimelineRow(
                    worker_key=w.key,
                    worker=w.name,
                    job_id=w.job_id,
                    depth=w.depth,
                    attempt=attempt.number,
                    start=attempt.started_at - origin,
                    end=end - origin,
                    status=_attempt_status(w, attempt.number),
                )
            )
    rows.sort(key=lambda r: (r.start, r.depth, r.worker_key, r.attempt))
    return rows


def peak_concurrency(rows: list[TimelineRow]) -> int:
    """Most attempts running at one instant.

    An attempt ending exactly when another starts does not overlap it, so
    back-to-back runs count as 1. Zero-length attempts never overlap anything;
    they count as 1 only when nothing else ran.
    """
    events = [(r.start, 1) for r in rows if r.end > r.start]
    events += [(r.end, -1) for r in rows if r.end > r.start]
    events.sort()  # at equal times -1 sorts first: ends before starts
    peak = running = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak or (1 if rows else 0)


def level_waits(rows: list[TimelineRow]) -> dict[int, float]:
    """Per depth, the wall span from its first attempt's start to its last one's end."""
    spans: dict[int, tuple[float, float]] = {}
    for r in rows:
        lo, hi = spans.get(r.depth, (r.start, r.end))
        spans[r.depth] = (min(lo, r.start), max(hi, r.end))
    return {depth: hi - lo for depth, (lo, hi) in sorted(spans.items())}


def text_timeline(rows: list[TimelineRow], width: int = 40) -> list[str]:
    """Gantt-style text bars, one line per row, for a Markdown code block.

    Each bar is scaled to the latest end among ``rows`` and is at least one
    cell wide, so zero-length attempts stay visible.
    """
    if not rows:
        return []
    width = max(1, width)
    span = max(r.end for r in rows)
    labels = [_label(r) for r in rows]
    label_width = max(len(label) for label in labels)
    return [
        f"{label:<{label_width}} |{_bar(r, span, width)}| "
        f"{r.start:7.1f}s → {r.end:7.1f}s  {r.status}"
        for label, r in zip(labels, rows)
    ]


def _bar(row: TimelineRow, span: float, width: int) -> str:
    if span <= 0:
        first, last = 0, 1
    else:
        first = min(width - 1, max(0, math.floor(row.start / span * width)))
        last = min(width, max(first + 1, math.ceil(row.end / span * width)))
    return "░" * first + "█" * (last - first) + "░" * (width - last)


def _label(row: TimelineRow, limit: int = 40) -> str:
    label = row.worker_key if row.attempt <= 1 else f"{row.worker_key}#{row.attempt}"
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _attempt_status(worker: WorkerRecord, number: int) -> str:
    """Only the last attempt carries the worker's status; earlier ones were retried."""
    last = worker.attempts[-1].number if worker.attempts else None
    return worker.status.value if number == last else "retried"


def _slowest(workers: list[WorkerRecord], now: float | None) -> tuple[str | None, float | None]:
    best: tuple[str | None, float | None] = (None, None)
    for w in workers:
        elapsed = worker_elapsed(w, now)
        if elapsed is not None and (best[1] is None or elapsed > best[1]):
            best = (w.key, elapsed)
    return best


def _tree_span(
    jobs: list[JobRecord], workers: list[WorkerRecord], now: float | None
) -> tuple[float | None, float | None]:
    """First start and last end over jobs and attempts; unfinished ones end at ``now``."""
    starts = [j.started_at for j in jobs if j.started_at is not None]
    ends = [j.ended_at if j.ended_at is not None else now for j in jobs if j.started_at is not None]
    for w in workers:
        for a in w.attempts:
            starts.append(a.started_at)
            ends.append(a.ended_at if a.ended_at is not None else now)
    known_ends = [e for e in ends if e is not None]
    if not starts:
        return None, None
    return min(starts), max(known_ends) if known_ends else None


def _latest_timestamp(jobs: list[JobRecord], workers: list[WorkerRecord]) -> float | None:
    stamps = [t for j in jobs for t in (j.started_at, j.ended_at) if t is not None]
    for w in workers:
        stamps += [t for a in w.attempts for t in (a.started_at, a.ended_at) if t is not None]
        stamps += [t for t in (w.started_at, w.ended_at) if t is not None]
    return max(stamps) if stamps else None


def _sum_known(values: Iterable[float | int | None]) -> float | int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
