"""The real ``gemini`` CLI (@google/gemini-cli 0.61.0) against a loopback mock of the Gemini API.

No model service is reached: ``tests/mock_gemini_server.py`` answers on 127.0.0.1, and gemini is
pointed at it with ``GOOGLE_GEMINI_BASE_URL``, an API key in ``GEMINI_API_KEY`` and a private
``GEMINI_CLI_HOME`` whose settings select the ``gemini-api-key`` auth type and turn usage
statistics off (the user's ~/.gemini is never read). Every run here is traced with strace, and
every connect must go to 127.0.0.1 (``tests/net_guard.py``). Install the CLI with
``tests/install_cli.sh``; without it these tests skip.

A bad key (400), a 401 and a 403 each fail once, at once, with gemini's own
message. gemini exits with the HTTP status modulo 256 (144, 145, 147): through the orchestrator
this needs the worker shim to record an exit code of 129-192 as an exit code, not a signal
(helper ``core``'s fix); the direct tests pin down what the CLI does.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.models import WorkerStatus
from orchestrator.workers.adapters import get_adapter

from .conftest import (
    explain,
    hang_ends_in_timeout,
    only_worker,
    run_job,
    three_files_in_worktrees,
    three_files_written,
)
from .helpers import real_gemini as real_gemini_helpers
from .helpers.real_gemini import API_KEY, GEMINI, gemini_env, gemini_home
from .mock_gemini_server import (
    BAD_KEY_400,
    PERMISSION_403,
    RATE_LIMIT_429,
    UNAUTHENTICATED_401,
    Call,
    Hang,
    MockGeminiServer,
    Text,
    function_responses,
    subtask,
    tool_names,
)
from .net_guard import STRACE, assert_only_loopback, trace_launches, traced

# The fixture this file shares with other test files (tests/helpers/real_gemini.py).
gemini_workers = real_gemini_helpers.gemini_workers

MODEL = "gemini-2.5-flash"  # named, so gemini skips its model router (a side request to a Flash Lite model)
CLI_TIMEOUT = 90

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_cli,
    pytest.mark.skipif(
        GEMINI is None, reason="gemini CLI not found at .cli/node_modules/.bin/gemini nor on PATH (run tests/install_cli.sh)"
    ),
    pytest.mark.skipif(STRACE is None, reason="strace not installed (Debian package strace)"),
]

AUTH_ERRORS = {400: BAD_KEY_400, 401: UNAUTHENTICATED_401, 403: PERMISSION_403}


def run_gemini(mock: MockGeminiServer, tmp: Path, prompt: str = "hello") -> tuple[int, str, str, float]:
    """gemini as the adapter runs it, under strace; (exit code, stdout, stderr, seconds)."""
    work = tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = tmp / "connect.log"
    started = time.monotonic()
    proc = subprocess.run(
        traced([GEMINI, f"--prompt={prompt}", "--output-format", "json", "--yolo", "--skip-trust", "-m", MODEL], log),
        cwd=work,
        env=gemini_env(mock, gemini_home(tmp / "home")),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert_only_loopback(log)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


# ----------------------------------------------------------------------------- direct


def test_plain_prompt_answers_with_tokens_and_stays_on_loopback(tmp_path):
    with MockGeminiServer([Text("Hello from the mock")], lifetime=CLI_TIMEOUT) as mock:
        code, out, err, _ = run_gemini(mock, tmp_path)
    assert code == 0, err
    parsed = get_adapter("gemini").parse(out + err, code, max_chars=10_000)
    assert parsed.output == "Hello from the mock" and parsed.ok is None
    assert (parsed.tokens_in, parsed.tokens_out) == (1300, 40)
    (request,) = mock.conversation
    assert request.headers["x-goog-api-key"] == API_KEY
    assert request.path.startswith(f"/v1beta/models/{MODEL}:streamGenerateContent")


@pytest.mark.parametrize("status", sorted(AUTH_ERRORS))
def test_bad_key_401_and_403_fail_at_once_with_gemini_s_message(tmp_path, status):
    error = AUTH_ERRORS[status]
    with MockGeminiServer([], default=error, lifetime=CLI_TIMEOUT) as mock:
        code, out, err, seconds = run_gemini(mock, tmp_path)
    assert code == status % 256, (code, err[-2000:])  # gemini's exit code: the status modulo 256
    assert [r.turn for r in mock.conversation] == [f"ApiError {status}"], mock.summary()  # no retry
    parsed = get_adapter("gemini").parse(out + err, code, max_chars=10_000)
    assert parsed.ok is False and parsed.failure_class == "auth" and parsed.retryable is False
    assert parsed.error.startswith(f"gemini: {error.message}"), parsed.error
    assert seconds < 60


# ----------------------------------------------------------------------------- orchestrator


def settings_for(program: str, **orchestrator):
    return {"worker": "gemini", "gemini_command": program, "planner": "heuristic", "model": MODEL, **orchestrator}


def worker_log(engine, job, worker) -> str:
    return (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text(errors="replace")


def write_the_subtasks_file(body):
    """``Write a.txt``: a.txt by a path relative to gemini's directory, then say so."""
    task = subtask(body) or "?"
    name = task.split()[-1]
    if function_responses(body):
        return Text(f"Wrote {name}")
    assert "write_file" in tool_names(body)
    return Call("write_file", {"file_path": name, "content": f"{task}\n"})


def test_three_gemini_workers_write_their_files_on_loopback_only(make_engine, gemini_workers, tmp_path, monkeypatch):
    mock = gemini_workers(write_the_subtasks_file)
    traces = trace_launches(monkeypatch, tmp_path / "traces")
    engine = make_engine(orchestrator=settings_for(GEMINI), workers={"default_timeout": 120})
    job, workers, why = three_files_written(engine, mock)
    for worker in workers:
        name = worker.task.split()[-1]
        assert worker.output == f"Wrote {name}", why
        assert worker.tokens_in and worker.tokens_in >= 2600, why  # two model calls of 1300 prompt tokens
        # gemini reports tokens, never a cost: estimated from the price table (gemini-2.5-flash, by request)
        assert worker.cost_basis == "estimated" and worker.cost_usd and 0 < worker.cost_usd < 0.01, why
    assert_only_loopback(*sorted(traces.glob("connect.*")))


def test_in_worktrees_of_a_host_repository_each_file_lands_in_its_own_worktree(
    hosted_at_root, gemini_workers, tmp_path, monkeypatch
):
    mock = gemini_workers(write_the_subtasks_file)
    traces = trace_launches(monkeypatch, tmp_path / "traces")
    three_files_in_worktrees(hosted_at_root, mock, orchestrator=settings_for(GEMINI), workers={"default_timeout": 120})
    assert_only_loopback(*sorted(traces.glob("connect.*")))


@pytest.mark.parametrize("status", sorted(AUTH_ERRORS))
def test_auth_failure_fails_the_worker_once_at_once_with_gemini_s_message(make_engine, gemini_workers, status):
    """Needs the shim to read exit codes 129-192 as exit codes (helper core's fix): before it, 403
    (exit 147) stops the shim with SIGSTOP and the worker ends only at its timeout."""
    error = AUTH_ERRORS[status]
    mock = gemini_workers([], default=error)
    engine = make_engine(orchestrator=settings_for(GEMINI), workers={"max_retries": 2, "default_timeout": 60})
    started = time.monotonic()
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=120)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.FAILED, why
    assert len(worker.attempts) == 1, f"an auth failure must not be retried\n{why}"
    assert worker.attempts[0].exit_code == status % 256, why
    assert worker.error and worker.error.startswith(f"gemini: {error.message}"), why
    assert time.monotonic() - started < 45, why
    assert [r.turn for r in mock.conversation] == [f"ApiError {status}"], why
    parsed = get_adapter("gemini").parse(worker_log(engine, job, worker), status % 256, max_chars=10_000)
    assert parsed.failure_class == "auth"


def test_rate_limit_is_classified_transient(make_engine, gemini_workers):
    mock = gemini_workers([], default=RATE_LIMIT_429)
    # A transient failure is retried by the orchestrator even with max_retries 0 (here once)
    engine = make_engine(
        orchestrator=settings_for(GEMINI),
        workers={"max_retries": 0, "transient_retries": 1, "retry_backoff": 0.05, "default_timeout": 90},
    )
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=150)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 2, why
    assert worker.failure_class == "transient" and [a.failure_class for a in worker.attempts] == ["transient"] * 2, why
    assert "Resource has been exhausted" in (worker.error or ""), why
    # the adapter's general.maxAttempts (3; gemini's default is 10): gemini's own retries stop after three requests
    assert all(r.turn == "ApiError 429" for r in mock.conversation) and len(mock.conversation) == 3 * len(worker.attempts), why
    home = engine.workspace.state_dir(job.root_id) / "prompts" / "depth_0_worker_1.gemini-home" / ".gemini"
    settings = json.loads((home / "settings.json").read_text())
    assert settings["general"]["maxAttempts"] == 3 and settings["tools"]["shell"]["inactivityTimeout"] == 90
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"  # the user's own settings kept
    parsed = get_adapter("gemini").parse(worker_log(engine, job, worker), 429 % 256, max_chars=10_000)
    assert (parsed.failure_class, parsed.retryable) == ("transient", True)


def test_a_hanging_model_call_ends_in_timeout_with_no_process_left(make_engine, gemini_workers):
    mock = gemini_workers([Hang()])
    engine = make_engine(orchestrator=settings_for(GEMINI), workers={"default_timeout": 30, "kill_grace": 0.5})
    worker, why = hang_ends_in_timeout(engine, mock, wait=90)
    assert [r.turn for r in mock.conversation] == ["Hang"], why
