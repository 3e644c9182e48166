"""What the user sees of a job's task graph, from records alone: which tasks a
worker still waits on, how long it waited on them, its gates in one line, and the graph as a
Mermaid block for FINAL_RESULT.md. Pure: the status document, the reports and the timeline
call it on a snapshot or on records read from disk.

A prerequisite is *delivered* as engine/scheduling.py meets it: once it succeeded and its work was merged
into the job's integration branch (``WorkerRecord.integrated.merged``); a job without an
integration ref (no worktree) counts one that succeeded; ``on_failure: continue`` one that ended. Mermaid gets no user text as syntax: node ids are ``n<index>``,
and a label is one line in double quotes where the few characters that would end it or be read
as markup become look-alikes (``"`` ``'``, ``<>`` ``‹›``, a backtick ``ˋ``, the first character of
an entity code ``＃``/``＆`` and of ``%%`` ``％``). Mermaid's own entity codes (``#34;``) are not
used: Mermaid 11 parses them but shows them garbled (checked in Chromium with mermaid 11.17.2).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from ..config import OnFailure
from ..models import JobRecord, TaskNode, WorkerRecord, WorkerStatus, delivered
from ..outcomes import GateResult, GateStatus

# GitHub's Mermaid refuses a diagram past 500 edges (its maxEdges) or 50,000 characters: a
# bigger graph is left to the task table rather than shown as an error box.
MERMAID_MAX_NODES = 300
MERMAID_MAX_EDGES = 500
TITLE_CHARS = 40  # of a task's text in a node's label
GATES_CHARS = 80  # of its gates' summary there (the table below the diagram has them all)
_LABEL_SWAPS = str.maketrans({'"': "'", "<": "‹", ">": "›", "`": "ˋ"})
# What Mermaid would read as more than text: its entity codes ("#35;", "#quot;": decoded, garbled),
# an HTML entity ("&amp;": decoded) and "%%" (a comment, or a "%%{init: ...}%%" directive that would
# reconfigure the diagram, found anywhere in the text). Their first character becomes a look-alike.
_MARKUP = re.compile(r"#(?=[A-Za-z0-9]+;)|&(?=#?[A-Za-z0-9]+;)|%(?=%)")
_LOOK_ALIKE = {"#": "＃", "&": "＆", "%": "％"}
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f]")
# Node fill and text colour per worker status (the timeline's palette).
MERMAID_CLASSES = {
    "pending": ("#e0e0e0", "#212121"),
    "running": ("#1e88e5", "#ffffff"),
    "success": ("#2e7d32", "#ffffff"),
    "recursive_success": ("#00838f", "#ffffff"),
    "child_incomplete": ("#c77700", "#ffffff"),  # exited 0, a child job it started did not complete
    "failed": ("#c62828", "#ffffff"),
    "timeout": ("#ef6c00", "#ffffff"),
    "cancelled": ("#757575", "#ffffff"),
    "skipped": ("#bdbdbd", "#212121"),
}


def _planned(worker: WorkerRecord, job: JobRecord | None) -> TaskNode | None:
    """The worker's node in its job's ``nodes`` by plan position (records that lack the fields)."""
    if job is not None and 0 < worker.index <= len(job.nodes):
        return job.nodes[worker.index - 1]
    return None


def node_of(worker: WorkerRecord, job: JobRecord | None = None) -> TaskNode | None:
    """The worker's task node: from its own fields, else from its job's ``nodes`` by plan
    position; None for a record of a job that has no graph."""
    if worker.task_id is not None:
        return TaskNode(worker.task_id, list(worker.depends_on), worker.role, list(worker.owns))
    return _planned(worker, job)


def task_id_of(worker: WorkerRecord, job: JobRecord | None = None) -> str | None:
    """``node_of(worker, job).id`` without building the node (the status document reads it per worker)."""
    if worker.task_id is not None:
        return worker.task_id
    node = _planned(worker, job)
    return node.id if node is not None else None


def depends_of(worker: WorkerRecord, job: JobRecord | None = None) -> list[str]:
    """``node_of(worker, job).depends_on`` without building the node (not a copy: do not change it)."""
    if worker.task_id is not None:
        return worker.depends_on
    node = _planned(worker, job)
    return node.depends_on if node is not None else []


def has_dependencies(job: JobRecord, workers: Iterable[WorkerRecord] = ()) -> bool:
    """Whether any task of the job waits on another (its nodes, or its workers' records)."""
    return any(n.depends_on for n in job.nodes) or any(w.depends_on for w in workers if w.job_id == job.id)


def deliveries(job: JobRecord | None, workers: Iterable[WorkerRecord]) -> dict[str, float | None]:
    """A job's tasks by id (``workers``: that job's own): when each was delivered to the tasks
    that wait on it (``delivered_at``; None: not yet). Computed once per job, read per edge."""
    found: dict[str, float | None] = {}
    for w in workers:
        task_id = task_id_of(w, job)
        if task_id is not None and found.get(task_id) is None:  # a task's candidates: the one delivered
            found[task_id] = delivered_at(w, job)
    return found


def representatives(workers: list[WorkerRecord], job: JobRecord | None) -> list[tuple[WorkerRecord, int]]:
    """One worker per task in plan order, with its task's candidate count (1: no candidates):
    a task run as candidates shows as its winner, else its first candidate."""
    groups: dict[str, list[WorkerRecord]] = {}
    order: list[str] = []
    for w in workers:
        key = (task_id_of(w, job) or w.name) if w.candidate is not None else w.name
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(w)
    return [(next((w for w in groups[k] if w.selected), groups[k][0]), len(groups[k])) for k in order]


def delivered_at(dep: WorkerRecord, job: JobRecord | None) -> float | None:
    """When a prerequisite was met, as engine/scheduling.py meets it; None: not (yet). Met: merged into
    the job's integration branch (at the merge), or, without one, succeeded; under
    ``on_failure: continue``, ended whatever its status."""
    if job is not None and job.config.on_failure == OnFailure.CONTINUE and dep.status.terminal:
        return dep.ended_at or 0.0
    if not delivered(job, dep):
        return None
    if job is None or job.integration is None or dep.integrated is None:
        return dep.ended_at or 0.0
    at = dep.integrated.at
    return float(at) if isinstance(at, (int, float)) else dep.ended_at or 0.0


def waits_on(worker: WorkerRecord, job: JobRecord | None, delivered: dict[str, float | None]) -> list[str]:
    """The task ids a pending worker still waits on: its prerequisites not delivered yet
    (``delivered``: its job's ``deliveries``; an id without a worker counts as met, as in
    engine/scheduling.py). Empty once it started or ended (a skipped one's reason says which failed)."""
    if worker.status is not WorkerStatus.PENDING:
        return []
    return [d for d in depends_of(worker, job) if d in delivered and delivered[d] is None]


class DependencyWait(NamedTuple):
    """The span a worker spent waiting on its prerequisites: from ``start`` (its job's plan
    ready, or its record's creation) to ``until`` (the last one delivered, its own end when it
    was given up, or ``now`` while it still waits). A tuple: the status document makes one per
    graph worker."""

    start: float
    until: float
    depends_on: tuple[str, ...]
    waiting: bool  # still waiting at ``now``

    @property
    def seconds(self) -> float:
        return max(0.0, self.until - self.start)


def dependency_wait(
    worker: WorkerRecord, job: JobRecord | None, delivered: dict[str, float | None], now: float
) -> DependencyWait | None:
    """The worker's wait on its prerequisites; None when it has none or never could wait."""
    depends = depends_of(worker, job)
    ready = (job.started_at if job is not None else None) or worker.created_at
    if not depends or not ready:
        return None
    first = worker.attempts[0].started_at if worker.attempts else worker.started_at
    stop = first if first is not None else (worker.ended_at if worker.status.terminal else now)
    if stop is None:
        return None
    times = [delivered[d] for d in depends if d in delivered]  # an unknown id: met (engine/scheduling.py)
    known = [t for t in times if t is not None]
    waiting = len(known) < len(times)
    until = stop if waiting else min(stop, max(known, default=ready))
    return DependencyWait(ready, max(ready, until), tuple(depends), waiting and first is None and not worker.status.terminal)


def gate_summary(gates: list[GateResult]) -> str | None:
    """``tests passed, lint failed (exit 1)``; None when no gate ran."""
    if not gates:
        return None
    parts = []
    for gate in gates:
        status = gate.status or (GateStatus.PASSED if gate.passed else GateStatus.FAILED)
        code = gate.exit_code
        detail = f" (exit {code})" if code not in (None, 0) and status != GateStatus.PASSED else ""
        shown = "ran no tests" if status == GateStatus.NO_TESTS else str(status)
        optional = "" if gate.required else " [optional]"
        parts.append(f"{gate.name} {shown}{detail}{optional}")
    return ", ".join(parts)


def mermaid_label(text: str) -> str:
    """Text safe inside a quoted Mermaid label, on one line: ``"<>`` and backticks swapped for
    look-alikes, so are the first characters of an entity code and of ``%%``; control characters
    dropped."""
    line = _NOT_TEXT.sub("", " ".join(str(text).split()))
    return _MARKUP.sub(lambda m: _LOOK_ALIKE[m.group()], line.translate(_LABEL_SWAPS))


def mermaid(job: JobRecord, workers: list[WorkerRecord]) -> str | None:
    """The ``graph TD`` body of a job's tasks (an edge from each prerequisite to its dependent,
    each node coloured by its worker's status); None when it is too big for Mermaid."""
    shown = representatives(sorted((w for w in workers if w.job_id == job.id), key=lambda w: w.index), job)
    own = [w for w, _ in shown]
    count = {w.name: n for w, n in shown}
    ids = {}
    for w in own:
        node = node_of(w, job)
        if node is not None:
            ids[node.id] = f"n{w.index}"
    edges = [(ids[d], ids[n.id]) for w in own if (n := node_of(w, job)) is not None for d in n.depends_on if d in ids]
    if len(ids) > MERMAID_MAX_NODES or len(edges) > MERMAID_MAX_EDGES:
        return None
    lines = ["graph TD"]
    classes: dict[str, list[str]] = {}
    for w in own:
        node = node_of(w, job)
        if node is None:
            continue
        title = " ".join(w.task.split())
        title = title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1].rstrip() + "…"
        gates = gate_summary(w.gates)
        gates = gates if gates is None or len(gates) <= GATES_CHARS else gates[: GATES_CHARS - 1].rstrip() + "…"
        label = f"{node.id}: {title} ({w.status.value}" + (f", gates: {gates}" if gates else "") + ")"
        if count[w.name] > 1:
            label += f" [{count[w.name]} candidates" + (f", {w.name} selected]" if w.selected else "]")
        lines.append(f'    {ids[node.id]}["{mermaid_label(label)}"]')
        classes.setdefault(w.status.value, []).append(ids[node.id])
    lines += [f"    {a} --> {b}" for a, b in edges]
    for status, members in classes.items():
        fill, ink = MERMAID_CLASSES.get(status, MERMAID_CLASSES["failed"])
        lines.append(f"    classDef {status} fill:{fill},color:{ink},stroke:#424242")
        lines.append(f"    class {','.join(members)} {status}")
    return "\n".join(lines)


@dataclass(frozen=True)
class TaskRow:
    """One task of a graph job, as the reports list it."""

    job: JobRecord
    worker: WorkerRecord
    node: TaskNode
    waits_on: list[str]


@dataclass(frozen=True)
class GraphView:
    """A job's graph for the reports: its tasks, and its Mermaid block (None: too big, or no
    dependencies to draw)."""

    job: JobRecord
    tasks: list[TaskRow]
    mermaid: str | None
    dependencies: bool


def graph_views(jobs: list[JobRecord], workers: list[WorkerRecord]) -> list[GraphView]:
    """A view per job whose tasks have ids and that has dependencies, gates or trespasses to show."""
    # The jobs with something to show, found in one pass before any job's workers are gathered and
    # sorted: a flat job of 10,000 workers has nothing to show, and each pass over them costs.
    shown = {w.job_id for w in workers if w.depends_on or w.gates or w.trespass}
    shown.update(job.id for job in jobs if any(n.depends_on for n in job.nodes))
    by_job: dict[str, list[WorkerRecord]] = {}
    for w in workers if shown else ():
        if w.job_id in shown:
            by_job.setdefault(w.job_id, []).append(w)
    views = []
    by_index = operator.attrgetter("index")
    for job in jobs:
        if job.id not in shown:
            continue
        own = by_job.get(job.id, [])
        deps = has_dependencies(job, own)
        own = sorted(own, key=by_index)
        delivered = deliveries(job, own)
        # A worker without a node (a record from before graphs) still shows, under its plan id.
        rows = [TaskRow(job, w, node_of(w, job) or TaskNode(f"t{w.index}"), waits_on(w, job, delivered)) for w in own]
        views.append(GraphView(job, rows, mermaid(job, own) if deps else None, deps))
    return views
