"""How the API is filed for a reader (``/docs``, ``/openapi.json``): the tags that group the
routes, each with what it is for, and per operation its tag, a short summary and, when it takes a
body, an example body the route accepts. openapi.py says what each route takes and answers; this
module only names and groups it, so a route added there without an entry here fails loudly."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tag:
    name: str
    description: str


@dataclass(frozen=True)
class Entry:
    """One operation as the docs page lists it."""

    tag: str
    summary: str
    example: dict[str, Any] | None = None


TAGS = (
    Tag("jobs", "Submit a job, follow it (status, long-poll, events, reports, timeline), cancel it, delete it."),
    Tag("workers", "One worker of a job: its log, live or not, and its checkpoints."),
    Tag("git", "Jobs in git worktrees: a job's or a worker's diff, predicted conflicts, merging again."),
    Tag("approval", "A person in the loop: land or reject a job waiting before its merge, with the key or a signed link."),
    Tag("locks", "Advisory path locks for workers sharing one folder."),
    Tag("tasks", "Kage Bunshin's task API: one task run on several CLIs as candidates, the best one merged."),
    Tag("nodes", "The machines that run workers (distributed.executor: rq)."),
    Tag("webhooks", "The deliveries of outgoing webhooks and callbacks."),
    Tag("server", "Liveness, Prometheus metrics, this document and its interactive page."),
)

# The bodies shown on /docs, and in the routes' own error messages (one source for both).
ORCHESTRATE_EXAMPLE: dict[str, Any] = {
    "request": "Add a --json flag to the CLI, with tests",
    "tasks": [
        {"id": "flag", "task": "Add a --json flag to the CLI", "owns": ["src/**"]},
        {"id": "tests", "task": "Test the --json flag", "depends_on": ["flag"], "role": "testing"},
    ],
    "config": {"max_workers": 2, "default_timeout": 1800},
}
LOCK_EXAMPLE: dict[str, Any] = {"paths": ["src/app.py", "docs"], "lease": 300, "wait": 30}
MERGE_EXAMPLE: dict[str, Any] = {"strategy": "theirs"}
CONTINUE_EXAMPLE: dict[str, Any] = {"feedback": "Good, now also handle the empty case"}
APPROVE_EXAMPLE: dict[str, Any] = {"note": "Looks right; ship it"}
REJECT_EXAMPLE: dict[str, Any] = {"reason": "The tests do not cover the error path"}
LINK_FORM_EXAMPLE: dict[str, Any] = {"expires": "1767225600", "token": "0" * 64, "reason": "Not this week"}
TASK_EXAMPLE: dict[str, Any] = {
    "description": "Add error handling to the login function",
    "cli_assignments": [{"cli_name": "claude_code", "context": {}, "timeout": 600}, {"cli_name": "codex", "timeout": 600}],
    "merge_strategy": "theirs",
}
TASK_MERGE_EXAMPLE: dict[str, Any] = {"merge_strategy": "theirs"}

JOB = "/api/v1/jobs/{job_id}"
WORKER = JOB + "/workers/{worker}"
TASK = "/api/v1/tasks/{task_id}"
OPERATIONS: dict[tuple[str, str], Entry] = {
    ("get", "/health"): Entry("server", "Is the server up"),
    ("get", "/openapi.json"): Entry("server", "This OpenAPI document"),
    ("get", "/metrics"): Entry("server", "Prometheus metrics"),
    ("get", "/docs"): Entry("server", "This interactive page"),
    ("post", "/api/v1/orchestrate"): Entry("jobs", "Submit a job", ORCHESTRATE_EXAMPLE),
    ("get", "/api/v1/jobs"): Entry("jobs", "List root jobs"),
    ("get", JOB): Entry("jobs", "Get a job's status"),
    ("delete", JOB): Entry("jobs", "Delete a finished job tree"),
    ("get", JOB + "/status"): Entry("jobs", "Get a job's status (as GET /api/v1/jobs/{job_id})"),
    ("get", JOB + "/wait"): Entry("jobs", "Wait for a job to end"),
    ("post", JOB + "/cancel"): Entry("jobs", "Cancel a job and its subtree"),
    ("get", JOB + "/events"): Entry("jobs", "Stream the tree's events (SSE)"),
    ("get", JOB + "/report"): Entry("jobs", "Read a job's report"),
    ("get", JOB + "/timeline.svg"): Entry("jobs", "Draw the tree's timeline"),
    ("get", WORKER + "/log"): Entry("workers", "Read or follow a worker's log"),
    ("get", WORKER + "/checkpoints"): Entry("workers", "List a worker's checkpoints"),
    ("get", JOB + "/diff"): Entry("git", "Get a job's diff"),
    ("get", WORKER + "/diff"): Entry("git", "Get a worker's diff"),
    ("get", JOB + "/conflicts"): Entry("git", "Predict a job's conflicts and show their resolutions"),
    ("post", JOB + "/merge"): Entry("git", "Merge a finished job again", MERGE_EXAMPLE),
    ("post", WORKER + "/continue"): Entry("workers", "Continue a finished worker with feedback", CONTINUE_EXAMPLE),
    ("post", JOB + "/publish"): Entry("git", "Push a job's result and open its pull request again"),
    ("post", JOB + "/approve"): Entry("approval", "Approve a waiting job", APPROVE_EXAMPLE),
    ("post", JOB + "/reject"): Entry("approval", "Reject a waiting job", REJECT_EXAMPLE),
    ("get", "/approval/{job_id}/{action}"): Entry("approval", "A signed link's confirmation page"),
    ("post", "/approval/{job_id}/{action}"): Entry("approval", "Act on a signed link", LINK_FORM_EXAMPLE),
    ("get", JOB + "/locks"): Entry("locks", "List the tree's path locks"),
    ("post", JOB + "/locks"): Entry("locks", "Take a path lock", LOCK_EXAMPLE),
    ("delete", JOB + "/locks/{lock_id}"): Entry("locks", "Release a path lock"),
    ("post", "/api/v1/tasks"): Entry("tasks", "Submit a task to several CLIs", TASK_EXAMPLE),
    ("get", "/api/v1/tasks"): Entry("tasks", "List tasks"),
    ("get", "/api/v1/tasks/stats"): Entry("tasks", "Task statistics per status and CLI"),
    ("get", TASK): Entry("tasks", "Get a task"),
    ("delete", TASK): Entry("tasks", "Cancel a task"),
    ("get", TASK + "/progress"): Entry("tasks", "Stream a task's progress (SSE)"),
    ("get", TASK + "/conflicts"): Entry("tasks", "Predict conflicts between a task's candidates"),
    ("post", TASK + "/merge"): Entry("tasks", "Merge a task's selected candidate again", TASK_MERGE_EXAMPLE),
    ("get", "/api/v1/nodes"): Entry("nodes", "List the nodes that run workers"),
    ("get", "/api/v1/webhooks/deliveries"): Entry("webhooks", "List webhook deliveries"),
}


def file_operations(paths: dict[str, Any]) -> list[dict[str, str]]:
    """Give each operation of ``paths`` its tag, summary and example body (in place); return
    the document's ``tags``. An operation without an entry, or an entry without its operation,
    is a programming error: raised, so the tests fail."""
    seen = set()
    for path, operations in paths.items():
        for method, operation in operations.items():
            entry = OPERATIONS.get((method, path))
            if entry is None:
                raise LookupError(f"{method.upper()} {path} has no entry in api/catalogue.py OPERATIONS")
            seen.add((method, path))
            operation["tags"] = [entry.tag]
            operation["summary"] = entry.summary
            if entry.example is not None:
                for media in operation["requestBody"]["content"].values():
                    media["example"] = copy.deepcopy(entry.example)
    stale = sorted(set(OPERATIONS) - seen)
    if stale:
        raise LookupError(f"api/catalogue.py OPERATIONS lists operations that are not served: {stale}")
    return [{"name": tag.name, "description": tag.description} for tag in TAGS]
