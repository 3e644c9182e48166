"""What the user sees of a task's candidates, from records alone: the
candidates of each task grouped side by side (the status document, the progress tree and the
dashboard read these groups), one line per task for a terminal, and where each task's
CANDIDATES file sits in the job folder. Pure: no I/O; reports/__init__.py renders the files.

A task with candidates is several workers of one job with the same ``task_id``, each with its
``candidate`` number; once the task's selection is made (``JobRecord.selections``) each carries
``selected`` and ``score`` (its ranking row), and the selection names the winner and why.

One file per task, not one CANDIDATES.md per tree: a judge's matches and every candidate's
diffstat make a long page per task, and a task's page stands alone for whoever reviews it. A root
job's task ``api`` is ``CANDIDATES_api.md`` next to FINAL_RESULT.md; a child job's is
``depth_<d>/CANDIDATES_<job id>_<task id>.md`` (task ids are unique only within a job; job ids
hold no ``_`` and task ids no ``/``, so two tasks never share a file).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

from orchestrator.models import JobRecord, WorkerRecord, WorkerStatus
from orchestrator.outcomes import Measure
from orchestrator.reports.markdown import DASH, clean, md_cell
from orchestrator.reports.taskgraph import gate_summary
from orchestrator.workspace.layout import candidates_report

from ..outcomes import CostBasis

ICONS = {
    "success": "✓",
    "recursive_success": "✓",
    "child_incomplete": "◐",
    "failed": "✗",
    "timeout": "⏱",
    "cancelled": "■",
    "skipped": "–",
}
ASCII_ICONS = {
    "success": "+",
    "recursive_success": "+",
    "child_incomplete": "~",
    "failed": "x",
    "timeout": "t",
    "cancelled": "#",
    "skipped": "-",
}
LINE_REASON_CHARS = 40  # of a loser's reason on a terminal line
MEASURE_COLUMNS = 12  # measures a CANDIDATES table shows (a scoring command may print any number)


class CandidateRow(TypedDict):
    """One candidate as the views show it (``candidate_row``): JSON as it is, in the status
    document and the templates."""

    worker: str
    key: str
    candidate: int | None
    kind: str
    model: str | None
    status: str
    gates: str | None  # taskgraph.gate_summary
    gates_passed: bool | None
    failed_gates: list[str]
    # Its ranking row's figures once its task's selection is made (None before).
    eligible: bool | None
    score: float | None
    rank: int | None
    reason: str | None
    measures: dict[str, Measure]
    parts: dict[str, float]
    selected: bool | None
    cost_usd: float | None
    cost_basis: CostBasis | None
    cost_note: str | None
    duration: float | None
    branch: str | None
    commit: str | None
    diffstat: str | None
    files_changed: int


class CandidateGroup(TypedDict):
    """A task's candidates side by side (``groups``): JSON as it is, in the status document."""

    task_id: str
    task: str
    select: str | None
    chosen: bool  # its selection is made
    winner: str | None
    reason: str | None
    judge_cost_usd: float | None
    report: str | None  # its CANDIDATES file (report_path); None without its job
    rows: list[CandidateRow]  # by candidate number


def report_path(job: JobRecord, task_id: str) -> str:
    """The task's CANDIDATES file, relative to the root job's folder."""
    return candidates_report(job, task_id)


def candidate_row(worker: WorkerRecord) -> CandidateRow:
    """One candidate as the views show it (JSON-ready): what ran, how it ended, its gates, its
    ranking row's figures once its task's selection is made (None before), its cost and time."""
    score = worker.score.to_dict() if worker.score is not None else {}
    failed_gates = [str(g.name) for g in worker.gates if g.required and not g.passed]
    return {
        "worker": worker.name,
        "key": worker.key,
        "candidate": worker.candidate,
        "kind": worker.kind,
        "model": worker.model,
        "status": worker.status.value,
        "gates": gate_summary(worker.gates),
        "gates_passed": None if not worker.gates else not failed_gates,
        "failed_gates": failed_gates,
        "eligible": score.get("eligible"),
        "score": score.get("score"),
        "rank": score.get("rank"),
        "reason": score.get("reason"),
        "measures": dict(score.get("measures") or {}),
        "parts": dict(score.get("parts") or {}),
        "selected": worker.selected,
        "cost_usd": worker.cost_usd,
        "cost_basis": worker.cost_basis,
        "cost_note": worker.cost_note,
        "duration": worker.duration,
        "branch": worker.branch,
        "commit": worker.commit,
        "diffstat": worker.diffstat,
        "files_changed": len(worker.files_changed),
    }


def groups(job: JobRecord | None, workers: Iterable[WorkerRecord]) -> dict[str, CandidateGroup]:
    """A job's tasks with candidates by task id, in plan order (``workers``: that job's own; others
    are ignored): ``{"task_id", "task", "select", "chosen" (its selection is made), "winner",
    "reason", "judge_cost_usd", "report", "rows" (a candidate_row each, by number)}``."""
    found: dict[str, list[WorkerRecord]] = {}
    mine = [w for w in workers if w.candidate is not None and w.task_id is not None and (job is None or w.job_id == job.id)]
    for w in sorted(mine, key=lambda w: w.index):  # filtered first: the status document asks per poll
        found.setdefault(str(w.task_id), []).append(w)
    out: dict[str, CandidateGroup] = {}
    for task_id, members in found.items():
        members.sort(key=lambda w: (w.candidate or 0, w.index))
        selection = job.selections.get(task_id) if job is not None else None
        default = job.config.select if job is not None else None
        out[task_id] = {
            "task_id": task_id,
            "task": members[0].task,
            "select": (selection.select if selection is not None else None) or default,
            "chosen": selection is not None,
            "winner": selection.winner if selection is not None else None,
            "reason": selection.reason if selection is not None else None,
            "judge_cost_usd": selection.cost_usd if selection is not None else None,
            "report": report_path(job, task_id) if job is not None else None,
            "rows": [candidate_row(w) for w in members],
        }
    return out


def candidate_line(group: CandidateGroup, *, ascii_only: bool = False) -> str:
    """A task's candidates on one terminal line, side by side:
    ``t1 [best] worker_1 claude ✓ 87.5 (winner) | worker_2 codex ✗ gates: tests failed``."""
    icons = ASCII_ICONS if ascii_only else ICONS
    parts = []
    for row in group["rows"]:
        what = " ".join(p for p in (row["worker"], _plain(row["kind"]), _plain(row["model"])) if p)
        bits = [
            what,
            icons.get(row["status"], "." if ascii_only else "·") if row["status"] != WorkerStatus.RUNNING else "running",
        ]
        if row["score"] is not None:
            bits.append(_number(row["score"]))
        if row["selected"]:
            bits.append("(winner)")
        elif row["failed_gates"]:
            bits.append("gate " + ", ".join(row["failed_gates"]))
        elif row["selected"] is False and row["reason"]:
            bits.append(_short(_plain(row["reason"]), LINE_REASON_CHARS))
        parts.append(" ".join(bits))
    head = f"{group['task_id']} [{group['select'] or '?'}]"
    tail = ""
    if group["chosen"] and not group["winner"]:
        tail = " -> no winner" if ascii_only else " → no winner"
    return " ".join(f"{head} {' | '.join(parts)}{tail}".split())


def _number(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else str(value)


def _plain(value: Any) -> str:
    """Free text on one terminal line: no colours or control characters, and no ``|``, which
    separates the candidates."""
    return " ".join(clean(value).split()).replace("|", "¦")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def measure(value: Any) -> str:
    """A measure's value in a table cell: a number to 4 significant digits, a flag as yes/no,
    anything else as escaped text (a scoring command prints what it likes)."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return md_cell(value, 40)


def measure_names(rows: Iterable[CandidateRow]) -> list[str]:
    """Every measure any candidate has, in the order first seen (ranking rows first)."""
    names: dict[str, None] = {}
    for row in rows:
        for name in row.get("measures") or {}:
            names.setdefault(str(name), None)
        for name in row.get("parts") or {}:
            names.setdefault(str(name), None)
    return list(names)
