"""HTTP routes. Views are thin: parse, call the engine, answer JSON (or text, or SSE)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, g, jsonify, request, url_for

from .. import __version__
from ..config import ExecutorKind
from ..errors import AuthenticationError, ConfigError, InvalidParameter, JobNotFound, Unavailable, ValidationError
from ..events import EventType
from ..index import IndexUnavailable
from ..index import rows as index_rows
from ..models import JobRecord, JobStatus
from ..reports.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..reports.status_document import queue_words
from ..reports.timeline import render_timeline_svg
from ..webhooks.outbox import STATUSES as DELIVERY_STATUSES
from ..workspace.ids import parse_worker_ref, root_of, validate_job_id
from . import catalogue
from . import request_context as context
from .guard import check_host
from .openapi import openapi_document
from .request_context import extension

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..engine.core import Engine

log = logging.getLogger("orchestrator.api")

bp = Blueprint("api", __name__)
public = Blueprint("public", __name__)
BODY_KEYS = ("request", "config", "tasks")
STARTED = time.time()


@bp.before_request
def authenticate(key: str | None = None) -> None:
    ext = extension()
    settings = ext["settings"]
    limiter = ext["limiter"]
    try:
        g.principal = ext["credentials"].authenticate(key or request.headers.get("X-API-Key"))
    except AuthenticationError:
        limiter.check(f"addr:{request.remote_addr}", settings.api.rate_limit_failed_auth, "requests with a wrong key")
        raise
    principal = g.principal
    rate = settings.api.rate_limit_admin if principal.admin else settings.api.rate_limit_worker
    limiter.check(principal.key, rate, principal.label)


@public.before_app_request
def check_host_header() -> None:
    ext = extension()
    check_host(request.headers.get("Host"), ext["allowed_hosts"])


def _engine() -> Engine:
    return context.engine()


def _settings() -> Settings:
    return context.settings()


# -- public -------------------------------------------------------------------------
@public.get("/health")
def health() -> Response:
    """Up, and (executor rq) whether the queue to the nodes answers: an outage is "degraded",
    with since when, not "ok" (no node can start, report or be seen meanwhile)."""
    engine = _engine()
    found: dict[str, Any] = {"status": "ok"}
    if _settings().distributed.executor == ExecutorKind.RQ:
        since = engine.executor.queue_outage()
        found["queue"] = "ok" if since is None else queue_words(since)
        if since is not None:
            found.update(status="degraded", queue_unreachable_since=since)
    found.update(version=__version__, instance=extension()["instance"], uptime=round(time.time() - STARTED, 1))
    return jsonify({**found, **engine.counts()})


@public.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(_settings()))


@public.get("/metrics")
def metrics() -> Response:
    """Prometheus text format, for the admin key only. Prometheus sends a key most simply as
    ``Authorization: Bearer``, so that is accepted here besides X-API-Key."""
    bearer = request.headers.get("Authorization", "")
    authenticate(request.headers.get("X-API-Key") or (bearer[7:].strip() if bearer[:7].lower() == "bearer " else None))
    g.principal.require_admin("read /metrics")
    return Response(_engine().metrics.render(), content_type=METRICS_CONTENT_TYPE)


# -- jobs ----------------------------------------------------------------------------
@bp.post("/orchestrate")
def orchestrate() -> tuple[Response, int]:
    body = _json_body()
    principal = g.principal
    submission = _engine().submission
    if principal.admin:
        return jsonify(_submitted(submission.submit(body.get("request"), body.get("config"), body.get("tasks")))), 202
    # A worker's spawn: a retry's spawn of its earlier attempt's request gets that child job back.
    spawned = submission.spawn(
        body.get("request"), body.get("config"), body.get("tasks"), parent_job_id=principal.job_id, parent_worker=principal.worker
    )
    return jsonify({**_submitted(spawned.job), "reused": spawned.reused, "reused_note": spawned.note or None}), 202


@bp.get("/jobs")
def list_jobs() -> Response:
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in JobStatus}:
        raise ValidationError(f"status={status!r} is not a job status; use one of: {', '.join(s.value for s in JobStatus)}")
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10**9)
    engine = _engine()
    tree = None if g.principal.admin else g.principal.root_id  # a worker credential sees only its tree
    try:  # root jobs from the job index (orchestrator/index/), exact: it catches up before answering
        found, total = engine.index.page(status, limit, offset, root_id=tree)
        return jsonify({"jobs": [index_rows.summary(j) for j in found], "total": total, "limit": limit, "offset": offset})
    except IndexUnavailable as exc:  # being built, or its database is down: scan the workspace
        log.info("listing jobs from the workspace: %s", exc)
    jobs = [
        j
        for j in engine.queries.list_jobs()
        if j.is_root and (status is None or j.status.value == status) and (tree is None or j.root_id == tree)
    ]
    page = jobs[offset : offset + limit]
    return jsonify({"jobs": [_summary(j) for j in page], "total": len(jobs), "limit": limit, "offset": offset})


@bp.get("/jobs/<job_id>")
@bp.get("/jobs/<job_id>/status")
def status(job_id: str) -> Response:
    return jsonify(_status_doc(_allowed(job_id)))


@bp.get("/jobs/<job_id>/wait")
def wait(job_id: str) -> Response:
    job_id = _allowed(job_id)
    timeout = _float_arg("timeout", 30.0, 0.0, float("inf"))
    with held_slot():
        _engine().queries.wait(job_id, min(timeout, _settings().api.long_poll_max))
    return jsonify(_status_doc(job_id))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> Response:
    job_id = _allowed(job_id)
    engine = _engine()
    if not g.principal.admin:
        job = engine.queries.get_job(job_id)
        if job.parent_job_id != g.principal.job_id or job.parent_worker != g.principal.worker:
            g.principal.require_admin("cancel a job it did not start")
    job = engine.cancel(job_id)
    return jsonify(
        {
            "job_id": job.id,
            "status": job.status.value,
            "message": "cancelling: workers get SIGTERM, then SIGKILL after the grace period",
        }
    )


DELETE_BRANCHES = ("workers", "all")  # DELETE /jobs/<id>?branches=: which of the job's branches go


@bp.delete("/jobs/<job_id>")
def delete(job_id: str) -> tuple[str, int]:
    g.principal.require_admin("delete jobs")
    branches = request.args.get("branches", "workers")
    if branches not in DELETE_BRANCHES:
        raise InvalidParameter(
            f"branches={branches[:40]!r} is not one of {', '.join(DELETE_BRANCHES)}: 'workers' (the default) removes the "
            "job's worktrees and worker branches and keeps its result branch <prefix><root id>/result; 'all' removes that too"
        )
    _engine().delete(validate_job_id(job_id), all_branches=branches == "all")
    return "", 204


@bp.get("/jobs/<job_id>/report")
def report(job_id: str) -> Response:
    job_id = _allowed(job_id)
    name = request.args.get("name", "final")
    text = _engine().queries.read_report(job_id, name)
    return Response(text, mimetype="text/markdown")


@bp.get("/jobs/<job_id>/timeline.svg")
def timeline_svg(job_id: str) -> Response:
    """The job's subtree as a Gantt chart, drawn from the current records (live while it runs)."""
    job_id = _allowed(job_id)
    engine = _engine()
    jobs, workers = engine.queries.snapshot(root_of(job_id), job_id)
    if not any(j.id == job_id for j in jobs):
        raise JobNotFound(f"job {job_id} not found")
    response = Response(render_timeline_svg(jobs, workers, job_id=job_id), mimetype="image/svg+xml")
    # Served from the API's origin: even though it holds no script, forbid any if opened directly.
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/jobs/<job_id>/workers/<worker>/log")
def worker_log(job_id: str, worker: str) -> Response:
    job_id = _allowed(job_id)
    engine = _engine()
    depth, name = parse_worker_ref(worker)
    record = engine.queries.find_worker(job_id, depth, name)
    tail = _int_arg("tail", 0, 0, 100_000)
    offset = _int_arg("offset", 0, 0, 1 << 62)
    follow = request.args.get("follow", "0")
    gate = request.args.get("gate")  # that gate's whole output (quality/gates.py), not the worker's log
    if follow not in ("0", "1"):
        raise ValidationError(f"follow={follow[:40]!r} must be 1 (follow the log live) or 0 (read it once)")
    if follow == "1":
        engine.queries.read_log(record, offset=1 << 62, gate=gate)  # a planted link is a 403 now, not a broken stream later
        deadline = time.monotonic() + _settings().api.long_poll_max
        return held_stream(engine.queries.follow_log(record, offset, deadline, gate), "text/plain")
    text, size = engine.queries.read_log(record, tail=tail, offset=offset, gate=gate)
    response = Response(text, mimetype="text/plain")
    response.headers["X-Log-Size"] = str(size)
    return response


@bp.get("/jobs/<job_id>/workers/<worker>/checkpoints")
def worker_checkpoints(job_id: str, worker: str) -> Response:
    from ..checkouts.worktree import checkpoints

    job_id = _allowed(job_id)
    depth, name = parse_worker_ref(worker)
    return jsonify({"job_id": job_id, **checkpoints(_engine().queries.find_worker(job_id, depth, name))})


# -- diffs (git/diffs.py) ---------------------------------------------------
@bp.get("/jobs/<job_id>/diff")
def job_diff(job_id: str) -> Response:
    """The job's unified diff: its result commit against the base, else its workers' diffs."""
    from ..git import diffs

    job_id = _allowed(job_id)
    max_bytes = _int_arg("max_bytes", diffs.DEFAULT_MAX_BYTES, 1, diffs.MAX_BYTES_CEILING)
    engine = _engine()
    return jsonify(diffs.job_diff(engine.queries, _settings(), engine.workspace, job_id, max_bytes))


@bp.get("/jobs/<job_id>/workers/<worker>/diff")
def worker_diff(job_id: str, worker: str) -> Response:
    """A worker's unified diff: its branch against the commit it started from."""
    from ..git import diffs

    job_id = _allowed(job_id)
    ref = parse_worker_ref(worker)
    max_bytes = _int_arg("max_bytes", diffs.DEFAULT_MAX_BYTES, 1, diffs.MAX_BYTES_CEILING)
    engine = _engine()
    return jsonify(diffs.worker_diff(engine.queries, _settings(), engine.workspace, job_id, ref, max_bytes))


@bp.get("/jobs/<job_id>/conflicts")
def conflicts(job_id: str) -> Response:
    """Predicted conflicts between the root's workers' branches, and its last merge (delivery/landing.py)."""
    return jsonify(_engine().conflicts(_allowed(job_id)))


MERGE_KEYS = ("strategy", "into")


@bp.post("/jobs/<job_id>/merge")
def merge(job_id: str) -> Response:
    """Merge a finished root job's workers' branches (again): admin only, it may move a branch of the user's."""
    g.principal.require_admin("merge a job's branches")
    job_id = _allowed(job_id)
    body = request.get_json(force=True, silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise ValidationError(
            'body must be a JSON object: {"strategy": "auto|theirs|manual|resolve", "into": "<branch>"} (both optional)'
        )
    unknown = sorted(set(body) - set(MERGE_KEYS))
    if unknown:
        raise ValidationError(f"unknown field(s) {', '.join(unknown)}; the body takes: {', '.join(MERGE_KEYS)}")
    for key in MERGE_KEYS:
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ConfigError(f"{key} must be a string (or left out)", key=key)
    merged = _engine().merge(job_id, body.get("strategy"), body.get("into"))
    return jsonify({"job_id": job_id, "merge": merged})


@bp.post("/jobs/<job_id>/workers/<worker>/continue")
def continue_worker(job_id: str, worker: str) -> tuple[Response, int]:
    """Start a continue round of a finished root job's worker with the user's feedback
    (engine/continuing.py): admin only, it runs a worker and moves the result branch. 202 with the
    round's record; the round's end is in the worker's ``rounds`` (GET the job, or its events)."""
    g.principal.require_admin("continue a worker")
    job_id = _allowed(job_id)
    body = request.get_json(force=True, silent=True) if request.get_data() else None
    if not isinstance(body, dict) or "feedback" not in body:
        raise ValidationError('body must be a JSON object with the feedback: {"feedback": "now also handle the empty case"}')
    unknown = sorted(set(body) - {"feedback"})
    if unknown:
        raise ValidationError(f"unknown field(s) {', '.join(unknown)}; the body takes: feedback")
    return jsonify(_engine().continue_worker(job_id, worker, body["feedback"])), 202


@bp.post("/jobs/<job_id>/publish")
def publish(job_id: str) -> Response:
    """Push a finished root job's result branch and open or update its pull request (again): admin only."""
    g.principal.require_admin("publish a job's result")
    job_id = _allowed(job_id)
    return jsonify({"job_id": job_id, "publish": _engine().publish(job_id)})


# -- shared-checkout locks (checkouts/locks.py) -------------------------------------
LOCK_KEYS = ("paths", "lease", "wait")
LOCK_EXAMPLE = json.dumps(catalogue.LOCK_EXAMPLE)


@bp.post("/jobs/<job_id>/locks")
def take_lock(job_id: str) -> tuple[Response, int]:
    """Lock paths of the tree's shared folder for the calling worker (the admin key: for itself),
    waiting up to ``wait`` seconds for a holder to let go; 409 names the holder."""
    from ..checkouts import locks

    job_id = _allowed(job_id)
    engine = _engine()
    engine.queries.get_job(job_id)
    body = request.get_json(force=True, silent=True) if request.get_data() else None
    if not isinstance(body, dict):
        raise InvalidParameter(f"body must be a JSON object: {LOCK_EXAMPLE} (lease and wait optional)", field="body")
    unknown = sorted(str(k) for k in body if k not in LOCK_KEYS)
    if unknown:
        raise InvalidParameter(f"unknown field(s) {', '.join(unknown)}; the body takes: {', '.join(LOCK_KEYS)}", field=unknown[0])
    paths = locks.check_paths(body.get("paths"))
    tasks = _settings().tasks
    lease = locks.check_seconds(body.get("lease"), "lease", tasks.lock_lease, 1, locks.MAX_LEASE)
    wait = locks.check_seconds(body.get("wait"), "wait", tasks.lock_timeout, 0, locks.MAX_WAIT)
    principal = g.principal
    with held_slot() if wait > 0 else contextlib.nullcontext():
        if principal.admin:
            lock = engine.locks.acquire(root_of(job_id), job_id, None, paths, lease, wait)
        else:  # a worker locks for itself only, in its own job's tree (_allowed)
            alive = functools.partial(engine.worker_running, principal.job_id, principal.worker)
            lock = engine.locks.acquire(root_of(job_id), principal.job_id, principal.worker, paths, lease, wait, alive)
    return jsonify(lock.to_dict()), 201


@bp.get("/jobs/<job_id>/locks")
def list_locks(job_id: str) -> Response:
    job_id = _allowed(job_id)
    engine = _engine()
    engine.queries.get_job(job_id)
    root = root_of(job_id)
    return jsonify({"job_id": job_id, "root_job_id": root, "locks": [lock.to_dict() for lock in engine.locks.locks(root)]})


@bp.delete("/jobs/<job_id>/locks/<lock_id>")
def release_lock(job_id: str, lock_id: str) -> tuple[str, int]:
    """Release a lock: its holder's credential or the admin key (403 for another worker)."""
    from ..checkouts.locks import LOCK_ID_RE

    job_id = _allowed(job_id)
    if not LOCK_ID_RE.fullmatch(lock_id):
        raise InvalidParameter(
            f"lock_id={lock_id[:40]!r} is not a lock id: lk- and 16 hex digits, as POST .../locks answered", field="lock_id"
        )
    principal = g.principal
    _engine().locks.release(root_of(job_id), lock_id, None if principal.admin else principal.worker)
    return "", 204


@bp.get("/jobs/<job_id>/events")
def events(job_id: str) -> Response:
    job_id = _allowed(job_id)
    engine = _engine()
    engine.queries.get_job(job_id)
    deadline = time.monotonic() + _settings().api.long_poll_max
    return held_stream(_event_stream(engine, job_id, _last_event_id(), deadline), "text/event-stream")


# -- nodes -----------------------------------------------------------------------------
@bp.get("/nodes")
def nodes() -> Response:
    """The machines that run worker attempts: the rq executor's node registry (the admin key: a
    worker credential sees only its own tree, and the cluster's machines are not part of it)."""
    from redis.exceptions import RedisError  # the registry lives in Redis (cluster/registry.py)

    g.principal.require_admin("list the cluster's nodes")
    engine = _engine()
    try:
        found = engine.executor.nodes()
    except (RedisError, OSError) as exc:
        raise Unavailable(
            f"cannot read the node registry ({type(exc).__name__}): is Redis up at distributed.redis_url?"
        ) from None
    if found is None:  # the local executor: this server runs every worker
        return jsonify({"executor": "local", "nodes": []})
    now = engine.clock.time()
    listed = [{**n.to_dict(), "heartbeat_age": round(max(0.0, now - n.heartbeat_at), 1)} for n in found]
    return jsonify({"executor": "rq", "nodes": listed})


# -- webhooks --------------------------------------------------------------------------
@bp.get("/webhooks/deliveries")
def webhook_deliveries() -> Response:
    """The outbox, newest first: each delivery's status, tries and last answer (never a secret)."""
    g.principal.require_admin("read webhook deliveries")
    status = request.args.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationError(f"status={status[:40]!r} is not a delivery status; use one of: {', '.join(DELIVERY_STATUSES)}")
    limit, offset = _int_arg("limit", 50, 1, 500), _int_arg("offset", 0, 0, 10**9)
    found, total = _engine().webhooks.deliveries(status, limit, offset)
    return jsonify({"deliveries": found, "total": total, "limit": limit, "offset": offset})


def _event_stream(engine: Engine, job_id: str, last: int, deadline: float) -> Iterator[str]:
    """Events of the job's tree after ``last``; ``end`` once the job is terminal. Bounded by
    ``deadline`` so a stream never holds a server thread for longer than api.long_poll_max.
    A job that is already over with nothing left to send (say it ended under an earlier server
    run, whose events are gone) gets ``end`` at once, not after a wait for events."""
    root = root_of(job_id)
    yield "retry: 1000\n\n"
    while True:
        job = engine.queries.get_job(job_id)
        if job.status.terminal and not engine.events.since(root, last):
            yield f"event: {EventType.END}\ndata: {json.dumps({'job_id': job_id, 'status': job.status.value})}\n\n"
            return
        remaining = deadline - time.monotonic()
        batch = engine.events.wait(root, last, max(0.0, min(15.0, remaining)))
        for event in batch:
            last = event.seq
            yield f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.to_dict())}\n\n"
        if remaining <= 0:
            return
        if not batch:
            yield ": keep-alive\n\n"


# -- helpers ---------------------------------------------------------------------------
@contextlib.contextmanager
def held_slot() -> Iterator[None]:
    """Hold one of the caller's stream slots (guard.StreamSlots) while a long-poll waits: a 429
    naming the setting when the caller, or the server, holds all it may."""
    release = extension()["streams"].take(g.principal.key, g.principal.label)
    try:
        yield
    finally:
        release()


def held_stream(body: Iterable[str] | Iterable[bytes], mimetype: str) -> Response:
    """A streamed answer holding one of the caller's stream slots until it ends or its client goes
    (the WSGI server closes the response either way)."""
    release = extension()["streams"].take(g.principal.key, g.principal.label)
    try:
        response = Response(body, mimetype=mimetype, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    except BaseException:
        release()
        raise
    response.call_on_close(release)
    return response


def _last_event_id() -> int:
    """Where an SSE stream resumes: the Last-Event-ID header (or ?last_event_id=), 0 for the start.
    Each one given is checked, the one the header overrides too (a bad value is never ignored)."""
    found = 0
    for raw in (request.args.get("last_event_id"), request.headers.get("Last-Event-ID")):  # the header wins
        if not raw:
            continue
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # isdigit alone takes "²", which int() refuses
            raise ValidationError(
                f"Last-Event-ID {raw[:40]!r} must be a non-negative whole number (the id of the last event you saw)"
            )
        found = int(raw)
    return found


def _json_body() -> dict[str, Any]:
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise ValidationError(
            'body is not valid JSON: send {"request": "...", "config": {...}} with Content-Type: application/json'
        )
    if not isinstance(body, dict):
        raise ValidationError('body must be a JSON object: {"request": "...", "config": {...}, "tasks": [...]}')
    unknown = sorted(set(body) - set(BODY_KEYS))
    if unknown:
        raise ValidationError(f"unknown field(s) {', '.join(unknown)}; the body takes: {', '.join(BODY_KEYS)}")
    for key in ("config", "tasks"):
        if key in body and body[key] is None:
            raise ValidationError(f'"{key}": null is not allowed; leave "{key}" out instead')
    if "request" not in body:
        raise ValidationError('missing "request": describe the work, e.g. {"request": "Build a REST API with auth and tests"}')
    return body


def _allowed(job_id: str) -> str:
    job_id = validate_job_id(job_id)
    g.principal.check_tree(job_id)
    return job_id


def _status_doc(job_id: str) -> dict[str, Any]:
    """The job's status document (shared between requests: never modify it)."""
    engine = _engine()
    return extension()["status_cache"].get(
        job_id, engine.events.last_seq(root_of(job_id)), lambda: engine.queries.status_document(job_id)
    )


def _submitted(job: JobRecord) -> dict[str, Any]:
    engine = _engine()
    return {
        "job_id": job.id,
        "status": job.status.value,
        "root_job_id": job.root_id,
        "parent_job_id": job.parent_job_id,
        "parent_worker": job.parent_worker,
        "depth": job.depth,
        "tasks": job.tasks,
        "nodes": [n.to_dict() for n in job.nodes],
        "goal": job.goal,
        "planner": job.planner,
        "worker_kind": job.config.worker,
        "config": job.config.to_dict(),
        "notes": job.notes,
        "workspace": str(engine.workspace.job_dir(job.root_id)),
        "urls": {
            "status": url_for("api.status", job_id=job.id),
            "wait": url_for("api.wait", job_id=job.id),
            "events": url_for("api.events", job_id=job.id),
            "cancel": url_for("api.cancel", job_id=job.id),
            "report": url_for("api.report", job_id=job.root_id),
        },
    }


def _summary(job: JobRecord) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job.status.value,
        "request": job.request[:300],
        "depth": job.depth,
        "parent_job_id": job.parent_job_id,
        "workers": len(job.worker_names),
        "created_at": job.created_at,
        "ended_at": job.ended_at,
        "duration": job.duration,
    }


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:  # isdigit alone takes "²"
        raise ValidationError(f"{name}={raw[:40]!r} must be a whole number from {low} to {high} (leave {name} out for {default})")
    return int(raw)


def _float_arg(name: str, default: float, low: float, high: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ValidationError(f"{name}={raw[:40]!r} must be a number of seconds from {low:g}")
    return value
