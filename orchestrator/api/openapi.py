"""The OpenAPI 3 document of the routes (tests check it lists exactly the app's routes)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..cluster.registry import NODES_SCHEMA
from ..config import AUTO_KIND, Isolation, MergeStrategy, choice, quality
from ..events import EventType
from ..git.diffs import MAX_BYTES_CEILING
from ..models import JobStatus
from .approval_openapi import approval_paths, approval_schemas
from .catalogue import file_operations
from .tasks_openapi import task_paths, task_schemas

if TYPE_CHECKING:
    from ..config import Settings

JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^[0-9a-f]{12}(-c[1-9][0-9]{0,6})?$"},
}
WORKER = {
    "name": "worker",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^(depth_[0-9]{1,3}_)?worker(_[1-9][0-9]{0,6}){1,40}$"},
}
# -- diffs --
MAX_BYTES = {
    "name": "max_bytes",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_BYTES_CEILING},
}
DIFF = {
    "type": "object",
    "required": ["job_id", "from", "to", "diff", "truncated", "bytes", "max_bytes"],
    "properties": {
        "job_id": {"type": "string"},
        "worker": {"type": "string"},
        "branch": {"type": "string", "nullable": True},
        "source": {"type": "string", "enum": ["result", "workers"]},
        "from": {"type": "string", "nullable": True},
        "to": {"type": "string", "nullable": True},
        "diff": {"type": "string"},
        "truncated": {"type": "boolean"},
        "bytes": {"type": "integer"},
        "max_bytes": {"type": "integer"},
    },
}
ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): ERROR for code in codes}


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(description: str, ok: dict[str, Any], params: list[dict[str, Any]], *errors: int) -> dict[str, Any]:
    return {"get": {"description": description, "parameters": params, "responses": {"200": ok, **_errors(401, 403, *errors)}}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


# Text with something besides whitespace, as the server strips it (Python's str.strip, which also
# strips \x1c-\x1f and \x85; a JSON Schema \S would let those through to a 400).
NOT_BLANK = r"[^\s\x1c-\x1f\x85]"


# A lock path (locks.check_paths): relative to the shared folder, no ".." part, not absolute, no NUL,
# not blank. "Not blank" is a negative lookahead (not only blanks to the end), the same strings as
# a positive one (some non-blank ahead), which hypothesis (schemathesis) cannot draw at maxLength:
# a 1,024-character path took it minutes of CPU in each fuzz test of tests/test_security.py.
LOCK_PATH = {
    "type": "string",
    "minLength": 1,
    "maxLength": 1024,
    "pattern": r"^(?![/\\~])(?![A-Za-z]:)(?!([\s\S]*[/\\])?\.\.([/\\]|$))(?![\s\x1c-\x1f\x85]*$)[^\x00]+$",
}


# A branch name git accepts (``git check-ref-format --branch``), in ASCII, or "" (none): what
# merge_into and a merge's "into" take (the server also refuses one inside git.branch_prefix).
BRANCH = {
    "type": "string",
    "maxLength": 255,
    "pattern": r"^$|^(?!-)(?!/)(?!\.)(?!.*\.\.)(?!.*@\{)(?!.*//)(?!.*/\.)(?!.*\.lock(/|$))(?!@$)"
    r"[A-Za-z0-9._/+,=@#%-]*[A-Za-z0-9_+,=@#%-]$",
}


def depth_rule(settings: Settings | None = None) -> dict[str, Any]:
    """An admin job's ``current_depth`` may not pass its ``max_recursion_depth`` (or, when the
    request does not give one, the server's recursion.max_depth): 422 otherwise. OpenAPI 3.0
    cannot compare two fields, so the rule is spelled out: some k with current_depth <= k <=
    max_recursion_depth."""
    if settings is None:
        return {}
    given = [
        {
            "required": ["max_recursion_depth"],
            "properties": {"current_depth": {"maximum": k}, "max_recursion_depth": {"minimum": k}},
        }
        for k in range(settings.recursion.max_depth_limit + 1)
    ]
    return {
        "anyOf": [
            {"not": {"required": ["current_depth"]}},
            {
                "not": {"required": ["max_recursion_depth"]},
                "properties": {"current_depth": {"maximum": settings.recursion.max_depth}},
            },
            *given,
        ]
    }


# A subtask as an object (planner/graph.py checks the same, and the graph as a whole: ids that exist,
# no cycle; a role this server knows is the enum ``job_schema`` fills in).
GLOB = r"^(?![/~])(?![A-Za-z]:)(?!(.*/)?\.\.(/|$))[^\x00]+$"  # relative, never climbing out (config.quality.check_glob)
TASK: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["task"],
    "properties": {
        "id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", "nullable": True},
        "task": {"type": "string", "minLength": 1, "pattern": NOT_BLANK},
        "depends_on": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
            "nullable": True,
        },
        "role": {"type": "string", "nullable": True},
        "owns": {"type": "array", "items": {"type": "string", "pattern": GLOB}, "maxItems": 100, "nullable": True},
        "candidates": {"type": "array", "maxItems": choice.MAX_CANDIDATES, "nullable": True},  # items: task_schema
    },
}


def task_schema(settings: Settings | None = None) -> dict[str, Any]:
    """A subtask object, its role one this server knows."""
    from ..config.quality import roles_with_defaults

    schema = copy.deepcopy(TASK)
    roles = roles_with_defaults(settings.tasks.roles if settings is not None else {})
    schema["properties"]["role"]["enum"] = [*sorted(roles), None]
    schema["properties"]["candidates"]["items"] = candidate_schema()
    return schema


def candidate_schema() -> dict[str, Any]:
    """One of ``config.candidates`` (config/choice.py): a worker kind, or an object."""
    from ..workers.adapters import ADAPTERS

    kinds = [k for k in ADAPTERS]
    timeout = {"type": "number", "nullable": True, "minimum": choice.TIMEOUT[0], "maximum": choice.TIMEOUT[1]}
    return {
        "oneOf": [
            {"type": "string", "enum": kinds},
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["kind"],
                "properties": {
                    "kind": {"type": "string", "enum": kinds},
                    "model": {"type": "string", "nullable": True, "pattern": r"^[^\s\x00]{0,200}$"},
                    "timeout": timeout,
                    "context": {"type": "object", "nullable": True},
                },
            },
        ]
    }


def judge_schema() -> dict[str, Any]:
    """``config.judge``: the AI kind that compares candidates for ``select: judge``."""
    from ..workers.adapters import ADAPTERS

    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": list(ADAPTERS)},
            "model": {"type": "string", "nullable": True, "pattern": r"^[^\s\x00]{0,200}$"},
            "timeout": {"type": "number", "nullable": True, "minimum": choice.TIMEOUT[0], "maximum": choice.TIMEOUT[1]},
        },
    }


def job_config_schema(settings: Settings | None = None) -> dict[str, Any]:
    """A request's "config" keys, with the types, ranges and choices this server enforces
    (with ``settings``, its own ceilings: a valid request is never refused for a limit)."""
    from ..config import ACCEPTED_ONLY, JOB_CEILINGS, JOB_KEYS, SCHEMA
    from ..workers.adapters import ADAPTERS

    names = {int: "integer", float: "number", bool: "boolean", str: "string", list: "array", dict: "object"}
    props: dict[str, Any] = {}
    for key, (section, name) in JOB_KEYS.items():
        spec = SCHEMA[section][name]
        prop: dict[str, Any] = {"type": names[spec.type]}
        if spec.choices:
            prop["enum"] = list(spec.choices)
        if spec.min is not None:
            prop["minimum"] = spec.min
        ceiling = JOB_CEILINGS.get(key)
        if ceiling is not None and settings is not None:
            prop["maximum"] = settings.get(*ceiling)
        elif spec.max is not None and ceiling is None:
            prop["maximum"] = spec.max
        props[key] = prop
    for key in ACCEPTED_ONLY:  # current_depth: see depth_rule
        props[key] = {
            "type": "integer",
            "minimum": 0,
            "maximum": settings.recursion.max_depth_limit if settings is not None else 1000,
        }
    props["worker"]["enum"] = [AUTO_KIND, *ADAPTERS]
    props["merge_into"] = dict(BRANCH)
    props["callback_url"] = {"type": "string", "maxLength": 2048}  # a host in webhooks.allowed_callback_hosts, else 422
    props["gates"] = {"type": "array", "items": quality.GATE_SCHEMA}
    props["candidates"] = {"type": "array", "maxItems": choice.MAX_CANDIDATES, "items": candidate_schema()}
    props["judge"] = judge_schema()
    if settings is not None and settings.workers.max_cost_usd:
        props["max_cost_usd"].update(minimum=0.000001, maximum=settings.workers.max_cost_usd)
    if settings is not None and not settings.recursion.enable:
        props["enable_recursion"]["enum"] = [False]
    if settings is not None and _worktrees_impossible(settings):  # never offer what would be refused
        props["isolation"]["enum"] = [m for m in props["isolation"]["enum"] if m != Isolation.WORKTREE]
    return props


def _worktrees_impossible(settings: Settings) -> bool:
    """Whether this server refuses ``isolation: worktree`` (no git, or no repository holding
    the folder that ignores its workspace). Asked of git once per folder and server process: the
    document is fetched often, and its answer changes only if the host repository does."""
    from ..checkouts.isolated import resolve_isolation
    from ..errors import ConfigError

    key = (str(settings.base_dir), str(settings.workspace_root), settings.git.repo)
    if key not in _REFUSES_WORKTREES:
        try:
            resolve_isolation(settings, settings.workspace_root, Isolation.WORKTREE)
            _REFUSES_WORKTREES[key] = False
        except ConfigError:
            _REFUSES_WORKTREES[key] = True
    return _REFUSES_WORKTREES[key]


_REFUSES_WORKTREES: dict[tuple[str, str, str], bool] = {}


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    status_ref = _json({"$ref": "#/components/schemas/JobStatus"})
    text = {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    paths: dict[str, Any] = {
        "/health": {"get": {"description": "liveness", "security": [], "responses": {"200": _json({"type": "object"})}}},
        "/openapi.json": {
            "get": {"description": "this document", "security": [], "responses": {"200": _json({"type": "object"})}}
        },
        "/metrics": {
            "get": {
                "description": "Prometheus metrics (text format 0.0.4); the admin key, as X-API-Key or Authorization: Bearer",
                "security": [{"ApiKey": []}, {"Bearer": []}],
                "responses": {
                    "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **_errors(401, 403),
                },
            }
        },
        "/api/v1/orchestrate": {
            "post": {
                "description": "submit a job (with a worker credential: a child job of that worker; a retry's spawn of the "
                "request an earlier attempt of that worker sent gets that child job back, with reused true and reused_note)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Orchestrate"}}},
                },
                "responses": {
                    "202": _json({"type": "object", "required": ["job_id", "status"]}, "accepted"),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 503, 507),
                },
            }
        },
        "/api/v1/jobs": _get(
            "list root jobs, newest first (from the job index; a worker credential: its own tree)",
            _json({"type": "object"}),
            [
                _query("status", {"type": "string", "enum": [s.value for s in JobStatus]}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}),
            ],
            400,
        ),
        "/api/v1/webhooks/deliveries": _get(
            "webhook deliveries, newest first: status (pending, delivered, failed), attempts, last HTTP status or "
            "error, times (the admin key; never a secret)",
            _json({"type": "object", "required": ["deliveries", "total"]}),
            [
                _query("status", {"type": "string", "enum": ["pending", "delivered", "failed"]}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}),
            ],
            400,
        ),
        "/api/v1/nodes": _get(
            "the machines that run worker attempts (distributed.executor rq), each with its last heartbeat's time "
            "and age in seconds and alive (its heartbeat has not expired); executor local: none (the admin key)",
            _json({"type": "object", "required": ["executor", "nodes"], "properties": NODES_SCHEMA}),
            [],
            503,
        ),
        "/api/v1/jobs/{job_id}": {
            **_get("a job's status (same as /status)", status_ref, [JOB_ID], 400, 404),
            "delete": {
                "description": (
                    "Deletes a finished root job: removes the job tree's folder, its git worktrees and its branches under <git.branch_prefix><root id>/ "
                    "(never a ref outside that prefix). The result branch <prefix><root id>/result stays unless "
                    "branches=all."
                ),
                "parameters": [JOB_ID, _query("branches", {"type": "string", "enum": ["workers", "all"], "default": "workers"})],
                "responses": {"204": {"description": "deleted"}, **_errors(400, 401, 403, 404, 409, 422)},
            },
        },
        "/api/v1/jobs/{job_id}/status": _get("a job's status document", status_ref, [JOB_ID], 400, 404),
        "/api/v1/jobs/{job_id}/wait": _get(
            "long-poll until the job ends or timeout seconds pass",
            status_ref,
            [JOB_ID, _query("timeout", {"type": "number", "minimum": 0})],
            400,
            404,
            429,
        ),
        "/api/v1/jobs/{job_id}/cancel": {
            "post": {
                "description": "cancel a job and its whole subtree",
                "parameters": [JOB_ID],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404, 409)},
            }
        },
        "/api/v1/jobs/{job_id}/events": _get(
            "Server-Sent Events of the job tree; resume with Last-Event-ID",
            {
                "description": "event stream",
                "content": {
                    "text/event-stream": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "event": {"type": "string", "enum": [t.value for t in EventType]},
                                "data": {"type": "string"},
                                "retry": {"type": "integer"},
                            },
                        }
                    }
                },
            },
            [
                JOB_ID,
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^([0-9]{1,18})?$"},
                },
                _query("last_event_id", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
            ],
            400,
            404,
            429,
        ),
        "/api/v1/jobs/{job_id}/report": _get(
            "FINAL_RESULT.md (name=final) or LEVEL_<n>_REPORT.md (name=level_<n>)",
            {"description": "markdown", "content": {"text/markdown": {"schema": {"type": "string"}}}},
            [JOB_ID, _query("name", {"type": "string", "pattern": "^(final|level_[0-9]{1,3})$"})],
            400,
            404,
        ),
        "/api/v1/jobs/{job_id}/timeline.svg": _get(
            "the job's subtree as an SVG Gantt chart (one row per worker, one bar per attempt), drawn live",
            {"description": "SVG image", "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
            [JOB_ID],
            400,
            404,
        ),
        "/api/v1/jobs/{job_id}/workers/{worker}/log": _get(
            "a worker's log: whole, last N lines (tail), from a byte offset, or followed live (follow=1); "
            "with gate=NAME, that quality gate's whole output instead (404 naming the worker's gates for another name)",
            text,
            [
                JOB_ID,
                WORKER,
                _query("tail", {"type": "integer", "minimum": 0, "maximum": 100000}),
                _query("offset", {"type": "integer", "minimum": 0}),
                _query("follow", {"type": "string", "enum": ["0", "1"]}),
                _query("gate", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}),
            ],
            400,
            404,
            429,
        ),
        "/api/v1/jobs/{job_id}/workers/{worker}/checkpoints": _get(
            "a worktree worker's checkpoints: the commit each attempt started from, and whether a retry "
            "went back to it (reset) or went on from the failed attempt's work (kept); none for a folder worker",
            _json({"type": "object", "required": ["job_id", "worker", "isolation", "checkpoints"]}),
            [JOB_ID, WORKER],
            400,
            404,
        ),
        # -- diffs --
        "/api/v1/jobs/{job_id}/diff": _get(
            "the job's unified diff: for a root job whose merge made a result commit, that commit against the "
            "base (source: result); else its workers' diffs one after the other (source: workers). Capped at "
            "max_bytes (truncated says so; bytes is the whole size). 409 for a job without branches (isolation folder)",
            _json(DIFF),
            [JOB_ID, MAX_BYTES],
            400,
            404,
            409,
        ),
        "/api/v1/jobs/{job_id}/workers/{worker}/diff": _get(
            "a worktree worker's unified diff: its branch against the commit its first attempt started from "
            "(a running worker's shows what is committed so far: its work is committed after each attempt), "
            "capped at max_bytes; 409 for a worker without a branch",
            _json(DIFF),
            [JOB_ID, WORKER, MAX_BYTES],
            400,
            404,
            409,
        ),
        "/api/v1/jobs/{job_id}/conflicts": _get(
            "a job's predicted conflicts between its workers' branches (file, workers, hunks; before or after "
            "merging), each with its resolution under merge_strategy resolve (the last one made for that file and "
            "one of its workers: worker, files, resolver, accepted, reason, attempts, gates, cost_usd, cost_basis, "
            "stage; null: none), its last merge, and resolutions: every conflict a resolver worker was asked to "
            "resolve for the job (stage integration: a graph's integration branch; merge: its last merge); "
            "none for a folder job",
            _json({"type": "object", "required": ["job_id", "conflicts", "merge", "resolutions"]}),
            [JOB_ID],
            400,
            404,
        ),
        # -- shared-checkout locks --
        "/api/v1/jobs/{job_id}/locks": {
            **_get(
                "the job tree's path locks (lock_id, paths, worker: null for the admin key's, job_id, acquired_at, expires_at)",
                _json({"type": "object", "required": ["job_id", "root_job_id", "locks"]}),
                [JOB_ID],
                400,
                404,
            ),
            "post": {
                "description": "lock paths of the tree's shared folder for the calling worker (advisory; it dies with its "
                "worker or its lease): a conflicting request waits up to wait seconds (tasks.lock_timeout), then 409 "
                "naming the holder; the same paths again by the same holder renew the lease",
                "parameters": [JOB_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Lock"}}},
                },
                "responses": {
                    "201": _json({"type": "object", "required": ["lock_id", "paths", "worker", "job_id", "expires_at"]}),
                    **_errors(400, 401, 403, 404, 409, 422, 429),
                },
            },
        },
        "/api/v1/jobs/{job_id}/locks/{lock_id}": {
            "delete": {
                "description": "release a path lock: its holder's credential or the admin key (403 for another worker)",
                "parameters": [
                    JOB_ID,
                    {
                        "name": "lock_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^lk-[0-9a-f]{16}$"},
                    },
                ],
                "responses": {"204": {"description": "released"}, **_errors(400, 401, 403, 404, 422)},
            }
        },
        "/api/v1/jobs/{job_id}/merge": {
            "post": {
                "description": "merge a finished root job's workers' branches into its result branch (again), with a strategy, "
                "and fast-forward a branch of yours to it (into); idempotent; admin key only; 409 while the tree runs "
                "or for a folder job (no branches), 422 for a child job (use its root)",
                "parameters": [JOB_ID],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Merge"}}},
                },
                "responses": {
                    "200": _json({"type": "object", "required": ["job_id", "merge"]}),
                    **_errors(400, 401, 403, 404, 409, 422),
                },
            }
        },
        "/api/v1/jobs/{job_id}/workers/{worker}/continue": {
            "post": {
                "description": "continue a finished root job's worker with your feedback: the same CLI in the same checkout "
                "and branch (resuming its recorded session where the CLI can: claude), re-gated, its work squashed onto "
                "the result branch as a new commit; 202 with the round's record (number, state running, resumed_session), "
                "its end in the worker's rounds; admin key only; 400 for empty, over-long (20000 characters) or invalid "
                "feedback, 404 for an unknown job or worker, 409 while the tree or another round of it runs, for a "
                "folder job or a worker that never ran, 422 for a child job (continue its root's worker)",
                "parameters": [JOB_ID, WORKER],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["feedback"],
                                "additionalProperties": False,
                                "properties": {"feedback": {"type": "string", "minLength": 1, "maxLength": 20000}},
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json({"type": "object", "required": ["job_id", "worker", "round"]}, "the round started"),
                    **_errors(400, 401, 403, 404, 409, 422),
                },
            }
        },
        "/api/v1/jobs/{job_id}/publish": {
            "post": {
                "description": "push a finished root job's result branch to git.push's remote and open or update its draft "
                "pull request (git.pull_request) again; a failed push or pull request is the answer's publish.error, "
                "not an HTTP error; admin key only; 409 while the tree runs, 400 without git.push, 422 for a child job",
                "parameters": [JOB_ID],
                "responses": {
                    "200": _json({"type": "object", "required": ["job_id", "publish"]}),
                    **_errors(400, 401, 403, 404, 409, 422),
                },
            }
        },
    }
    paths.update(approval_paths(JOB_ID, status_ref))  # a person in the loop (approval_openapi.py)
    paths.update(task_paths())  # Kage Bunshin's task API and GET /docs (tasks_openapi.py)
    tags = file_operations(paths)  # tags, summaries and example bodies (catalogue.py)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "orchestrator",
            "version": __version__,
            "description": "Recursive, hierarchical job orchestrator for AI coding workers.",
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "security": [{"ApiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
                },
                "Orchestrate": {
                    "type": "object",
                    "required": ["request"],
                    "additionalProperties": False,
                    "properties": {
                        "request": {
                            "type": "string",
                            "minLength": 1,
                            "pattern": NOT_BLANK,
                            "maxLength": settings.orchestrator.max_request_chars if settings else 1_000_000,
                        },
                        "tasks": {
                            "type": "array",
                            "items": {"oneOf": [{"type": "string", "minLength": 1, "pattern": NOT_BLANK}, task_schema(settings)]},
                            "minItems": 1,
                            "maxItems": settings.orchestrator.max_tasks if settings else 10_000,
                        },
                        "config": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": job_config_schema(settings),
                            **depth_rule(settings),
                        },
                    },
                },
                "Merge": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "strategy": {"type": "string", "enum": [m.value for m in MergeStrategy]},
                        "into": BRANCH,
                    },
                },
                "Lock": {
                    "type": "object",
                    "required": ["paths"],
                    "additionalProperties": False,
                    "properties": {
                        "paths": {"type": "array", "items": LOCK_PATH, "minItems": 1, "maxItems": 100},
                        "lease": {"type": "number", "minimum": 1, "maximum": 86400},
                        "wait": {"type": "number", "minimum": 0, "maximum": 3600},
                    },
                },
                **task_schemas(settings),
                **approval_schemas(),
                "JobStatus": {
                    "type": "object",
                    "required": ["job_id", "status", "results"],
                    "properties": {
                        "job_id": {"type": "string"},
                        "status": {"type": "string"},
                        "progress": {"type": "object"},
                        "results": {"type": "object"},
                    },
                },
            },
        },
    }
