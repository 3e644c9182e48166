"""Live progress in a terminal: a job tree redrawn in place on a TTY, plain lines otherwise.

The tree (root → workers → child jobs → their workers) is built from either the
engine's records (``run``, ``watch`` without a server) or the API's status
document (``quick-start``, ``watch``), then rendered by one pure function, so
every front end draws the same picture. When the tree is taller than the
terminal, finished workers are summarised per level and running or failed ones
stay listed; only plain ANSI codes are used (no curses, no dependency).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from ..outcomes import refusal_line, said_line
from ..reports import terminal
from ..reports.candidate_groups import ASCII_ICONS as CANDIDATE_ASCII_ICONS
from ..reports.candidate_groups import CandidateGroup, candidate_line, groups
from ..reports.taskgraph import deliveries, waits_on

Quiet = Callable[[WorkerRecord], "str | None"]  # a running worker's "no output for 73 s", or None

ICONS = {
    "pending": "·",
    "running": "▶",
    "success": "✔",
    "recursive_success": "✔",
    "child_incomplete": "◐",
    "failed": "✘",
    "timeout": "⏱",
    "cancelled": "■",
    "skipped": "–",
}
# The candidate lines' ASCII marks, and the two a worker has before it ends.
ASCII_ICONS = {"pending": ".", "running": ">", **CANDIDATE_ASCII_ICONS}
BOX = ("├─ ", "└─ ", "│  ", "   ")
ASCII_BOX = ("|- ", "`- ", "|  ", "   ")
OK = ("success", "recursive_success")
# child_incomplete: it exited 0, but a child job it started did not complete: shown like a failure
TROUBLE = ("failed", "timeout", "cancelled", "child_incomplete")
FINISHED = (*OK, *TROUBLE, "skipped")
REFRESH = 0.1  # seconds: the least time between two redraws
PAUSE_PER_COST = 9  # a redraw that took t seconds (reading the tree included) is followed by at least 9t of pause


@dataclass
class WorkerNode:
    """One worker in the drawn tree, with the child jobs it started."""

    name: str
    status: str
    task: str
    duration: float | None = None  # set once it ended
    started_at: float | None = None  # wall clock, for the elapsed time of a running worker
    children: list[JobNode] = field(default_factory=list)
    waits_on: list[str] = field(default_factory=list)  # a task graph's: prerequisites not merged yet
    task_id: str | None = None
    candidate: int | None = None  # one of its task's candidates: drawn on its task's line
    node: str | None = None  # the node its latest attempt runs or ran on (None: this server)
    waiting: str | None = None  # why it is still pending ("waiting for memory: ...": process/admission.py)
    no_changes: bool = False  # it ended with its checkout as it found it
    quiet: str | None = None  # a running worker's "no output for 73 s" (workers.quiet_after)
    refused: str | None = None  # what the system refused it: "2 refused: network 10.0.0.1:443; ..."
    said: str | None = None  # what its log says it was refused (its own words): "its log says ...: read-only /x"


@dataclass
class JobNode:
    """One job in the drawn tree."""

    id: str
    status: str
    workers: list[WorkerNode] = field(default_factory=list)
    # Its tasks that run as candidates, by task id (reports.candidate_groups.groups): one line each.
    candidates: dict[str, CandidateGroup] = field(default_factory=dict)

    def walk(self) -> list[WorkerNode]:
        """Every worker of this job and of the jobs below it."""
        return [w for job in self.jobs() for w in job.workers]

    def jobs(self) -> list[JobNode]:
        """This job and every job below it."""
        found = [self]
        for job in found:  # grows while it is walked: breadth first
            found.extend(child for worker in job.workers for child in worker.children)
        return found


# -- building the tree ----------------------------------------------------------------
def tree_from_records(
    jobs: list[JobRecord], workers: list[WorkerRecord], job_id: str | None = None, silence: Quiet | None = None
) -> JobNode:
    """The tree of ``job_id`` (default: the root) from engine or workspace records; ``silence``
    says how long a running worker has printed nothing (None: not shown)."""
    by_id = {j.id: j for j in jobs}
    by_job: dict[str, list[WorkerRecord]] = {}
    for worker in workers:
        by_job.setdefault(worker.job_id, []).append(worker)

    def build(job: JobRecord) -> JobNode:
        node = JobNode(job.id, job.status.value)
        own = sorted(by_job.get(job.id, []), key=lambda w: w.index)
        tasks = deliveries(job, own)
        for rec in own:
            kids = [build(by_id[c]) for c in rec.child_job_ids if c in by_id]
            waits = waits_on(rec, job, tasks)
            node.workers.append(
                WorkerNode(
                    rec.name,
                    rec.status.value,
                    rec.task,
                    rec.duration,
                    rec.started_at,
                    kids,
                    waits,
                    rec.task_id,
                    rec.candidate,
                    rec.node,
                    rec.waiting,
                    bool(rec.no_changes),
                    silence(rec) if silence is not None else None,
                    refusal_line(rec.refusals, rec.refusals_total) or None,
                    said_line(rec.said_refused, rec.said_refused_total) or None,
                )
            )
        node.candidates = groups(job, own)
        return node

    root = by_id[job_id] if job_id else next(j for j in jobs if j.is_root)
    return build(root)


def tree_from_status(doc: Mapping[str, Any]) -> JobNode:
    """The tree from the API's status document (``results.tasks`` with their ``child_results``)."""

    def workers(tasks: list[dict[str, Any]]) -> list[WorkerNode]:
        found = []
        for task in tasks:
            node = WorkerNode(task["worker_id"], task["status"], task.get("task", ""), task.get("duration"))
            node.waits_on = list(task.get("waits_on") or [])
            node.task_id, node.candidate, node.node = task.get("task_id"), task.get("candidate"), task.get("node")
            node.waiting = task.get("waiting")
            node.no_changes = bool(task.get("no_changes"))
            node.quiet, node.refused, node.said = task.get("quiet"), task.get("refused"), task.get("said")
            by_child: dict[str, list[dict[str, Any]]] = {}
            status: dict[str, str] = {}
            for sub in task.get("child_results") or []:  # flat: each entry names its job
                by_child.setdefault(sub["job_id"], []).append(sub)
                status[sub["job_id"]] = sub.get("job_status") or "running"
            chosen = task.get("child_candidates") or {}
            node.children = [JobNode(cid, status[cid], workers(subs), chosen.get(cid) or {}) for cid, subs in by_child.items()]
            found.append(node)
        return found

    return JobNode(doc["job_id"], doc["status"], workers(doc["results"]["tasks"]), doc.get("candidates") or {})


# -- rendering -----------------------------------------------------------------------------
def render_tree(
    root: JobNode, *, now: float | None = None, width: int = 0, height: int = 0, ascii_only: bool = False
) -> list[str]:
    """The tree as lines, each at most ``width`` characters. With ``height``, levels are
    collapsed step by step until it fits: first finished and pending workers are counted
    instead of listed, then failed ones too (running ones stay), then the tail is cut."""
    now = time.time() if now is None else now
    style = (ASCII_ICONS, ASCII_BOX) if ascii_only else (ICONS, BOX)
    for keep in (None, ("running", *TROUBLE), ("running",)):
        rows = _rows(root, keep, style)
        if not height or len(rows) <= height:
            break
    dots = "..." if ascii_only else "…"
    if height and len(rows) > height:
        cut = len(rows) - height + 1
        rows = rows[: height - 1] + [(f"{dots} {cut} more line(s): enlarge the terminal to see them", "", "")]
    return _lay_out(rows, now, width, dots, ascii_only)


def _rows(
    root: JobNode, keep: tuple[str, ...] | None, style: tuple[dict[str, str], tuple[str, ...]]
) -> list[tuple[str, str, Any]]:
    """(left part, status, worker or text) per line; ``keep`` lists statuses shown one by one (None: all)."""
    icons, box = style
    rows: list[tuple[str, str, Any]] = [(f"job {root.id}", root.status, _done(root))]

    def level(job: JobNode, indent: str) -> None:
        entries: list[WorkerNode | Candidates | str] = []
        hidden: list[str] = []
        for item in _entries(job):
            statuses = [item.status] if isinstance(item, WorkerNode) else [w.status for w in item.workers]
            if keep is None or any(s in keep for s in statuses):
                entries.append(item)
            else:
                hidden += statuses
        if hidden:
            entries.append(_count_line(hidden, icons))
        for i, entry in enumerate(entries):
            branch, below = (box[1], box[3]) if i == len(entries) - 1 else (box[0], box[2])
            if isinstance(entry, str):
                rows.append((indent + branch + entry, "", ""))
                continue
            if isinstance(entry, Candidates):
                rows.append((f"{indent}{branch}{icons.get(entry.status, '?')} {entry.task_id}", entry.status, entry))
            else:
                rows.append((f"{indent}{branch}{icons.get(entry.status, '?')} {entry.name}", entry.status, entry))
            children = entry.children
            for k, child in enumerate(children):
                kid_branch, kid_below = (box[1], box[3]) if k == len(children) - 1 else (box[0], box[2])
                rows.append((f"{indent}{below}{kid_branch}job {child.id}", child.status, _done(child)))
                level(child, indent + below + kid_below)

    level(root, "")
    return rows


@dataclass
class Candidates:
    """A task's candidates, drawn as one line side by side where its first candidate is."""

    task_id: str
    group: CandidateGroup
    workers: list[WorkerNode]

    @property
    def status(self) -> str:
        """Its winner's status once chosen (failed: none eligible); running while a candidate runs
        or the selection is still to be made; pending before any started."""
        if self.group.get("chosen"):
            winner = next((w for w in self.workers if w.name == self.group.get("winner")), None)
            return winner.status if winner is not None else "failed"
        if all(w.status == WorkerStatus.PENDING for w in self.workers):
            return "pending"
        return "running"

    @property
    def children(self) -> list[JobNode]:
        return [child for w in self.workers for child in w.children]


def _entries(job: JobNode) -> list[WorkerNode | Candidates]:
    """The job's workers in plan order, a task's candidates folded into one entry at the first."""
    found: list[WorkerNode | Candidates] = []
    folded: dict[str, Candidates] = {}
    for worker in job.workers:
        task_id = worker.task_id or ""
        group = job.candidates.get(task_id) if worker.candidate is not None else None
        if group is None:
            found.append(worker)
        elif task_id in folded:
            folded[task_id].workers.append(worker)
        else:
            folded[task_id] = Candidates(task_id, group, [worker])
            found.append(folded[task_id])
    return found


def _count_line(statuses: list[str], icons: dict[str, str]) -> str:
    """``✔ 12 succeeded  · 3 pending``: the workers of a level that are not listed one by one."""
    counts: dict[str, int] = {}
    for status in statuses:
        label = "succeeded" if status in OK else status
        counts[label] = counts.get(label, 0) + 1
    order = ["running", "failed", "timeout", "cancelled", "child_incomplete", "succeeded", "skipped", "pending"]
    labels = sorted(counts, key=lambda lab: order.index(lab) if lab in order else len(order))
    return "  ".join(f"{icons.get('success' if lab == 'succeeded' else lab, '?')} {counts[lab]} {lab}" for lab in labels)


def _done(job: JobNode) -> str:
    return f"{sum(1 for w in job.workers if w.status in FINISHED)}/{len(job.workers)} done"


def _lay_out(rows: list[tuple[str, str, Any]], now: float, width: int, dots: str, ascii_only: bool = False) -> list[str]:
    pad = max(len(left) for left, status, _ in rows if status)
    lines = []
    for left, status, what in rows:
        if not status:
            line = left
        elif isinstance(what, Candidates):
            text = candidate_line(what.group, ascii_only=ascii_only).removeprefix(what.task_id + " ")
            line = f"{left:<{pad}}  {status:<17} {'':>7}  {text}"
        elif isinstance(what, WorkerNode):
            waits = f"(waits on {', '.join(what.waits_on)}) " if what.waits_on else ""
            waits += f"on {what.node}: " if what.node else ""
            waits += f"({what.waiting}) " if what.waiting and what.status == WorkerStatus.PENDING else ""
            waits += "no changes: " if what.no_changes else ""
            waits += f"({what.quiet}) " if what.quiet and what.status == WorkerStatus.RUNNING else ""
            waits += f"({what.refused}) " if what.refused else ""
            waits += f"({what.said}) " if what.said else ""
            line = f"{left:<{pad}}  {status:<17} {_took(what, now):>7}  {waits}{' '.join(what.task.split())}"
        else:
            line = f"{left:<{pad}}  {status:<17} {what}"
        line = line.rstrip()
        lines.append(line[: width - len(dots)] + dots if width and len(line) > width else line)
    return lines


def _took(worker: WorkerNode, now: float) -> str:
    if worker.duration is not None:
        return duration_text(worker.duration)
    if worker.status == WorkerStatus.RUNNING and worker.started_at is not None:
        return duration_text(max(0.0, now - worker.started_at))
    return ""


def duration_text(seconds: float) -> str:
    """``0.4s``, ``59.9s``, ``3m05s``, ``2h07m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


# -- the live view ----------------------------------------------------------------------------
class ProgressView:
    """Shows a job tree as it changes: redrawn in place on a TTY, one line per change otherwise."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, size: tuple[int, int] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._size = size  # (columns, lines); None: ask the terminal at each draw
        encoding = (getattr(self.stream, "encoding", None) or "").lower().replace("-", "")
        self.ascii_only = encoding not in ("utf8", "utf16", "utf32")
        self._drawn = 0
        self._last_draw = 0.0
        self._draw_cost = 0.0  # seconds the last refresh() took
        self._seen: dict[str, str] = {}
        self._first_running: dict[tuple[str, str], float] = {}  # API path: when a worker was first seen running
        self._started = time.monotonic()
        # Records only (the status document says it itself): how long a running worker has been
        # silent ("no output for 73 s"); None: not shown. ``watch`` from the files sets it.
        self.silence: Quiet | None = None
        self.last_event: int | None = None  # API path: the last event shown; a follower that comes back resumes after it

    # records: ``run`` and ``watch`` without a server
    def update(self, jobs: list[JobRecord], workers: list[WorkerRecord], job_id: str | None = None) -> None:
        if self.tty:
            self.draw(tree_from_records(jobs, workers, job_id, self.silence))
        else:
            self._lines(workers)

    def refresh(self, read: Callable[[], tuple[list[JobRecord], list[WorkerRecord]]], job_id: str | None = None) -> None:
        """A TTY only: redraw from ``read()`` (a fresh copy of the records) when a redraw is due.
        Reading and drawing a tree costs in proportion to its size, so the pause after a
        redraw grows with what it took: a tree of 10,000 workers is redrawn less often
        instead of taking its job's time (at most a tenth of it goes to the picture)."""
        if not self.due():
            return
        started = time.monotonic()
        self.draw(tree_from_records(*read(), job_id, self.silence), force=True)
        self._draw_cost = time.monotonic() - started

    def due(self) -> bool:
        """A redraw is due: REFRESH has passed since the last one, and PAUSE_PER_COST times its cost."""
        return time.monotonic() - self._last_draw >= max(REFRESH, PAUSE_PER_COST * self._draw_cost)

    def changed(self, workers: list[WorkerRecord]) -> None:
        """Without a terminal: a line for each of these workers whose state is new to us (the
        ones an event named), without reading the rest of the tree."""
        self._lines(workers)

    # the API's status document: ``quick-start`` and ``watch``
    def update_doc(self, doc: Mapping[str, Any]) -> None:
        tree = tree_from_status(doc)
        self._stamp_running(tree)
        if self.tty:
            self.draw(tree)
        else:
            for worker in tree.walk():
                self._line(worker.name, worker.status, "")

    def event(self, data: dict[str, Any]) -> None:
        """One event of the SSE stream as a plain line (no terminal needed)."""
        who = f"depth_{data['depth']}_{data['worker']}" if data.get("worker") else f"job {data['job_id']}"
        self.stream.write(f"[{self._elapsed()}] {who:<28} {data['status']:<18} {data.get('message', '')}\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line about the following itself (where the picture comes from now), kept above the
        tree: the next picture is drawn below it rather than over it."""
        self.stream.write(f"[{self._elapsed()}] {text}\n")
        self.stream.flush()
        self._drawn = 0

    def draw(self, tree: JobNode, *, force: bool = False) -> None:
        """Redraw the tree in place (a TTY only), at most every REFRESH seconds unless forced."""
        if not force and time.monotonic() - self._last_draw < REFRESH:
            return
        self._last_draw = time.monotonic()
        columns, lines = self._size or shutil.get_terminal_size((100, 40))
        everyone = tree.walk()
        done = sum(1 for w in everyone if w.status in FINISHED)
        header = f"[{self._elapsed()}] {len(tree.jobs())} job(s), {done}/{len(everyone)} workers done"
        rows = [header[:columns]] + render_tree(tree, width=columns, height=max(3, lines - 2), ascii_only=self.ascii_only)
        # Up to the first line drawn last time, clear from there down, and draw again.
        if self._drawn:  # sent as they are (reports/terminal.py): the rows, a worker's text in them, are shown
            terminal.raw(self.stream).write(f"\x1b[{self._drawn}F\x1b[J")
        self.stream.write("\n".join(rows) + "\n")
        self.stream.flush()
        self._drawn = len(rows)

    def finish(self, doc: Mapping[str, Any], *, table: bool = False) -> None:
        """The final picture (on a TTY the tree; otherwise the status table, if asked for),
        then the summary and where the reports are."""
        from ..reports.status_document import status_table

        if self.tty:
            self.draw(tree_from_status(doc), force=True)
        elif table:
            self.stream.write("\n" + status_table(doc, merge=False) + "\n")  # the closing lines say it
        self.stream.write("\n" + "\n".join(closing_lines(doc)) + "\n")
        self.stream.flush()

    def _stamp_running(self, tree: JobNode) -> None:
        """The status document has no start times: time a running worker from when it was first seen."""
        now = time.time()
        for job in tree.jobs():
            for worker in job.workers:
                if worker.status == WorkerStatus.RUNNING:
                    worker.started_at = self._first_running.setdefault((job.id, worker.name), now)

    def _lines(self, workers: list[WorkerRecord]) -> None:
        for worker in workers:
            extra = f" ({worker.exit_reason})" if worker.status.terminal and worker.exit_reason else ""
            extra += " (no changes)" if worker.no_changes else ""
            refused = refusal_line(worker.refusals, worker.refusals_total)
            extra += f" ({refused})" if refused and worker.status.terminal else ""
            said = said_line(worker.said_refused, worker.said_refused_total)
            extra += f" ({said})" if said and worker.status.terminal else ""
            quiet = self.silence(worker) if self.silence is not None else None
            # A line when it falls silent (once per silence), and one when its state changes.
            self._line(worker.key, worker.status.value + (" (quiet)" if quiet else ""), f" ({quiet})" if quiet else extra)

    def _line(self, key: str, state: str, extra: str) -> None:
        if self._seen.get(key) == state:
            return
        self._seen[key] = state
        self.stream.write(f"[{self._elapsed()}] {key:<28} {state}{extra}\n")
        self.stream.flush()

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._started:6.1f}s"


def summary(doc: Mapping[str, Any]) -> str:
    progress = doc["progress"]
    tree = doc.get("tree", {})
    took = f" in {duration_text(doc['duration'])}" if doc.get("duration") is not None else ""
    return (
        f"Job {doc['job_id']} {doc['status']}: {progress['succeeded']}/{progress['total']} workers succeeded"
        + (f", {n} child_incomplete" if (n := progress.get("child_incomplete")) else "")
        + (
            f" ({tree['workers']} in the whole tree, {tree['jobs']} job(s), depth {tree['max_depth']})"
            if tree.get("jobs", 1) > 1
            else ""
        )
        + ("; no worker changed anything: the result is the base" if doc.get("no_changes") else "")
        + took
    )


def closing_lines(doc: Mapping[str, Any]) -> list[str]:
    """The summary, then the path of FINAL_RESULT.md and of each level report that exists."""
    from ..reports.status_document import merge_lines
    from ..reports.wording import approval_lines, checks_text, pull_request_text
    from ..workspace.layout import Workspace

    lines = [summary(doc), *merge_lines(doc)]
    published = pull_request_text(doc.get("publish"))
    if published:
        lines.append(f"pull request: {published}")
    watched = checks_text(doc.get("checks"))
    if watched:
        lines.append(f"pr checks: {watched}")
    if doc.get("status") == JobStatus.WAITING:  # approval: before_merge (delivery/approval.py)
        lines += approval_lines(doc["job_id"])
    results = doc["results"]
    if results.get("final_report"):
        lines.append(f"report: {results['final_report']}")
    job_dir = Path(results["workspace"])
    workspace = Workspace(job_dir.parent)
    for depth in range(doc.get("depth", 0), doc.get("tree", {}).get("max_depth", doc.get("depth", 0)) + 1):
        path = workspace.level_report(doc.get("root_job_id") or doc["job_id"], depth)
        if path.is_file():
            lines.append(f"level {depth}: {path}")
    return lines
