"""The job tree as an SVG Gantt chart: one row per worker, one bar per attempt.

Built as plain strings, with no dependency: every piece of text that came from a
user or a worker (tasks, requests, exit reasons) goes through ``_text``, which
drops the characters XML 1.0 forbids and escapes ``<&>"'``. Colours and fonts are
presentation attributes rather than CSS, so any SVG viewer draws the same picture.

Rows follow the tree: a job's workers in plan order, each followed by the rows of
the child jobs it started, indented one step per depth and laid on a band per job.
A dashed line before a bar is the worker's queue wait (its plan was ready, no slot
was free); a faded bar is an attempt that was retried; an outlined bar is on the
critical path. Hovering a bar shows its ``<title>``: worker, full task, status, times.
In git isolation a diamond at an attempt's end is a commit of the worker's work
(``class="commit"``, ``data-commit``), and a violet line across a job's band is its merge
(``class="merge"``, at ``JobRecord.merge.at``); both are drawn for worktree jobs only.
In a task graph an amber dashed line before a bar is the worker's wait on its
prerequisites (``class="wait deps"``, ``data-depends-on``): from its job's start until the last
of them was merged (or, still waiting, until now); the grey line after it the wait for a slot.
For scripts (the dashboard, the tests), rows carry ``data-worker``/``data-job`` and bars
``data-attempt``/``data-status``/``data-start``/``data-end`` (seconds from the chart's start).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape

from orchestrator.models import Attempt, EndReason, JobRecord, WorkerRecord, WorkerStatus
from orchestrator.reports.analytics import StepKind, TreeAnalytics, analyse, queue_wait, subtree
from orchestrator.reports.taskgraph import DependencyWait, deliveries, dependency_wait

from ..config import Isolation
from ..git.conflicts import counted

WIDTH = 1200
LABEL_WIDTH = 380  # the label column; bars start right of it
MARGIN = 12
RIGHT = 28  # room right of the plot for the last tick's label
ROW_HEIGHT = 18  # > FONT_SIZE + 4, so two labels never touch
BAR_HEIGHT = 12
FONT_SIZE = 11
CHAR_WIDTH = 0.62 * FONT_SIZE  # a monospace glyph is ~0.6 em (Menlo, DejaVu Sans Mono, Consolas)
INDENT = 12  # pixels per depth below the chart's top job
MAX_INDENT_LEVELS = 8  # deeper rows stop moving right, so their labels keep room
TOP = 70  # title, legend and the upper axis labels
BOTTOM = 26  # the lower axis labels
TITLE_TASK_LIMIT = 4000  # characters of a task in a tooltip: bounds the file, not the reader
MIN_BAR = 1.5  # pixels: a zero-length attempt stays visible
FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"

COLOURS = {
    "success": "#2e7d32",
    "recursive_success": "#00838f",
    "child_incomplete": "#c77700",  # exited 0, a child job it started did not complete (OPTIONAL_LEGEND)
    "failed": "#c62828",
    "timeout": "#ef6c00",
    "cancelled": "#757575",
    "skipped": "#bdbdbd",
    "running": "#1e88e5",
    "pending": "#e0e0e0",
}
OPTIONAL_LEGEND = frozenset({"child_incomplete"})  # in the legend only when a worker of the picture is
DEPS_COLOUR = "#f9a825"  # a wait on prerequisites (a task graph's), beside the grey wait for a slot
DEPS_LABEL = "waiting on prerequisites"
COMMIT_FILL = "#ffffff"
COMMIT_STROKE = "#212121"
MERGE_COLOUR = "#6a1b9a"
BANDS = ("#f7f9fc", "#e6eef7", "#d8e4f2", "#cbdaee")
# Nice tick steps in seconds; past the last one, whole multiples of an hour.
TICK_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
# XML 1.0 allows tab, newline, carriage return and most of Unicode, but not the
# other C0 controls, lone surrogates, U+FFFE or U+FFFF: a task holding one would
# make the whole file unreadable.
_ESCAPES = {'"': "&quot;", "'": "&apos;"}
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What ``_text`` changes: anything but the printable ASCII that is neither markup nor a quote, tab and newlines.
_NOT_PLAIN = re.compile("[^\t\n\r\x20\x21\x23-\x25\x28-\x3b\x3d\x3f-\x7e]")


@dataclass(frozen=True)
class Row:
    """One worker's line in the chart."""

    worker: WorkerRecord
    level: int  # depth below the chart's top job, for the indent


def render_timeline_svg(
    jobs: list[JobRecord],
    workers: list[WorkerRecord],
    *,
    job_id: str | None = None,
    now: float | None = None,
    analytics: TreeAnalytics | None = None,
) -> str:
    """The SVG document for a tree (or, with ``job_id``, for that job's subtree)."""
    return "".join(timeline_svg_parts(jobs, workers, job_id=job_id, now=now, analytics=analytics))


def timeline_svg_parts(
    jobs: list[JobRecord],
    workers: list[WorkerRecord],
    *,
    job_id: str | None = None,
    now: float | None = None,
    analytics: TreeAnalytics | None = None,
) -> Iterator[str]:
    """``render_timeline_svg``'s text piece by piece, for a caller that streams it to a file
    (a 10,000-worker tree's picture is megabytes). ``analytics``: the figures of exactly
    these ``jobs`` and ``workers`` at ``now``, when the caller has them already."""
    now = time.time() if now is None else now
    if job_id is not None:
        jobs, workers = subtree(jobs, workers, job_id)
        analytics = None
    if analytics is None:
        analytics = analyse(jobs, workers, now)
    origin = analytics.started_at if analytics.started_at is not None else now
    rows, bands = tree_rows(jobs, workers)
    span = max(analytics.wall, max((_end(a, now) - origin for w in workers for a in w.attempts), default=0.0))
    merges = {j.id: at for j in jobs if (at := merged_at(j)) is not None}
    span = max([span, *(at - origin for at in merges.values())])
    chart = _Chart(origin=origin, span=span if span > 0 else 1.0, rows=len(rows))
    critical = {step.name for step in analytics.critical_path if step.kind == StepKind.WORKER}
    ready = {j.id: j.started_at for j in jobs}
    top = next((j for j in jobs if j.parent_job_id not in ready), None)
    git = any(getattr(j.config, "isolation", Isolation.FOLDER) == Isolation.WORKTREE for j in jobs)
    deps = dependency_waits(jobs, workers, now)
    yield _header(chart, top, analytics.total, analytics.wall, git, bool(deps), set(analytics.counts))
    for job, first, last, level in bands:
        yield "\n" + _band(chart, job, first, last, level)
    for part in _axis(chart):
        yield "\n" + part
    for index, row in enumerate(rows):
        key = row.worker.key
        yield "\n" + _row(chart, index, row, now, key in critical, ready.get(row.worker.job_id), deps.get(key))
    for job, first, last, level in bands:  # on top of the bars
        if job.id in merges:
            yield "\n" + _merge(chart, job, merges[job.id], first, last, level)
    yield "\n</svg>\n"


def dependency_waits(jobs: list[JobRecord], workers: list[WorkerRecord], now: float) -> dict[str, DependencyWait]:
    """Per worker key: its wait on its prerequisites (only workers of a task graph have one)."""
    if not any(w.depends_on for w in workers) and not any(n.depends_on for j in jobs for n in j.nodes):
        return {}
    by_id = {j.id: j for j in jobs}
    by_job: dict[str, list[WorkerRecord]] = {}
    for w in workers:
        by_job.setdefault(w.job_id, []).append(w)
    waits: dict[str, DependencyWait] = {}
    for job_id, own in by_job.items():
        job = by_id.get(job_id)
        tasks = deliveries(job, own)
        for w in own:
            wait = dependency_wait(w, job, tasks, now)
            if wait is not None:
                waits[w.key] = wait
    return waits


def tree_rows(jobs: list[JobRecord], workers: list[WorkerRecord]) -> tuple[list[Row], list[tuple[JobRecord, int, int, int]]]:
    """Rows in tree order, and per job the band (job, first row, last row, level) its subtree covers."""
    by_job: dict[str, list[WorkerRecord]] = {}
    for w in workers:
        by_job.setdefault(w.job_id, []).append(w)
    ids = {j.id for j in jobs}
    started_by: dict[tuple[str, str], list[JobRecord]] = {}
    for job in sorted(jobs, key=lambda j: (j.created_at, j.id)):
        if job.parent_job_id in ids and job.parent_worker:
            started_by.setdefault((job.parent_job_id, job.parent_worker), []).append(job)
    rows: list[Row] = []
    bands: list[tuple[JobRecord, int, int, int]] = []

    def visit(job: JobRecord, level: int) -> None:
        first = len(rows)
        for w in sorted(by_job.pop(job.id, []), key=lambda w: (w.index, w.name)):
            rows.append(Row(w, level))
            for child in started_by.get((job.id, w.name), []):
                visit(child, level + 1)
        if len(rows) > first:
            bands.append((job, first, len(rows) - 1, level))

    for job in sorted((j for j in jobs if j.parent_job_id not in ids), key=lambda j: (j.depth, j.created_at, j.id)):
        visit(job, 0)
    top_depth = min((j.depth for j in jobs), default=0)
    for job_id in list(by_job):  # workers whose job record is missing: still shown, at the end
        for w in by_job.pop(job_id):
            rows.append(Row(w, max(0, w.depth - top_depth)))
    return rows, bands


@dataclass(frozen=True)
class _Chart:
    origin: float  # epoch seconds at x0
    span: float  # seconds across the plot
    rows: int

    @property
    def x0(self) -> float:
        return float(LABEL_WIDTH)

    @property
    def scale(self) -> float:
        """Pixels per second."""
        return (WIDTH - RIGHT - self.x0) / self.span

    @property
    def height(self) -> int:
        return TOP + max(1, self.rows) * ROW_HEIGHT + BOTTOM

    def x(self, timestamp: float) -> float:
        return self.x0 + (timestamp - self.origin) * self.scale

    def y(self, index: int) -> int:
        return TOP + index * ROW_HEIGHT


def _header(
    chart: _Chart,
    top: JobRecord | None,
    workers: int,
    wall: float,
    git: bool = False,
    deps: bool = False,
    statuses: set[str] | frozenset[str] = frozenset(),
) -> str:
    """The title and the legend. ``statuses``: those the picture holds; the rare ones (OPTIONAL_LEGEND)
    are in the legend only then, so the common legend fits the picture's width."""
    title = "no job" if top is None else f"job {top.id}: {top.status.value}, {workers} worker(s), wall {_clock(wall)}"
    legend: list[str] = []
    x: float = MARGIN  # grows by fractional character widths
    items = [(s, COLOURS[s], "1") for s in COLOURS if s != "pending" and (s not in OPTIONAL_LEGEND or s in statuses)]
    items.append(("retried attempt", COLOURS["failed"], "0.45"))
    for label, colour, opacity in items:
        legend.append(
            f'<rect class="legend" x="{x}" y="30" width="12" height="10" fill="{colour}" fill-opacity="{opacity}"/>'
            f'<text x="{x + 16}" y="39">{_text(label)}</text>'
        )
        x += 16 + len(label) * CHAR_WIDTH + 14
    legend.append(
        f'<line x1="{x}" y1="35" x2="{x + 18}" y2="35" stroke="#9e9e9e" stroke-width="2" stroke-dasharray="3 2"/>'
        f'<text x="{x + 22}" y="39">queue wait</text>'
    )
    x += 22 + 10 * CHAR_WIDTH + 14
    legend.append(
        f'<rect x="{x}" y="30" width="12" height="10" fill="#ffffff" stroke="#000000" stroke-width="1.5"/>'
        f'<text x="{x + 16}" y="39">critical path</text>'
    )
    if deps:  # a task graph's waits on prerequisites: top right, beside the title (the row below is full)
        right = WIDTH - MARGIN - len(DEPS_LABEL) * CHAR_WIDTH
        legend.append(
            f'<line class="legend" x1="{right - 22:.1f}" y1="14" x2="{right - 4:.1f}" y2="14" stroke="{DEPS_COLOUR}" '
            f'stroke-width="2" stroke-dasharray="6 2"/><text x="{right:.1f}" y="18">{DEPS_LABEL}</text>'
        )
    if git:  # worktree jobs: their commits and merges
        x += 16 + 13 * CHAR_WIDTH + 14
        legend.append(
            f'<path class="legend" d="{_diamond(x + 6, 35)}" fill="{COMMIT_FILL}" stroke="{COMMIT_STROKE}" stroke-width="1.2"/>'
            f'<text x="{x + 16}" y="39">commit</text>'
        )
        x += 16 + 6 * CHAR_WIDTH + 14
        legend.append(
            f'<line class="legend" x1="{x + 6}" y1="29" x2="{x + 6}" y2="41" stroke="{MERGE_COLOUR}" stroke-width="2"/>'
            f'<text x="{x + 16}" y="39">merge</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{chart.height}" '
        f'viewBox="0 0 {WIDTH} {chart.height}" font-family="{_text(FONT)}" font-size="{FONT_SIZE}" fill="#212121">\n'
        f"<title>{_text('Timeline of ' + title)}</title>\n"
        f'<rect x="0" y="0" width="{WIDTH}" height="{chart.height}" fill="#ffffff"/>\n'
        f'<text x="{MARGIN}" y="18" font-size="{FONT_SIZE + 2}" font-weight="bold">{_text(title)}</text>\n' + "".join(legend)
    )


def _band(chart: _Chart, job: JobRecord, first: int, last: int, level: int) -> str:
    x = MARGIN / 2 + _indent(level)
    who = "" if job.parent_worker is None else f", started by {job.parent_worker} of {job.parent_job_id}"
    tip = f"job {job.id} (depth {job.depth}{who}): {job.status.value}\n{_clip(job.request, 300)}"
    return (
        f'<rect class="band" data-job="{_text(job.id)}" x="{x:.1f}" y="{chart.y(first)}" width="{WIDTH - MARGIN / 2 - x:.1f}" '
        f'height="{(last - first + 1) * ROW_HEIGHT}" fill="{BANDS[min(level, len(BANDS) - 1)]}">'
        f"<title>{_text(tip)}</title></rect>"
    )


def _axis(chart: _Chart) -> list[str]:
    step = tick_step(chart.span)
    bottom = chart.y(max(1, chart.rows))
    parts = [
        f'<g class="axis" stroke="#d0d0d0" stroke-width="1">'
        f'<line x1="{chart.x0}" y1="{TOP - 2}" x2="{chart.x0}" y2="{bottom}" stroke="#9e9e9e"/></g>'
    ]
    count = int(math.floor(chart.span / step + 1e-9))
    for i in range(count + 1):
        t = i * step
        x = chart.x(chart.origin + t)
        label = _text(_tick_label(t, step))
        parts.append(
            f'<g class="tick" data-t="{t:g}"><line x1="{x:.2f}" y1="{TOP - 4}" x2="{x:.2f}" y2="{bottom}" stroke="#e4e4e4"/>'
            f'<text class="tick-label" x="{x:.2f}" y="{TOP - 7}" text-anchor="middle">{label}</text>'
            f'<text class="tick-label" x="{x:.2f}" y="{bottom + 15}" text-anchor="middle">{label}</text></g>'
        )
    return parts


def _row(
    chart: _Chart, index: int, row: Row, now: float, critical: bool, ready: float | None, deps: DependencyWait | None = None
) -> str:
    w = row.worker
    y = chart.y(index)
    mid = y + ROW_HEIGHT / 2
    bar_y = y + (ROW_HEIGHT - BAR_HEIGHT) / 2
    x = MARGIN + _indent(row.level)
    name, task = _label(w, (LABEL_WIDTH - 8 - x) / CHAR_WIDTH)
    chosen = ""  # a task's candidate: its number, and whether its task's selection chose it
    if w.candidate is not None:
        chosen = f' data-candidate="{int(w.candidate)}" data-selected="{_text(str(w.selected).lower())}"'
    parts = [
        f'<g class="row" data-worker="{_text(w.key)}" data-job="{_text(w.job_id)}"{chosen}>'
        f"<title>{_text(f'{w.key} ({w.status.value}{_candidate_note(w)}): {_clip(w.task, TITLE_TASK_LIMIT)}')}</title>"
        f'<text class="label" x="{x}" y="{mid + FONT_SIZE * 0.36:.1f}">{_text(name)}'
        f'<tspan fill="#616161">{_text(task)}</tspan></text>'
    ]
    waited = queue_wait(w, now, ready)
    start = ready or w.created_at
    if deps is not None and deps.seconds > 0:
        parts.append(_deps_wait(chart, w, deps, mid))
        if waited is not None:  # what is left of the wait was for a slot
            waited, start = start + waited - deps.until, deps.until
    if waited and waited > 0:
        parts.append(
            f'<line class="wait" x1="{chart.x(start):.2f}" y1="{mid}" x2="{chart.x(start + waited):.2f}" y2="{mid}" '
            f'stroke="#9e9e9e" stroke-width="2" stroke-dasharray="3 2"><title>{_text(f"{w.key} waited {_clock(waited)} for a slot")}</title></line>'
        )
    for attempt in w.attempts:
        parts.append(_bar(chart, w, attempt, bar_y, now, critical))
    if not w.attempts and w.status.terminal:  # never ran: a tick where it was given up
        at = w.ended_at if w.ended_at is not None else (ready or w.created_at or chart.origin)
        tip = f"{w.key}: {w.status.value} without running\n{_clip(w.exit_reason, 500)}"
        parts.append(
            f'<rect class="marker" data-status="{w.status.value}" x="{chart.x(at):.2f}" y="{bar_y}" width="4" '
            f'height="{BAR_HEIGHT}" fill="{COLOURS[w.status.value]}"><title>{_text(tip)}</title></rect>'
        )
    if w.branch:  # a worktree worker: its commits, each at the end of the attempt that made it
        for at, commit, number in commit_marks(w):
            tip = f"{w.key}: commit {commit[:12]} of attempt {number}'s work on {w.branch}"
            parts.append(
                f'<path class="commit" data-commit="{_text(commit)}" data-attempt="{number}" d="{_diamond(chart.x(at), mid)}" '
                f'fill="{COMMIT_FILL}" stroke="{COMMIT_STROKE}" stroke-width="1.2"><title>{_text(tip)}</title></path>'
            )
    parts.append("</g>")
    return "".join(parts)


def _deps_wait(chart: _Chart, w: WorkerRecord, deps: DependencyWait, mid: float) -> str:
    names = ", ".join(deps.depends_on)
    tip = (
        f"{w.key} waiting on its prerequisites: {names} (for {_clock(deps.seconds)})"
        if deps.waiting
        else f"{w.key} waited {_clock(deps.seconds)} on its prerequisites: {names}"
    )
    return (
        f'<line class="wait deps" data-depends-on="{_text(",".join(deps.depends_on))}" '
        f'data-until="{deps.until - chart.origin:.3f}" x1="{chart.x(deps.start):.2f}" y1="{mid}" '
        f'x2="{chart.x(deps.until):.2f}" y2="{mid}" stroke="{DEPS_COLOUR}" stroke-width="2" stroke-dasharray="6 2">'
        f"<title>{_text(tip)}</title></line>"
    )


def commit_marks(w: WorkerRecord) -> list[tuple[float, str, int]]:
    """(time, commit, attempt) of each commit of a worktree worker's work the records prove: an
    attempt whose successor started from a new checkpoint (its work was kept: that checkpoint
    is its commit), and the last attempt when the worker's commit is not the one it started
    from. A failed attempt whose work was reset away left no commit on the branch: no mark."""
    marks: list[tuple[float, str, int]] = []
    attempts = w.attempts
    for i, attempt in enumerate(attempts):
        if attempt.ended_at is None:
            continue
        made = attempts[i + 1].checkpoint if i + 1 < len(attempts) else w.commit
        if made and made != attempt.checkpoint:
            marks.append((attempt.ended_at, made, attempt.number))
    return marks


def merged_at(job: JobRecord) -> float | None:
    """When the job's workers' branches were merged (``JobRecord.merge.at``), if they were."""
    merge = job.merge
    at = merge.at if merge is not None and not merge.error else None
    return float(at) if isinstance(at, (int, float)) and math.isfinite(at) else None


def text_marks(
    jobs: list[JobRecord], workers: list[WorkerRecord], origin: float | None, now: float | None = None
) -> tuple[dict[tuple[str, int], str], list[str]]:
    """The text timeline's marks: a note per (worker key, attempt) that made a commit, and a line
    per merge (seconds from ``origin``, the tree's start), for git trees; a line per wait on
    prerequisites, for task graphs (a wait still going counts up to ``now``)."""
    notes = {(w.key, number): f"◆ commit {commit[:12]}" for w in workers if w.branch for _, commit, number in commit_marks(w)}
    lines = []
    for job in jobs:
        at = merged_at(job)
        if at is not None and origin is not None:
            merge = job.merge
            assert merge is not None  # merged_at said when
            lines.append(
                f"│ merge of job {job.id} ({merge.strategy}) at {at - origin:.1f}s: "
                f"{len(merge.merged)} merged, {len(merge.skipped)} skipped, "
                f"{counted(len(merge.conflicts))}"
            )
    if origin is not None:
        for job in jobs:  # each task's selection among its candidates
            for task_id, sel in job.selections.items():
                when = f" at {sel.at - origin:.1f}s" if sel.at is not None else ""
                names = ", ".join(sel.candidates)
                lines.append(f"★ task {task_id} of job {job.id} ({sel.select}){when}: {sel.winner or 'no winner'} of {names}")
        for key, wait in dependency_waits(jobs, workers, origin if now is None else now).items():
            span = f"({wait.start - origin:.1f}s → {wait.until - origin:.1f}s)"
            names = ", ".join(wait.depends_on)
            verb = "waiting" if wait.waiting else f"waited {wait.seconds:.1f}s"
            lines.append(f"⧗ {key} {verb} on its prerequisites {names} {span}")
    return notes, lines


def _merge(chart: _Chart, job: JobRecord, at: float, first: int, last: int, level: int) -> str:
    merge = job.merge
    assert merge is not None  # merged_at said when
    x = chart.x(at)
    conflicts = merge.conflicts
    result = merge.result_commit
    tip = (
        f"job {job.id}: merge ({merge.strategy}) of {len(merge.merged)} worker(s), "
        f"{len(merge.skipped)} skipped, {counted(len(conflicts))}" + (f" -> {str(result)[:12]}" if result else "")
    )
    top, bottom = chart.y(first), chart.y(last + 1)
    return (
        f'<g class="merge" data-job="{_text(job.id)}" data-at="{at - chart.origin:.3f}">'
        f'<line x1="{x:.2f}" y1="{top}" x2="{x:.2f}" y2="{bottom}" stroke="{MERGE_COLOUR}" stroke-width="2"/>'
        f'<path d="M{x - 4:.2f} {top} l8 0 -4 5z" fill="{MERGE_COLOUR}"/><title>{_text(tip)}</title></g>'
    )


def _diamond(x: float, y: float, r: float = 4.0) -> str:
    return f"M{x:.2f} {y - r:.1f} l{r:g} {r:g} -{r:g} {r:g} -{r:g} -{r:g}z"


def _bar(chart: _Chart, w: WorkerRecord, attempt: Attempt, y: float, now: float, critical: bool) -> str:
    last = attempt is w.attempts[-1]
    status = attempt_status(w, attempt)
    end = _end(attempt, now)
    start_s, end_s = attempt.started_at - chart.origin, end - chart.origin
    tip = (
        f"{w.key}: attempt {attempt.number} of {len(w.attempts)}, {status}{'' if last else ' (retried)'}\n"
        f"task: {_clip(w.task, TITLE_TASK_LIMIT)}\n"
        f"{_clock(start_s)} → {_clock(end_s)} ({_clock(end_s - start_s)})"
        + (f"\n{_clip(w.exit_reason, 500)}" if last and w.exit_reason else "")
    )
    extra = ' stroke="#000000" stroke-width="1.5"' if critical else ""
    return (
        f'<rect class="bar" data-attempt="{attempt.number}" data-status="{status}" data-start="{start_s:.3f}" '
        f'data-end="{end_s:.3f}" x="{chart.x(attempt.started_at):.2f}" y="{y}" '
        f'width="{max(MIN_BAR, (end - attempt.started_at) * chart.scale):.2f}" height="{BAR_HEIGHT}" '
        f'fill="{COLOURS.get(status, COLOURS["failed"])}" fill-opacity="{1 if last else 0.45}"{extra}>'
        f"<title>{_text(tip)}</title></rect>"
    )


def attempt_status(worker: WorkerRecord, attempt: Attempt) -> str:
    """The last attempt shows the worker's status; an earlier one how it ended (it was retried)."""
    if attempt is worker.attempts[-1]:
        return WorkerStatus.RUNNING.value if worker.status is WorkerStatus.PENDING else worker.status.value
    return (
        {EndReason.TIMEOUT: "timeout", EndReason.CANCELLED: "cancelled"}.get(attempt.end_reason, "failed")
        if attempt.end_reason
        else "failed"
    )


def tick_step(span: float, target: int = 8) -> float:
    """The smallest nice step that puts at most ``target`` ticks across ``span`` seconds."""
    raw = span / max(1, target)
    for step in TICK_STEPS:
        if step >= raw:
            return float(step)
    return float(3600 * math.ceil(raw / 3600))


def _tick_label(t: float, step: float) -> str:
    if step < 1:
        return f"{t:.{max(0, -math.floor(math.log10(step) + 1e-9))}f}s"
    return f"{t:g}s" if t < 60 else _clock(t)


def _clock(seconds: float) -> str:
    """``0.4s``, ``12s``, ``2m 30s``, ``1h 05m``: short enough for an axis."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m" + (f" {total % 60:02d}s" if total % 60 else "")
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def _candidate_note(worker: WorkerRecord) -> str:
    """``, candidate 2 of t1, selected`` for a task's candidate; empty otherwise."""
    if worker.candidate is None:
        return ""
    verdict = "" if worker.selected is None else ", selected" if worker.selected else ", not selected"
    return f", candidate {worker.candidate} of {worker.task_id}{verdict}"


def _label(worker: WorkerRecord, max_chars: float) -> tuple[str, str]:
    """(``worker_2_1``, `` task…``): the two cut together to fit the label column; a selected
    candidate's name gets a star."""
    limit = max(4, int(max_chars))
    full = worker.name + (" ★" if worker.selected else "")
    name = full if len(full) <= limit else full[: limit - 1] + "…"
    task = " " + " ".join(_NOT_XML.sub("", worker.task).split())
    room = limit - len(name)
    if room < 3:
        return name, ""
    return name, task if len(task) <= room else task[: room - 1].rstrip() + "…"


def _indent(level: int) -> int:
    return INDENT * min(level, MAX_INDENT_LEVELS)


def _end(attempt: Attempt, now: float) -> float:
    return max(attempt.started_at, attempt.ended_at if attempt.ended_at is not None else now)


def _clip(text: str | None, limit: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value: object) -> str:
    """Text safe in an XML element or a double-quoted attribute. The two characters past Latin-1
    that the picture itself writes (an attempt's "→", a clipped text's "…") become character
    references: one of them would make Python hold the whole document at 2 bytes a character
    (a 10,000-worker tree's picture is 7 MB of text)."""
    text = str(value)
    if _NOT_PLAIN.search(text) is None:  # the usual case (ids, names, numbers): one scan, nothing to change
        return text
    text = escape(_NOT_XML.sub("", text), _ESCAPES)
    return text.replace("→", "&#8594;").replace("…", "&#8230;") if not text.isascii() else text


__all__ = [
    "COLOURS",
    "Row",
    "attempt_status",
    "commit_marks",
    "dependency_waits",
    "merged_at",
    "render_timeline_svg",
    "tick_step",
    "timeline_svg_parts",
    "tree_rows",
]
