"""The real ``codex`` CLI against a loopback mock of the OpenAI Responses API.

No model service is reached: ``tests/mock_openai_server.py`` plays a scripted conversation on
127.0.0.1 and codex is pointed at it with a model provider of its own, given as ``-c`` overrides
(``orchestrator.cli_args`` for workers; see ``MockOpenAIServer.codex_args``), the key in
$MOCK_OPENAI_KEY, and a private ``CODEX_HOME`` so the user's config and auth are never read.
Install the CLI with ``tests/install_cli.sh`` (into .cli/); without it these tests skip.

Two groups:

* direct: the binary alone, pinning down the contract the codex adapter relies on
  (JSONL ``item.completed``/``turn.completed``, ``turn.failed`` on a 401);
* through the orchestrator: real codex workers run by the Engine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.workers.adapters import get_adapter
from orchestrator.workers.adapters.base import WorkerContext

from .conftest import (
    explain,
    find_cli,
    make_settings,
    only_in_their_worktrees,
    only_worker,
    run_job,
    three_files_in_worktrees,
    three_files_written,
)
from .helpers.codex_race import STRACE
from .helpers.worktree import snapshot
from .mock_openai_server import (
    AUTH_401,
    ENV_KEY,
    ApiError,
    Hang,
    MockOpenAIServer,
    ShellCall,
    Text,
    function_outputs,
    prompt_text,
    subtask,
    tool_names,
)

CODEX = find_cli("codex")
API_KEY = "sk-mock-openai-0000"
# A model codex 0.169.0 offers its classic function tools to (exec_command ...); its default model
# gets a JavaScript "exec" tool instead, which the mock does not speak.
MODEL = "gpt-5-codex"
CLI_TIMEOUT = 60  # one direct run; a healthy one takes about 0.5 s

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_cli,
    pytest.mark.skipif(
        CODEX is None, reason="codex CLI not found at .cli/node_modules/.bin/codex nor on PATH (run tests/install_cli.sh)"
    ),
]


def codex_env(home: Path) -> dict[str, str]:
    """os.environ without OpenAI/codex/orchestrator variables, plus the mock key and a private CODEX_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "ORCHESTRATOR"))}
    env.update({"CODEX_HOME": str(home), ENV_KEY: API_KEY})
    return env


def run_codex(mock: MockOpenAIServer, cwd: Path, *args: str, prompt: str = "hello") -> tuple[int, list[dict], str]:
    """``codex exec --json`` as the adapter runs it; (exit code, JSONL events, stderr)."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            CODEX,
            "exec",
            "--json",
            "-C",
            str(cwd),
            "--skip-git-repo-check",
            "--sandbox",
            "workspace-write",
            *mock.codex_args(),
            *args,
            "--",
            prompt,
        ],
        cwd=cwd,
        env=codex_env(cwd.parent / "codex-home"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    if not events:
        pytest.fail(
            f"codex printed no JSON (exit {proc.returncode}).\nstdout: {proc.stdout[-2000:]}\n"
            f"stderr: {proc.stderr[-2000:]}\nmock saw:\n{mock.summary()}"
        )
    return proc.returncode, events, proc.stderr


def only_responses_endpoint(mock: MockOpenAIServer) -> None:
    assert mock.requests, "codex made no request to the mock"
    other = [p for p in mock.paths if p != "POST /v1/responses"]
    assert not other, f"unexpected endpoints: {other}"


# ----------------------------------------------------------------------------- the mock itself


def test_mock_streams_a_response_404s_the_rest_and_stops_by_itself():
    import requests

    with MockOpenAIServer([Text("plain")], lifetime=CLI_TIMEOUT) as mock:
        answer = requests.post(mock.url + "/v1/responses", json={"model": "m", "stream": True, "input": []}, timeout=10)
        events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
        assert [e["type"] for e in events] == [
            "response.created",
            "response.output_item.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_item.done",
            "response.completed",
        ]
        assert events[-1]["response"]["usage"]["input_tokens"] == 1500
        assert requests.get(mock.url + "/v1/models", timeout=10).status_code == 404
        assert mock.paths == ["POST /v1/responses", "GET /v1/models"]
    mock = MockOpenAIServer([Hang()], lifetime=1.0).start()
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.post(mock.url + "/v1/responses", json={}, timeout=10)
    assert mock.stopped and time.monotonic() - started < 5
    # Its lifetime's timer running late (a loaded machine: CI once saw it) must not end a held
    # request before the server stops: the held request stops the server itself.
    late = MockOpenAIServer([Hang()], lifetime=1.0).start()
    assert late._timer is not None
    late._timer.cancel()
    with pytest.raises(requests.ConnectionError):
        requests.post(late.url + "/v1/responses", json={}, timeout=10)
    assert late.stopped


# ----------------------------------------------------------------------------- direct


def test_version_is_the_pinned_one():
    out = subprocess.run([CODEX, "--version"], capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("codex-cli ")


def test_plain_prompt_gives_an_agent_message_and_usage(tmp_path):
    with MockOpenAIServer([Text("Hello from the mock")], lifetime=CLI_TIMEOUT) as mock:
        code, events, _ = run_codex(mock, tmp_path / "work", "-m", MODEL)
    assert code == 0, events
    messages = [e["item"]["text"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]
    assert messages == ["Hello from the mock"]
    (done,) = [e for e in events if e["type"] == "turn.completed"]
    assert done["usage"]["input_tokens"] == 1500 and done["usage"]["output_tokens"] == 60
    assert done["usage"]["cached_input_tokens"] == 300
    only_responses_endpoint(mock)
    (request,) = mock.requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["stream"] is True and request.body["model"] == MODEL
    assert "exec_command" in tool_names(request.body)
    assert "hello" in json.dumps(request.body["input"])


def test_bad_key_gives_turn_failed_with_the_status(tmp_path):
    with MockOpenAIServer([], default=AUTH_401, lifetime=CLI_TIMEOUT) as mock:
        code, events, _ = run_codex(mock, tmp_path / "work")
    assert code == 1
    (failed,) = [e for e in events if e["type"] == "turn.failed"]
    assert failed["error"]["message"].startswith("unexpected status 401 Unauthorized: Incorrect API key provided")
    assert [r.turn for r in mock.requests] == ["ApiError 401"]  # request_max_retries=0
    only_responses_endpoint(mock)


def run_as_worker(mock: MockOpenAIServer, work: Path, *extra_args: str, time_left: float = 1800.0, retries: int = 0):
    """codex run exactly as the codex adapter runs a worker (its argv), parsed by the adapter;
    returns (exit code, ParsedResult, stdout + stderr)."""
    work.mkdir(parents=True, exist_ok=True)
    settings = make_settings(
        work.parent,
        orchestrator={
            "worker": "codex",
            "codex_command": CODEX,
            "model": MODEL,
            "cli_args": [*mock.codex_args(retries=retries), *extra_args],
        },
    )
    ctx = WorkerContext(
        task="hello",
        prompt="hello",
        prompt_file=work / "prompt.md",
        worker_dir=work,
        depth=0,
        max_recursion_depth=1,
        attempt=1,
        settings=settings,
        time_left=time_left,
        env=(env := codex_env(work.parent / "codex-home")),  # the adapter reads the worker's environment
    )
    adapter = get_adapter("codex")
    proc = subprocess.run(
        adapter.build_argv(ctx), cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    text = proc.stdout + proc.stderr
    return proc.returncode, adapter.parse(text, proc.returncode, max_chars=2000), text


def test_the_shell_poll_limit_the_adapter_raises_is_a_setting_codex_knows(tmp_path, monkeypatch):
    # --strict-config refuses unknown keys, -c overrides included (a misspelt one fails): the
    # adapter's background_terminal_max_timeout is one codex 0.169.0 reads.
    with MockOpenAIServer([Text("hi")], lifetime=CLI_TIMEOUT) as mock:
        code, parsed, text = run_as_worker(mock, tmp_path / "a", "--strict-config")
    assert code == 0 and parsed.output == "hi", text
    assert "background_terminal_max_timeout=1800000" in get_adapter("codex").build_argv(
        WorkerContext(
            task="t",
            prompt="t",
            prompt_file=tmp_path / "p",
            worker_dir=tmp_path,
            depth=0,
            max_recursion_depth=1,
            attempt=1,
            settings=make_settings(tmp_path, orchestrator={"worker": "codex"}),
            time_left=1800.0,
            env={"CODEX_HOME": str(tmp_path / "codex-home")},  # where the adapter looks for the user's own value
        )
    )
    with MockOpenAIServer([Text("hi")], lifetime=CLI_TIMEOUT) as mock:
        code, parsed, text = run_as_worker(mock, tmp_path / "b", "--strict-config", "-c", "background_terminal_max_timeoutt=1")
    assert code == 1 and "unknown configuration field" in text


@pytest.mark.parametrize(
    "error, failure_class",
    [
        (AUTH_401, "auth"),
        (ApiError(429, "rate_limit_exceeded", "Rate limit reached for requests.", "requests", {"retry-after": "1"}), "transient"),
        (ApiError(503, "server_error", "The server is overloaded.", "server_error"), "transient"),
    ],
)
def test_failures_are_classified_from_codexs_own_words(tmp_path, monkeypatch, error, failure_class):
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    with MockOpenAIServer([], default=error, lifetime=CLI_TIMEOUT) as mock:
        code, parsed, text = run_as_worker(mock, tmp_path / "work")
    assert code == 1 and parsed.ok is False, text
    assert parsed.failure_class == failure_class, (parsed, text[-1500:])
    assert parsed.retryable is (failure_class == "transient")
    assert str(error.status) in parsed.error


def test_codex_waits_a_429s_retry_after_itself(tmp_path, monkeypatch):
    # Its own retries (request_max_retries) keep the conversation; each waits the service's retry-after.
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    error = ApiError(429, "rate_limit_exceeded", "Rate limit reached for requests.", "requests", {"retry-after": "1"})
    with MockOpenAIServer([], default=error, lifetime=CLI_TIMEOUT) as mock:
        code, parsed, text = run_as_worker(mock, tmp_path / "work", retries=2)
    assert parsed.failure_class == "transient", text
    assert len(mock.requests) == 3 and all(b.at - a.at >= 0.9 for a, b in zip(mock.requests, mock.requests[1:]))


# ----------------------------------------------------------------------------- orchestrator


@pytest.fixture
def codex_workers(monkeypatch, tmp_path):
    """Start a mock, give workers a private CODEX_HOME and the key through the environment the
    engine copies; returns the mock. ``worker_settings(mock)`` points codex at it."""
    started = []

    def start(script, *, lifetime=90.0, default=None):
        mock = MockOpenAIServer(script, lifetime=lifetime, default=default).start()
        started.append(mock)
        for name in [n for n in os.environ if n.startswith(("OPENAI_", "CODEX_"))]:
            monkeypatch.delenv(name)
        home = tmp_path / "codex-home"
        home.mkdir(exist_ok=True)
        monkeypatch.setenv("CODEX_HOME", str(home))
        monkeypatch.setenv(ENV_KEY, API_KEY)
        return mock

    yield start
    for mock in started:
        mock.stop()


def worker_settings(mock: MockOpenAIServer, **orchestrator):
    return {
        "worker": "codex",
        "codex_command": CODEX,
        "planner": "heuristic",
        "model": MODEL,
        "cli_args": mock.codex_args(),
        **orchestrator,
    }


def mock_call_id(mock: MockOpenAIServer) -> str:
    """The call_id of the one function_call the mock sent (codex echoes it in its function_call_output)."""
    (call,) = [i for i in mock.requests[-1].body["input"] if i.get("type") == "function_call"]
    return call["call_id"]


def test_codex_worker_answers_with_the_scripted_text_and_tokens(make_engine, codex_workers):
    mock = codex_workers([Text("The answer is 42.")])
    engine = make_engine(orchestrator=worker_settings(mock))
    job = run_job(engine, "Say the answer", tasks=["Say the answer"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED, why
    assert worker.status is WorkerStatus.SUCCESS, why
    assert worker.output.strip() == "The answer is 42.", why
    assert (worker.tokens_in, worker.tokens_out) == (1500, 60), why
    # codex reports tokens, never a cost: estimated from the price table (gpt-5-codex: OpenAI's gpt-5 prices)
    cached = worker.tokens_cache_read or 0
    assert worker.cost_basis == "estimated", why
    assert worker.cost_usd == pytest.approx(((1500 - cached) * 1.25 + cached * 0.125 + 60 * 10.0) / 1e6), why
    on_disk = engine.workspace.load_worker(job.root_id, 0, worker.name)
    assert (on_disk.tokens_in, on_disk.tokens_out) == (1500, 60)
    assert worker.files_created == []
    only_responses_endpoint(mock)
    (request,) = mock.requests
    assert subtask(request.body) == "Say the answer", why
    assert request.body["model"] == MODEL


def test_bad_key_fails_the_worker_once_with_the_codex_message(make_engine, codex_workers):
    mock = codex_workers([], default=AUTH_401)
    engine = make_engine(orchestrator=worker_settings(mock), workers={"max_retries": 2})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.FAILED, why
    assert worker.status is WorkerStatus.FAILED, why
    assert worker.error and worker.error.startswith("codex: unexpected status 401 Unauthorized"), why
    assert "Incorrect API key provided" in worker.error, why
    assert len(worker.attempts) == 1, f"a bad key must not be retried\n{why}"
    assert [r.turn for r in mock.requests] == ["ApiError 401"], why


def test_a_hanging_model_call_ends_in_timeout_with_no_process_left(make_engine, codex_workers):
    mock = codex_workers([Hang()])
    engine = make_engine(orchestrator=worker_settings(mock), workers={"default_timeout": 5, "kill_grace": 0.5})
    job = engine.submission.submit("Say hi", None, ["Say hi"])
    tags = engine.worker_tags(job.id)
    assert len(tags) == 1
    done = engine.queries.wait(job.id, 30)
    worker = only_worker(engine, done)
    why = explain(engine, done, mock)
    assert done.status is JobStatus.FAILED, why
    assert worker.status is WorkerStatus.TIMEOUT, why
    assert len(worker.attempts) == 1 and worker.attempts[0].end_reason == "timeout", why
    assert [r.turn for r in mock.requests] == ["Hang"], why
    assert worker.attempts[0].kill_rung in ("SIGINT", "SIGTERM"), worker.attempts[0]
    assert engine.runner.tagged(tags[0]) == []


def test_codex_shell_tool_writes_a_file_that_shows_in_files_created(make_engine, codex_workers):
    def script(body):
        if function_outputs(body):
            return Text("Created notes.md")
        return ShellCall(["bash", "-lc", "printf '# Notes\\n' > notes.md"])

    mock = codex_workers(script)
    engine = make_engine(orchestrator=worker_settings(mock))
    job = run_job(engine, "Write notes.md", tasks=["Write notes.md"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED, why
    assert worker.status is WorkerStatus.SUCCESS, why
    folder = engine.workspace.worker_dir(job.root_id, 0, worker.name)
    assert (folder / "notes.md").read_text() == "# Notes\n", why
    assert worker.files_created == ["notes.md"], why
    assert worker.output.strip() == "Created notes.md", why
    # Two model calls; codex sums their usage in its one turn.completed.
    assert (worker.tokens_in, worker.tokens_out) == (3000, 120), why
    (output,) = function_outputs(mock.requests[-1].body)
    assert output["call_id"] == mock_call_id(mock) and "Process exited with code 0" in output["output"], output
    only_responses_endpoint(mock)


def _writes_by_shell(*, said: bool):
    """A model's script for "Write a.txt": a.txt written by codex's shell tool in its directory, then
    its answer (``said``: with what the command printed, a failure's message included)."""

    def script(body):
        task = subtask(body) or "?"
        name = task.split()[-1]
        if function_outputs(body):
            return Text(f"Wrote {name}: {function_outputs(body)[0]['output']}" if said else f"Wrote {name}")
        return ShellCall(["bash", "-lc", f"printf '%s\\n' '{task}' > {name}"])

    return script


def test_in_worktrees_of_a_host_repository_each_file_lands_in_its_own_worktree(hosted_at_root, codex_workers):
    """Sandboxed, codex runs with --sandbox danger-full-access: its own sandbox is a bubblewrap,
    which cannot start inside the orchestrator's ("setting up uid map: Operation not permitted")."""

    mock = codex_workers(_writes_by_shell(said=False))
    three_files_in_worktrees(hosted_at_root, mock, orchestrator=worker_settings(mock), workers={"default_timeout": 120})


@pytest.mark.skipif(STRACE is None, reason="strace not found: it widens the moment the race is lost in")
def test_codex_workers_that_lose_their_sandbox_helper_to_each_other_still_run_their_commands(
    hosted, codex_workers, monkeypatch, tmp_path
):
    """Three codex workers at once, unsandboxed (codex's own workspace-write sandbox runs each command
    through its ``codex-linux-sandbox`` link), each losing its helper folder to another codex's start
    (helpers.codex_race: the real codex, the moment widened by strace; under the orchestrator's sandbox
    strace cannot trace). Without the adapter's links every command failed: ``bwrap: execvp
    codex-linux-sandbox: No such file or directory``."""
    from orchestrator.workers.adapters.codex import native_binary

    from .helpers.codex_race import racing_codex

    mock = codex_workers(_writes_by_shell(said=True))
    native = native_binary(CODEX, os.environ.get("PATH", ""))
    assert native is not None, CODEX
    command = racing_codex(tmp_path / "racing", native)
    host, folder, make = hosted
    monkeypatch.chdir(host)
    monkeypatch.setenv("PWD", str(host))
    before = snapshot(host, folder)
    engine = make(orchestrator={**worker_settings(mock), "codex_command": str(command)}, workers={"sandbox": "off"})
    job, workers, why = three_files_written(engine, mock)
    only_in_their_worktrees((host, folder, make), engine, job, before, why)
    # Each lost the race (codex said so) and ran its command through the links all the same.
    for worker in workers:
        log = engine.workspace.worker_paths(job.root_id, 0, worker.name).log.read_text(errors="replace")
        assert "could not create PATH aliases" in log, why


def test_a_codex_worker_starts_a_child_job_with_orchestrator_spawn(make_live, codex_workers):
    # The same one command as every CLI: codex's shell tool finds orchestrator-spawn on the
    # worker's PATH, inside codex's workspace-write sandbox (network on for the API).
    root_task = "Write the docs: a.md and b.md"

    def script(body):
        task = subtask(body)
        outputs = function_outputs(body)
        if task == root_task:
            if outputs:
                return Text("The child job said:\n" + str(outputs[-1]["output"]))
            asked = re.search(r'"timeout": (\d+)', prompt_text(body))
            return ShellCall(
                ["bash", "-lc", 'orchestrator-spawn --wait "Write a.md" "Write b.md"'],
                options={"yield_time_ms": int(asked.group(1))} if asked else {},
            )
        return Text(f"Done: {task}")

    mock = codex_workers(script)
    live = make_live(orchestrator=worker_settings(mock))
    submitted = live.submit(request=root_task, tasks=[root_task], config={"max_recursion_depth": 1})
    assert submitted.status_code in (200, 201, 202), submitted.text
    job_id = submitted.json()["job_id"]
    doc = live.wait(job_id, timeout=90)
    jobs, workers = live.engine.queries.snapshot(job_id)
    why = explain(live.engine, jobs[0], mock) + "\n" + json.dumps(doc, indent=1)[:3000]
    assert doc["status"] == "completed", why
    root_worker = next(w for w in workers if w.depth == 0)
    assert len(root_worker.child_job_ids) == 1, why + "\n" + root_worker.output
    (child_id,) = root_worker.child_job_ids
    assert sorted(w.task for w in workers if w.depth == 1) == ["Write a.md", "Write b.md"], why
    assert f"Child job {child_id}: completed" in root_worker.output, why
    assert "Done: Write a.md" in root_worker.output, why


def test_continue_resumes_the_codex_thread_it_recorded(hosted_at_root, codex_workers):
    """``codex exec ... resume THREAD_ID PROMPT``: the second round's request holds the first round's
    conversation (its task and its answer) before the feedback."""
    from .conftest import wait_until
    from .helpers.worktree import snapshot, workers

    def script(body):
        said = json.dumps(body.get("input"))
        return Text("Second answer." if "FEEDBACK-TWO" in said else "First answer.")

    mock = codex_workers(script)
    host, folder, make = hosted_at_root
    before = snapshot(host, folder)
    engine = make(orchestrator=worker_settings(mock), workers={"default_timeout": 120})
    job = run_job(engine, "Say the answer", tasks=["Say the answer"], config={"max_retries": 0}, timeout=120)
    why = explain(engine, job, mock)
    first = workers(engine, job)["worker_1"]
    assert first.status is WorkerStatus.SUCCESS and first.session_id, why
    asked_before = len(mock.requests)
    started = engine.continue_worker(job.id, "worker_1", "FEEDBACK-TWO: say it again")
    assert started["round"]["resumed_session"] == first.session_id
    rec = wait_until(lambda: (r := workers(engine, job)["worker_1"]).rounds and r.rounds[0].state != "running" and r, timeout=120)
    why = explain(engine, job, mock)
    argv = rec.attempts[-1].argv or []
    assert rec.rounds[0].state == "success" and argv[argv.index("resume") + 1] == first.session_id, why
    said = json.dumps(mock.requests[asked_before].body["input"])
    assert "Say the answer" in said and "First answer." in said and "FEEDBACK-TWO" in said, why
    assert rec.output.strip() == "Second answer.", why
    assert snapshot(host, folder) == before


# ----------------------------------------------------------------------------- its endpoint, under the default network


def provider_config(mock: MockOpenAIServer) -> str:
    """A config.toml as a user writes one for a local gateway: a provider of its own, chosen."""
    return (
        'model_provider = "gateway"\n\n[model_providers.gateway]\nname = "local gateway"\n'
        f'base_url = "{mock.url}/v1"\nwire_api = "responses"\nenv_key = "{ENV_KEY}"\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
    )


def file_state(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mtime_ns, info.st_mode


def gateway_settings(**orchestrator):
    return {"worker": "codex", "codex_command": CODEX, "planner": "heuristic", "model": MODEL, **orchestrator}


def test_a_provider_in_the_users_config_toml_is_reached_under_the_default_network(make_engine, codex_workers, tmp_path):
    # The endpoint is in $CODEX_HOME/config.toml alone (no cli_args, no OPENAI_BASE_URL): the server
    # read it at its start, before any worker ran, and its workers' proxy lets them reach it. Before,
    # every worker printed "Reconnecting... waiting for network" until its timeout.
    mock = codex_workers([Text("The answer is 42.")])
    config = tmp_path / "codex-home" / "config.toml"
    config.write_text(provider_config(mock))
    before = file_state(config)
    engine = make_engine(orchestrator=gateway_settings(), workers={"default_timeout": 40})
    job = run_job(engine, "Say the answer", tasks=["Say the answer"], timeout=60)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert engine.settings.workers.sandbox_network == "allow" and worker.sandbox in ("bubblewrap", "landlock"), why
    assert job.status is JobStatus.COMPLETED and worker.output.strip() == "The answer is 42.", why
    only_responses_endpoint(mock)
    assert file_state(config) == before  # the user's config, untouched


def test_a_provider_named_after_the_start_is_reached_once_sandbox_allow_lists_it(make_engine, codex_workers, tmp_path):
    # The file changed after the server started (what a worker could have done): it opens nothing,
    # and the setting the refusal names (workers.sandbox_allow) is what opens it.
    mock = codex_workers([Text("Listed.")])
    engine = make_engine(
        orchestrator=gateway_settings(), workers={"default_timeout": 40, "sandbox_allow": [mock.url.removeprefix("http://")]}
    )
    (tmp_path / "codex-home" / "config.toml").write_text(provider_config(mock))
    job = run_job(engine, "Say it", tasks=["Say it"], timeout=60)
    why = explain(engine, job, mock)
    assert job.status is JobStatus.COMPLETED and only_worker(engine, job).output.strip() == "Listed.", why


def test_a_provider_named_after_the_start_refuses_the_job_naming_the_setting(make_engine, codex_workers, tmp_path):
    from orchestrator.errors import ConfigError

    mock = codex_workers([Text("never asked")])
    engine = make_engine(orchestrator=gateway_settings(), workers={"default_timeout": 40})
    (tmp_path / "codex-home" / "config.toml").write_text(provider_config(mock))
    with pytest.raises(ConfigError) as refused:
        engine.submission.submit("Say it", None, ["Say it"])
    message = refused.value.message
    assert mock.url.removeprefix("http://") in message and "workers.sandbox_allow" in message, message
    assert "model provider gateway in" in message, message
    assert mock.requests == [] and engine.queries.list_jobs() == []
