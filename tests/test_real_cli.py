"""The real ``claude`` CLI against a loopback mock of the Anthropic Messages API.

No model service is reached: ``tests/mock_model_server.py`` plays a scripted conversation
on 127.0.0.1 and the CLI is pointed at it with ANTHROPIC_BASE_URL. Install the CLI with
``tests/install_cli.sh`` (into .cli/); without it these tests skip.

Two groups:

* direct: the binary alone, to pin down the CLI contract the adapter relies on
  (JSON result, cost, tool permissions, what a bad key looks like, signals), and the binary
  run exactly as the adapter runs it (its argv and environment) for the failure classes;
* through the orchestrator: the ``claude`` adapter running real claude workers
  (skipped until ``orchestrator/workers/adapters/claude.py`` is registered in ADAPTERS).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.config import SCHEMA
from orchestrator.engine.core import SPAWN_BIN
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.backends import probe as probe_sandbox
from orchestrator.process.runner import ProcessRunner
from orchestrator.workers.adapters import ADAPTERS, get_adapter
from orchestrator.workers.adapters.base import WorkerContext
from orchestrator.workers.adapters.claude import COST_UNKNOWN
from orchestrator.workers.prompts import spawn_timeout_ms

from .conftest import ROOT, explain, find_cli, make_settings, only_worker, run_job, three_files_in_worktrees, wait_until
from .helpers import real_cli as real_cli_helpers
from .helpers.real_cli import API_KEY, write_then_report
from .mock_model_server import (
    AUTH_401,
    QUIET_ENV,
    ApiError,
    Hang,
    MockModelServer,
    Text,
    ToolUse,
    prompt_text,
    subtask,
    tool_results,
    working_directory,
)

# The fixture this file shares with other test files (tests/helpers/real_cli.py).
claude_workers = real_cli_helpers.claude_workers

CLAUDE = find_cli("claude")
CLI_TIMEOUT = 60  # seconds for one direct CLI run; a healthy one takes about 1 s
SANDBOX = probe_sandbox()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_cli,
    pytest.mark.skipif(
        CLAUDE is None, reason="claude CLI not found at .cli/node_modules/.bin/claude nor on PATH (run tests/install_cli.sh)"
    ),
]
needs_adapter = pytest.mark.skipif(
    "claude" not in ADAPTERS,
    reason="orchestrator/workers/adapters/claude.py is not registered in orchestrator.workers.adapters.ADAPTERS yet",
)


def json_lines(log: str) -> list[dict]:
    """The JSON objects among a worker log's lines (the CLI's stream events; banners skipped)."""
    events = []
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def cli_env(mock: MockModelServer, home: Path, **extra: str) -> dict[str, str]:
    """os.environ plus the mock's URL and key, the quiet switches, and a private HOME
    (the CLI writes ~/.claude.json and ~/.claude/ there)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "ORCHESTRATOR"))}
    env.update(mock.client_env(API_KEY))
    env.update({"HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")})
    env.update(extra)
    return env


def run_claude(mock: MockModelServer, cwd: Path, *args: str, prompt: str = "hello", **extra_env: str) -> tuple[int, dict]:
    """``claude -p PROMPT --output-format json ARGS`` in ``cwd``; (exit code, parsed JSON)."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [CLAUDE, "-p", prompt, "--output-format", "json", *args],
        cwd=cwd,
        env=cli_env(mock, cwd.parent / "home", **extra_env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(
            f"claude printed no JSON (exit {proc.returncode}).\nstdout: {proc.stdout[-2000:]}\n"
            f"stderr: {proc.stderr[-2000:]}\nmock saw:\n{mock.summary()}"
        )
    return proc.returncode, doc


def only_messages_endpoint(mock: MockModelServer) -> None:
    """Every request the CLI made went to POST /v1/messages (with its ?beta=true)."""
    assert mock.requests, "the CLI made no request to the mock"
    other = [p for p in mock.paths if not p.startswith("POST /v1/messages")]
    assert not other, f"unexpected endpoints: {other}"


# ----------------------------------------------------------------------------- the mock itself


def test_mock_answers_without_streaming_404s_the_rest_and_stops_by_itself():
    import requests

    with MockModelServer([Text("plain")], lifetime=CLI_TIMEOUT) as mock:
        body = {"model": "m", "max_tokens": 10, "tools": [{"name": "Bash"}], "messages": [{"role": "user", "content": "hi"}]}
        answer = requests.post(mock.url + "/v1/messages", json=body, timeout=10).json()
        assert answer["content"] == [{"type": "text", "text": "plain"}] and answer["usage"]["input_tokens"] == 1200
        assert requests.get(mock.url + "/v1/models", timeout=10).status_code == 404
        assert mock.paths == ["POST /v1/messages", "GET /v1/models"]
    # A held request is let go when the lifetime runs out, and the server is closed.
    mock = MockModelServer([Hang()], lifetime=1.0).start()
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.post(mock.url + "/v1/messages", json=body, timeout=10)
    assert mock.stopped and time.monotonic() - started < 5


# ----------------------------------------------------------------------------- direct


def test_version_is_printed():
    out = subprocess.run(
        [CLAUDE, "--version"],
        env={**os.environ, **QUIET_ENV},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert "Claude Code" in out.stdout


def test_plain_prompt_gives_the_scripted_text_and_a_cost(tmp_path):
    with MockModelServer([Text("Hello from the mock")], lifetime=CLI_TIMEOUT) as mock:
        code, doc = run_claude(mock, tmp_path / "work")
    assert code == 0, doc
    assert doc["type"] == "result" and doc["is_error"] is False
    assert doc["result"] == "Hello from the mock"
    assert doc["total_cost_usd"] > 0
    assert doc["usage"]["input_tokens"] == 1200 and doc["usage"]["output_tokens"] == 80
    only_messages_endpoint(mock)
    (request,) = mock.requests
    assert request.headers["x-api-key"] == API_KEY
    assert request.body["stream"] is True
    assert {"Bash", "Write"} <= {t["name"] for t in request.body["tools"]}
    assert "hello" in json.dumps(request.body["messages"])


def test_write_tool_creates_the_file_in_the_cwd(tmp_path):
    work = tmp_path / "work"

    def script(body):
        if tool_results(body):
            return Text("Wrote notes.md")
        return ToolUse("Write", {"file_path": f"{working_directory(body)}/notes.md", "content": "# Notes\n"})

    with MockModelServer(script, lifetime=CLI_TIMEOUT) as mock:
        code, doc = run_claude(mock, work, "--permission-mode", "acceptEdits", "--allowedTools", "Write", prompt="Write notes.md")
    assert code == 0, doc
    assert (work / "notes.md").read_text() == "# Notes\n"
    assert doc["result"] == "Wrote notes.md" and doc["num_turns"] == 2
    assert doc["permission_denials"] == []
    assert doc["usage"]["input_tokens"] == 2400  # both turns are counted
    (result,) = tool_results(mock.requests[-1].body)
    assert not result.get("is_error"), result
    only_messages_endpoint(mock)


def _bash_turns(command: str):
    def script(body):
        if tool_results(body):
            return Text("done")
        return ToolUse("Bash", {"command": command, "description": "Start a child job"})

    return script


@pytest.mark.parametrize(
    "spawn",
    [
        'orchestrator-spawn --wait "Write a.md" "Write b.md"',
        'python -m orchestrator spawn --wait "Write a.md"',
        'python3 -m orchestrator spawn --wait "Write a.md"',
    ],
)
def test_default_allowed_tools_let_the_spawn_command_run_and_nothing_else(tmp_path, spawn):
    # The adapter passes orchestrator.claude_allowed_tools as --allowedTools: its Bash rules
    # must let orchestrator-spawn (and the older python forms) run without asking, and only those.
    tools = SCHEMA["orchestrator"]["claude_allowed_tools"].default
    assert "Bash(orchestrator-spawn:*)" in tools
    # A worker's PATH: the engine puts orchestrator/bin (orchestrator-spawn) and the interpreter's folder first.
    path = os.pathsep.join((SPAWN_BIN, os.path.dirname(sys.executable), os.environ.get("PATH", "")))
    env = {"PATH": path, "PYTHONPATH": str(ROOT), "ORCHESTRATOR_PYTHON": sys.executable}
    with MockModelServer(_bash_turns(spawn), lifetime=CLI_TIMEOUT) as mock:
        code, doc = run_claude(mock, tmp_path / "a", "--permission-mode", "acceptEdits", "--allowedTools", *tools, **env)
    assert code == 0, doc
    assert doc["permission_denials"] == []
    (result,) = tool_results(mock.requests[-1].body)
    # It ran: outside a worker the orchestrator itself refuses, with its own message.
    assert "spawn runs inside a worker" in str(result["content"]), result
    with MockModelServer(_bash_turns("python -m orchestrator run 'x'"), lifetime=CLI_TIMEOUT) as mock:
        code, doc = run_claude(mock, tmp_path / "b", "--permission-mode", "acceptEdits", "--allowedTools", *tools, **env)
    assert [d["tool_name"] for d in doc["permission_denials"]] == ["Bash"]
    (result,) = tool_results(mock.requests[-1].body)
    assert result.get("is_error") is True and "approval" in str(result["content"])


def test_default_allowed_tools_let_a_worker_run_the_project_s_tests_in_its_checkout(tmp_path):
    # A worker that says it added a test can have run it: pytest runs without asking, in its cwd.
    tools = SCHEMA["orchestrator"]["claude_allowed_tools"].default
    work = tmp_path / "work"
    work.mkdir()
    (work / "test_ok.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    env = {"PATH": os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", "")))}
    with MockModelServer(_bash_turns("python -m pytest -q -p no:cacheprovider test_ok.py"), lifetime=CLI_TIMEOUT) as mock:
        code, doc = run_claude(mock, work, "--permission-mode", "acceptEdits", "--allowedTools", *tools, **env)
    assert code == 0 and doc["permission_denials"] == [], doc
    (result,) = tool_results(mock.requests[-1].body)
    assert "1 passed" in str(result["content"]), result


def test_bad_key_gives_is_error_with_the_cli_message(tmp_path):
    # The CLI retries a 401 by default (10 retries with backoff: about 3 minutes);
    # CLAUDE_CODE_MAX_RETRIES=0 makes it answer at once.
    with MockModelServer([], default=AUTH_401, lifetime=CLI_TIMEOUT) as mock:
        code, doc = run_claude(mock, tmp_path / "work", CLAUDE_CODE_MAX_RETRIES="0")
    assert code == 1
    assert doc["is_error"] is True
    assert doc["api_error_status"] == 401
    # The CLI words it itself; the server's "invalid x-api-key" is not passed through.
    assert doc["result"].startswith("Invalid API key")
    assert doc["total_cost_usd"] == 0
    assert len(mock.requests) == 1
    only_messages_endpoint(mock)


def test_the_cli_retries_a_401_itself(tmp_path):
    with MockModelServer([], default=AUTH_401, lifetime=CLI_TIMEOUT) as mock:
        code, doc = run_claude(mock, tmp_path / "work", CLAUDE_CODE_MAX_RETRIES="1")
    assert code == 1 and doc["api_error_status"] == 401
    assert [r.turn for r in mock.requests] == ["ApiError 401", "ApiError 401"]


def run_as_worker(mock: MockModelServer, work: Path, *, time_left: float = 60.0, **extra_env: str):
    """The CLI run exactly as the claude adapter runs a worker (its argv and extra_env), and
    parsed by the adapter; returns (ParsedResult, seconds the CLI took)."""
    adapter = get_adapter("claude")
    work.mkdir(parents=True, exist_ok=True)
    settings = make_settings(work.parent, orchestrator={"worker": "claude", "claude_command": CLAUDE})
    base = cli_env(mock, work.parent / "home", **extra_env)  # the worker's environment, which the adapter reads
    ctx = WorkerContext(
        task="Say hi",
        prompt="Say hi",
        prompt_file=work / "prompt.md",
        worker_dir=work,
        depth=0,
        max_recursion_depth=1,
        attempt=1,
        settings=settings,
        time_left=time_left,
        env=base,
    )
    env = {**base, **adapter.extra_env(ctx)}
    started = time.monotonic()
    proc = subprocess.run(
        adapter.build_argv(ctx), cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    return adapter.parse(proc.stdout + proc.stderr, proc.returncode, max_chars=2000), time.monotonic() - started


def test_a_401_fails_in_seconds_and_is_classified_auth(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAUDE_CODE_MAX_RETRIES", raising=False)
    with MockModelServer([], default=AUTH_401, lifetime=CLI_TIMEOUT) as mock:
        parsed, took = run_as_worker(mock, tmp_path / "work")
    assert parsed.ok is False and parsed.failure_class == "auth" and parsed.retryable is False, parsed
    assert "Invalid API key" in parsed.error and "API error 401" in parsed.error
    # The adapter's CLAUDE_CODE_MAX_RETRIES=3: the first call and 3 retries (about 4 s), not the
    # CLI's default 10 (about 3 minutes, which looked like a hang).
    assert [r.turn for r in mock.requests] == ["ApiError 401"] * 4, mock.summary()
    assert took < 30


@pytest.mark.parametrize("status, kind", [(529, "overloaded_error"), (429, "rate_limit_error")])
def test_an_overload_or_rate_limit_is_transient_and_reports_the_services_retry_after(tmp_path, monkeypatch, status, kind):
    monkeypatch.delenv("CLAUDE_CODE_MAX_RETRIES", raising=False)
    error = ApiError(status, kind, "Overloaded" if status == 529 else "Rate limited", headers={"retry-after": "1"})
    with MockModelServer([], default=error, lifetime=CLI_TIMEOUT) as mock:
        parsed, took = run_as_worker(mock, tmp_path / "work")
    assert parsed.ok is False and parsed.failure_class == "transient" and parsed.retryable is True, parsed
    assert f"API error {status}" in parsed.error
    # The CLI itself waited the service's retry-after between its 3 retries, and its stream said how long.
    requests = mock.requests
    assert len(requests) == 4, mock.summary()
    assert all(b.at - a.at >= 0.9 for a, b in zip(requests, requests[1:])), mock.summary()
    assert parsed.retry_after is not None and 1.0 <= parsed.retry_after < 2.5, parsed.retry_after
    assert took < 30


def test_a_long_retry_after_is_not_waited_inside_the_cli_but_comes_back_transient(tmp_path, monkeypatch):
    # Asked to wait 100 s, claude gives up at once and does not say how long: a long overload is
    # the orchestrator's to wait out (workers.transient_retries), with its own backoff.
    monkeypatch.delenv("CLAUDE_CODE_MAX_RETRIES", raising=False)
    error = ApiError(429, "rate_limit_error", "Rate limited", headers={"retry-after": "100"})
    with MockModelServer([], default=error, lifetime=CLI_TIMEOUT) as mock:
        parsed, took = run_as_worker(mock, tmp_path / "work")
    assert parsed.failure_class == "transient" and parsed.retryable is True and parsed.retry_after is None, parsed
    assert len(mock.requests) == 1 and took < 20, mock.summary()


def test_a_hanging_request_keeps_the_cli_waiting_until_it_is_signalled(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with MockModelServer([Hang()], lifetime=CLI_TIMEOUT) as mock:
        proc = subprocess.Popen(
            [CLAUDE, "-p", "hello", "--output-format", "json"],
            cwd=work,
            env=cli_env(mock, tmp_path / "home"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not mock.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert mock.requests, "the CLI never called the mock"
            time.sleep(1.0)
            assert proc.poll() is None, "the CLI gave up on a request that had not answered"
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)  # SIGTERM is enough: the kill ladder's first rung ends it
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
    assert proc.returncode != 0
    assert [r.turn for r in mock.requests] == ["Hang"]


# ----------------------------------------------------------------------------- orchestrator


def worker_settings(**orchestrator):
    return {"worker": "claude", "claude_command": CLAUDE, "planner": "heuristic", **orchestrator}


@needs_adapter
def test_claude_worker_writes_a_file_and_reports_cost_and_tokens(make_engine, claude_workers):
    from orchestrator.reports.status_document import job_status

    mock = claude_workers(write_then_report("hello.md", "# Hello\n", "Created hello.md"))
    engine = make_engine(orchestrator=worker_settings())
    job = run_job(engine, "Write hello.md", tasks=["Write hello.md"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED, why
    assert worker.status is WorkerStatus.SUCCESS, why
    folder = engine.workspace.worker_dir(job.root_id, 0, worker.name)
    assert (folder / "hello.md").read_text() == "# Hello\n"
    assert worker.files_created == ["hello.md"]
    assert "Created hello.md" in worker.output
    # Two turns of 1200 in / 80 out each, priced by the CLI itself.
    assert worker.cost_usd == pytest.approx(0.0128, rel=0.01), why
    assert worker.tokens_in == 2400 and worker.tokens_out == 160, why
    on_disk = engine.workspace.load_worker(job.root_id, 0, worker.name)
    assert (on_disk.cost_usd, on_disk.tokens_in, on_disk.tokens_out) == (worker.cost_usd, 2400, 160)
    jobs, workers = engine.queries.snapshot(job.root_id)
    (task,) = job_status(job.id, jobs, workers, engine.workspace.job_dir(job.root_id))["results"]["tasks"]
    assert (task["cost_usd"], task["tokens_in"], task["tokens_out"]) == (worker.cost_usd, 2400, 160)
    final = (engine.workspace.job_dir(job.root_id) / "FINAL_RESULT.md").read_text()
    assert "$0.0128" in final and "2,400" in final and "160" in final
    # The CLI was called with a prompt naming the subtask, and offered its tools.
    assert all(subtask(r.body) == "Write hello.md" for r in mock.conversation)


@needs_adapter
def test_bad_key_fails_the_worker_once_with_the_cli_message(make_engine, claude_workers, monkeypatch):
    # No CLAUDE_CODE_MAX_RETRIES of the user's: the adapter's own (3) keeps the CLI from retrying
    # a 401 for about 3 minutes (see test_the_cli_retries_a_401_itself).
    monkeypatch.delenv("CLAUDE_CODE_MAX_RETRIES", raising=False)
    mock = claude_workers([], default=AUTH_401)
    engine = make_engine(orchestrator=worker_settings(), workers={"max_retries": 2})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.FAILED, why
    assert worker.status is WorkerStatus.FAILED, why
    assert worker.error and "Invalid API key" in worker.error, why
    assert len(worker.attempts) == 1, f"a bad key must not be retried\n{why}"
    assert worker.attempts[0].duration < 30, why
    log, _ = engine.queries.read_log(worker)
    assert get_adapter("claude").parse(log, 1, max_chars=1000).failure_class == "auth", why
    # One CLI run (one session), however often the CLI itself retried inside it.
    assert len({r.headers.get("x-claude-code-session-id") for r in mock.requests}) == 1, why
    assert {r.turn for r in mock.requests} == {"ApiError 401"}


@needs_adapter
def test_a_hanging_model_call_ends_in_timeout_with_no_process_left(make_engine, claude_workers):
    mock = claude_workers([Hang()])
    engine = make_engine(orchestrator=worker_settings(), workers={"default_timeout": 5, "kill_grace": 0.5})
    job = engine.submission.submit("Say hi", None, ["Say hi"])
    tags = engine.worker_tags(job.id)
    assert len(tags) == 1
    done = engine.queries.wait(job.id, 30)
    worker = only_worker(engine, done)
    why = explain(engine, done, mock)
    assert done.status is JobStatus.FAILED, why
    assert worker.status is WorkerStatus.TIMEOUT, why
    assert len(worker.attempts) == 1 and worker.attempts[0].end_reason == "timeout"
    assert [r.turn for r in mock.requests] == ["Hang"], why
    # The CLI honours the kill ladder's first rung (the adapter's first_signal): no SIGKILL needed.
    assert worker.attempts[0].kill_rung in ("SIGINT", "SIGTERM"), worker.attempts[0]
    assert ProcessRunner().tagged(tags[0]) == []


ROOT_TASK = "Write the docs: a.md and b.md"
SPAWN = 'orchestrator-spawn --wait "Write a.md" "Write b.md"'
_TIMEOUT_ASKED = re.compile(r'"timeout": (\d+)')


def result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def tree_script(child_delay: float = 0.0):
    """One mock for the whole tree: the reply depends on which worker asks, and how far it got.
    The root's model does what its prompt says: it runs the spawn command with the shell
    timeout the prompt asks for, and answers with what the command printed. Each child's
    model call that writes its file takes ``child_delay`` seconds."""

    def script(body):
        task = subtask(body)
        results = tool_results(body)
        if task == ROOT_TASK:
            if results:
                return Text("The child job said:\n" + result_text(results[-1]))
            call = {"command": SPAWN, "description": "Start a child job for the two files"}
            asked = _TIMEOUT_ASKED.search(prompt_text(body))
            if asked:
                call["timeout"] = int(asked.group(1))
            return ToolUse("Bash", call)
        if task in ("Write a.md", "Write b.md"):
            if results:
                return Text(f"Done: {task}")
            name = task.split()[-1]
            return ToolUse(
                "Write", {"file_path": f"{working_directory(body)}/{name}", "content": f"# {name}\n"}, delay=child_delay
            )
        return Text(f"unexpected prompt: {task!r}")

    return script


@needs_adapter
def test_a_claude_worker_starts_a_child_job_of_claude_workers(make_live, claude_workers):
    mock = claude_workers(tree_script())
    live = make_live(orchestrator=worker_settings())
    submitted = live.submit(request=ROOT_TASK, tasks=[ROOT_TASK], config={"max_recursion_depth": 1})
    assert submitted.status_code in (200, 201, 202), submitted.text
    job_id = submitted.json()["job_id"]
    doc = live.wait(job_id, timeout=60)
    engine = live.engine
    jobs, workers = engine.queries.snapshot(job_id)
    why = explain(engine, jobs[0], mock) + "\n" + json.dumps(doc, indent=1)[:4000]
    assert doc["status"] == "completed", why
    root_worker = next(w for w in workers if w.depth == 0)
    assert root_worker.status is WorkerStatus.RECURSIVE_SUCCESS, why
    (child_id,) = root_worker.child_job_ids
    children = [w for w in workers if w.depth == 1]
    assert sorted(w.task for w in children) == ["Write a.md", "Write b.md"], why
    assert all(w.job_id == child_id and w.status is WorkerStatus.SUCCESS and w.kind == "claude" for w in children), why
    assert sorted(f for w in children for f in w.files_created) == ["a.md", "b.md"]
    (task,) = doc["results"]["tasks"]
    assert task["status"] == "recursive_success" and task["child_job_id"] == child_id, why
    assert sorted(t["task"] for t in task["child_results"]) == ["Write a.md", "Write b.md"]
    # Three claude workers of two turns each, every cost reported and summed over the tree.
    assert (doc["tree"]["jobs"], doc["tree"]["workers"], doc["tree"]["max_depth"]) == (2, 3, 1)
    assert doc["tree"]["cost_usd"] == pytest.approx(3 * 0.0128, rel=0.01), why
    # The root's Bash tool ran the spawn command and read the child's report back.
    bash_result = [r for r in mock.conversation if subtask(r.body) == ROOT_TASK and tool_results(r.body)]
    assert bash_result, why
    assert f"Child job {child_id}: completed" in json.dumps(tool_results(bash_result[-1].body)), why


@needs_adapter
def test_a_child_job_longer_than_the_shell_limit_comes_back_to_its_parent(make_live, claude_workers):
    # The CLI's default shell limit lowered to 2 s through its own setting (it is 2 minutes; a
    # child job of AI workers takes minutes). Each child's model call takes 3 s, so the child
    # job outlives that limit; the parent's spawn call returns only because it asked for the
    # long timeout its prompt gives (BASH_MAX_TIMEOUT_MS, which the adapter raises, allows it).
    mock = claude_workers(tree_script(child_delay=3.0), BASH_DEFAULT_TIMEOUT_MS="2000")
    live = make_live(orchestrator=worker_settings(), workers={"default_timeout": 90})
    submitted = live.submit(request=ROOT_TASK, tasks=[ROOT_TASK], config={"max_recursion_depth": 1})
    assert submitted.status_code in (200, 201, 202), submitted.text
    job_id = submitted.json()["job_id"]
    doc = live.wait(job_id, timeout=80)
    engine = live.engine
    jobs, workers = engine.queries.snapshot(job_id)
    why = explain(engine, jobs[0], mock) + "\n" + json.dumps(doc, indent=1)[:4000]
    assert doc["status"] == "completed", why
    root_worker = next(w for w in workers if w.depth == 0)
    (child_id,) = root_worker.child_job_ids
    child = next(j for j in jobs if j.id == child_id)
    assert child.ended_at - child.created_at > 2.5, "the child job must outlive the 2 s shell limit"
    # The model was asked for, and gave, the worker's own timeout as the spawn call's.
    calls = [
        b
        for r in mock.conversation
        if subtask(r.body) == ROOT_TASK
        for m in r.body["messages"]
        if m["role"] == "assistant" and isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    ]
    assert calls and calls[0]["input"].get("timeout") == spawn_timeout_ms(90), why
    # The parent's final answer holds its children's results, not "timed out" or "running in background".
    assert f"Child job {child_id}: completed" in root_worker.output, why
    assert "Done: Write a.md" in root_worker.output and "Done: Write b.md" in root_worker.output, why
    assert root_worker.status is WorkerStatus.RECURSIVE_SUCCESS, why


@needs_adapter
def test_a_timed_out_claude_worker_keeps_the_tokens_its_stream_showed(make_engine, claude_workers):
    # The model writes a file (one answered call: 1200 tokens in), then its next call hangs until
    # the worker's timeout. claude 2.1.x exits 0 on SIGINT without a result; the stream-json
    # events printed before it keep what was spent.
    def script(body):
        if tool_results(body):
            return Hang()
        return ToolUse("Write", {"file_path": f"{working_directory(body)}/a.md", "content": "# a\n"}, text="Writing a.md")

    mock = claude_workers(script)
    engine = make_engine(orchestrator=worker_settings(), workers={"default_timeout": 8, "kill_grace": 1.0})
    job = run_job(engine, "Write a.md", tasks=["Write a.md"], timeout=40)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.TIMEOUT, why
    assert worker.attempts[0].kill_rung == "SIGINT", why
    assert worker.files_created == ["a.md"], why
    assert worker.tokens_in == 1200, why  # exact: the answered call's input
    assert worker.tokens_out is not None and 1 <= worker.tokens_out <= 80, why  # as each message started: a lower bound
    # claude 2.1.x usually exits on SIGINT without a result event; when the interrupt lands
    # between its steps it still writes one (after "[Request interrupted by user]"), with the
    # session's cost. Either way the record says what claude said, never a made-up $0.
    log = (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text(errors="replace")
    results = [event for event in json_lines(log) if event.get("type") == "result"]  # key order varies by version
    if results:
        assert worker.cost_usd == results[-1]["total_cost_usd"] and worker.cost_usd > 0, why
    else:
        assert worker.cost_usd is None, why  # unknown, and said so rather than shown as $0
        assert COST_UNKNOWN in worker.output and "Writing a.md" in worker.output, why


@needs_adapter
def test_a_claude_worker_in_a_worktree_edits_a_tracked_file_with_its_edit_tool(tmp_path, claude_workers):
    # The worker's cwd is a git worktree of the host repository; the model reads the
    # tracked app.py and changes one line of it with the Edit tool (which the CLI refuses on a file
    # it has not read). The orchestrator commits the edit on the worker's branch; the user's
    # repository stays exactly as it was.
    from .helpers.worktree import git, host_engine, make_host, snapshot

    def script(body):
        done = tool_results(body)
        path = f"{working_directory(body)}/app.py"
        if not done:
            return ToolUse("Read", {"file_path": path}, text="Reading app.py")
        if len(done) == 1:
            return ToolUse("Edit", {"file_path": path, "old_string": "line2", "new_string": "line2 edited by claude"})
        return Text("Edited app.py")

    host, folder = make_host(tmp_path)
    before = snapshot(host, folder)
    base = git(host, "rev-parse", "HEAD").strip()
    mock = claude_workers(script)
    engine = host_engine(folder, orchestrator=worker_settings())
    try:
        job = run_job(engine, "Edit app.py", tasks=["Change line2 of app.py"], timeout=120)
        worker = only_worker(engine, job)
        why = explain(engine, job, mock)
        assert job.config.isolation == "worktree" and worker.status is WorkerStatus.SUCCESS, why
        results = tool_results(mock.conversation[-1].body)  # the Read's and the Edit's, both fine
        assert len(results) == 2 and not any(r.get("is_error") for r in results), why
        wt = engine.workspace.worker_dir(job.root_id, 0, worker.name)
        assert (wt / "app.py").read_text() == "print('v2')\nline2 edited by claude\n", why
        # The edit is committed on the worker's branch, on top of the base.
        assert worker.branch == f"orchestrator/{job.id}/worker_1"
        assert git(host, "rev-parse", worker.branch).strip() == worker.commit
        assert git(host, "rev-parse", f"{worker.commit}~1").strip() == base
        assert git(host, "show", f"{worker.commit}:app.py") == "print('v2')\nline2 edited by claude\n"
        assert worker.files_changed == [{"path": "app.py", "change": "modified"}], why
        assert worker.diffstat == "1 file changed, 1 insertion(+), 1 deletion(-)"
        # The job's result branch (landing.py) holds the edit: the one command the user runs takes it.
        result = f"orchestrator/{job.id}/result"
        assert job.merge and list(job.merge.merged) == ["worker_1"] and job.merge.outcome.command == f"git merge {result}", why
        assert git(host, "show", f"{result}:app.py") == "print('v2')\nline2 edited by claude\n"
        assert git(host, "rev-parse", result).strip() == job.merge.result_commit
    finally:
        engine.shutdown(timeout=10)
    assert snapshot(host, folder) == before


RESOLVER_OPENING = "You are resolving a git merge conflict"
_CONFLICT_BLOCK = re.compile(r"^<<<<<<< [^\n]*\n.*?^>>>>>>> [^\n]*\n", re.S | re.M)


@needs_adapter
def test_a_claude_resolver_edits_the_conflict_away_and_its_resolution_lands_sandboxed(hosted, tmp_path, claude_workers):
    # Two command workers rewrite line 1 of app.py; under merge_strategy resolve, with the request's
    # resolver_kind claude, the real CLI resolves the conflict. Its model (the mock) answers the
    # resolver's prompt as a model would: it reads app.py, replaces the whole conflict block
    # (markers and all) with one line holding both sides, tries to write outside its worktree
    # (the sandbox's read-only root refuses that, where this machine can sandbox), and answers.
    from orchestrator.process.backends import probe

    from .helpers.landing import result_of
    from .helpers.worktree import git, snapshot

    host, folder, make = hosted
    before = snapshot(host, folder)
    outside = tmp_path / "observed" / "resolver_was_here"  # outside the host and the workspace
    outside.parent.mkdir()
    resolved = "print('w1', 'w2')\n"

    def script(body):
        if RESOLVER_OPENING not in prompt_text(body):
            return Text(f"unexpected prompt: {subtask(body)!r}")
        done = tool_results(body)
        where = working_directory(body)
        path = f"{where}/app.py"
        if not done:
            return ToolUse("Read", {"file_path": path}, text="Reading the conflicting file")
        if len(done) == 1:
            # The resolver's checkout, shown to it at the repository's own path (the project view)
            (tree,) = engine.workspace.root.glob("job_*/resolve/*/tree") if where == str(host) else [Path(where)]
            with open(tree / "app.py") as file:  # what the model read: the merge in progress, markers included
                (block,) = _CONFLICT_BLOCK.findall(file.read())
            return ToolUse("Edit", {"file_path": path, "old_string": block, "new_string": resolved})
        if len(done) == 2:
            probe_call = f"python3 -c \"open('{outside}', 'w')\""  # claude asks before a touch outside its folder
            return ToolUse("Bash", {"command": probe_call, "description": "Probe the sandbox"})
        return Text("Resolved app.py: both workers' prints on one line")

    mock = claude_workers(script)
    tools = [*SCHEMA["orchestrator"]["claude_allowed_tools"].default, "Bash(python3 -c:*)"]
    engine = make(orchestrator={"claude_command": CLAUDE, "claude_allowed_tools": tools}, git={"resolver_retries": 0})
    tasks = ["sed -i s/v2/w1/ app.py", "sed -i s/v2/w2/ app.py"]
    job = run_job(engine, "x", tasks=tasks, config={"merge_strategy": "resolve", "resolver_kind": "claude"}, timeout=120)
    why = explain(engine, job, mock)
    merge = job.merge
    assert job.status is JobStatus.COMPLETED and merge is not None, why
    assert list(merge.merged) == ["worker_1", "worker_2"] and merge.skipped == (), why
    (resolution,) = merge.outcome.resolutions
    assert resolution.accepted and resolution.worker == "worker_2" and resolution.files == ("app.py",), why
    assert resolution.resolver == "claude" and resolution.reason == "resolved by claude in attempt 1", why
    assert [(c.path, c.resolved_by) for c in merge.conflicts] == [("app.py", "resolver")]
    # The result branch holds the resolver's text, no marker left.
    result = result_of(host, job.id)
    assert git(host, "show", f"{result}:app.py") == resolved + "line2\n"
    assert git(host, "rev-parse", f"{result}^{{tree}}").strip() == resolution.tree
    # The model was sent the resolver's prompt, as the orchestrator wrote it down.
    prompt = (engine.workspace.job_dir(job.id) / "resolve" / "depth_0_worker_2" / "prompt_1.md").read_text()
    assert prompt.startswith(RESOLVER_OPENING) and "- app.py" in prompt and "+print('w1')" in prompt
    asked = [r for r in mock.conversation if RESOLVER_OPENING in prompt_text(r.body)]
    assert len(asked) == 4 and all(prompt.strip() in prompt_text(r.body) for r in asked), why
    # Its tools ran: the Read and the Edit cleanly, the probe as the sandbox allows.
    read, edit, probe_result = tool_results(asked[-1].body)
    assert not read.get("is_error") and not edit.get("is_error"), why
    if probe().available:  # workers.sandbox auto: confined, in a read-only root but for its worktree
        assert probe_result.get("is_error") and "Read-only file system" in result_text(probe_result), why
        assert not outside.exists()
    else:
        assert not probe_result.get("is_error") and outside.exists(), why
    # Its one attempt, with the cost the CLI reported for the mock's usage (4 calls of 1200 in,
    # 80 out), counted toward the tree's budget (the workers are commands: no cost of their own).
    (attempt,) = resolution.attempts
    assert attempt.exit_code == 0 and attempt.refused == "" and attempt.cost_basis == "reported", why
    log_text = (engine.workspace.job_dir(job.id) / attempt.log_path).read_text()
    (reported,) = [e for e in json_lines(log_text) if e.get("type") == "result"]
    assert reported["usage"]["input_tokens"] == 4 * 1200 and reported["usage"]["output_tokens"] == 4 * 80, why
    assert attempt.cost_usd == reported["total_cost_usd"] == pytest.approx(4 * 0.0064, rel=0.01), why
    assert engine.tables.tree_cost[job.root_id] == pytest.approx(attempt.cost_usd)
    assert "/resolve/" not in git(host, "worktree", "list")
    assert snapshot(host, folder) == before


@needs_adapter
def test_in_worktrees_of_a_host_repository_each_file_lands_in_its_own_worktree(hosted_at_root, claude_workers):
    def script(body):  # Write a.txt: a.txt in the directory claude says it works in
        task = subtask(body) or "?"
        name = task.split()[-1]
        if tool_results(body):
            return Text(f"Wrote {name}")
        return ToolUse("Write", {"file_path": f"{working_directory(body)}/{name}", "content": f"{task}\n"})

    mock = claude_workers(script)
    three_files_in_worktrees(hosted_at_root, mock, orchestrator=worker_settings(), workers={"default_timeout": 120})


@needs_adapter
def test_a_role_runs_real_claude_workers_with_its_model_and_preamble_in_a_simulated_job(make_engine, claude_workers):
    # Roles: the job's kind is simulated; the role's worker kind (claude) and model win for its task.
    mock = claude_workers(write_then_report("notes.md", "# Notes\n", "Wrote notes.md"))
    engine = make_engine(
        orchestrator={"claude_command": CLAUDE, "planner": "heuristic", "model": "job-model"},
        tasks={"roles": {"writer": {"worker": "claude", "model": "claude-role-model", "preamble": "You are the notes writer."}}},
    )
    job = run_job(engine, "notes", tasks=[{"task": "Write notes.md", "role": "writer"}, "Plain task"], timeout=90)
    assert job.status is JobStatus.COMPLETED, explain(engine, job, mock)
    _, ran = engine.queries.snapshot(job.root_id)
    assert sorted((w.task, w.kind, w.model) for w in ran) == [
        ("Plain task", "simulated", None),
        ("Write notes.md", "claude", "claude-role-model"),
    ]
    assert mock.conversation, "the role's worker ran claude, which called the mock"
    for request in mock.conversation:
        assert request.body["model"] == "claude-role-model"
        assert "You are the notes writer.\n\n# Your subtask\n\nWrite notes.md\n" in prompt_text(request.body)


@needs_adapter
def test_a_roles_allowed_tools_replace_the_servers_for_real_claude_workers(make_engine, claude_workers):
    # permission mode "default": only the listed tools run unasked (acceptEdits would allow Write anyway).
    mock = claude_workers(write_then_report("notes.md", "# Notes\n", "Done"))
    engine = make_engine(
        orchestrator=worker_settings(claude_permission_mode="default"),
        tasks={"roles": {"reader": {"allowed_tools": ["Read", "Grep"]}}},
    )
    job = run_job(engine, "notes", tasks=[{"task": "Write notes.md", "role": "reader"}, "Write notes.md too"], timeout=90)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED, why
    _, ran = engine.queries.snapshot(job.root_id)
    wrote = {w.role: (engine.workspace.worker_dir(job.root_id, 0, w.name) / "notes.md").exists() for w in ran}
    assert wrote == {"reader": False, None: True}, why  # the server's list has Write; the role's does not
    denied = [r for r in mock.conversation for t in tool_results(r.body) if t.get("is_error")]
    assert [subtask(r.body) for r in denied] == ["Write notes.md"], why


@needs_adapter
@pytest.mark.skipif(not SANDBOX.available, reason=f"no sandbox on this machine: {SANDBOX.reason}")
def test_a_sandboxed_claude_worker_with_claude_code_tmpdir_outside_runs_the_projects_tests(tmp_path, claude_workers):
    # CLAUDE_CODE_TMPDIR names a folder the sandbox does not open (Claude Code hangs without a word
    # when it cannot write there): the CLI, in a worktree of a host repository, runs the project's
    # tests with its Bash tool (which keeps its state files in that folder) and finishes. The folder
    # outside stays empty: in the sandbox it is the worker's own TMPDIR.
    from .helpers.worktree import git, host_engine, make_host, snapshot, user_env

    host, folder = make_host(tmp_path)
    (host / "test_app.py").write_text("def test_app():\n    assert 1 + 1 == 2\n")
    git(host, "add", "test_app.py")
    git(host, "commit", "-qm", "a test", "--no-verify", env=user_env())
    before = snapshot(host, folder)
    outside = tmp_path / "claude-tmp"
    mock = claude_workers(_bash_turns("python -m pytest -q -p no:cacheprovider test_app.py"), CLAUDE_CODE_TMPDIR=str(outside))
    engine = host_engine(folder, orchestrator=worker_settings(), workers={"default_timeout": 120, "max_retries": 0})
    try:
        job = run_job(engine, "Run the tests", tasks=["Run the project's tests"], timeout=150)
        worker = only_worker(engine, job)
        why = explain(engine, job, mock)
        assert worker.status is WorkerStatus.SUCCESS and worker.sandbox == "bubblewrap", why
        (result,) = tool_results(mock.conversation[-1].body)
        assert "1 passed" in str(result["content"]), why
        assert not any(outside.iterdir()), sorted(p.name for p in outside.iterdir())
    finally:
        engine.shutdown(timeout=10)
    assert snapshot(host, folder) == before


GIT_IN_A_TEST = """import subprocess


def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def test_git_in_the_checkout():
    seen = git("log", "--all", "--format=subject: %s") + git("for-each-ref", "--format=ref: %(refname)")
    print(seen)
    assert "subject: a git test" in seen and "ref: refs/heads/main" in seen
    assert "other-tree" not in seen
    open("by_the_test.txt", "w").write("committed by the project's test")
    git("add", "by_the_test.txt")
    git("-c", "user.name=T", "-c", "user.email=t@x", "commit", "-q", "--no-verify", "-m", "by the test")
"""


@needs_adapter
@pytest.mark.skipif(not probe_sandbox(backend="landlock").available, reason="no Landlock on this machine")
def test_a_claude_worker_under_landlock_runs_git_in_its_worktree_and_sees_no_other_tree(tmp_path, claude_workers):
    # Under Landlock the worker's git is told a git dir of its own (git/worker_gitdir.py): the CLI starts
    # in its worktree (Claude Code runs git there itself), its Bash tool runs the project's test, which
    # walks every branch, lists every ref (another tree's branch not among them) and commits. That
    # commit, and the orchestrator's of what was left, land on the worker's branch; the host is unchanged.
    from .helpers.worktree import git, host_engine, make_host, snapshot, user_env

    host, folder = make_host(tmp_path)
    (host / "test_git.py").write_text(GIT_IN_A_TEST)
    # As a Python project's own: the bytecode pytest writes is no leftover to commit (where
    # PYTHONDONTWRITEBYTECODE is not set, it writes some in the worktree).
    with (host / ".gitignore").open("a") as ignored:  # (beside make_host's .env)
        ignored.write("__pycache__/\n")
    git(host, "add", "test_git.py", ".gitignore")
    git(host, "commit", "-qm", "a git test", "--no-verify", env=user_env())
    git(host, "branch", "orchestrator/0other0tree0/worker_1", "HEAD")
    git(host, "commit", "-q", "--allow-empty", "-m", "other-tree commit", "--no-verify", env=user_env())
    git(host, "branch", "-f", "orchestrator/0other0tree0/worker_1", "HEAD")
    git(host, "reset", "-q", "--hard", "HEAD~1")
    before = snapshot(host, folder)
    mock = claude_workers(_bash_turns("python -m pytest -q -s -p no:cacheprovider test_git.py"))
    sandbox = {"sandbox": "on", "sandbox_backend": "landlock", "default_timeout": 120, "max_retries": 0}
    engine = host_engine(folder, orchestrator=worker_settings(), workers=sandbox)
    try:
        job = run_job(engine, "Run the tests", tasks=["Run the project's tests"], timeout=150)
        worker = only_worker(engine, job)
        why = explain(engine, job, mock)
        assert worker.status is WorkerStatus.SUCCESS and worker.sandbox == "landlock", why
        (result,) = tool_results(mock.conversation[-1].body)
        assert "1 passed" in str(result["content"]) and "other-tree" not in str(result["content"]), why
        assert git(host, "log", "--format=%s", str(worker.commit)).splitlines()[:2] == ["by the test", "a git test"], why
        assert git(host, "show", f"{worker.commit}:by_the_test.txt") == "committed by the project's test"
    finally:
        engine.shutdown(timeout=10)
    assert snapshot(host, folder) == before


@needs_adapter
def test_continue_resumes_the_claude_session_it_recorded_and_the_round_lands_on_the_result(hosted_at_root, claude_workers):
    # Round 1 writes notes.md; round 2 (the feedback) adds a line. Resumed with --resume, the CLI sends
    # round 1's whole conversation (its tool call, its result, its answer) before the feedback.
    def script(body):
        done = len(tool_results(body))
        if "FEEDBACK-TWO" in prompt_text(body):
            if done == 1:
                return ToolUse("Write", {"file_path": f"{working_directory(body)}/notes.md", "content": "one\ntwo\n"})
            return Text("Added two" if done == 2 else "no earlier conversation")
        if done:
            return Text("Wrote notes.md")
        return ToolUse("Write", {"file_path": f"{working_directory(body)}/notes.md", "content": "one\n"})

    from .helpers.worktree import git, snapshot, workers

    mock = claude_workers(script)
    host, folder, make = hosted_at_root
    before = snapshot(host, folder)
    engine = make(orchestrator=worker_settings(), workers={"default_timeout": 120})
    job = run_job(engine, "notes", tasks=["Write notes.md"], config={"max_retries": 0}, timeout=120)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED, why
    first = workers(engine, job)["worker_1"]
    assert first.session_id, why  # claude's result reported it; the record keeps it
    result_1 = git(host, "rev-parse", f"orchestrator/{job.id}/result").strip()
    asked_before = len(mock.conversation)

    started = engine.continue_worker(job.id, "worker_1", "Good. FEEDBACK-TWO: add a line two")
    assert started["round"]["resumed_session"] == first.session_id

    def ended():
        rec = workers(engine, job)["worker_1"]
        return rec if rec.rounds and rec.rounds[0].state != "running" else None

    rec = wait_until(ended, timeout=120)
    why = explain(engine, job, mock)
    assert rec.rounds[0].state == "success", why
    # The CLI ran with --resume and the recorded id, and sent round 1's conversation with the feedback
    assert rec.attempts[-1].argv is not None and "--resume" in rec.attempts[-1].argv, why
    assert rec.attempts[-1].argv[rec.attempts[-1].argv.index("--resume") + 1] == first.session_id
    first_of_round = mock.conversation[asked_before].body
    said = json.dumps(first_of_round["messages"])
    assert "Write notes.md" in said and "Wrote notes.md" in said and len(tool_results(first_of_round)) == 1, why
    assert "FEEDBACK-TWO" in json.dumps(first_of_round["messages"][-1]), why
    # Its work on its branch and, as a new commit, on the result
    assert git(host, "show", f"{rec.commit}:notes.md") == "one\ntwo\n"
    result_2 = git(host, "rev-parse", f"orchestrator/{job.id}/result").strip()
    assert rec.rounds[0].result_commit == result_2 and git(host, "rev-parse", f"{result_2}^").strip() == result_1
    assert rec.rounds[0].cost_usd and rec.cost_usd == pytest.approx(first.cost_usd + rec.rounds[0].cost_usd)
    assert snapshot(host, folder) == before
