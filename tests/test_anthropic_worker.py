"""The ``anthropic`` worker kind: the SDK's agentic loop against the loopback Messages API mock.

Jobs run through the engine with real worker subprocesses (``python -m
orchestrator.workers.anthropic_worker``); the only fake is the model API (tests/mock_model_server.py,
streaming SSE and tool_use as the real API sends them). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import protocol
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.runner import ProcessRunner
from orchestrator.workers.adapters import get_adapter
from orchestrator.workers.adapters.anthropic import prices_for
from orchestrator.workers.agent_tools import Tools

from . import net_guard
from .conftest import ROOT, explain, make_settings, only_worker, run_job, three_files_in_worktrees, wait_until
from .mock_model_server import AUTH_401, ApiError, Hang, MockModelServer, Text, ToolUse, subtask, tool_results

# Real worker subprocesses against a real loopback server: the slow tier.
pytestmark = pytest.mark.slow

KEY = "sk-ant-test-0123456789-secret"
MODEL = "claude-sonnet-5-5"


@pytest.fixture
def mock_api():
    started: list[MockModelServer] = []

    def start(script, *, default=None, lifetime=90.0) -> MockModelServer:
        mock = MockModelServer(script, default=default, lifetime=lifetime).start()
        started.append(mock)
        return mock

    yield start
    for mock in started:
        mock.stop()


def anthropic_sections(mock: MockModelServer, *, workers=None, **anthropic) -> dict:
    """Settings sections whose workers are the anthropic kind, talking to ``mock`` through workers.env."""
    return {
        "orchestrator": {"worker": "anthropic", "planner": "heuristic"},
        "workers": {"env": {"ANTHROPIC_BASE_URL": mock.url, "ANTHROPIC_API_KEY": KEY}, **(workers or {})},
        "anthropic": {"model": MODEL, "max_retries": 0, **anthropic},
    }


def anthropic_engine(make_engine, mock: MockModelServer, *, workers=None, **anthropic):
    """An engine (of ``make_engine``) on anthropic_sections."""
    return make_engine(**anthropic_sections(mock, workers=workers, **anthropic))


def result_of(body, index: int = -1) -> dict:
    return tool_results(body)[index]


def text_of(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def usage(inp: int, out: int, write: int = 0, read: int = 0) -> dict[str, int]:
    return {"input_tokens": inp, "output_tokens": out, "cache_creation_input_tokens": write, "cache_read_input_tokens": read}


# ----------------------------------------------------------------------------- through the engine


def test_a_tool_call_writes_a_file_a_command_runs_and_usage_and_cost_are_exact(make_engine, mock_api):
    turns = [
        ToolUse("write_file", {"path": "notes/hello.md", "content": "# Hello\n"}, usage=usage(1000, 50, write=800)),
        ToolUse(
            "run_command",
            {"argv": [sys.executable, "-c", "print(open('notes/hello.md').read().upper())"]},
            usage=usage(40, 30, read=800),
        ),
        Text("Wrote notes/hello.md", usage=usage(60, 20, read=800)),
    ]
    mock = mock_api(turns)
    engine = anthropic_engine(make_engine, mock)
    job = run_job(engine, "Write hello.md", tasks=["Write hello.md"], timeout=90)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED and worker.status is WorkerStatus.SUCCESS, why
    folder = engine.workspace.worker_dir(job.root_id, 0, worker.name)
    assert (folder / "notes" / "hello.md").read_text() == "# Hello\n", why
    assert worker.files_created == ["notes/hello.md"], why
    assert "Wrote notes/hello.md" in worker.output
    # The write's result, then the command's exit code and output, went back to the model.
    second, third = mock.conversation[1].body, mock.conversation[2].body
    assert text_of(result_of(second)).startswith("wrote notes/hello.md"), why
    assert result_of(third)["is_error"] is False
    assert text_of(result_of(third)) == "exit code 0\n# HELLO\n\n", why
    # Exact usage: the three turns' counts summed; the cost from the anthropic.prices entry.
    assert worker.tokens_in == (1000 + 800) + (40 + 800) + (60 + 800), why
    assert worker.tokens_out == 50 + 30 + 20
    assert worker.tokens_cache_read == 1600
    price = engine.settings.anthropic.prices[MODEL]
    expected = (1100 * price["input"] + 100 * price["output"] + 800 * price["cache_write"] + 1600 * price["cache_read"]) / 1e6
    assert worker.cost_usd == pytest.approx(expected, rel=1e-9), why
    on_disk = engine.workspace.load_worker(job.root_id, 0, worker.name)
    assert (on_disk.tokens_in, on_disk.tokens_out, on_disk.cost_usd) == (worker.tokens_in, 100, worker.cost_usd)
    # Every request: streamed, the configured model, the SDK's key header (never logged), the tools.
    for request in mock.conversation:
        assert request.body["stream"] is True and request.body["model"] == MODEL
        assert KEY in (request.headers.get("x-api-key"), request.headers.get("authorization", "").removeprefix("Bearer "))
        assert [t["name"] for t in request.body["tools"]][:3] == ["read_file", "write_file", "edit_file"]
        assert request.body["system"][0]["cache_control"] == {"type": "ephemeral"}

    # The conversation is cached as it grows: the newest tool result carries the moving breakpoint.
    def breakpoints(body) -> list[str]:
        return [b.get("type") for m in body["messages"] for b in m["content"] if "cache_control" in b]

    # The job's shared context block (the prompt's first part) is cached too, in every request.
    assert [breakpoints(r.body) for r in mock.conversation] == [["text"], ["text", "tool_result"], ["text", "tool_result"]], why
    assert "cache_control" in result_of(third) and "cache_control" not in result_of(third, 0)
    from orchestrator.workers.sharedcontext import block_path

    first = mock.conversation[0].body["messages"][0]["content"][0]
    assert first["text"] == block_path(engine.workspace, job).read_text(encoding="utf-8")
    log, _ = engine.queries.read_log(worker)
    assert KEY not in log


def test_a_path_outside_the_worktree_is_refused(make_engine, mock_api):
    def script(body):
        done = tool_results(body)
        if not done:
            return ToolUse("write_file", {"path": "../escaped.txt", "content": "out"})
        if len(done) == 1:
            return ToolUse("read_file", {"path": "/etc/hostname"})
        return Text("could not")

    mock = mock_api(script)
    engine = anthropic_engine(make_engine, mock)
    job = run_job(engine, "Escape", tasks=["Escape"], timeout=90)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.SUCCESS, why
    folder = engine.workspace.worker_dir(job.root_id, 0, worker.name)
    assert not (folder.parent / "escaped.txt").exists()
    write, read = tool_results(mock.conversation[-1].body)
    for block in (write, read):
        assert block["is_error"] is True and "outside your working folder" in text_of(block), why
    assert worker.files_created == []


def test_in_a_worktree_its_edits_are_committed_and_the_host_repository_is_untouched(hosted, mock_api):
    from .helpers.worktree import git, snapshot

    host, folder, make = hosted
    before = snapshot(host, folder)

    def script(body):
        done = tool_results(body)
        calls = [
            ToolUse("edit_file", {"path": "app.py", "old_string": "line2", "new_string": "line two"}),
            ToolUse("write_file", {"path": str(host / "app.py"), "content": "hijacked"}),  # the host's own file
            ToolUse("run_command", {"argv": ["git", "status", "--short"]}),
        ]
        return calls[len(done)] if len(done) < len(calls) else Text("edited app.py")

    mock = mock_api(script)
    engine = anthropic_engine(make, mock)
    job = run_job(engine, "Edit app.py", tasks=["Edit app.py"], timeout=90)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED and worker.status is WorkerStatus.SUCCESS, why
    assert job.config.isolation == "worktree"
    assert git(host, "show", f"{worker.commit}:app.py") == "print('v2')\nline two\n", why
    blocks = tool_results(mock.conversation[-1].body)
    assert [b["is_error"] for b in blocks] == [False, True, False], why
    assert "outside your working folder" in text_of(blocks[1])
    assert text_of(blocks[2]) == "exit code 0\n M app.py\n", why  # the command ran in the worktree
    assert snapshot(host, folder) == before


def test_three_workers_in_worktrees_of_a_host_repository_write_only_there(hosted_at_root, mock_api):
    def script(body):  # Write a.txt: a.txt by a path relative to its folder
        task = subtask(body) or "?"
        name = task.split()[-1]
        if tool_results(body):
            return Text(f"Wrote {name}")
        return ToolUse("write_file", {"path": name, "content": f"{task}\n"})

    mock = mock_api(script)
    three_files_in_worktrees(hosted_at_root, mock, **anthropic_sections(mock))


def test_the_ai_planner_runs_on_the_anthropic_kind(make_engine, mock_api):
    def script(body):
        if subtask(body) is None:  # the planner's prompt: no "# Your subtask"
            return Text('["Write a.md", "Write b.md"]', usage=usage(700, 30))
        return Text(f"Done: {subtask(body)}")

    mock = mock_api(script)
    engine = make_engine(
        orchestrator={"worker": "anthropic", "planner": "auto"},
        workers={"env": {"ANTHROPIC_BASE_URL": mock.url, "ANTHROPIC_API_KEY": KEY}},
        anthropic={"model": MODEL, "max_retries": 0},
    )
    job = run_job(engine, "Write the docs a.md and b.md", timeout=90)
    why = explain(engine, job, mock) + "\n" + "\n".join(job.notes)
    assert job.status is JobStatus.COMPLETED and job.planner == "ai", why
    assert job.tasks == ["Write a.md", "Write b.md"], why
    price = engine.settings.anthropic.prices[MODEL]
    assert job.planner_cost_usd == pytest.approx((700 * price["input"] + 30 * price["output"]) / 1e6), why


def test_candidates_on_two_models_are_priced_per_model_and_cheapest_merges_the_cheaper(hosted, mock_api):
    from .helpers.worktree import git, snapshot

    host, folder, make = hosted
    before = snapshot(host, folder)

    def script(body):  # the same work and the same token counts for both models
        if tool_results(body):
            return Text("wrote feature.txt", usage=usage(2000, 100))
        return ToolUse("write_file", {"path": "feature.txt", "content": body["model"] + "\n"}, usage=usage(1000, 50))

    mock = mock_api(script)
    engine = make(
        orchestrator={"worker": "anthropic", "planner": "heuristic"},
        workers={"env": {"ANTHROPIC_BASE_URL": mock.url, "ANTHROPIC_API_KEY": KEY}},
        anthropic={"max_retries": 0},
    )
    models = ["claude-opus-4-5", "claude-haiku-4-5"]
    config = {"candidates": [{"kind": "anthropic", "model": m} for m in models], "select": "cheapest"}
    job = run_job(engine, "feature", tasks=[{"id": "f", "task": "Write feature.txt"}], config=config, timeout=120)
    _, found = engine.queries.snapshot(job.root_id)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED, why
    by_model = {w.model: w for w in found}
    assert sorted(by_model) == sorted(models), why
    for model, worker in by_model.items():
        price = engine.settings.anthropic.prices[model]
        assert worker.cost_usd == pytest.approx((3000 * price["input"] + 150 * price["output"]) / 1e6), why
    assert job.selections["f"].winner == by_model["claude-haiku-4-5"].name, job.selections
    assert git(host, "show", f"orchestrator/{job.id}/result:feature.txt") == "claude-haiku-4-5\n"
    assert {r.body["model"] for r in mock.conversation} == set(models)
    assert snapshot(host, folder) == before


def test_a_401_fails_once_classified_auth(make_engine, mock_api):
    mock = mock_api([], default=AUTH_401)
    engine = anthropic_engine(make_engine, mock, workers={"max_retries": 2})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.FAILED and worker.status is WorkerStatus.FAILED, why
    assert worker.failure_class == "auth", why
    assert len(worker.attempts) == 1, f"a bad key must not be retried\n{why}"
    assert "401" in (worker.error or "") and "invalid x-api-key" in (worker.error or ""), why
    assert [r.turn for r in mock.requests] == ["ApiError 401"], why
    log, _ = engine.queries.read_log(worker)
    assert KEY not in log and KEY not in (worker.error or "")


def test_a_rate_limit_is_transient_with_the_services_retry_after(make_engine, mock_api):
    mock = mock_api([], default=ApiError(429, "rate_limit_error", "slow down", headers={"retry-after": "7"}))
    engine = anthropic_engine(make_engine, mock, workers={"transient_retries": 0})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.FAILED and worker.failure_class == "transient", why
    assert worker.attempts[-1].retry_after == 7.0, why


def test_max_turns_ends_the_loop_and_is_not_retried(make_engine, mock_api):
    mock = mock_api(lambda body: ToolUse("list_files", {}))
    engine = anthropic_engine(make_engine, mock, max_turns=2, workers={"max_retries": 2})
    job = run_job(engine, "Loop", tasks=["Loop"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1, why
    assert "max_turns (2)" in (worker.error or ""), why
    assert len(mock.conversation) == 2


def test_an_answer_cut_at_max_tokens_fails_and_says_which_setting(make_engine, mock_api):
    mock = mock_api([Text("half an answ", stop_reason="max_tokens")])
    engine = anthropic_engine(make_engine, mock, max_tokens=64, workers={"max_retries": 2})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.FAILED, why
    assert "max_tokens (64)" in (worker.error or "") and "anthropic.max_tokens" in (worker.error or ""), why
    assert mock.conversation[0].body["max_tokens"] == 64
    assert len(worker.attempts) == 1, f"a limit is not retried\n{why}"


def test_a_job_cancelled_while_a_request_hangs_ends_promptly_with_no_process_left(make_engine, mock_api):
    mock = mock_api([Hang()])
    engine = anthropic_engine(make_engine, mock, workers={"kill_grace": 5, "default_timeout": 120})
    job = engine.submission.submit("Say hi", None, ["Say hi"])
    tags = engine.worker_tags(job.id)
    wait_until(lambda: [r.turn for r in mock.requests] == ["Hang"], timeout=30, what="the request reached the mock")
    started = time.monotonic()
    engine.cancel(job.id)
    done = engine.queries.wait(job.id, 30)
    took = time.monotonic() - started
    worker = only_worker(engine, done)
    why = explain(engine, done, mock)
    assert done.status is JobStatus.CANCELLED and worker.status is WorkerStatus.CANCELLED, why
    # The first rung (SIGINT) ended it mid-request, well inside kill_grace: no SIGKILL.
    assert worker.attempts[0].kill_rung == "SIGINT", why
    assert took < 4.5, f"cancel took {took:.1f}s\n{why}"
    log, _ = engine.queries.read_log(worker)
    assert '"subtype": "stopped"' in log and "SIGINT" in log, why
    assert ProcessRunner().tagged(tags[0]) == []


def test_a_hanging_request_ends_in_timeout(make_engine, mock_api):
    mock = mock_api([Hang()])
    engine = anthropic_engine(make_engine, mock, workers={"default_timeout": 4, "kill_grace": 5})
    job = engine.submission.submit("Say hi", None, ["Say hi"])
    tags = engine.worker_tags(job.id)
    done = engine.queries.wait(job.id, 60)
    worker = only_worker(engine, done)
    why = explain(engine, done, mock)
    assert worker.status is WorkerStatus.TIMEOUT, why
    assert len(worker.attempts) == 1 and worker.attempts[0].end_reason == "timeout", why
    assert worker.attempts[0].kill_rung == "SIGINT", why
    assert worker.attempts[0].duration < 4 + 4, why
    assert ProcessRunner().tagged(tags[0]) == []


def test_a_timeout_mid_answer_keeps_the_tokens_the_stream_showed(make_engine, mock_api):
    # The model's stream starts (message_start: its input usage) and then stalls.
    mock = mock_api([Text("never finished", usage=usage(3000, 400, read=1000), stall=120)])
    # Long enough for the SDK's import and the request under load (10 s was not, under the parallel
    # slow tier: stopped before its request); the stall is far longer.
    engine = anthropic_engine(make_engine, mock, workers={"default_timeout": 30, "kill_grace": 5})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=120)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.TIMEOUT and worker.attempts[0].kill_rung == "SIGINT", why
    # Input exact (message_start's), output as far as it streamed (message_start says 1), priced.
    assert (worker.tokens_in, worker.tokens_out, worker.tokens_cache_read) == (4000, 1, 1000), why
    price = engine.settings.anthropic.prices[MODEL]
    expected = (3000 * price["input"] + 1 * price["output"] + 1000 * price["cache_read"]) / 1e6
    assert worker.cost_usd == pytest.approx(expected, rel=1e-9), why


def test_every_attempts_usage_counts_after_a_transient_retry(make_engine, mock_api):
    turns = [
        ToolUse("list_files", {}, usage=usage(500, 20, read=300)),
        ApiError(529, "overloaded_error", "Overloaded"),
        Text("done", usage=usage(100, 10, read=200)),
    ]
    mock = mock_api(turns)
    engine = anthropic_engine(make_engine, mock, workers={"transient_retries": 1})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.SUCCESS and len(worker.attempts) == 2, why
    assert worker.attempts[0].failure_class == "transient", why
    # Both attempts paid: the first's turn before the overload, and the second's.
    assert (worker.tokens_in, worker.tokens_out, worker.tokens_cache_read) == (800 + 300, 30, 500), why


ROOT_TASK = "Write the docs: a.md and b.md"


def tree_script(body):
    """The root's model starts a child job of two subtasks and reports what it printed; each
    child's model writes its file."""
    task, results = subtask(body), tool_results(body)
    if task == ROOT_TASK:
        if results:
            return Text("The child job said:\n" + text_of(results[-1]))
        return ToolUse("start_child_job", {"tasks": ["Write a.md", "Write b.md"]})
    if task in ("Write a.md", "Write b.md"):
        name = task.split()[-1]
        return Text(f"Done: {task}") if results else ToolUse("write_file", {"path": name, "content": f"# {name}\n"})
    return Text(f"unexpected prompt: {task!r}")


def test_a_worker_starts_a_child_job_of_anthropic_workers(make_live, mock_api):
    mock = mock_api(tree_script)
    live = make_live(
        orchestrator={"worker": "anthropic", "planner": "heuristic"},
        workers={"env": {"ANTHROPIC_BASE_URL": mock.url, "ANTHROPIC_API_KEY": KEY}},
        anthropic={"model": MODEL, "max_retries": 0},
    )
    submitted = live.submit(request=ROOT_TASK, tasks=[ROOT_TASK], config={"max_recursion_depth": 1})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    doc = live.wait(job_id, timeout=90)
    engine = live.engine
    jobs, workers = engine.queries.snapshot(job_id)
    why = explain(engine, jobs[0], mock) + "\n" + json.dumps(doc, indent=1)[:3000]
    assert doc["status"] == "completed", why
    root = next(w for w in workers if w.depth == 0)
    assert root.status is WorkerStatus.RECURSIVE_SUCCESS, why
    (child_id,) = root.child_job_ids
    children = [w for w in workers if w.depth == 1]
    assert sorted(f for w in children for f in w.files_created) == ["a.md", "b.md"], why
    assert all(w.job_id == child_id and w.kind == "anthropic" and w.status is WorkerStatus.SUCCESS for w in children)
    # The spawn's report came back to the root's model as the tool's result.
    spawned = [r for r in mock.conversation if subtask(r.body) == ROOT_TASK and tool_results(r.body)]
    assert spawned and f"Child job {child_id}: completed" in text_of(tool_results(spawned[-1].body)[-1]), why


# ----------------------------------------------------------------------------- the program alone


def run_worker(
    mock: MockModelServer, tmp_path: Path, prompt: str, *, wrap: tuple[str, ...] | list[str] = (), **env: str
) -> subprocess.CompletedProcess:
    (tmp_path / "work").mkdir(exist_ok=True)
    prompt_file = tmp_path / "prompt.md"
    prompt_file.write_text(prompt, encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", protocol.PREFIX))}
    full = {**base, "PYTHONPATH": str(ROOT), "ANTHROPIC_BASE_URL": mock.url, "ANTHROPIC_API_KEY": KEY, **env}
    argv = [*wrap, sys.executable, "-m", "orchestrator.workers.anthropic_worker", "--prompt-file", str(prompt_file)]
    argv += ["--root", str(tmp_path / "work"), "--model", MODEL, "--max-retries", "0"]
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=60, check=False)


def test_the_shared_context_block_is_sent_first_and_cached(tmp_path, mock_api):
    shared = "# Shared context\n\nThe request, the repository summary, the siblings.\n"
    block_file = tmp_path / "shared.md"
    block_file.write_text(shared, encoding="utf-8")
    mock = mock_api([Text("ok", usage=usage(10, 5, read=900)), Text("ok")])
    done = run_worker(mock, tmp_path, shared + "# Your subtask\n\nSay hi\n", **{protocol.SHARED_CONTEXT: str(block_file)})
    assert done.returncode == 0, done.stdout + done.stderr
    first = mock.conversation[0].body["messages"][0]["content"]
    assert first[0] == {"type": "text", "text": shared, "cache_control": {"type": "ephemeral"}}
    assert first[1] == {"type": "text", "text": "# Your subtask\n\nSay hi\n"}
    parsed = get_adapter("anthropic").parse(done.stdout, 0, max_chars=1000)
    assert parsed.ok is not False and parsed.tokens_cache_read == 900 and parsed.tokens_in == 910
    # A prompt that does not start with the block's text is sent whole, with no cached block.
    done = run_worker(mock, tmp_path, "Say hi\n" + shared, **{protocol.SHARED_CONTEXT: str(block_file)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert mock.conversation[1].body["messages"][0]["content"] == [{"type": "text", "text": "Say hi\n" + shared}]


def test_the_commands_it_runs_never_see_the_api_key(tmp_path, mock_api):
    show = [sys.executable, "-c", "import os; print(os.environ.get('ANTHROPIC_API_KEY', 'no key'))"]
    mock = mock_api([ToolUse("run_command", {"argv": show}), Text("ok")])
    done = run_worker(mock, tmp_path, "Say hi")
    assert done.returncode == 0, done.stdout + done.stderr
    assert text_of(result_of(mock.conversation[1].body)) == "exit code 0\nno key\n"
    assert KEY not in done.stdout + done.stderr


@pytest.mark.skipif(net_guard.STRACE is None, reason="strace not installed (Debian package strace; .ci/run installs it)")
def test_the_worker_connects_to_nothing_but_the_loopback_mock(tmp_path, mock_api):
    mock = mock_api([ToolUse("list_files", {}), Text("ok")])
    log = tmp_path / "connect.log"
    done = run_worker(mock, tmp_path, "Say hi", wrap=net_guard.traced([], log))
    assert done.returncode == 0 and len(mock.conversation) == 2, done.stdout + done.stderr
    net_guard.assert_only_loopback(log)


def test_a_context_with_no_tools_allowed_asks_for_one_answer_without_tools(tmp_path, mock_api):
    from orchestrator.workers.adapters.base import WorkerContext

    (tmp_path / "p.md").write_text("Which candidate is better? Answer JSON.")
    ctx = WorkerContext(
        task="judge",
        prompt="",
        prompt_file=tmp_path / "p.md",
        worker_dir=tmp_path,
        depth=0,
        max_recursion_depth=0,
        attempt=1,
        settings=make_settings(tmp_path),
        allowed_tools=(),  # what the judge gives: it only reads what it is shown
    )
    argv = get_adapter("anthropic").build_argv(ctx)
    assert "--no-tools" in argv
    mock = mock_api([Text('{"winner": "A"}')])  # its one request: the main one, though it offers no tool
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(ANTHROPIC_BASE_URL=mock.url, ANTHROPIC_API_KEY=KEY)
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (request,) = mock.requests
    assert "tools" not in request.body and "no tools" in request.body["system"][0]["text"]
    assert get_adapter("anthropic").parse(done.stdout, 0, max_chars=100).output == '{"winner": "A"}'


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_either_signal_of_the_kill_ladder_ends_a_hanging_request_at_once(tmp_path, mock_api, signum):
    mock = mock_api([Hang()])
    (tmp_path / "p.md").write_text("Say hi")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(PYTHONPATH=str(ROOT), ANTHROPIC_BASE_URL=mock.url, ANTHROPIC_API_KEY=KEY)
    argv = [sys.executable, "-m", "orchestrator.workers.anthropic_worker", "--prompt-file", str(tmp_path / "p.md")]
    proc = subprocess.Popen(
        [*argv, "--root", str(tmp_path), "--model", MODEL], env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_until(lambda: mock.requests, timeout=30, what="the request reached the mock")
        started = time.monotonic()
        os.killpg(proc.pid, signum)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    took = time.monotonic() - started
    assert proc.returncode == 128 + signum and took < 3, (proc.returncode, took)
    parsed = get_adapter("anthropic").parse(out.decode(), proc.returncode, max_chars=100)
    assert parsed.ok is False and f"stopped by {signal.Signals(signum).name}" in (parsed.error or "")


def test_no_api_key_is_an_auth_failure_without_a_request(tmp_path, mock_api):
    mock = mock_api([Text("never")])
    done = run_worker(mock, tmp_path, "Say hi", ANTHROPIC_API_KEY="")
    parsed = get_adapter("anthropic").parse(done.stdout, done.returncode, max_chars=1000)
    assert done.returncode == 1 and parsed.failure_class == "auth" and "workers.env" in (parsed.error or "")
    assert mock.requests == []


# ----------------------------------------------------------------------------- the tools and the argv


def test_tools_refuse_links_out_and_run_argv_lists_only(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "out").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "secret.txt")
    tools = Tools(root, command_timeout=2, output_chars=2000, env=os.environ)
    for name, args in [
        ("read_file", {"path": "out/secret.txt"}),
        ("read_file", {"path": "file-link"}),
        ("write_file", {"path": "out/new.txt", "content": "x"}),
        ("edit_file", {"path": "file-link", "old_string": "secret", "new_string": "x"}),
        ("list_files", {"path": "out"}),
        ("search", {"pattern": "secret", "path": "out"}),
        ("write_file", {"path": ".git/config", "content": "x"}),
    ]:
        text, is_error = tools.run(name, args)
        assert is_error, (name, args, text)
    assert (outside / "secret.txt").read_text() == "secret" and not (outside / "new.txt").exists()
    # A shell string is one program name, never a shell: nothing runs.
    text, is_error = tools.run("run_command", {"argv": "echo hi; touch pwned"})
    assert is_error and not (root / "pwned").exists()
    text, is_error = tools.run("run_command", {"argv": ["echo hi; touch pwned"]})
    assert is_error and "program not found" in text and not (root / "pwned").exists()
    # A command past its timeout is killed with whatever it started.
    started = time.monotonic()
    text, is_error = tools.run("run_command", {"argv": ["sh", "-c", "echo begun; sleep 30 & sleep 30"], "timeout": 1})
    assert is_error and "timed out after 1s" in text and "begun" in text
    assert time.monotonic() - started < 10
    # edit_file replaces an exact string once; list and search stay inside.
    assert tools.run("write_file", {"path": "a.py", "content": "x = 1\ny = 1\n"}) == ("wrote a.py (12 bytes)", False)
    assert tools.run("edit_file", {"path": "a.py", "old_string": "= 1", "new_string": "= 2"})[1] is True  # twice
    assert tools.run("edit_file", {"path": "a.py", "old_string": "y = 1", "new_string": "y = 2"})[1] is False
    assert (root / "a.py").read_text() == "x = 1\ny = 2\n"
    assert tools.run("search", {"pattern": r"y = \d"}) == ("a.py:2: y = 2", False)
    # Links are listed (never followed); the command's output is capped.
    assert tools.run("list_files", {})[0].splitlines() == ["a.py", "file-link", "out"]
    text, _ = tools.run("run_command", {"argv": [sys.executable, "-c", "print('x' * 10000)"]})
    assert len(text) < 2100 and "characters cut" in text


def test_the_argv_carries_the_settings_and_runs_the_servers_package_whatever_the_cwd(tmp_path, mock_api):
    from orchestrator.workers.adapters.base import WorkerContext

    settings = make_settings(tmp_path, anthropic={"model": "claude-opus-4-5-20251101", "max_turns": 7})
    # The cwd holds an orchestrator package of its own (a worktree of a repository that has one).
    work = tmp_path / "work"
    (work / "orchestrator").mkdir(parents=True)
    (work / "orchestrator" / "__init__.py").write_text("")
    (work / "orchestrator" / "anthropic_worker.py").write_text("print('the cwd copy ran'); raise SystemExit(9)\n")
    (tmp_path / "p.md").write_text("Say hi")
    ctx = WorkerContext(
        task="t",
        prompt="Say hi",
        prompt_file=tmp_path / "p.md",
        worker_dir=work,
        depth=0,
        max_recursion_depth=1,
        attempt=1,
        settings=settings,
    )
    argv = get_adapter("anthropic").build_argv(ctx)
    assert argv[argv.index("--model") + 1] == "claude-opus-4-5-20251101"
    assert argv[argv.index("--max-turns") + 1] == "7"
    assert argv[argv.index("--prices") + 1] == "5.0,25.0,6.25,0.5"  # the longest prefix, claude-opus-4-5
    assert prices_for(settings.anthropic.prices, "claude-unknown") is None
    with pytest.raises(Exception, match="cache_write"):
        make_settings(tmp_path, anthropic={"prices": {"m": {"input": 1, "output": 2}}})
    # Run as it is, in that cwd, without PYTHONPATH (as the AI planner runs a kind): the server's package runs.
    mock = mock_api([Text("hi", usage=usage(1000, 100))])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PYTHON"))}
    env.update(ANTHROPIC_BASE_URL=mock.url, ANTHROPIC_API_KEY=KEY)
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "cwd copy" not in done.stdout, done.stdout + done.stderr
    parsed = get_adapter("anthropic").parse(done.stdout, 0, max_chars=100)
    assert parsed.output == "hi" and parsed.cost_usd == pytest.approx((1000 * 5.0 + 100 * 25.0) / 1e6)


def test_run_command_never_times_out_the_spawn_command(tmp_path):
    # The prompt tells every AI worker to run orchestrator-spawn: a child job outlives any command
    # limit, so that program runs until it ends (the worker's own timeout still bounds it).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "orchestrator-spawn"
    fake.write_text('#!/bin/sh\nsleep 2\necho "child job done: $*"\n')
    fake.chmod(0o755)
    (tmp_path / "root").mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    tools = Tools(tmp_path / "root", command_timeout=1, output_chars=2000, env=env)
    assert tools.run("run_command", {"argv": ["orchestrator-spawn", "--wait", "A", "B"], "timeout": 600000}) == (
        "exit code 0\nchild job done: --wait A B\n",
        False,
    )
    text, is_error = tools.run("run_command", {"argv": ["sleep", "2"]})
    assert is_error and "timed out after 1s" in text
