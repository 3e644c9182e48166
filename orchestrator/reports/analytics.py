"""Performance figures for one job tree, computed from its records.

Pure functions: no clock and no I/O, so the same records always give the same
numbers. The caller passes ``now`` for attempts still running.

Besides totals and timing (wall, worker time, parallel efficiency, slowest
worker, the level that waited longest) this finds the tree's critical path,
each worker's queue wait, and rolls CPU, memory, cost and tokens up per job
and for the tree.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from orchestrator.config.keys import StrEnum
from orchestrator.models import JobRecord, WorkerRecord, WorkerStatus

# Statuses counted as failures in the totals. PENDING and RUNNING are neither.
FAILED_STATUSES = frozenset({WorkerStatus.FAILED, WorkerStatus.TIMEOUT, WorkerStatus.CANCELLED, WorkerStatus.SKIPPED})

_ROW_ORDER = operator.itemgetter(5, 3, 0, 4)  # TimelineRow (start, depth, worker_key, attempt): C speed
_N = TypeVar("_N", int, float)  # a sum of ints stays an int (token counts), of floats a float


class TimelineRow(NamedTuple):
    """One worker attempt, in seconds from the tree's start, for a timeline. (A named tuple:
    immutable, and built 4x faster than a frozen dataclass; a big tree has 10,000s.)"""

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
class Rollup:
    """Resources used by a set of workers (one job's, a subtree's, the tree's). Cost and tokens
    include the AI planner's call of each job counted (it is paid for like a worker's)."""

    workers: int
    worker_seconds: float  # sum of attempt durations
    cpu_seconds: float | None  # None when no worker was sampled
    peak_rss: int | None  # bytes: the largest single worker's peak (workers' peaks need not coincide)
    cost_usd: float | None  # None when no worker reported a cost
    tokens_in: int | None
    tokens_out: int | None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)  # scalar fields: asdict's deep copy is wasted (the status route calls this)
        data["worker_seconds"] = round(self.worker_seconds, 3)
        for key in ("cpu_seconds", "cost_usd"):
            data[key] = None if data[key] is None else round(data[key], 6)
        return data


@dataclass(frozen=True)
class JobRollup:
    """One job's own workers, and its whole subtree (its child jobs' workers too)."""

    job_id: str
    depth: int
    parent_job_id: str | None
    parent_worker: str | None
    status: str
    own: Rollup
    subtree: Rollup

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "depth": self.depth,
            "parent_job_id": self.parent_job_id,
            "parent_worker": self.parent_worker,
            "status": self.status,
            **self.own.to_dict(),
            "subtree": self.subtree.to_dict(),
        }


class StepKind(StrEnum):
    """What a link of the critical path is."""

    WORKER = "worker"  # a worker's run
    JOB = "job"  # a child job the previous worker waited for


@dataclass(frozen=True)
class PathStep:
    """One link of the critical path: a worker, or a child job one of them waited for.
    Times are seconds from the tree's start."""

    kind: StepKind
    name: str  # the worker's key, or the job's id
    job_id: str
    depth: int
    start: float
    end: float
    status: str
    queue_wait: float | None = None  # workers: plan ready -> first attempt

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)  # scalar fields
        data["duration"] = self.duration
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}


@dataclass(frozen=True)
class PlannerUsage:
    """What the AI planner's CLI calls of a set of jobs cost, as the CLI reported it."""

    calls: int  # jobs whose planning call reported a cost or tokens
    cost_usd: float | None
    tokens_in: int | None
    tokens_out: int | None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["cost_usd"] = None if self.cost_usd is None else round(self.cost_usd, 6)
        return data


def planner_usage(jobs: Iterable[JobRecord]) -> PlannerUsage:
    """The AI planner's cost and tokens over ``jobs``."""
    used = [
        j for j in jobs if j.planner_cost_usd is not None or j.planner_tokens_in is not None or j.planner_tokens_out is not None
    ]
    return PlannerUsage(
        calls=len(used),
        cost_usd=_sum_known(j.planner_cost_usd for j in used),
        tokens_in=_sum_known(j.planner_tokens_in for j in used),
        tokens_out=_sum_known(j.planner_tokens_out for j in used),
    )


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
    succeeded: int  # success + recursive_success: nothing of it missing (WorkerStatus.complete)
    child_incomplete: int  # exited 0, but a child job it started did not complete: neither succeeded nor failed
    failed: int  # failed + timeout + cancelled + skipped
    success_rate: float  # succeeded / total, 0 when total is 0
    cost_usd: float | None  # workers', AI planners', judges' and conflict resolvers' cost; None when none reported one
    tokens_in: int | None
    tokens_out: int | None
    planner: PlannerUsage  # the AI planner's share of cost and tokens
    rows: list[TimelineRow]
    critical_path: list[PathStep]  # from a depth-0 worker down to the worker that ended the tree
    queue_waits: dict[str, float]  # worker key -> seconds from its plan being ready to its first attempt
    cpu_seconds: float | None  # sum over workers; None when none was sampled
    peak_rss: int | None  # bytes: the largest worker peak
    jobs: list[JobRollup]

    @property
    def queue_wait_total(self) -> float:
        return sum(self.queue_waits.values())

    @property
    def longest_queue_wait(self) -> tuple[str | None, float | None]:
        """The worker that waited longest for a slot, and how long."""
        if not self.queue_waits:
            return None, None
        key = max(self.queue_waits, key=lambda k: (self.queue_waits[k], k))
        return key, self.queue_waits[key]


def analyse(jobs: list[JobRecord], workers: list[WorkerRecord], now: float | None = None) -> TreeAnalytics:
    """Compute the tree's figures.

    Running attempts and jobs end at ``now``. Without ``now`` they end at the
    latest timestamp found in the records, which keeps this function pure.
    """
    if now is None:
        now = _latest_timestamp(jobs, workers)
    # One pass over the workers for everything per worker: a tree has 10,000s, and every pass over
    # their records costs (the timeline rows are built relative to the tree's start once it is known).
    starts = [j.started_at for j in jobs if j.started_at is not None]
    ends = [j.ended_at if j.ended_at is not None else now for j in jobs if j.started_at is not None]
    ready = {j.id: j.started_at for j in jobs}
    raw: list[tuple[str, str, str, int, int, float, float, str]] = []
    by_value: dict[str, int] = {}
    waits: dict[str, float] = {}
    slowest: str | None = None
    slowest_duration: float | None = None
    sums: dict[str | None, _Sums] = {}  # per job (None: jobs whose record is missing): its rollup's sums
    lasts: dict[str, tuple[float, int, WorkerRecord]] = {}  # per job: the worker that ended it (critical path)
    # (Each attribute and call below is read once per worker: at 10,000 records spread over the heap,
    # the reads themselves are what the report costs.)
    for w in workers:
        key, value, job_id, attempts = w.key, w.status._value_, w.job_id, w.attempts  # (Enum.value is a property)
        by_value[value] = by_value.get(value, 0) + 1
        job_ready = ready.get(job_id)
        job_sums = sums.get(job_id if job_id in ready else None)
        if job_sums is None:
            job_sums = sums[job_id if job_id in ready else None] = _Sums()
        job_sums.add(w)
        if w.integrated is not None:  # a graph's integration resolver: its job's cost, not the worker's
            resolved = w.integration_resolution
            if resolved is not None and resolved.cost_usd is not None:
                job_sums.cost = resolved.cost_usd if job_sums.cost is None else job_sums.cost + resolved.cost_usd
        wait = queue_wait(w, now, job_ready)
        if wait is not None:
            waits[key] = wait
        elapsed = worker_elapsed(w, now)
        if elapsed is not None and (slowest_duration is None or elapsed > slowest_duration):
            slowest, slowest_duration = key, elapsed
        if not attempts:
            continue
        last = attempts[-1].number
        finish = _worker_end(w, now)
        best = lasts.get(job_id)
        if best is None or finish > best[0] or (finish == best[0] and -w.index > best[1]):
            lasts[job_id] = (finish, -w.index, w)
        name, depth = w.name, w.depth
        for attempt in attempts:
            start = attempt.started_at
            end = attempt.ended_at if attempt.ended_at is not None else now
            starts.append(start)
            ends.append(end)
            if end is None or end < start:
                end = start
            job_sums.seconds += end - start
            raw.append((key, name, job_id, depth, attempt.number, start, end, value if attempt.number == last else "retried"))
    known_ends = [e for e in ends if e is not None]
    started_at = min(starts) if starts else None
    ended_at = max(known_ends) if starts and known_ends else None
    origin = started_at or 0.0
    new = tuple.__new__  # what TimelineRow._make does, without its call per row
    rows: list[TimelineRow] = [
        new(TimelineRow, (k, n, j, d, a, start - origin, end - origin, st)) for k, n, j, d, a, start, end, st in raw
    ]
    rows.sort(key=_ROW_ORDER)
    wall = 0.0 if started_at is None or ended_at is None else max(0.0, ended_at - started_at)
    busy = sum(row.end - row.start for row in rows)
    peak = peak_concurrency(rows)
    spans = level_waits(rows)
    counts = {s: by_value[s.value] for s in WorkerStatus if by_value.get(s.value)}
    succeeded = sum(n for status, n in counts.items() if status.complete)
    failed = sum(n for status, n in counts.items() if status in FAILED_STATUSES)
    per_job = _job_rollups(jobs, {job_id: own.rollup() for job_id, own in sums.items() if job_id is not None})
    tree = _merge([r.own for r in per_job] + [sums[None].rollup() if None in sums else _Sums().rollup()])
    return TreeAnalytics(
        started_at=started_at,
        ended_at=ended_at,
        wall=wall,
        busy=busy,
        peak_concurrency=peak,
        parallel_efficiency=busy / (wall * peak) if rows and wall > 0 and peak > 0 else None,
        slowest_worker=slowest,
        slowest_duration=slowest_duration,
        level_waits=spans,
        bottleneck_level=max(spans, key=lambda d: (spans[d], -d)) if spans else None,
        counts={s.value: n for s, n in counts.items()},
        total=len(workers),
        succeeded=succeeded,
        child_incomplete=counts.get(WorkerStatus.CHILD_INCOMPLETE, 0),
        failed=failed,
        success_rate=succeeded / len(workers) if workers else 0.0,
        cost_usd=tree.cost_usd,
        tokens_in=tree.tokens_in,
        tokens_out=tree.tokens_out,
        planner=planner_usage(jobs),
        rows=rows,
        critical_path=_critical_path(jobs, {job_id: w for job_id, (_, _, w) in lasts.items()}, now, origin),
        queue_waits=waits,
        cpu_seconds=tree.cpu_seconds,
        peak_rss=tree.peak_rss,
        jobs=per_job,
    )


def worker_elapsed(worker: WorkerRecord, now: float | None) -> float | None:
    """A worker's duration; a running one counts up to ``now``."""
    duration = worker.duration  # a property: read once (a report reads 10,000s)
    if duration is not None:
        return duration
    if worker.started_at is None or now is None or worker.status.terminal:
        return None
    return max(0.0, now - worker.started_at)


def queue_wait(worker: WorkerRecord, now: float | None, ready: float | None = None) -> float | None:
    """Seconds from when the worker could have started (its job's plan ready: ``ready``,
    else its record's creation) to its first attempt; a pending one counts up to ``now``.
    None for a worker that never started and never will (skipped, cancelled)."""
    ready = ready or worker.created_at
    if not ready:
        return None
    first = worker.attempts[0].started_at if worker.attempts else worker.started_at
    if first is None:
        first = now if worker.status is WorkerStatus.PENDING else None
    if first is None:
        return None
    return first - ready if first > ready else 0.0


def worker_seconds(worker: WorkerRecord, now: float | None) -> float:
    """The sum of the worker's attempt durations; a running attempt counts up to ``now``."""
    total = 0.0
    for a in worker.attempts:
        end = a.ended_at if a.ended_at is not None else now
        total += 0.0 if end is None else max(0.0, end - a.started_at)
    return total


class _Sums:
    """A rollup being summed, one worker at a time (``analyse`` adds the worker time itself)."""

    __slots__ = ("count", "seconds", "cpu", "peak", "cost", "tokens_in", "tokens_out")

    def __init__(self) -> None:
        self.count, self.seconds = 0, 0.0
        self.cpu: float | None = None
        self.peak: int | None = None
        self.cost: float | None = None
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None

    def add(self, w: WorkerRecord) -> None:
        self.count += 1
        if w.cpu_seconds is not None:
            self.cpu = w.cpu_seconds if self.cpu is None else self.cpu + w.cpu_seconds
        if w.peak_rss is not None and (self.peak is None or w.peak_rss > self.peak):
            self.peak = w.peak_rss
        if w.cost_usd is not None:
            self.cost = w.cost_usd if self.cost is None else self.cost + w.cost_usd
        if w.tokens_in is not None:
            self.tokens_in = w.tokens_in if self.tokens_in is None else self.tokens_in + w.tokens_in
        if w.tokens_out is not None:
            self.tokens_out = w.tokens_out if self.tokens_out is None else self.tokens_out + w.tokens_out

    def rollup(self) -> Rollup:
        return Rollup(
            workers=self.count,
            worker_seconds=self.seconds,
            cpu_seconds=self.cpu,
            peak_rss=self.peak,
            cost_usd=self.cost,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
        )


def rollup(workers: Iterable[WorkerRecord], now: float | None = None) -> Rollup:
    """Worker time, CPU, largest peak memory, cost and tokens over ``workers``."""
    sums = _Sums()
    for w in workers:
        sums.add(w)
        sums.seconds += worker_seconds(w, now)
    return sums.rollup()


def _job_rollups(jobs: list[JobRecord], own_workers: dict[str, Rollup]) -> list[JobRollup]:
    children = _children(jobs)
    own = {j.id: _with_planner(own_workers.get(j.id) or _Sums().rollup(), j) for j in jobs}
    return [
        JobRollup(
            job_id=j.id,
            depth=j.depth,
            parent_job_id=j.parent_job_id,
            parent_worker=j.parent_worker,
            status=j.status.value,
            own=own[j.id],
            subtree=_merge([own[jid] for jid in _walk(children, j.id)]),
        )
        for j in jobs
    ]


def _with_planner(own: Rollup, job: JobRecord) -> Rollup:
    """A job's own rollup with its AI planner's call (and its candidates' judge's, and its merge's
    conflict resolvers') added to cost and tokens."""
    resolver = job.resolver_cost_usd
    if (
        job.planner_cost_usd is None
        and job.planner_tokens_in is None
        and job.planner_tokens_out is None
        and not job.selections
        and resolver is None
    ):
        return own
    return dataclasses.replace(
        own,
        cost_usd=_sum_known((own.cost_usd, job.planner_cost_usd, job.judge_cost_usd, resolver)),
        tokens_in=_sum_known((own.tokens_in, job.planner_tokens_in)),
        tokens_out=_sum_known((own.tokens_out, job.planner_tokens_out)),
    )


def _merge(parts: list[Rollup]) -> Rollup:
    """One rollup for several disjoint sets of workers."""
    if len(parts) == 1:
        return parts[0]
    peaks = [p.peak_rss for p in parts if p.peak_rss is not None]
    return Rollup(
        workers=sum(p.workers for p in parts),
        worker_seconds=sum(p.worker_seconds for p in parts),
        cpu_seconds=_sum_known(p.cpu_seconds for p in parts),
        peak_rss=max(peaks) if peaks else None,
        cost_usd=_sum_known(p.cost_usd for p in parts),
        tokens_in=_sum_known(p.tokens_in for p in parts),
        tokens_out=_sum_known(p.tokens_out for p in parts),
    )


def descendants(jobs: list[JobRecord], job_id: str) -> list[str]:
    """``job_id`` and the ids of every job below it, breadth first."""
    return _walk(_children(jobs), job_id)


def subtree(jobs: list[JobRecord], workers: list[WorkerRecord], job_id: str) -> tuple[list[JobRecord], list[WorkerRecord]]:
    """The records of ``job_id`` and the jobs below it (a tree read from disk is whole)."""
    ids = set(descendants(jobs, job_id))
    return [j for j in jobs if j.id in ids], [w for w in workers if w.job_id in ids]


def critical_path(
    jobs: list[JobRecord], workers: list[WorkerRecord], now: float | None, *, origin: float = 0.0
) -> list[PathStep]:
    """The chain that decided when the tree ended.

    Workers of one job run side by side, so a job ends with its last worker; when
    that worker started child jobs, its end waited for the last of them, whose own
    last worker is the next link, and so on down. Each worker step carries its
    queue wait: a long one means the chain waited for a slot, not for work.
    """
    by_job = _by_job(workers)
    lasts = {}
    for job_id, members in by_job.items():
        ran = [w for w in members if w.attempts]
        if ran:
            lasts[job_id] = max(ran, key=lambda w: (_worker_end(w, now), -w.index))
    return _critical_path(jobs, lasts, now, origin)


def _critical_path(jobs: list[JobRecord], lasts: dict[str, WorkerRecord], now: float | None, origin: float) -> list[PathStep]:
    """``lasts``: per job, its worker that ended last (of those that ran; the first in plan order of a tie)."""
    by_id = {j.id: j for j in jobs}
    roots = [j for j in jobs if j.parent_job_id not in by_id]
    job = max(roots, key=lambda j: (_job_end(j, now) or 0.0, -j.depth), default=None)
    steps: list[PathStep] = []
    seen: set[str] = set()
    while job is not None and job.id not in seen:
        seen.add(job.id)
        if steps:  # a child job: the previous worker waited for it
            start = job.started_at if job.started_at is not None else job.created_at
            steps.append(
                PathStep(
                    StepKind.JOB,
                    job.id,
                    job.id,
                    job.depth,
                    start - origin,
                    (_job_end(job, now) or start) - origin,
                    job.status.value,
                )
            )
        last = lasts.get(job.id)
        if last is None:
            break
        steps.append(
            PathStep(
                StepKind.WORKER,
                last.key,
                last.job_id,
                last.depth,
                last.attempts[0].started_at - origin,
                _worker_end(last, now) - origin,
                last.status.value,
                queue_wait(last, now, job.started_at),
            )
        )
        children = [by_id[c] for c in last.child_job_ids if c in by_id]
        job = max(children, key=lambda j: (_job_end(j, now) or 0.0, j.id), default=None)
    return steps


def peak_concurrency(rows: list[TimelineRow]) -> int:
    """Most attempts running at one instant.

    An attempt ending exactly when another starts does not overlap it, so
    back-to-back runs count as 1. Zero-length attempts never overlap anything;
    they count as 1 only when nothing else ran.
    """
    ran = [r for r in rows if r.end > r.start]
    starts = sorted(r.start for r in ran)
    ends = sorted(r.end for r in ran)
    peak = running = done = 0
    for start in starts:  # a merge of the two sorted lists; at equal times an end goes first
        while ends[done] <= start:
            done += 1
            running -= 1
        running += 1
        peak = max(peak, running)
    return peak or (1 if rows else 0)


def level_waits(rows: list[TimelineRow]) -> dict[int, float]:
    """Per depth, the wall span from its first attempt's start to its last one's end."""
    spans: dict[int, tuple[float, float]] = {}
    for r in rows:
        lo, hi = spans.get(r.depth, (r.start, r.end))
        if r.start < lo or r.end > hi:
            spans[r.depth] = (r.start if r.start < lo else lo, r.end if r.end > hi else hi)
        elif r.depth not in spans:
            spans[r.depth] = (lo, hi)
    return {depth: hi - lo for depth, (lo, hi) in sorted(spans.items())}


def text_timeline(rows: list[TimelineRow], width: int = 40, notes: dict[tuple[str, int], str] | None = None) -> list[str]:
    """Gantt-style text bars, one line per row, for a Markdown code block.

    Each bar is scaled to the latest end among ``rows`` and is at least one
    cell wide, so zero-length attempts stay visible. ``notes``: text after the line of
    (worker key, attempt), e.g. the commit that attempt made (git isolation).
    """
    if not rows:
        return []
    width = max(1, width)
    span = max(r.end for r in rows)
    labels = [_label(r) for r in rows]
    label_width = max(len(label) for label in labels)
    notes = notes or {}
    return [
        f"{label:<{label_width}} |{_bar(r, span, width)}| {r.start:7.1f}s → {r.end:7.1f}s  {r.status}"
        + (f"  {notes[r.worker_key, r.attempt]}" if (r.worker_key, r.attempt) in notes else "")
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


def _latest_timestamp(jobs: list[JobRecord], workers: list[WorkerRecord]) -> float | None:
    stamps = [t for j in jobs for t in (j.started_at, j.ended_at) if t is not None]
    for w in workers:
        stamps += [t for a in w.attempts for t in (a.started_at, a.ended_at) if t is not None]
        stamps += [t for t in (w.started_at, w.ended_at) if t is not None]
    return max(stamps) if stamps else None


def _children(jobs: list[JobRecord]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for j in jobs:
        if j.parent_job_id is not None:
            children.setdefault(j.parent_job_id, []).append(j.id)
    return children


def _walk(children: dict[str, list[str]], job_id: str) -> list[str]:
    found, seen = [job_id], {job_id}
    for current in found:  # grows while it is walked: breadth first
        for child in children.get(current, []):
            if child not in seen:
                seen.add(child)
                found.append(child)
    return found


def _by_job(workers: Iterable[WorkerRecord]) -> dict[str, list[WorkerRecord]]:
    by_job: dict[str, list[WorkerRecord]] = {}
    for w in workers:
        by_job.setdefault(w.job_id, []).append(w)
    return by_job


def _worker_end(worker: WorkerRecord, now: float | None) -> float:
    """When a worker that ran was done (after its child jobs); one still running or
    waiting for its child jobs counts up to ``now``."""
    last = worker.attempts[-1]
    end = worker.ended_at
    if end is None:
        end = now if now is not None and not worker.status.terminal else last.ended_at
    return max(end if end is not None else last.started_at, last.started_at)


def _job_end(job: JobRecord, now: float | None) -> float | None:
    return job.ended_at if job.ended_at is not None else now


def _sum_known(values: Iterable[_N | None]) -> _N | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
