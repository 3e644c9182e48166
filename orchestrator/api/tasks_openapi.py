"""The task API's names (its statuses, strategies, CLI names, as Kage Bunshin, a sibling orchestrator,
defined them) and its OpenAPI paths and schemas (tasks_routes.py), with ``GET /docs`` (docs.py),
merged into the document by openapi.py; with ``settings``, this server's own limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import MergeStrategy, choice
from ..selection.candidates import TaskStatus

if TYPE_CHECKING:
    from ..config import Settings

# Kage Bunshin's order: its default (theirs, api/tasks_routes.py's DEFAULT_STRATEGY) first, then the others as git.merge_strategy lists them.
STRATEGIES = tuple(sorted((m.value for m in MergeStrategy), key=lambda m: m != MergeStrategy.THEIRS))
TASK_STATUSES = tuple(status.value for status in TaskStatus)
ROOT_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^[0-9a-f]{12}$"}}
STRATEGY = {"type": "string", "enum": list(STRATEGIES)}
NOT_BLANK = r"[^\s\x1c-\x1f\x85]"  # as openapi.NOT_BLANK: the server strips with Python's str.strip
TIME = {"type": "string", "format": "date-time", "nullable": True}
TASK_STATUS = {"type": "string", "enum": list(TASK_STATUSES)}
ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def cli_kinds() -> dict[str, str]:
    """Every ``cli_name`` this server can run, and the worker kind it runs as."""
    from ..workers.adapters import kinds

    declared = kinds()
    names = {kind.name: kind.name for kind in declared}
    # Kage Bunshin's own names for our kinds (``claude_code``), as each kind declares them.
    names.update({alias: kind.name for kind in declared for alias in kind.aliases})
    return names


def _ok(ref: str, code: str = "200", description: str = "ok") -> dict[str, Any]:
    return {
        code: {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): ERROR for code in codes}


def task_paths() -> dict[str, Any]:
    """The routes of tasks_routes.py and docs.py."""
    sse_data = {
        "type": "string",
        "description": "JSON: connected {task_id}, progress {task_id, job_id, cli_name, worker, "
        "status, message, timestamp, seq}, heartbeat {task_id, time}, task_complete (the Task), error {task_id, message}",
    }
    return {
        "/docs": {
            "get": {
                "description": "interactive API documentation (Swagger UI, served from this server; enter the key with Authorize)",
                "security": [],
                "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
            }
        },
        "/api/v1/tasks": {
            "post": {
                "description": "submit a task in the shape of Kage Bunshin's task API: one job whose task runs once per cli_assignments "
                "entry (as candidates, each in its own worktree where there is git); the selected one is merged with "
                "merge_strategy (default theirs). 201 with the task; admin key only",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskSubmit"}}},
                },
                "responses": {**_ok("Task", "201", "created"), **_errors(400, 401, 403, 404, 409, 413, 422, 503, 507)},
            },
            "get": {
                "description": "list tasks (root jobs), newest first, filtered by task status",
                "parameters": [
                    {"name": "status", "in": "query", "required": False, "schema": TASK_STATUS},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 10**9},
                    },
                ],
                "responses": {**_ok("TaskList"), **_errors(400, 401, 403, 422)},
            },
        },
        "/api/v1/tasks/stats": {
            "get": {
                "description": "tasks by status, and per cli_name its runs, completions, selections, cost and time; admin key only",
                "responses": {**_ok("TaskStats"), **_errors(401, 403)},
            }
        },
        "/api/v1/tasks/{task_id}": {
            "get": {
                "description": "a task",
                "parameters": [ROOT_ID],
                "responses": {**_ok("Task"), **_errors(400, 401, 403, 404)},
            },
            "delete": {
                "description": "cancel a task (its job and whole tree; 409 once it has ended) and answer it; admin key only",
                "parameters": [ROOT_ID],
                "responses": {**_ok("Task"), **_errors(400, 401, 403, 404, 409)},
            },
        },
        "/api/v1/tasks/{task_id}/progress": {
            "get": {
                "description": "Server-Sent Events: connected first, progress (id: the event's number; resume with "
                "Last-Event-ID), heartbeat each second, task_complete last; error when the stream cannot go on",
                "parameters": [
                    ROOT_ID,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^([0-9]{1,18})?$"},
                    },
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^([0-9]{1,18})?$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "event stream",
                        "content": {
                            "text/event-stream": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "id": {"type": "string"},
                                        "event": {
                                            "type": "string",
                                            "enum": ["connected", "progress", "heartbeat", "task_complete", "error"],
                                        },
                                        "data": sse_data,
                                        "retry": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    },
                    **_errors(400, 401, 403, 404, 429),
                },
            }
        },
        "/api/v1/tasks/{task_id}/conflicts": {
            "get": {
                "description": "what would conflict between the task's candidates' branches (none without git), and its last merge",
                "parameters": [ROOT_ID],
                "responses": {**_ok("TaskConflicts"), **_errors(400, 401, 403, 404)},
            }
        },
        "/api/v1/tasks/{task_id}/merge": {
            "post": {
                "description": "merge the task's selected candidate again with a strategy (default: the task's); admin key only; "
                "409 while it runs or without git (no branches)",
                "parameters": [ROOT_ID],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskMerge"}}},
                },
                "responses": {**_ok("TaskMergeResult"), **_errors(400, 401, 403, 404, 409, 422)},
            }
        },
    }


def task_schemas(settings: Settings | None = None) -> dict[str, Any]:
    max_timeout = settings.workers.max_timeout if settings is not None else choice.TIMEOUT[1]
    max_chars = settings.orchestrator.max_request_chars if settings is not None else 1_000_000
    number = {"type": "number", "nullable": True}
    cli_result = {
        "type": "object",
        "required": ["cli_name", "status", "files_modified", "cost", "duration", "branch", "score", "selected"],
        "properties": {
            "cli_name": {"type": "string"},
            "status": TASK_STATUS,
            "files_modified": {"type": "array", "items": {"type": "string"}},
            "cost": number,
            "duration": number,
            "branch": {"type": "string", "nullable": True},
            "score": number,
            "selected": {"type": "boolean", "nullable": True},
            "worker": {"type": "string"},
            "kind": {"type": "string"},
            "worker_status": {"type": "string"},
            "error": {"type": "string", "nullable": True},
            "ranking": {"type": "object", "nullable": True},
        },
    }
    return {
        "TaskSubmit": {
            "type": "object",
            "required": ["description", "cli_assignments"],
            "additionalProperties": False,
            "properties": {
                "description": {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": NOT_BLANK},
                "cli_assignments": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": choice.MAX_CANDIDATES,
                    "items": {
                        "type": "object",
                        "required": ["cli_name"],
                        "additionalProperties": False,
                        "properties": {
                            "cli_name": {"type": "string", "enum": sorted(cli_kinds())},
                            "context": {"type": "object", "nullable": True},
                            "timeout": {"type": "number", "nullable": True, "minimum": choice.TIMEOUT[0], "maximum": max_timeout},
                        },
                    },
                },
                "merge_strategy": STRATEGY,
            },
        },
        "Task": {
            "type": "object",
            "required": ["id", "description", "status", "created_at", "cli_results"],
            "properties": {
                "id": {"type": "string"},
                "description": {"type": "string"},
                "status": TASK_STATUS,
                "created_at": {"type": "string", "format": "date-time"},
                "started_at": TIME,
                "completed_at": TIME,
                "merge_strategy": {"type": "string"},
                "error": {"type": "string", "nullable": True},
                "cli_results": {"type": "array", "nullable": True, "items": cli_result},
            },
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks", "total", "limit", "offset"],
            "properties": {
                "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                "total": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        },
        "TaskStats": {
            "type": "object",
            "required": ["total", "by_status", "clis"],
            "properties": {
                "total": {"type": "integer"},
                "by_status": {"type": "object"},
                "clis": {"type": "object"},
                "live": {"type": "object"},
            },
        },
        "TaskConflicts": {
            "type": "object",
            "required": ["task_id", "has_conflicts", "conflicts", "merge"],
            "properties": {
                "task_id": {"type": "string"},
                "has_conflicts": {"type": "boolean"},
                "conflicts": {"type": "array", "items": {"type": "object"}},
                "merge": {"type": "object", "nullable": True},
            },
        },
        "TaskMerge": {"type": "object", "additionalProperties": False, "properties": {"merge_strategy": STRATEGY}},
        "TaskMergeResult": {
            "type": "object",
            "required": ["task_id", "strategy", "success", "merge", "task"],
            "properties": {
                "task_id": {"type": "string"},
                "strategy": {"type": "string", "nullable": True},
                "success": {"type": "boolean"},
                "commit": {"type": "string", "nullable": True},
                "branch": {"type": "string", "nullable": True},
                "conflicts": {"type": "array", "items": {"type": "object"}},
                "message": {"type": "string"},
                "merge": {"type": "object"},
                "task": {"$ref": "#/components/schemas/Task"},
            },
        },
    }
