"""The task API (``/api/v1/tasks``) as Kage Bunshin, a sibling orchestrator, defined it, served as
a facade over jobs.

A task is a root job whose one subtask (the description) runs as candidates, one per
``cli_assignments`` entry; the selected candidate is merged with ``merge_strategy``. Nothing
here runs anything: it checks Kage Bunshin's request body, calls the engine (submit, cancel,
conflicts, merge, the event bus) and answers in Kage Bunshin's TaskResponse shape (``task_doc``).
Every root job is a task, also one submitted through ``/orchestrate`` (its workers are its
``cli_results``).

Kage Bunshin's task statuses from ours: pending and running as they are, cancelled as it is; an
ended job is ``completed`` when it merged a selected candidate (a job without candidates: a worker that
succeeded; no merge to make, in folder isolation or under ``manual``: one was selected), else
``failed``: our partial is completed or failed by that rule.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, stream_with_context, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from ..config import MergeStrategy
from ..config.choice import MAX_CANDIDATES, TIMEOUT, parse_candidate
from ..errors import InvalidParameter, JobNotFound, ValidationError
from ..index import IndexUnavailable
from ..models import JobRecord, WorkerRecord, WorkerStatus
from ..selection.candidates import TaskStatus, task_outcome
from ..workspace.filesystem import atomic_write
from ..workspace.ids import root_of
from .catalogue import TASK_EXAMPLE
from .routes import _allowed, _engine, _int_arg, _last_event_id, _settings, authenticate, held_stream
from .tasks_openapi import STRATEGIES, TASK_STATUSES, cli_kinds

log = logging.getLogger("orchestrator.api")


class TaskIdConverter(BaseConverter):
    """A job id in a task route (a child's too: answered 404 naming its task), so that
    ``/tasks/stats`` is never also a task's path (an OPTIONS request's Allow stays right)."""

    regex = r"[0-9a-f]{12}(?:-c[0-9]{1,7})?"


bp = Blueprint("tasks", __name__)


@bp.record_once
def _converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["task_id"] = TaskIdConverter


bp.before_request(authenticate)  # the same key, credentials and rate limits as every /api/v1 route

BODY_KEYS = ("description", "cli_assignments", "merge_strategy")
ASSIGNMENT_KEYS = ("cli_name", "context", "timeout")
DEFAULT_STRATEGY = MergeStrategy.THEIRS.value  # Kage Bunshin's default ("THEIRS (Default - Fully Automated)")
NAMES_FILE = "task_api.json"  # in the tree's state folder: the cli_names as the request gave them
HEARTBEAT = 1.0  # seconds between the progress stream's heartbeats (Kage Bunshin's interval)
EXAMPLE = json.dumps(TASK_EXAMPLE)
_WORKER_STATUS = {
    WorkerStatus.PENDING: TaskStatus.PENDING,
    WorkerStatus.RUNNING: TaskStatus.RUNNING,
    WorkerStatus.SUCCESS: TaskStatus.COMPLETED,
    WorkerStatus.RECURSIVE_SUCCESS: TaskStatus.COMPLETED,
    # Exited 0 (its work merged), but a child job it started did not complete: Kage Bunshin's
    # statuses have no word for missing work, and "completed" would say it is done; worker_status
    # says child_incomplete.
    WorkerStatus.CHILD_INCOMPLETE: TaskStatus.FAILED,
    WorkerStatus.FAILED: TaskStatus.FAILED,
    WorkerStatus.TIMEOUT: TaskStatus.FAILED,
    WorkerStatus.CANCELLED: TaskStatus.CANCELLED,
    WorkerStatus.SKIPPED: TaskStatus.CANCELLED,
}


# -- routes ----------------------------------------------------------------------------------
@bp.post("/tasks")
def submit_task() -> tuple[Response, int]:
    """201: the task (a job) exists and is addressable at once (Location); its CLIs run after the answer."""
    g.principal.require_admin("submit a task; a worker starts child jobs with POST /api/v1/orchestrate")
    description, assignments, strategy = _task_body()
    candidates = [{"kind": a["kind"], "timeout": a["timeout"], "context": a["context"]} for a in assignments]
    engine = _engine()
    job = engine.submission.submit(description, {"candidates": candidates, "merge_strategy": strategy}, [description])
    _save_names(job, [a["cli_name"] for a in assignments])
    response = jsonify(_task(job.id))
    response.headers["Location"] = url_for("tasks.get_task", task_id=job.id)
    return response, 201


@bp.get("/tasks")
def list_tasks() -> Response:
    status = request.args.get("status")
    if status is not None and status not in TASK_STATUSES:
        raise InvalidParameter(f"status={status[:40]!r} is not a task status; use one of: {', '.join(TASK_STATUSES)}")
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10**9)
    tasks, total = _page(status, limit, offset, g.principal)
    return jsonify({"tasks": tasks, "total": total, "limit": limit, "offset": offset})


@bp.get("/tasks/stats")
def stats() -> Response:
    g.principal.require_admin("read the statistics of every task")
    return jsonify(_stats())


@bp.get("/tasks/<task_id:task_id>")
def get_task(task_id: str) -> Response:
    return jsonify(_task(_task_id(task_id)))


@bp.delete("/tasks/<task_id:task_id>")
def cancel_task(task_id: str) -> Response:
    """Cancel the task's job and its whole tree (409 once it has ended); answers the task."""
    task_id = _task_id(task_id)
    g.principal.require_admin("cancel a task")
    _engine().cancel(task_id)
    return jsonify(_task(task_id))


@bp.get("/tasks/<task_id:task_id>/conflicts")
def conflicts(task_id: str) -> Response:
    """What would conflict between the candidates' branches, and the last merge (engine.conflicts)."""
    found = _engine().conflicts(_task_id(task_id))
    return jsonify({"task_id": task_id, "has_conflicts": bool(found["conflicts"]), **found})


@bp.post("/tasks/<task_id:task_id>/merge")
def merge(task_id: str) -> Response:
    """Merge the task's selected candidate again with a strategy (engine.merge; admin only, as
    POST /jobs/{id}/merge: it moves branches)."""
    g.principal.require_admin("merge a task's branches")
    task_id = _task_id(task_id)
    body = request.get_json(force=True, silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise ValidationError('body must be a JSON object: {"merge_strategy": "theirs|auto|manual|resolve"}')
    unknown = sorted(str(k) for k in body if k != "merge_strategy")
    if unknown:
        raise InvalidParameter(f"unknown field(s) {', '.join(unknown)}; the body takes: merge_strategy", field=unknown[0])
    strategy = body.get("merge_strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise InvalidParameter(
            f"merge_strategy={str(strategy)[:40]!r} is not a strategy; use one of: {', '.join(STRATEGIES)}",
            field="merge_strategy",
        )
    merged = _engine().merge(task_id, strategy, None) or {}
    task = _task(task_id)
    return jsonify(
        {
            "task_id": task_id,
            "strategy": merged.get("strategy", strategy),
            "success": task["status"] == TaskStatus.COMPLETED,
            "commit": merged.get("result_commit"),
            "branch": merged.get("result_ref"),
            "conflicts": merged.get("conflicts", []),
            "message": merged.get("command", ""),
            "merge": merged,
            "task": task,
        }
    )


@bp.get("/tasks/<task_id:task_id>/progress")
def progress(task_id: str) -> Response:
    task_id = _task_id(task_id)
    _engine().queries.get_job(task_id)  # a 404 now, not an error event later
    deadline = time.monotonic() + _settings().api.long_poll_max
    stream = stream_with_context(_progress_stream(task_id, _last_event_id(), deadline))  # it reads the app's engine
    return held_stream(stream, "text/event-stream")


# -- listing and statistics (the index replaces these two: engine.index.page / .stats) ---------
def _page(status: str | None, limit: int, offset: int, principal: Any) -> tuple[list[dict[str, Any]], int]:
    """A page of tasks (root jobs) newest first, in the TaskResponse shape, and how many match: from the
    job index (its ``outcome`` is the task status), else, while it cannot answer, a workspace scan."""
    engine = _engine()
    tree = None if principal.admin else principal.root_id
    try:
        found, total = engine.index.page(None, limit, offset, root_id=tree, outcome=status)
    except IndexUnavailable as exc:
        log.info("listing tasks from the workspace: %s", exc)
    else:
        jobs = []
        for row in found:
            try:
                jobs.append(_doc(engine.queries.get_job(row["job_id"])))
            except JobNotFound:  # deleted since the index answered: the next page says so
                total -= 1
        return jobs, total
    docs = (_doc(job) for job in engine.queries.list_jobs() if job.is_root and (tree is None or job.id == tree))
    matching = [doc for doc in docs if status is None or doc["status"] == status]
    return matching[offset : offset + limit], len(matching)


def _stats() -> dict[str, Any]:
    """Tasks by task status, and per worker kind (the cli_names map to kinds): runs,
    completions, selections, cost and time of the root jobs' workers. From the job index."""
    found = _engine().index.stats()
    by_status = dict.fromkeys(TASK_STATUSES, 0)
    for outcome, count in found["outcomes"].items():
        by_status[outcome if outcome in by_status else TaskStatus.FAILED.value] += count
    return {"total": sum(by_status.values()), "by_status": by_status, "clis": found["root_runs"], "live": _engine().counts()}


# -- Kage Bunshin's TaskResponse shape ---------------------------------------------------------
def task_doc(job: JobRecord, workers: list[WorkerRecord], names: list[str] | None = None) -> dict[str, Any]:
    """A root job in Kage Bunshin's TaskResponse shape (plus a few fields of ours). ``workers``: its
    own workers' records; ``names``: the cli_names as submitted, in candidate order."""
    mine = [w for w in workers if w.job_id == job.id]
    runs = _runs(mine, names)
    results = [_cli_result(w, name) for w, name in runs] if any(w.status.terminal for w, _ in runs) else None
    return {
        "id": job.id,
        "description": job.request,
        "status": task_status(job, mine),
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.ended_at),
        "merge_strategy": job.config.merge_strategy,
        "error": job.error,
        "cli_results": results,
    }


def task_status(job: JobRecord, workers: list[WorkerRecord]) -> TaskStatus:
    """The task status of a root job (pending, running, completed, failed or cancelled:
    candidates.task_outcome); ``workers``: its own."""
    candidates = [w for w in workers if w.candidate is not None]
    winners = [w.name for w in candidates if w.selected] if candidates else [w.name for w in workers if w.status.ok]
    return task_outcome(job, winners)


def _runs(workers: list[WorkerRecord], names: list[str] | None) -> list[tuple[WorkerRecord, str]]:
    """Each assignment's run with its cli_name: the candidates in number order (a job without
    candidates: its workers, named by their kind)."""
    runs = sorted((w for w in workers if w.candidate is not None), key=lambda w: w.candidate or 0)
    if not runs:
        return [(w, w.kind) for w in sorted(workers, key=lambda w: w.index)]
    return [(w, names[i] if names and i < len(names) else w.kind) for i, w in enumerate(runs)]


def _cli_result(worker: WorkerRecord, cli_name: str) -> dict[str, Any]:
    paths = [f["path"] for f in worker.files_changed] if worker.files_changed else list(worker.files_created)
    return {
        "cli_name": cli_name,
        "status": _WORKER_STATUS[worker.status],
        "files_modified": paths,
        "cost": worker.cost_usd,
        "cost_basis": worker.cost_basis,
        "cost_note": worker.cost_note,
        "duration": worker.duration,
        "branch": worker.branch,
        "score": worker.score.score if worker.score else None,
        "selected": worker.selected,
        "worker": worker.name,
        "kind": worker.kind,
        "worker_status": worker.status.value,
        "error": worker.error,
        "ranking": worker.score.to_dict() if worker.score else None,
    }


def iso(seconds: float | None) -> str | None:
    """ISO 8601 in UTC with a Z, as Kage Bunshin writes times."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- helpers ---------------------------------------------------------------------------------
def _task_body() -> tuple[str, list[dict[str, Any]], str]:
    """Kage Bunshin's request body (``POST /api/v1/tasks``), checked: (description, assignments with
    their kind, strategy); each mistake is a 422 naming the field (400 for a body that is not a JSON object)."""
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise ValidationError(f"body must be a JSON object with Content-Type: application/json, e.g. {EXAMPLE}")
    unknown = sorted(str(k) for k in body if k not in BODY_KEYS)
    if unknown:
        raise InvalidParameter(f"unknown field(s) {', '.join(unknown)}; the body takes: {', '.join(BODY_KEYS)}", field=unknown[0])
    description = body.get("description")
    if not isinstance(description, str) or not description.strip():
        raise InvalidParameter(f"description must be a non-empty string: the work to do, e.g. {EXAMPLE}", field="description")
    limit = _settings().orchestrator.max_request_chars
    if len(description) > limit:
        raise InvalidParameter(f"description is {len(description)} characters; at most {limit}", field="description")
    strategy = body.get("merge_strategy", DEFAULT_STRATEGY)
    if strategy not in STRATEGIES:
        raise InvalidParameter(
            f"merge_strategy={str(strategy)[:40]!r} is not a strategy; use one of: {', '.join(STRATEGIES)}",
            field="merge_strategy",
        )
    raw = body.get("cli_assignments")
    if not isinstance(raw, list) or not raw:
        raise InvalidParameter(
            f"cli_assignments must be a non-empty list of {{cli_name, context, timeout}}, e.g. {EXAMPLE}", field="cli_assignments"
        )
    if len(raw) > MAX_CANDIDATES:
        raise InvalidParameter(f"cli_assignments has {len(raw)} entries; at most {MAX_CANDIDATES}", field="cli_assignments")
    return description, [_assignment(item, f"cli_assignments[{i}]") for i, item in enumerate(raw)], strategy


def _assignment(item: object, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidParameter(
            f'{where} must be an object: {{"cli_name": "claude_code", "context": {{}}, "timeout": 600}}', field=where
        )
    unknown = sorted(str(k) for k in item if k not in ASSIGNMENT_KEYS)
    if unknown:
        raise InvalidParameter(
            f"{where}: unknown field(s) {', '.join(unknown)}; it takes: {', '.join(ASSIGNMENT_KEYS)}", field=where
        )
    name, kinds = item.get("cli_name"), cli_kinds()
    if not isinstance(name, str) or name not in kinds:
        raise InvalidParameter(
            f"{where}.cli_name={str(name)[:60]!r} is not a CLI this server can run. Available: {', '.join(sorted(kinds))}",
            field=f"{where}.cli_name",
            available=sorted(kinds),
        )
    timeout = item.get("timeout")
    ceiling = _settings().workers.max_timeout
    low = TIMEOUT[0]
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not low <= timeout <= ceiling
    ):
        raise InvalidParameter(
            f"{where}.timeout={str(timeout)[:40]} must be seconds from {low:g} to this server's limit "
            f"{ceiling:g} (workers.max_timeout), or left out for the default",
            field=f"{where}.timeout",
        )
    # The candidate's own checks (config/choice.py), its errors naming this assignment's fields.
    candidate = parse_candidate({"kind": kinds[name], "context": item.get("context"), "timeout": timeout}, where)
    return {"cli_name": name, **candidate.to_dict()}


def _task_id(task_id: str) -> str:
    """A root job's id that the caller may read; a child job is not a task (404 naming its root)."""
    task_id = _allowed(task_id)
    if root_of(task_id) != task_id:
        raise JobNotFound(f"{task_id} is a child job, not a task; its task is {root_of(task_id)}")
    return task_id


def _task(job_id: str) -> dict[str, Any]:
    return _doc(_engine().queries.get_job(job_id))


def _doc(job: JobRecord) -> dict[str, Any]:
    _, workers = _engine().queries.snapshot(job.root_id, job.id)
    return task_doc(job, workers, _names(job.root_id))


def _save_names(job: JobRecord, names: list[str]) -> None:
    path = _engine().workspace.state_dir(job.root_id) / NAMES_FILE
    atomic_write(path, json.dumps({"cli_names": names}).encode())


def _names(root_id: str) -> list[str] | None:
    try:
        names = json.loads((_engine().workspace.state_dir(root_id) / NAMES_FILE).read_bytes())["cli_names"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a job not submitted here: its workers' kinds stand for the names
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def _sse(event: str, data: Any, seq: int | None = None) -> str:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


def _progress_stream(task_id: str, last: int, deadline: float) -> Iterator[str]:
    """Kage Bunshin's progress events: ``connected`` first; a ``progress`` per event of the task's
    tree after ``last`` (its id is the event's, for Last-Event-ID); a ``heartbeat`` each second
    (a keep-alive, however busy the tree); ``task_complete`` last, with the task, once it has ended; ``error`` when the
    stream cannot go on (its task deleted, or api.long_poll_max reached: reconnect to go on)."""
    engine = _engine()
    yield "retry: 1000\n" + _sse("connected", {"task_id": task_id, "last_event_id": last})
    names: dict[str, str] = {}
    beat = time.monotonic() + HEARTBEAT
    try:
        while True:
            job = engine.queries.get_job(task_id)
            if job.status.terminal and not engine.events.since(task_id, last):
                yield _sse("task_complete", _doc(job))
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield _sse(
                    "error",
                    {"task_id": task_id, "message": "stream time is up (api.long_poll_max); reconnect with Last-Event-ID"},
                )
                return
            batch = engine.events.wait(task_id, last, max(0.0, min(beat - time.monotonic(), remaining)))
            for event in batch:
                last = event.seq
                # A child job's worker (worker_2_1) counts as the candidate it descends from (worker_2).
                top = "_".join((event.worker or "").split("_")[:2])
                if event.worker and top not in names:
                    _, workers = engine.queries.snapshot(task_id, task_id)
                    names = {w.name: name for w, name in _runs([w for w in workers if w.job_id == task_id], _names(task_id))}
                yield _sse("progress", _progress(event, names.get(top)), event.seq)
            if time.monotonic() >= beat:
                beat = time.monotonic() + HEARTBEAT
                yield _sse("heartbeat", {"task_id": task_id, "time": iso(time.time())})
    except JobNotFound as exc:
        yield _sse("error", {"task_id": task_id, "message": exc.message})


def _progress(event: Any, cli_name: str | None) -> dict[str, Any]:
    return {
        "task_id": event.root_id,
        "job_id": event.job_id,
        "cli_name": cli_name,
        "worker": event.worker,
        "status": event.status,
        "message": event.message,
        "timestamp": iso(event.time),
        "seq": event.seq,
    }
