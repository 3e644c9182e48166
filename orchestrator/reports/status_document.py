"""The status document of a job (``GET /api/v1/jobs/{id}/status``: ``job_id``, ``status`` and
``results.tasks`` as the original spec's JSON output format has them, plus keys of ours), from
records alone.

Works the same on a live snapshot and on records read from disk, which is how
``check-status.sh`` answers with the server down.

Keys are only ever added, never renamed: workers and scripts parse this document.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..git.conflicts import counted
from ..models import JobRecord, JobStatus, WorkerRecord, WorkerStatus, changed_nothing, resolutions_of, tree_resolutions
from ..outcomes import CostBasis, refusal_line, said_line
from .analytics import TreeAnalytics, analyse, subtree
from .candidate_groups import candidate_line, groups
from .promptshare import prompt_share
from .status_shapes import GraphFields, Performance, Progress, ResolverTotals, StatusDocument, TaskEntry, TreeTotals
from .taskgraph import deliveries, dependency_wait, gate_summary, has_dependencies, node_of, waits_on
from .wording import approval_lines, checks_text, file_counts, pull_request_text

QUIET_AFTER = 60.0  # workers.quiet_after's default


def job_status(
    job_id: str,
    jobs: list[JobRecord],
    workers: list[WorkerRecord],
    job_dir: Path,
    now: float | None = None,
    quiet_after: float = QUIET_AFTER,
    queue_unreachable_since: float | None = None,
    *,
    with_tasks: bool = True,
) -> StatusDocument:
    """``{"job_id", "status", "results": {"tasks": [...], "workspace", "final_report"}, ...}`` (every
    key, typed and said: status_shapes.py), with ``tree`` totals and ``performance`` over the job and every job below it. Running
    workers count up to ``now`` (default: the clock); one whose log (in ``job_dir``, the root's
    folder) has not grown for ``quiet_after`` seconds (workers.quiet_after; 0: never) says so.
    ``with_tasks`` false: ``results.tasks`` is left empty, for a caller that reads none of it (the
    ``run`` command's closing lines): a worker's entry is about 3 KB, 30 MB for 10,000 workers."""
    by_id = {j.id: j for j in jobs}
    job = by_id[job_id]
    by_job: dict[str, list[WorkerRecord]] = {}
    for worker in workers:
        by_job.setdefault(worker.job_id, []).append(worker)
    own = sorted(by_job.get(job.id, []), key=lambda w: w.index)
    sub_jobs, sub_workers = subtree(jobs, workers, job.id)
    now = time.time() if now is None else now
    perf = analyse(sub_jobs, sub_workers, now)
    final = job_dir / "FINAL_RESULT.md"
    level = job_dir / f"depth_{job.depth}" / f"LEVEL_{job.depth}_REPORT.md"
    tree = _tree_totals(job, sub_jobs, sub_workers, perf)
    graph = has_dependencies(job, own)
    own_tasks = deliveries(job, own) if graph else {}  # read only by tasks that wait on others
    publish = job.publish.to_dict() if job.publish is not None else None
    return {
        "job_id": job.id,
        "status": job.status.value,
        "request": job.request,
        "goal": job.goal,
        "root_job_id": job.root_id,
        "parent_job_id": job.parent_job_id,
        "parent_worker": job.parent_worker,
        "depth": job.depth,
        "planner": job.planner,
        "planner_usage": None
        if job.planner_cost_usd is None and job.planner_tokens_in is None
        else {"cost_usd": job.planner_cost_usd, "tokens_in": job.planner_tokens_in, "tokens_out": job.planner_tokens_out},
        "config": job.config.to_dict(),
        "no_changes": changed_nothing(job, own),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "duration": job.duration,
        "error": None if job.cancel_requested and job.status is JobStatus.CANCELLED else job.error,
        "notes": job.notes,
        "merge": job.merge.to_dict() if job.merge is not None else None,
        "resolutions": [{"stage": stage} | r.to_dict() for stage, r in resolutions_of(job, own)],
        "record": {"path": f"job_{job.id}/RECORD.json", "digest": job.record_digest} if job.record_digest else None,
        "publish": publish,
        "pull_request": pull_request_text(job.publish),
        "checks": job.checks.to_dict() if job.checks is not None else None,
        "checks_text": checks_text(job.checks.to_dict() if job.checks is not None else None),
        "approval": job.approval.to_dict() if job.approval else None,
        "nodes": [n.to_dict() for n in job.nodes],
        "integration": job.integration,
        "has_dependencies": graph,
        "queue": None if queue_unreachable_since is None else queue_words(queue_unreachable_since),
        "prompts": _prompts(own),
        "candidates": groups(job, own),
        "progress": _progress(own),
        "tree": tree,
        "performance": performance(perf),
        "results": {
            "tasks": [_task(w, by_id, by_job, perf.queue_waits, now, own_tasks, Silence(job_dir, quiet_after)) for w in own]
            if with_tasks
            else [],
            "workspace": str(job_dir),
            "final_report": str(final) if (job.status.at_rest or job.depth) and final.is_file() else None,
            "level_report": str(level) if job.status.terminal and level.is_file() else None,
        },
    }


def _progress(own: list[WorkerRecord]) -> Progress:
    """The job's own workers counted by how they stand."""
    done = [w for w in own if w.status.terminal]
    ok = [w for w in own if w.status.complete]  # succeeded: nothing of it missing
    short = sum(1 for w in own if w.status is WorkerStatus.CHILD_INCOMPLETE)  # exited 0, a child job did not complete
    return {
        "completed": len(done),
        "total": len(own),
        "running": sum(1 for w in own if w.status is WorkerStatus.RUNNING),
        "pending": sum(1 for w in own if w.status is WorkerStatus.PENDING),
        "succeeded": len(ok),
        "child_incomplete": short,
        "failed": len(done) - len(ok) - short,
        "no_changes": sum(1 for w in own if w.no_changes),
        "success_rate": round(len(ok) / len(own), 4) if own else 0.0,
    }


def queue_words(since: float) -> str:
    """How /health and a status say an outage of the queue to the nodes (executor rq)."""
    return "unreachable since " + datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


UNCONFIRMED = "unknown (queue unreachable)"  # a running worker on a node while the queue is down


def _prompts(workers: list[WorkerRecord]) -> dict[str, Any] | None:
    share = prompt_share(workers)
    return None if share is None else share.to_dict()


def performance(a: TreeAnalytics) -> Performance:
    """The tree's figures as JSON: timing, the critical path, queue waits, resources per job."""
    longest, waited = a.longest_queue_wait
    return {
        "wall": _r(a.wall),
        "worker_seconds": _r(a.busy),
        "peak_concurrency": a.peak_concurrency,
        "parallel_efficiency": None if a.parallel_efficiency is None else round(a.parallel_efficiency, 4),
        "cpu_seconds": _r(a.cpu_seconds),
        "peak_rss": a.peak_rss,
        "queue_wait": {"total": _r(a.queue_wait_total), "max": _r(waited), "worker": longest},
        "slowest_worker": None if a.slowest_worker is None else {"worker": a.slowest_worker, "duration": _r(a.slowest_duration)},
        "bottleneck_level": None
        if a.bottleneck_level is None
        else {"depth": a.bottleneck_level, "span": _r(a.level_waits[a.bottleneck_level])},
        "level_spans": {str(depth): _r(span) for depth, span in a.level_waits.items()},
        "critical_path": [step.to_dict() for step in a.critical_path],
        "jobs": [r.to_dict() for r in a.jobs],
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _task(
    worker: WorkerRecord,
    by_id: dict[str, JobRecord],
    by_job: dict[str, list[WorkerRecord]],
    waits: dict[str, float],
    now: float,
    tasks: dict[str, float | None],
    quiet: Silence,
) -> TaskEntry:
    """A worker's entry (status_shapes.TaskEntry); ``tasks``: its job's ``deliveries`` (what it waits on is among them)."""
    job = by_id.get(worker.job_id)
    silent = quiet.seconds(worker, now)
    entry: TaskEntry = {
        "worker_id": worker.name,
        "status": worker.status.value,
        "task": worker.task,
        "role": worker.role,
        "kind": worker.kind,
        "model": worker.model,
        "output": worker.output,
        "files_created": worker.files_created,
        "branch": worker.branch,
        "commit": worker.commit,
        "files_changed": worker.files_changed,
        "diffstat": worker.diffstat,
        "files": file_counts(worker.files_changed, worker.files_created),
        "no_changes": worker.no_changes,
        "port": worker.port,
        "depth": worker.depth,
        "attempts": len(worker.attempts),
        "node": worker.node,
        "sandbox": worker.sandbox,
        "attempt_nodes": [a.node for a in worker.attempts],
        "duration": worker.duration,
        "exit_reason": worker.exit_reason,
        "waiting": worker.waiting,
        "quiet_for": silent,
        "quiet": None if silent is None else f"no output for {silent} s",
        "refusals": [r.to_dict() for r in worker.refusals],
        "refusals_total": worker.refusals_total,
        "refused": refusal_line(worker.refusals, worker.refusals_total) or None,
        "said_refused": [r.to_dict() for r in worker.said_refused],
        "said_refused_total": worker.said_refused_total,
        "said": said_line(worker.said_refused, worker.said_refused_total) or None,
        "error": worker.error,
        "failure_class": worker.failure_class,
        "log": worker.log_path,
        "dir": worker.dir_path,
        "cost_usd": worker.cost_usd,
        "cost_basis": worker.cost_basis,
        "cost_note": worker.cost_note,
        "tokens_in": worker.tokens_in,
        "tokens_out": worker.tokens_out,
        "prompt_bytes": worker.prompt_bytes,
        "shared_prompt_bytes": worker.shared_prompt_bytes,
        "tokens_cache_read": worker.tokens_cache_read,
        "queue_wait": _r(waits.get(worker.key)),
        "cpu_seconds": worker.cpu_seconds,
        "peak_rss": worker.peak_rss,
        "peak_processes": worker.peak_processes,
        "enforced": enforced.to_dict() if worker.attempts and (enforced := worker.attempts[-1].enforced) else None,
        "rounds": [r.to_dict() for r in worker.rounds],
        "session_id": worker.session_id,
        **_graph_fields(worker, job, tasks, now),
    }
    if worker.child_job_ids:
        _add_children(entry, worker, by_id, by_job, waits, now, quiet)
    return entry


def _add_children(
    entry: TaskEntry,
    worker: WorkerRecord,
    by_id: dict[str, JobRecord],
    by_job: dict[str, list[WorkerRecord]],
    waits: dict[str, float],
    now: float,
    quiet: Silence,
) -> None:
    """A worker's child jobs in its entry: their ids, their workers' entries (``child_results``, each
    with its job's id and status) and their tasks' candidates."""
    entry["child_job_id"] = worker.child_job_ids[0]
    entry["child_job_ids"] = list(worker.child_job_ids)
    results: list[TaskEntry] = []
    for child_id in worker.child_job_ids:
        child = by_id.get(child_id)
        subs = sorted(by_job.get(child_id, []), key=lambda w: w.index)
        child_tasks = deliveries(child, subs) if child is not None and has_dependencies(child, subs) else {}
        for sub in subs:
            item = _task(sub, by_id, by_job, waits, now, child_tasks, quiet)
            item["job_id"] = child_id
            item["job_status"] = child.status.value if child else None
            results.append(item)
        found = groups(child, subs) if child is not None else {}
        if found:  # a child job's tasks with candidates, as the document's own "candidates"
            entry.setdefault("child_candidates", {})[child_id] = found
    entry["child_results"] = results


class Silence:
    """How long a running worker's log has not grown, once past ``after`` seconds
    (workers.quiet_after; 0: never): the log's last write is the clock. ``job_dir``: the root's folder."""

    def __init__(self, job_dir: Path, after: float) -> None:
        self.job_dir, self.after = job_dir, after

    def words(self, worker: WorkerRecord, now: float | None = None) -> str | None:
        """``no output for 73 s``, or None."""
        silent = self.seconds(worker, time.time() if now is None else now)
        return None if silent is None else f"no output for {silent} s"

    def seconds(self, worker: WorkerRecord, now: float) -> int | None:
        if self.after <= 0 or worker.status is not WorkerStatus.RUNNING or not worker.log_path:
            return None
        try:
            written = (self.job_dir / worker.log_path).stat().st_mtime
        except OSError:
            return None
        silent = now - written
        return int(silent) if silent >= self.after else None


def _graph_fields(worker: WorkerRecord, job: JobRecord | None, tasks: dict[str, float | None], now: float) -> GraphFields:
    """A task's place in its job's graph: what it waits on, its gates, what its end let start.
    (Read from the worker's own fields; a record from before them, from its job's node.)"""
    node = node_of(worker, job) if worker.task_id is None else None
    task_id, owns = (worker.task_id, worker.owns) if node is None else (node.id, node.owns)
    depends = worker.depends_on if node is None else node.depends_on
    waited = dependency_wait(worker, job, tasks, now) if depends else None
    return {
        "task_id": task_id,
        "depends_on": list(depends),
        "owns": list(owns),
        "waits_on": waits_on(worker, job, tasks) if depends else [],
        "dependency_wait": None if waited is None else round(waited.until - waited.start, 3),
        "gates": [g.to_dict() | {"output_tail": g.output_tail} for g in worker.gates],
        "gate_summary": gate_summary(worker.gates) if worker.gates else None,
        "gated_commit": worker.gated_commit,
        "trespass": list(worker.trespass),
        "integrated": worker.integrated.to_dict() if worker.integrated is not None else None,
        "unblocked": list(worker.unblocked),
        "candidate": worker.candidate,
        "selected": worker.selected,
        "score": worker.score.to_dict() if worker.score is not None else None,
    }


def _tree_totals(job: JobRecord, jobs: list[JobRecord], workers: list[WorkerRecord], a: TreeAnalytics) -> TreeTotals:
    """Counts, cost and resources over this job and every job below it."""
    return {
        "jobs": len(jobs),
        "workers": len(workers),
        "completed": sum(1 for w in workers if w.status.terminal),
        "succeeded": sum(1 for w in workers if w.status.complete),
        "child_incomplete": sum(1 for w in workers if w.status is WorkerStatus.CHILD_INCOMPLETE),
        "max_depth": max((j.depth for j in jobs), default=job.depth),
        "cost_usd": None if a.cost_usd is None else round(a.cost_usd, 6),
        "cost_estimated": sum(1 for w in workers if w.cost_basis == CostBasis.ESTIMATED),
        "cost_unknown": _unknown_costs(workers),
        "tokens_in": a.tokens_in,
        "tokens_out": a.tokens_out,
        "planner": a.planner.to_dict(),
        "resolver": _resolver_totals(jobs, workers),
        "worker_seconds": _r(a.busy),
        "cpu_seconds": _r(a.cpu_seconds),
        "peak_rss": a.peak_rss,
    }


def _resolver_totals(jobs: list[JobRecord], workers: list[WorkerRecord]) -> ResolverTotals:
    found = tree_resolutions(jobs, workers)
    costs = [r.cost_usd for r in found if r.cost_usd is not None]
    return {
        "resolutions": len(found),
        "accepted": sum(1 for r in found if r.accepted),
        "cost_usd": round(sum(costs), 6) if costs else None,
        "estimated": sum(1 for r in found if r.estimated),
    }


def _unknown_costs(workers: list[WorkerRecord]) -> dict[str, int]:
    notes: dict[str, int] = {}
    for w in workers:
        if w.cost_note and w.cost_usd is None:
            notes[w.cost_note] = notes.get(w.cost_note, 0) + 1
    return notes


def cost_line(tree: Mapping[str, Any]) -> str | None:
    """``$0.1234 (estimated for 2 of 5 workers; cost unknown (model X) for 1; conflict resolver $0.0100,
    estimated for 1 of 1)``, or None: no cost."""
    unknown = tree.get("cost_unknown") or {}
    if tree.get("cost_usd") is None and not unknown:
        return None
    parts = [f"estimated for {tree['cost_estimated']} of {tree['workers']} workers"] if tree.get("cost_estimated") else []
    parts += [f"{note} for {n}" for note, n in unknown.items()]
    resolver = tree.get("resolver") or {}
    if resolver.get("cost_usd") is not None:  # part of the total
        shown = f"conflict resolver ${resolver['cost_usd']:,.4f}"
        parts.append(
            shown + (f", estimated for {resolver['estimated']} of {resolver['resolutions']}" if resolver["estimated"] else "")
        )
    total = "no cost known" if tree.get("cost_usd") is None else f"${tree['cost_usd']:,.4f}"
    return total + (f" ({'; '.join(parts)})" if parts else "")


def status_table(doc: Mapping[str, Any], merge: bool = True) -> str:
    """A plain-text table for terminals (check-status.sh, ``orchestrator status``); ``merge``:
    end with where a worktree job's work landed (``run`` prints that in its closing lines)."""
    lines = [
        f"job {doc['job_id']}  {doc['status'].upper()}  depth {doc['depth']}",
        f"request: {doc['request'][:200]}",
        f"progress: {doc['progress']['completed']}/{doc['progress']['total']} workers done, "
        f"success rate {doc['progress']['success_rate'] * 100:.0f}%" + _short_line(doc["progress"]),
        "",
        f"{'WORKER':<22} {'STATUS':<18} {'TIME':>8} {'TRIES':>5}  {'FILES':<11}  TASK",
    ]
    outage = doc.get("queue")
    for row in _flatten(doc["results"]["tasks"], indent=0, unconfirmed=bool(outage)):
        lines.append(row)
    if outage:
        lines += ["", f"queue:     {outage}: its workers on nodes cannot be confirmed running ({UNCONFIRMED})"]
    groups_ = doc.get("candidates") or {}
    if groups_:
        lines.append("")
        lines += [f"candidates: {candidate_line(group)}" for group in groups_.values()]
    lines.append("")
    cost = cost_line(doc["tree"])
    if cost:
        lines.append(f"cost:      {cost}")
    lines.append(f"workspace: {doc['results']['workspace']}")
    if doc["results"]["final_report"]:
        lines.append(f"report:    {doc['results']['final_report']}")
    if merge:
        lines += merge_lines(doc)
    published = pull_request_text(doc.get("publish"))
    if published:
        lines.append(f"pull request: {published}")
    watched = checks_text(doc.get("checks"))
    if watched:
        lines.append(f"pr checks: {watched}")
    if doc["status"] == JobStatus.WAITING:
        lines += approval_lines(doc["job_id"])
    return "\n".join(lines)


def _short_line(progress: Mapping[str, Any]) -> str:
    """``", 1 child_incomplete (exited 0, a child job it started did not complete)"``, or "" when none
    (a status document from an older server has no such count)."""
    n = progress.get("child_incomplete") or 0
    return f", {n} child_incomplete (exited 0, a child job it started did not complete)" if n else ""


def merge_lines(doc: Mapping[str, Any]) -> list[str]:
    """Where a worktree job's work landed (its ``merge``), and the command that takes it."""
    merge = doc.get("merge")
    if not merge:
        return resolution_lines(doc)  # a graph's integration's, before its merge
    if merge.get("error"):
        return [f"merge:     failed: {merge['error']}", f"           run it again: ./orchestrator.sh merge {doc['job_id']}"]
    target = str(merge.get("target") or merge.get("result_ref") or "").removeprefix("refs/heads/")
    conflicts = [c for c in merge.get("conflicts", []) if not c.get("predicted")]
    counts = f"{len(merge.get('merged', []))} merged" + (f", {len(merge['skipped'])} skipped" if merge.get("skipped") else "")
    counts += f", {len(merge['unchanged'])} with no changes" if merge.get("unchanged") else ""
    counts += f", {counted(len(conflicts))}" if conflicts else ""
    left_out = merge.get("left_out") or []  # not merged: failed, or their gates did not pass (quality/gates.py)
    counts += f", {len(left_out)} left out" if left_out else ""
    if not merge.get("result_commit"):
        lines = [f"merge:     nothing merged ({merge.get('strategy')}): merge the branches yourself: {merge.get('command')}"]
        if merge.get("removed"):
            lines.append(f"           {target} (an earlier merge's result) was removed")
    elif merge.get("target"):  # a child job's: into its parent worker's branch and checkout
        lines = [f"merged:    into {target} ({merge.get('strategy')}: {counts})"]
    else:
        lines = [f"result:    {target} ({merge.get('strategy')}: {counts})", f"           take it: {merge.get('command')}"]
    lines += [f"           left out: {w['worker']} ({w['reason']})" for w in left_out]
    lines += [f"           {line}" for line in resolution_lines(doc)]
    into = merge.get("into")
    if into and into.get("moved"):
        lines.append(f"           your branch {into['branch']} is at the result")
    elif into:
        lines.append(f"           your branch {into['branch']} was not moved: {into.get('refused')}; run: {into.get('command')}")
    return lines


def resolution_lines(doc: Mapping[str, Any]) -> list[str]:
    """One line per resolution of the job (its ``resolutions``): ``resolved:  worker_2 in app.py by
    command (gates passed: check)``, or ``refused:   worker_2 in app.py by command (2 attempts): why``."""
    lines = []
    for r in doc.get("resolutions") or []:
        where = f"{r['worker']} in {', '.join(r['files'])} by {r['resolver']}"
        where += " (integration)" if r.get("stage") == "integration" else ""
        attempts = len(r.get("attempts") or [])
        tried = f"{attempts} attempts" if attempts != 1 else "1 attempt"
        cost = (
            f", ${r['cost_usd']:,.4f}" + (" estimated" if r.get("cost_basis") == CostBasis.ESTIMATED else "")
            if r.get("cost_usd") is not None
            else ""
        )
        if r["accepted"]:
            gates = ", ".join(g["name"] for g in r.get("gates") or [])
            lines.append(f"resolved:  {where} ({f'gates passed: {gates}' if gates else 'no required gate'}; {tried}{cost})")
        else:
            lines.append(f"refused:   {where} ({tried}{cost}): {r['reason']}")
    return lines


def _flatten(tasks: Sequence[Mapping[str, Any]], indent: int, unconfirmed: bool = False) -> list[str]:
    """The table's rows; ``unconfirmed``: the queue to the nodes is down, so a running worker (on a
    node, or queued for one) cannot be confirmed running and says so."""
    rows = []
    for task in tasks:
        shown = UNCONFIRMED if unconfirmed and task["status"] == WorkerStatus.RUNNING else task["status"]
        duration = "-" if task["duration"] is None else f"{task['duration']:.1f}s"
        name = ("  " * indent + task["worker_id"])[:22]
        summary = (f"on {task['node']}: " if task.get("node") else "") + ("no changes: " if task.get("no_changes") else "")
        summary += task["task"].replace("\n", " ")[:60]
        rows.append(f"{name:<22} {shown:<18} {duration:>8} {task['attempts']:>5}  {task['files']:<11}  {summary}")
        graph = graph_line(task)
        if graph:
            rows.append(" " * (2 * indent + 2) + "↳ " + graph)
        if task.get("waiting") and task["status"] == WorkerStatus.PENDING:
            rows.append(" " * (2 * indent + 2) + "↳ " + task["waiting"])
        # child_incomplete: which child job did not complete, and how it ended (its exit reason)
        short = task.get("exit_reason") if task["status"] == WorkerStatus.CHILD_INCOMPLETE else None
        for said in (task.get("quiet"), task.get("refused"), task.get("said"), short):
            if said:
                rows.append(" " * (2 * indent + 2) + "↳ " + said)
        if task.get("child_results"):
            rows.extend(_flatten(task["child_results"], indent + 1, unconfirmed))
    return rows


def graph_line(task: Mapping[str, Any]) -> str:
    """A task's graph facts on one line (``api (backend) after db; waits on db; gates: tests
    passed; unblocked: web``); empty for a task with no dependencies, gates or trespasses."""
    parts = []
    if task.get("depends_on"):
        parts.append("after " + ", ".join(task["depends_on"]))
    if task.get("waits_on"):
        parts.append("waits on " + ", ".join(task["waits_on"]))
    if task.get("gate_summary"):
        parts.append("gates: " + task["gate_summary"])
    if task.get("trespass"):
        shown = task["trespass"][:5]
        more = f" and {len(task['trespass']) - len(shown)} more" if len(task["trespass"]) > len(shown) else ""
        parts.append("trespass: " + ", ".join(shown) + more)
    if task.get("unblocked"):
        parts.append("unblocked: " + ", ".join(task["unblocked"]))
    if parts and task["status"] == WorkerStatus.SKIPPED and task.get("exit_reason"):
        parts.append(task["exit_reason"])
    if not parts and not task.get("role"):
        return ""
    head = str(task.get("task_id") or "") + (f" ({task['role']})" if task.get("role") else "")
    return "; ".join([head, *parts]) if head else "; ".join(parts)


class StatusCache:
    """Status documents of recent (job, tree version) pairs. Building one walks the whole tree
    (analytics, critical path), while dashboards and agents poll the same job many times a
    second; a document is reused until the tree changes (a new event) or ``ttl`` seconds pass,
    so running workers' elapsed times are never older than ``ttl``."""

    def __init__(self, ttl: float = 0.2, size: int = 256) -> None:
        self.ttl = ttl
        self.size = size
        self._docs: dict[tuple[str, int], tuple[float, StatusDocument]] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str, version: int, build: Callable[[], StatusDocument]) -> StatusDocument:
        """The cached document for (job_id, version), or ``build()``'s. ``version`` must be read
        before ``build`` snapshots the tree, so a document is never filed under a newer version."""
        now = time.monotonic()
        key = (job_id, version)
        with self._lock:
            hit = self._docs.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        doc = build()
        with self._lock:
            if len(self._docs) >= self.size:
                for old in sorted(self._docs, key=lambda k: self._docs[k][0])[: self.size // 2]:
                    del self._docs[old]
            self._docs[key] = (now, doc)
        return doc
