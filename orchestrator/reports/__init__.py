"""Markdown reports rendered from Jinja templates: pure, they return a string.

The workspace writes the files; this package only turns records into text.
Beside the reports: ``analytics`` (a tree's performance figures), ``status_document`` (the
status document, from records alone) and ``metrics`` (the engine's Prometheus text).
Templates ship in ``templates/``; a ``templates_dir`` from config
(``orchestrator.templates_dir``) overrides them file by file.

Modules:

- ``markdown``: the Jinja environment and the reports it renders;
- ``taskgraph``, ``candidate_groups``, ``promptshare``, ``timeline``: a report's figures and sections;
- ``analytics``: a tree's performance figures; ``metrics``: the engine's Prometheus text;
- ``status_document``: the status document, from records alone; ``status_shapes``: its every key, typed;
- ``wording``: the words every surface uses for the same fact;
- ``terminal``: text for a terminal: control characters shown, never sent.
"""

from __future__ import annotations

import heapq
import operator
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
)

from orchestrator.models import JobRecord, WorkerRecord, WorkerStatus, resolutions_of
from orchestrator.reports import candidate_groups as _candidates
from orchestrator.reports import wording
from orchestrator.reports.analytics import TimelineRow, TreeAnalytics, analyse, text_timeline, worker_elapsed, worker_seconds
from orchestrator.reports.markdown import FILTERS
from orchestrator.reports.promptshare import prompt_share
from orchestrator.reports.taskgraph import gate_summary, graph_views
from orchestrator.reports.timeline import render_timeline_svg, text_marks, timeline_svg_parts  # noqa: F401  (the engine draws it with the reports)

from ..config import SIMULATED_KIND, Isolation
from ..gate_output import failing_gate
from ..git import conflicts as conflict_text
from ..outcomes import CostBasis

LEVEL_TEMPLATE = "level_report.md.j2"
FINAL_TEMPLATE = "final_result.md.j2"
CANDIDATES_TEMPLATE = "candidates.md.j2"
_INCLUDED = ("task_graph.md.j2", "candidates_section.md.j2")  # (an include is compiled when first rendered)
ANSWER_CHARS = 2000  # of a judge's raw answer in a CANDIDATES file (its reasons are shown whole)
# What each selection rule does, in a CANDIDATES file's words (selection/ owns the rules themselves).
SELECT_RULES = {
    "best": "the highest weighted score over gates and measures among the candidates whose required gates passed",
    "cheapest": "the lowest cost among the candidates whose required gates passed",
    "fastest": "the shortest run among the candidates whose required gates passed",
    "first_passing": "the first to pass its required gates; the others were cancelled",
    "judge": "an AI judge comparing the eligible candidates two at a time",
}
# Workers whose log tail a report shows. Cancelled and skipped ones were stopped
# by the orchestrator, so their logs rarely explain anything.
# The workers FINAL_RESULT.md's Failures list: child_incomplete too (it exited 0, but a child job it
# started did not complete: its exit reason names that job and how it ended).
FAILURE_STATUSES = (WorkerStatus.FAILED, WorkerStatus.TIMEOUT, WorkerStatus.CHILD_INCOMPLETE)
OUTPUT_LIMIT = 4000  # characters of each worker's output in FINAL_RESULT.md
TIMELINE_WIDTH = 40
# Past this many workers FINAL_RESULT.md is a summary: a table per level instead of a row per worker
# (each level's LEVEL_<d>_REPORT.md still lists every worker of its depth, and timeline.svg every
# attempt), and at most SHOWN_LIMIT failures, outputs, files and busiest workers. Thousands of rows
# in three per-worker sections make a report nobody reads, and its rendering grows with them.
FULL_LIST_LIMIT = 1000
SHOWN_LIMIT = 50
FILES_PER_WORKER = 20  # changed files the Changes section names per worker (its record keeps up to 500)


def _clipped(text: Any, limit: int) -> str:
    """The first ``limit`` characters of ``text``, and a line with "…" when some were left out."""
    kept, cut = _clip(str(text), limit)
    return kept + ("\n…" if cut else "")


def _make_env(loader: BaseLoader) -> Environment:
    # StrictUndefined: a missing field is a bug, not a blank. No autoescape: Markdown, not HTML.
    env = Environment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    env.filters["gate_summary"] = gate_summary
    env.filters["measure"] = _candidates.measure
    env.filters["clip"] = _clipped
    env.filters["conflict_outcome"] = conflict_text.outcome
    env.globals["merge_stopped"] = conflict_text.STOPPED
    env.globals["pull_request_text"] = wording.pull_request_text
    env.globals["checks_text"] = wording.checks_text
    env.globals["file_counts"] = wording.file_counts
    env.globals["failing_gate"] = failing_gate
    return env


_PACKAGE_LOADER = PackageLoader("orchestrator.reports", "templates")
ENV = _make_env(_PACKAGE_LOADER)
_OVERRIDE_ENVS: dict[Path, Environment] = {}


def environment(templates_dir: Path | None = None) -> Environment:
    """The packaged environment, or a cached one that looks in ``templates_dir`` first."""
    if templates_dir is None:
        return ENV
    key = Path(templates_dir)
    env = _OVERRIDE_ENVS.get(key)
    if env is None:
        loader = ChoiceLoader([FileSystemLoader(str(key)), _PACKAGE_LOADER])
        env = _OVERRIDE_ENVS.setdefault(key, _make_env(loader))
    return env


_WARMED: set[Path | None] = set()
_WARMED_GUARD = threading.Lock()


def warm_soon(templates_dir: Path | None = None) -> threading.Thread | None:
    """The report templates compiled on a thread of their own (returned; None when already asked),
    once per process and templates folder: about 0.4 s of CPU the first time, which a job's end
    would otherwise wait on (done while its workers run). A broken override is not said here: its
    render says it, where it is used."""
    with _WARMED_GUARD:
        if templates_dir in _WARMED:
            return None
        _WARMED.add(templates_dir)
    thread = threading.Thread(target=_warm, args=(templates_dir,), name="reports-warm", daemon=True)
    thread.start()
    return thread


def _warm(templates_dir: Path | None) -> None:
    env = environment(templates_dir)
    for name in (FINAL_TEMPLATE, LEVEL_TEMPLATE, CANDIDATES_TEMPLATE, *_INCLUDED):
        try:
            env.get_template(name)
        except Exception:  # noqa: BLE001 (a user's broken template: its render reports it)
            continue


def render(name: str, templates_dir: Path | None = None, **context: Any) -> str:
    """Render template ``name`` with ``context``; no I/O beyond loading the template."""
    return environment(templates_dir).get_template(name).render(**context)


def render_level_report(
    depth: int,
    root: JobRecord,
    jobs: list[JobRecord],
    workers: list[WorkerRecord],
    *,
    log_tails: dict[str, str],
    templates_dir: Path | None = None,
    now: float | None = None,
    analytics: TreeAnalytics | None = None,
) -> str:
    """LEVEL_<depth>_REPORT.md: the jobs and workers at one depth of the tree.

    ``jobs`` and ``workers`` may be the whole tree; only depth ``depth`` is shown.
    ``analytics``: ``analyse`` of this depth's records in ``tree_order`` at the same ``now``, when
    the caller has it already (a tree of one level: its FINAL_RESULT.md's figures).
    """
    now = time.time() if now is None else now
    jobs = [j for j in jobs if j.depth == depth]
    workers = [w for w in workers if w.depth == depth]
    context = _context(root, jobs, workers, log_tails, now, base=f"depth_{depth}", analytics=analytics)
    return render(LEVEL_TEMPLATE, templates_dir, depth=depth, **context)


def render_final_report(
    root: JobRecord,
    jobs: list[JobRecord],
    workers: list[WorkerRecord],
    *,
    log_tails: dict[str, str],
    templates_dir: Path | None = None,
    now: float | None = None,
    timeline_svg: str | None = None,
    analytics: TreeAnalytics | None = None,
) -> str:
    """FINAL_RESULT.md: the whole tree, with its timeline, performance and traceability.

    ``timeline_svg`` is the picture's path relative to the job folder, for a link
    (the engine writes it next to the report); without it the report has no link.
    ``analytics``: ``analyse`` of the same records in ``tree_order`` at the same ``now``,
    when the caller has it already (the engine draws the picture from it too).
    """
    now = time.time() if now is None else now
    summary = len(workers) > FULL_LIST_LIMIT
    context = _context(root, jobs, workers, log_tails, now, base="", per_worker=not summary, analytics=analytics)
    figures: TreeAnalytics = context["a"]
    with_output, files = context["with_output"], context["files"]
    # Worker time per worker and per depth, in one pass over the attempts (only a summary shows them).
    busy: dict[str, float] = {}  # worker key: worker time
    busy_at: dict[int, float] = {}  # depth: worker time
    first: dict[str, TimelineRow] = {}  # worker key: its first attempt's row (which names its job)
    for row in figures.rows if summary else ():
        key, depth = row.worker_key, row.depth
        busy[key] = busy.get(key, 0.0) + row.end - row.start
        busy_at[depth] = busy_at.get(depth, 0.0) + row.end - row.start
        first.setdefault(key, row)
    context.update(
        summary=summary,
        child_jobs=[j for j in context["jobs"] if not j.is_root],
        timeline=[] if summary else _text_timeline(figures, context["jobs"], workers, now),
        timeline_svg=timeline_svg,
        outputs=[(w, *_clip(w.output, OUTPUT_LIMIT)) for w in (with_output[:SHOWN_LIMIT] if summary else with_output)],
        outputs_total=len(with_output),
        files=files[:SHOWN_LIMIT] if summary else files,
        files_total=len(files),
        failures_total=len(context["failures"]),
        refused_total=len(context["refused"]),
        levels=_levels(context["tally"], context["jobs"], busy_at) if summary else [],
        shown_limit=SHOWN_LIMIT,
        continued=[w for w in context["workers"] if w.rounds],  # (a template filter's call per worker cost 10x)
        **_changes(root, context["jobs"], context["workers"], summary),
    )
    if summary:
        context["graph_rows"] = SHOWN_LIMIT
        context["candidate_tasks"] = context["candidate_tasks"][:SHOWN_LIMIT]
        context["failures"] = context["failures"][:SHOWN_LIMIT]
        context["refused"] = context["refused"][:SHOWN_LIMIT]
        top = heapq.nlargest(SHOWN_LIMIT, busy.items(), key=operator.itemgetter(1))  # ties: the first to start
        by_job = context["workers_by_job"]
        named: dict[str, dict[str, WorkerRecord]] = {}  # job id: its workers by name, for the jobs the top ones ran in
        for job_id in {first[key].job_id for key, _ in top}:
            named[job_id] = {w.name: w for w in by_job.get(job_id, ())}
        busiest = [w for key, _ in top if (w := named[first[key].job_id].get(first[key].worker)) is not None]
        context["busiest"] = busiest
        shown = {w.key: w for w in [*busiest, *context["failures"], *(w for w, *_ in context["outputs"])]}.values()
        context["elapsed"] = {w.key: worker_elapsed(w, now) for w in shown}
        context["worker_time"] = {w.key: worker_seconds(w, now) for w in shown}
    else:
        context["busiest"] = context["workers"]
    return render(FINAL_TEMPLATE, templates_dir, **context)


def render_candidate_reports(
    root: JobRecord,
    jobs: list[JobRecord],
    workers: list[WorkerRecord],
    *,
    templates_dir: Path | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """Each task's CANDIDATES file of the tree: its path relative to the root's folder
    (candidates.report_path) -> its text. Empty when no task ran as candidates. Its caller writes
    them with the other reports (first, so FINAL_RESULT.md's and the level reports' links hold)."""
    now = time.time() if now is None else now
    by_job = _candidates_by_job(workers)
    files: dict[str, str] = {}
    for job in jobs:
        own = by_job.get(job.id)
        if not own:
            continue
        records = {w.name: w for w in own}
        for task_id, group in _candidates.groups(job, own).items():
            chosen = job.selections.get(task_id)
            selection = chosen.to_dict() if chosen is not None else {}  # the template reads the record's JSON
            rows = [records[r["worker"]] for r in group["rows"]]
            winner = records.get(group["winner"] or "")
            path = _candidates.report_path(job, task_id)
            files[path] = render(
                CANDIDATES_TEMPLATE,
                templates_dir,
                root=root,
                job=job,
                g=group,
                selection=selection,
                records=records,
                winner=winner,
                winner_branch=winner.branch if winner is not None else None,
                unfinished=sum(1 for w in rows if not w.status.terminal),
                ranking=selection.get("ranking") or [],
                judge=selection.get("judge"),
                measures=_candidates.measure_names(group["rows"]),
                measure_columns=_candidates.MEASURE_COLUMNS,
                rules=SELECT_RULES,
                worktree=root.config.isolation == Isolation.WORKTREE,
                files_per_worker=FILES_PER_WORKER,
                answer_chars=ANSWER_CHARS,
                base=path.rpartition("/")[0],
                now=now,
            )
    return files


def candidate_tasks(jobs: list[JobRecord], workers: list[WorkerRecord]) -> list[tuple[JobRecord, _candidates.CandidateGroup]]:
    """(job, group) per task with candidates, in tree order: what FINAL_RESULT.md and the level
    reports list, each with a link to its CANDIDATES file."""
    by_job = _candidates_by_job(workers)
    return [(job, group) for job in jobs if job.id in by_job for group in _candidates.groups(job, by_job[job.id]).values()]


def _candidates_by_job(workers: list[WorkerRecord]) -> dict[str, list[WorkerRecord]]:
    found: dict[str, list[WorkerRecord]] = {}
    for w in workers:
        if w.candidate is not None:
            found.setdefault(w.job_id, []).append(w)
    return found


def _text_timeline(figures: TreeAnalytics, jobs: list[JobRecord], workers: list[WorkerRecord], now: float) -> list[str]:
    """The text bars, with git isolation's commits after their attempts and its merges below, and
    a task graph's waits on prerequisites."""
    if not figures.rows:  # no attempt yet: no scale to draw the marks against
        return []
    notes, merges = text_marks(jobs, workers, figures.started_at, now)
    return text_timeline(figures.rows, TIMELINE_WIDTH, notes) + merges


def _changes(root: JobRecord, jobs: list[JobRecord], workers: list[WorkerRecord], summary: bool) -> dict[str, Any]:
    """The Changes section's context (worktree jobs only): each worker's branch and what it
    changed, the root's merge (delivery/landing.py's ``JobRecord.merge``), and every conflict a
    resolver worker was asked to resolve in the tree (``merge_strategy: resolve``), root's first."""
    branched = [w for w in workers if w.branch] if root.config.isolation == Isolation.WORKTREE else []
    merge = root.merge.to_dict() if root.merge is not None else {}  # the template reads the JSON shape
    by_job: dict[str, list[WorkerRecord]] = {}
    for w in workers:
        if w.integrated is not None:  # only they can hold a resolution besides the jobs' merges
            by_job.setdefault(w.job_id, []).append(w)
    resolutions = [
        {"job_id": job.id, "child": not job.is_root, "stage": stage} | r.to_dict()
        for job in jobs
        if job.merge is not None or job.id in by_job
        for stage, r in resolutions_of(job, by_job.get(job.id, []))
    ]
    costs = [r["cost_usd"] for r in resolutions if r["cost_usd"] is not None]
    return {
        # Their cost (part of the tree's, None: none known) and how many are estimated from a price table
        "resolver_cost": sum(costs) if costs else None,
        "resolver_estimated": sum(1 for r in resolutions if r["cost_basis"] == CostBasis.ESTIMATED),
        "resolver_count": len(resolutions),
        "resolutions": resolutions[:SHOWN_LIMIT] if summary else resolutions,
        "resolutions_total": len(resolutions),
        "worktree": root.config.isolation == Isolation.WORKTREE,
        "branched": branched[:SHOWN_LIMIT] if summary else branched,
        "branched_total": len(branched),
        "files_per_worker": FILES_PER_WORKER,
        "merge": merge,
        "merge_result": str(merge.get("result_ref") or "").removeprefix("refs/heads/"),
    }


@dataclass(frozen=True)
class Level:
    """One depth of a tree, for the summary table of a big FINAL_RESULT.md."""

    depth: int
    jobs: int
    workers: int
    counts: dict[str, int]
    worker_seconds: float
    report: str  # LEVEL_<d>_REPORT.md, relative to the job folder


def _levels(tally: dict[tuple[int, str], int], jobs: list[JobRecord], busy: dict[int, float]) -> list[Level]:
    """Per depth: jobs, workers by status (``tally``: (depth, status value) -> workers) and worker time (``busy``)."""
    jobs_at = Counter(j.depth for j in jobs)
    return [
        Level(
            depth=d,
            jobs=jobs_at.get(d, 0),
            workers=sum(tally.get((d, s.value), 0) for s in WorkerStatus),
            counts={s.value: tally[d, s.value] for s in WorkerStatus if tally.get((d, s.value))},
            worker_seconds=busy.get(d, 0.0),
            report=f"depth_{d}/LEVEL_{d}_REPORT.md",
        )
        for d in sorted({d for d, _ in tally})
    ]


def _context(
    root: JobRecord,
    jobs: list[JobRecord],
    workers: list[WorkerRecord],
    log_tails: dict[str, str],
    now: float,
    *,
    base: str,
    per_worker: bool = True,
    analytics: TreeAnalytics | None = None,
) -> dict[str, Any]:
    """What both templates see. ``base`` is the report's folder, for relative links. Without
    ``per_worker`` the per-worker figures (``elapsed``, ``worker_time``) are left for the caller."""
    jobs, workers = tree_order(jobs, workers)
    if analytics is None:
        analytics = analyse(jobs, workers, now)
    by_job: dict[str, list[WorkerRecord]] = {j.id: [] for j in jobs}
    failures: list[WorkerRecord] = []
    refused: list[WorkerRecord] = []  # workers the system refused something (workers/refusals.py)
    with_output: list[WorkerRecord] = []
    files: list[tuple[WorkerRecord, str]] = []
    tally: dict[tuple[int, str], int] = {}  # (depth, status value) -> workers
    cost_known = cost_estimated = simulated = 0
    cost_unknown: dict[str, int] = {}  # "cost unknown (model X)" -> workers
    for w in workers:  # one pass for everything per worker: each pass over 10,000 records costs
        by_job.setdefault(w.job_id, []).append(w)
        if w.status in FAILURE_STATUSES:
            failures.append(w)
        if w.refusals_total or w.said_refused_total:
            refused.append(w)
        if w.output and w.output.strip():
            with_output.append(w)
        if w.files_created:
            files += [(w, f) for f in w.files_created]
        level = (w.depth, w.status._value_)  # plain keys: an Enum hashes in Python
        tally[level] = tally.get(level, 0) + 1
        cost_known += w.cost_usd is not None
        cost_estimated += w.cost_basis == CostBasis.ESTIMATED
        if w.cost_note and w.cost_usd is None:
            cost_unknown[w.cost_note] = cost_unknown.get(w.cost_note, 0) + 1
        simulated += w.kind == SIMULATED_KIND
    return {
        "root": root,
        "jobs": jobs,
        "workers": workers,
        "a": analytics,
        "log_tails": log_tails,
        "now": now,
        "base": base,
        "elapsed": {w.key: worker_elapsed(w, now) for w in workers} if per_worker else {},
        "worker_time": {w.key: worker_seconds(w, now) for w in workers} if per_worker else {},
        "failures": failures,
        "refused": refused,
        "with_output": with_output,  # in tree order, like ``files`` ((worker, file) pairs)
        "files": files,
        "tally": tally,
        "workers_by_job": by_job,
        "job_workers": {job_id: _workers_summary(ws) for job_id, ws in by_job.items()},
        # Per job (and over these workers) the prompts' bytes and the shared block's share
        "job_prompts": {job_id: share for job_id, ws in by_job.items() if (share := prompt_share(ws)) is not None},
        "prompts": prompt_share(workers),
        "has_cost": analytics.cost_usd is not None or bool(cost_unknown),
        "has_tokens": analytics.tokens_in is not None or analytics.tokens_out is not None,
        "cost_known": cost_known,
        "cost_estimated": cost_estimated,  # of cost_known: from a price table (workers/costs.py)
        "cost_unknown": cost_unknown,
        # Workers of the built-in simulated kind: their files are placeholders, and the report says so first.
        "simulated": simulated,
        # A view per job with dependencies, gates or trespasses (none: no Task graph section).
        "graphs": graph_views(jobs, workers),
        "graph_rows": None,  # tasks listed per job (None: every one)
        # Each task that ran as candidates, with its CANDIDATES file (none: no section).
        "candidate_tasks": (found := candidate_tasks(jobs, workers)),
        "candidate_tasks_total": len(found),
    }


def tree_order(jobs: list[JobRecord], workers: list[WorkerRecord]) -> tuple[list[JobRecord], list[WorkerRecord]]:
    """Jobs and workers in the order the reports list them (by depth, job, plan position)."""
    jobs = sorted(jobs, key=lambda j: (j.depth, j.created_at, j.id))
    return jobs, _sorted_workers(workers, jobs)


def _sorted_workers(workers: list[WorkerRecord], jobs: list[JobRecord]) -> list[WorkerRecord]:
    """Tree order: by depth, then by job, then by plan position. (Grouped by job first: one sort
    of 10,000 workers on a tuple key took 75 ms when the jobs' workers came interleaved.)"""
    position = {j.id: i for i, j in enumerate(jobs)}
    last = len(position)
    groups: dict[tuple[int, int], list[WorkerRecord]] = {}
    for w in workers:
        groups.setdefault((w.depth, position.get(w.job_id, last)), []).append(w)
    return [w for g in sorted(groups) for w in _in_plan_order(groups[g])]


def _in_plan_order(workers: list[WorkerRecord]) -> list[WorkerRecord]:
    """One job's workers by plan position (then name). A job's records are usually read in that
    order already: strictly rising positions are checked at C speed, and such a list is kept as it is
    (sorting 10,000 on a tuple key built per worker cost a report 20 ms)."""
    positions = [w.index for w in workers]
    if all(map(operator.lt, positions, positions[1:])):
        return workers
    return sorted(workers, key=operator.attrgetter("index", "name"))


def _workers_summary(workers: list[WorkerRecord]) -> str:
    """``3: worker_1_1 success, worker_1_2 failed, ...`` for one table cell."""
    if not workers:
        return "none"
    names: list[str] = []
    length = 0
    for w in workers:  # the cell shows 200 characters: a job of thousands stops naming early
        if length > 400:
            names.append("…")
            break
        names.append(f"{w.name} {w.status.value}")
        length += len(names[-1]) + 2
    return f"{len(workers)}: {', '.join(names)}"


def _clip(text: str, limit: int) -> tuple[str, int]:
    """The first ``limit`` characters of ``text`` and how many were left out."""
    text = text.rstrip()
    return text[:limit], max(0, len(text) - limit)
