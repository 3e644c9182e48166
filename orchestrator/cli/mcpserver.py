"""``python -m orchestrator mcp``: the orchestrator's tools for AI assistants, over the Model
Context Protocol on stdio (the official ``mcp`` SDK's ``MCPServer``).

An assistant (Claude Code, or any MCP client that starts a stdio command) calls ``orchestrate``,
``status``, ``wait``, ``list_jobs``, ``logs``, ``cancel``, ``diff``, ``merge`` and ``continue_worker`` instead of pasting
curl lines.
Every tool goes through the REST API with the Python client (``api/client.py``), so the server's
checks, limits and records hold exactly as for any other caller:

* Outside a worker, the tools reach this folder's own server (its ``.server.json`` record, never
  another folder's), started in the background the way quick-start starts it when none answers,
  at the first call that needs it; they use the folder's admin key (``api.api_key``).
* Inside a worker (its environment has ``ORCHESTRATOR_API_URL`` and the worker's own credential
  ``ORCHESTRATOR_API_KEY``), the tools use that credential and nothing else, and ``spawn`` (a
  child job of the worker) takes the place of ``orchestrate``: the server's depth and fan-out caps
  hold, and a refusal comes back with the server's message.

A result is a few lines of text (status, counts, paths, the next step); ``include_json: true``
adds the API's JSON document after them as a fenced block. A tool's bad input or the server's refusal is an error result
naming the argument or quoting the server. The key is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import requests
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from .. import protocol
from ..api.calls import worker_key
from ..api.client import TERMINAL, OrchestratorClient
from ..errors import OrchestratorError, ServerUnreachable
from ..gate_output import failing_gate, output_lines
from ..models import JobStatus, WorkerStatus
from ..workspace.ids import parse_worker_ref

if TYPE_CHECKING:
    from ..config import Settings

NAME = "orchestrator"
LOG_TAIL_DEFAULT, LOG_TAIL_MAX = 50, 2000  # lines of a worker's log
TEXT_MAX = 20_000  # characters of log or diff text in one result (the end of a log, the start of a diff)
DIFF_BYTES_DEFAULT, DIFF_BYTES_MAX = 20_000, 1_000_000
WAIT_DEFAULT = 30.0  # seconds; capped by api.long_poll_max
TASK_LINES = 20  # worker lines shown in a status; the rest are counted
JOBS_DEFAULT, JOBS_MAX = 20, 100  # jobs in one list_jobs answer
GATE_LINES = 10  # of a failed gate's output tail, under its task's line in a status


class Backend:
    """Where the tools' requests go: one client, made at the first call. Outside a worker: this
    folder's server with the admin key (started when none answers). Inside one: the worker's
    URL and credential from its environment."""

    def __init__(self, settings: Settings, config: str | None, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.settings = settings
        self.config = config
        self.worker_url = env.get(protocol.API_URL) or None
        self.worker_key = worker_key(env) or None
        self.job_id = env.get(protocol.JOB_ID) or None
        self.worker_id = env.get(protocol.WORKER_ID) or None
        self._client: OrchestratorClient | None = None
        self._lock = threading.Lock()

    @property
    def in_worker(self) -> bool:
        return bool(self.worker_url and self.worker_key)

    def client(self) -> OrchestratorClient:
        with self._lock:  # two first calls at once start one server
            if self._client is None:
                if self.in_worker:
                    url, key = self.worker_url, self.worker_key
                else:
                    from .scripts import ensure_server

                    url = ensure_server(self.settings, self.config)  # its notes go to stderr: stdout is the protocol's
                    key = self.settings.api.api_key or "-"
                # No keep-alive: this process lives as long as the assistant's session, and an idle
                # connection it held would keep the server's SIGTERM shutdown waiting (quick-start.sh --stop).
                session = requests.Session()
                session.headers["Connection"] = "close"
                self._client = OrchestratorClient(api_url=url, api_key=key, session=session)
            return self._client

    def forget(self) -> None:
        """The server stopped answering: the next call looks for this folder's server again (and
        starts it), so a server restarted on another port is found."""
        with self._lock:
            if self._client is not None:
                self._client.session.close()
            self._client = None

    def wait_cap(self) -> float:
        return float(self.settings.api.long_poll_max)


# --- results -------------------------------------------------------------------------------


Answer = tuple[str, Any]  # a tool's compact text, and the API's JSON behind it


def result(answer: Answer, include_json: bool) -> CallToolResult:
    """The compact text, and with ``include_json`` the API's JSON as a fenced block after it. Not
    as structured content: Claude Code hands a result's structured content to the model instead of
    its text (seen with claude 2.1), which would replace the few lines with the whole document."""
    text, doc = answer
    if include_json:
        text += "\n```json\n" + json.dumps(doc, indent=1, default=str) + "\n```"
    return CallToolResult(content=[TextContent(type="text", text=text)])


def status_text(doc: dict[str, Any]) -> str:
    """A status document in a few lines: status, counts, workers, reports, the next step."""
    p = doc["progress"]
    lines = [
        f"job {doc['job_id']}: {doc['status']} (depth {doc['depth']})",
        f"workers: {p['succeeded']} succeeded, "
        + (f"{n} child_incomplete (a child job it started did not complete), " if (n := p.get("child_incomplete")) else "")
        + f"{p['failed']} failed, {p['running']} running, "
        f"{p['pending']} pending, of {p['total']}",
    ]
    tasks = doc["results"]["tasks"]
    for task in tasks[:TASK_LINES]:
        line = f"  {task['worker_id']}: {task['status']} - {_short(task['task'], 80)}"
        if task.get("error"):
            line += f" (error: {_short(task['error'], 120)})"
        elif task["status"] == WorkerStatus.CHILD_INCOMPLETE and task.get("exit_reason"):
            line += f" ({_short(task['exit_reason'], 120)})"
        lines.append(line)
        lines += gate_lines(task, doc["job_id"], indent="      ", last=GATE_LINES)
    if len(tasks) > TASK_LINES:
        lines.append(f"  ... and {len(tasks) - TASK_LINES} more (all in the structured content)")
    if doc.get("error"):
        lines.append(f"error: {doc['error']}")
    lines.append(f"workspace: {doc['results']['workspace']}")
    if doc["results"].get("final_report"):
        lines.append(f"report: {doc['results']['final_report']}")
    lines += merge_text(doc)
    lines.append(f"next: {_next(doc)}")
    return "\n".join(lines)


def merge_text(doc: dict[str, Any]) -> list[str]:
    """Where the job's work landed and the command that takes it (``take it: git merge ...``): the
    lines check-status's table and quick-start's summary print (status_document.merge_lines)."""
    from ..reports.status_document import merge_lines  # here: the MCP server starts light

    return [line.strip() for line in merge_lines(doc)]


def jobs_text(page: dict[str, Any], status: str | None) -> str:
    """A page of GET /api/v1/jobs in a few lines: the ``jobs`` command's table, and the next step."""
    from .commands import JOBS_HEADER, job_line

    rows = page["jobs"]
    which = f" with status {status}" if status else ""
    if not rows:
        return f"no jobs{which} (total {page['total']})"
    lines = [f"{len(rows)} of {page['total']} job(s){which}, newest first:", JOBS_HEADER, *map(job_line, rows)]
    lines.append("next: status(job_id=...) of one; limit=... for more")
    return "\n".join(lines)


def gate_lines(task: dict[str, Any], job: str, indent: str = "", last: int | None = None) -> list[str]:
    """A task that failed its gate (an entry of job ``job``'s status document): which gate and
    the end of its output (its ``last`` lines), indented, and how to read the whole output; []
    for any other task."""
    gate = failing_gate(task.get("gates") or [], task.get("exit_reason"))
    if gate is None:
        return []
    head, *tail = output_lines(gate, indent=indent + "  ")
    tail = tail if last is None else tail[-last:]
    worker = f"depth_{task['depth']}_{task['worker_id']}" if task.get("depth") else task["worker_id"]
    more = f"{indent}whole output: logs(job_id={job!r}, worker={worker!r}, gate={gate['name']!r})"
    return [indent + head, *tail, more]


def _task_of(doc: dict[str, Any], depth: int | None, name: str) -> dict[str, Any] | None:
    """A worker's entry in a status document: among its own job's (``depth`` None), or its tree's."""
    todo = list(doc["results"]["tasks"])
    while todo:
        task = todo.pop()
        if task.get("worker_id") == name and depth in (None, task.get("depth")):
            return task
        if depth is not None:
            todo += task.get("child_results") or []
    return None


def _failed_gate(client: OrchestratorClient, job: str, worker: str) -> list[str]:
    """The lines ``gate_lines`` gives for a worker that failed its gate, from its job's status; []
    when the status cannot be read now (the log was: a busy or rate-limited server costs the extra)."""
    depth, name = parse_worker_ref(worker)
    try:
        doc = client.status(job)
    except (OrchestratorError, requests.RequestException):
        return []
    task = _task_of(doc, depth, name)
    return gate_lines(task, job) if task is not None else []


def _next(doc: dict[str, Any]) -> str:
    job = doc["job_id"]
    if doc["status"] not in TERMINAL:
        return f"wait(job_id={job!r}) until it ends, or logs(job_id={job!r}, worker=...) to see a worker"
    if doc["status"] == JobStatus.COMPLETED:
        return f"read the report, or diff(job_id={job!r}) for its changes"
    return f"logs(job_id={job!r}, worker=...) of a failed worker, or status(job_id={job!r}) for the details"


def _short(text: str, limit: int) -> str:
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


# --- argument checks -------------------------------------------------------------------------


def _text(name: str, value: str) -> str:
    if not value or not value.strip():
        raise ToolError(f"{name} is empty: give {_what(name)}")
    return value.strip()


def _what(name: str) -> str:
    return {
        "request": "what to do, in plain words",
        "job_id": "a job id, as orchestrate or status returned it",
        "worker": "a worker name, e.g. worker_1 (status lists them)",
        "feedback": "what the worker should do next, e.g. 'good, now also handle the empty case'",
        "gate": "a quality gate's name, e.g. tests (status lists each task's gates)",
    }.get(name, "a value")


def _tasks(tasks: list[Any] | None) -> list[Any] | None:
    if tasks is None:
        return None
    if not tasks:
        raise ToolError("tasks is an empty list: leave it out to let the planner split the request, or give subtasks")
    for i, task in enumerate(tasks):
        if not isinstance(task, str | dict) or (isinstance(task, str) and not task.strip()):
            raise ToolError(f"tasks[{i}] must be a non-empty string or an object like {{'task': '...'}}, got {task!r}")
    return tasks


def _bounded(name: str, value: float, low: float, high: float) -> float:
    if value != value or value < low:  # NaN too
        raise ToolError(f"{name} must be at least {low:g} (got {value!r})")
    return min(value, high)


# --- the server ------------------------------------------------------------------------------


def build(backend: Backend) -> MCPServer:
    """The MCP server with its tools; ``spawn`` inside a worker, ``orchestrate`` outside."""
    where = f"inside worker {backend.worker_id} of job {backend.job_id}" if backend.in_worker else "this folder's API server"
    server: MCPServer = MCPServer(
        NAME,
        instructions=(
            "Run a request as parallel AI worker subprocesses (a job), follow it, read its logs and diffs, "
            f"merge its result. Talks to {where}. Typical use: "
            + ("spawn" if backend.in_worker else "orchestrate")
            + " -> wait (repeat until it ends) -> status / logs / diff."
        ),
    )

    tools = _Tools(backend, server)
    _add_start_tool(tools)
    _add_following_tools(tools)
    _add_result_tools(tools)
    return server


@dataclass(frozen=True)
class _Tools:
    """What every tool is made with: the backend it calls and the server it is registered on."""

    backend: Backend
    server: MCPServer

    async def call(self, fn: Callable[[], Answer], include_json: bool) -> CallToolResult:
        """Run a blocking API call off the event loop; the server's refusal becomes an error result."""
        try:
            return result(await anyio.to_thread.run_sync(fn), include_json)
        except ServerUnreachable as exc:
            self.backend.forget()
            again = (
                "" if self.backend.in_worker else "; the next call looks for this folder's server again and starts it if needed"
            )
            raise ToolError(f"ServerUnreachable: {exc.message}{again}") from None
        except OrchestratorError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc.message}") from None

    def tool(self, read_only: bool, title: str) -> Callable[[Any], Any]:
        """A tool registered with its title and hints; its answer stays text unless asked for JSON."""
        return self.server.tool(
            title=title, annotations=ToolAnnotations(read_only_hint=read_only, open_world_hint=False), structured_output=False
        )


def _add_start_tool(tools: _Tools) -> None:
    """``spawn`` inside a worker (a child job with the worker's credential), ``orchestrate`` outside."""
    backend = tools.backend

    def submit(request: str, tasks: list[Any] | None, config: dict[str, Any] | None, child: bool) -> Answer:
        doc = backend.client().orchestrate(request=request, tasks=tasks, config=config)
        job = doc["job_id"]
        what = f"child job {job} of worker {backend.worker_id}" if child else f"job {job}"
        if doc.get("reused"):  # a retry's spawn of its earlier attempt's request: that child job again
            what += f" reused, not started again (an earlier attempt started it: {doc.get('reused_note')}); it was"
        lines = [
            f"{what} submitted at depth {doc.get('depth', 0)}: {len(doc.get('tasks') or [])} subtask(s), "
            f"worker kind {doc.get('worker_kind')}",
            *[
                f"  {i}. {_short(t if isinstance(t, str) else json.dumps(t), 100)}"
                for i, t in enumerate(doc.get("tasks") or [], 1)
            ],
            *[f"note: {n}" for n in doc.get("notes") or []],
            f"workspace: {doc.get('workspace')}",
            f"next: wait(job_id={job!r}) until it ends",
        ]
        return "\n".join(lines), doc

    if backend.in_worker:

        @tools.tool(False, "Start a child job of this worker")
        async def spawn(
            request: str,
            tasks: list[str | dict[str, Any]] | None = None,
            config: dict[str, Any] | None = None,
            include_json: bool = False,
        ) -> CallToolResult:
            """Start a child job of the worker this server runs in, with the worker's own credential (so
            the tree's depth and fan-out caps apply). request: what to do; tasks: explicit subtasks
            (strings, or {"task", "id", "depends_on", ...}) instead of the planner's split; config: job
            settings (max_workers, default_timeout...). Returns at once: wait on the child's job_id."""
            req, plan, cfg = _text("request", request), _tasks(tasks), _config(config)
            return await tools.call(lambda: submit(req, plan, cfg, child=True), include_json)

    else:

        @tools.tool(False, "Run a request as parallel workers")
        async def orchestrate(
            request: str,
            tasks: list[str | dict[str, Any]] | None = None,
            config: dict[str, Any] | None = None,
            include_json: bool = False,
        ) -> CallToolResult:
            """Submit a job: the request is split into subtasks (or give them in tasks: strings, or
            {"task", "id", "depends_on", ...}) run by parallel AI worker subprocesses. config: job
            settings such as max_workers, default_timeout, worker (kind), isolation. Returns at once
            with the job_id: then call wait."""
            req, plan, cfg = _text("request", request), _tasks(tasks), _config(config)
            return await tools.call(lambda: submit(req, plan, cfg, child=False), include_json)


def _add_following_tools(tools: _Tools) -> None:
    """Following a job: its status, waiting for its end, the recent jobs, a worker's log."""
    backend = tools.backend

    @tools.tool(True, "A job's status")
    async def status(job_id: str, include_json: bool = False) -> CallToolResult:
        """A job's status now: its workers, counts, workspace and report paths."""
        job = _text("job_id", job_id)

        def run() -> Answer:
            doc = backend.client().status(job)
            return status_text(doc), doc

        return await tools.call(run, include_json)

    @tools.tool(True, "Wait for a job to end")
    async def wait(job_id: str, timeout: float = WAIT_DEFAULT, include_json: bool = False) -> CallToolResult:
        """Wait until the job ends or timeout seconds pass (at most the server's api.long_poll_max),
        then return its status. Call again while it is still running."""
        job = _text("job_id", job_id)
        cap = backend.wait_cap()
        hold = _bounded("timeout", timeout, 0, cap)

        def run() -> Answer:
            doc = backend.client().wait(job, timeout=hold, poll=max(hold, 0.001))
            text = status_text(doc)
            if doc["status"] not in TERMINAL:
                text = f"still {doc['status']} after {hold:g}s (timeout is capped at {cap:g}s)\n" + text
            return text, doc

        return await tools.call(run, include_json)

    @tools.tool(True, "List recent jobs")
    async def list_jobs(status: str | None = None, limit: int = JOBS_DEFAULT, include_json: bool = False) -> CallToolResult:
        """Recent root jobs, newest first: id, status, workers, created time and request. status:
        only jobs with it (pending, running, waiting, completed, partial, failed, cancelled); limit:
        how many, 1 to 100. Inside a worker, only the worker's own job tree."""
        from ..models import JobStatus  # here: the MCP server starts light

        if status is not None and status not in {s.value for s in JobStatus}:
            raise ToolError(f"status must be one of {', '.join(s.value for s in JobStatus)} (got {status!r})")
        count = int(_bounded("limit", limit, 1, JOBS_MAX))

        def run() -> Answer:
            page = backend.client().list_jobs(status=status, limit=count)
            return jobs_text(page, status), page

        return await tools.call(run, include_json)

    @tools.tool(True, "The tail of a worker's log")
    async def logs(
        job_id: str, worker: str, tail: int = LOG_TAIL_DEFAULT, gate: str | None = None, include_json: bool = False
    ) -> CallToolResult:
        """The last lines of a worker's log (worker: worker_1, or depth_1_worker_2_1 for a child job's
        worker; status lists them). tail: lines, 1 to 2000. gate: a quality gate's name (e.g.
        tests): that gate's output instead of the worker's log. A worker that failed its gate
        gets that gate's output's end after its log."""
        job, name = _text("job_id", job_id), _text("worker", worker)
        lines = int(_bounded("tail", tail, 1, LOG_TAIL_MAX))
        gate_name = None if gate is None else _text("gate", gate)

        def run() -> Answer:
            client = backend.client()
            text = client.logs(job, name, tail=lines, gate=gate_name)
            cut = len(text) > TEXT_MAX
            shown = text[-TEXT_MAX:] if cut else text
            what = f"output of gate {gate_name} of {name}" if gate_name else f"log of {name}"
            head = f"{what} in job {job}: last {lines} line(s)" + (f", last {TEXT_MAX} characters" if cut else "")
            doc = {"job_id": job, "worker": name, "gate": gate_name, "tail": lines, "truncated": cut, "log": shown}
            failed = [] if gate_name else _failed_gate(client, job, name)
            return "\n".join([head, shown, *failed]), doc

        return await tools.call(run, include_json)


def _add_result_tools(tools: _Tools) -> None:
    """A job's end and its result: cancel it, its diff, merge it, continue a worker with feedback."""
    backend = tools.backend

    @tools.tool(False, "Cancel a job")
    async def cancel(job_id: str, include_json: bool = False) -> CallToolResult:
        """Cancel a job and every job below it (its workers are stopped)."""
        job = _text("job_id", job_id)

        def run() -> Answer:
            doc = backend.client().cancel(job)
            return f"job {job}: {doc.get('status', 'cancelled')}\nnext: status(job_id={job!r})", doc

        return await tools.call(run, include_json)

    @tools.tool(True, "A job's or a worker's diff")
    async def diff(
        job_id: str, worker: str | None = None, max_bytes: int = DIFF_BYTES_DEFAULT, include_json: bool = False
    ) -> CallToolResult:
        """The unified diff of a job (its result) or of one of its workers (its branch against its
        start), for jobs with git worktree isolation. max_bytes caps it (up to 1000000)."""
        job = _text("job_id", job_id)
        name = None if worker is None else _text("worker", worker)
        cap = int(_bounded("max_bytes", max_bytes, 1, DIFF_BYTES_MAX))

        def run() -> Answer:
            doc = backend.client().diff(job, worker=name, max_bytes=cap)
            text = doc.get("diff") or ""
            of = f"worker {name} of job {job}" if name else f"job {job}"
            head = f"diff of {of}: {doc.get('from')} -> {doc.get('to')}, {doc.get('bytes')} byte(s)"
            if doc.get("truncated"):
                head += f", cut at {cap} (raise max_bytes for more)"
            shown = text[:TEXT_MAX] + ("\n... (more in the structured content)" if len(text) > TEXT_MAX else "")
            return f"{head}\n{shown or '(no changes)'}", doc

        return await tools.call(run, include_json)

    @tools.tool(False, "Merge a finished job's branches")
    async def merge(
        job_id: str, strategy: str | None = None, into: str | None = None, include_json: bool = False
    ) -> CallToolResult:
        """Merge a finished root job's workers' branches into its result branch (again). strategy:
        auto, theirs, manual or resolve (default: the job's); into: a branch of yours to fast-forward to it."""
        job = _text("job_id", job_id)
        from ..config import MergeStrategy  # here: the MCP server starts light

        if strategy is not None and strategy not in tuple(MergeStrategy):
            raise ToolError(f"strategy must be one of {', '.join(MergeStrategy)} (got {strategy!r})")

        def run() -> Answer:
            doc = backend.client().merge(job, strategy=strategy, into=into)
            outcome = doc.get("merge") or {}
            if outcome.get("error"):
                return f"job {job}: the merge failed: {outcome['error']}", doc
            merged = ", ".join(outcome.get("merged") or []) or "nothing"
            return "\n".join([f"job {job}: merged {merged}", *merge_text(doc)]), doc

        return await tools.call(run, include_json)

    @tools.tool(False, "Continue a finished worker with feedback")
    async def continue_worker(job_id: str, worker: str, feedback: str, include_json: bool = False) -> CallToolResult:
        """Answer a finished root job's worker: the same CLI goes on in its own checkout and branch
        (its session resumed where the CLI can), re-gated, its work added to the job's result as a new
        commit. Starts the round and returns; wait on it with status (the worker's rounds)."""
        job, name = _text("job_id", job_id), _text("worker", worker)
        said = _text("feedback", feedback)

        def run() -> Answer:
            doc = backend.client().continue_worker(job, name, said)
            started = doc.get("round") or {}
            how = (
                f"resuming session {started['resumed_session']}"
                if started.get("resumed_session")
                else "a new session with its previous outcome and the feedback"
            )
            return f"job {job}: {name} round {started.get('number')} started ({how}); see status for its end", doc

        return await tools.call(run, include_json)


def _config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is not None and not isinstance(config, dict):
        raise ToolError(f"config must be an object of job settings, e.g. {{'max_workers': 2}} (got {config!r})")
    return config


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the tools on stdin/stdout until the client closes them."""
    from ..config import load_settings

    backend = Backend(load_settings(args.config), args.config)
    build(backend).run("stdio")
    return 0


__all__ = ["Backend", "build", "cmd_mcp", "jobs_text", "merge_text", "status_text"]
