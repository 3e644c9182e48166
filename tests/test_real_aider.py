"""The real ``aider`` CLI (aider-chat 0.86.2, in .cli/aider-venv) against a loopback mock of the
OpenAI Chat Completions API.

No model service is reached: ``tests/mock_chat_server.py`` answers on 127.0.0.1; aider (through
litellm) is pointed at it with ``OPENAI_API_BASE`` and ``--model openai/mock-model``. Nothing is
fetched: ``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps litellm on its bundled cost map, and a
``--model-metadata-file`` naming the model (with a price, so aider prints costs) keeps aider from
downloading litellm's model list. ``HOME`` is private. Every run is traced with strace and every
connect must go to 127.0.0.1 (``tests/net_guard.py``). Install with ``tests/install_cli.sh``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from orchestrator.models import WorkerStatus
from orchestrator.workers.adapters import get_adapter

from .conftest import (
    ROOT,
    explain,
    hang_ends_in_timeout,
    only_worker,
    run_job,
    three_files_in_worktrees,
    three_files_written,
)
from .mock_chat_server import AUTH_401, ApiError, Hang, MockChatServer, Text, subtask
from .net_guard import STRACE, assert_only_loopback, trace_launches

AIDER = ROOT / ".cli" / "bin" / "aider"
MODEL = "openai/mock-model"
# $2.5 and $10 per million tokens: aider prints "Cost: $… message, $… session."
METADATA = {
    MODEL: {
        "max_input_tokens": 128000,
        "max_output_tokens": 4096,
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "litellm_provider": "openai",
        "mode": "chat",
    }
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_cli,
    pytest.mark.skipif(not AIDER.exists(), reason="aider not found at .cli/bin/aider (run tests/install_cli.sh)"),
    pytest.mark.skipif(STRACE is None, reason="strace not installed (Debian package strace)"),
]


@pytest.fixture
def aider_workers(monkeypatch, tmp_path):
    """Start a mock; point workers' aider at it through the environment the engine copies.
    Returns ``start(script) -> (mock, orchestrator settings)``; each worker runs under strace."""
    started = []
    traces = tmp_path / "traces"

    def start(script, *, lifetime=200.0, default=None, traced=True):
        mock = MockChatServer(script, lifetime=lifetime, default=default).start()
        started.append(mock)
        for name in [n for n in os.environ if n.startswith(("OPENAI", "AIDER", "ANTHROPIC", "LITELLM"))]:
            monkeypatch.delenv(name)
        home = tmp_path / "aider-home"
        home.mkdir(exist_ok=True)
        metadata = tmp_path / "model-metadata.json"
        metadata.write_text(json.dumps(METADATA))
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("OPENAI_API_BASE", mock.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-mock-0000")
        monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        program = str(AIDER)
        if traced:
            trace_launches(monkeypatch, traces)
        settings = {
            "worker": "aider",
            "aider_command": program,
            "planner": "heuristic",
            "model": MODEL,
            "cli_args": ["--edit-format", "whole", "--model-metadata-file", str(metadata)],
        }
        return mock, settings

    start.traces = traces
    yield start
    for mock in started:
        mock.stop()


def traces_of(start) -> list[Path]:
    return sorted(Path(start.traces).glob("connect.*"))


def write_the_subtasks_file(body):
    """``Write a.txt``: a.txt in aider's "whole" edit format (the file's full content)."""
    task = subtask(body) or "?"
    return Text(f"{task.split()[-1]}\n```\n{task}\n```\n")


def test_three_aider_workers_write_files_sum_their_costs_and_stay_on_loopback(make_engine, aider_workers):
    mock, settings = aider_workers(write_the_subtasks_file)
    engine = make_engine(orchestrator=settings, workers={"default_timeout": 120})
    job, workers, why = three_files_written(engine, mock)
    for worker in workers:
        name = worker.task.split()[-1]
        log = (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text()
        assert "Applied edit to " + name in log, why
        assert worker.cost_usd and worker.cost_usd > 0, why  # from "Cost: $… message"
        assert worker.cost_basis == "estimated", why  # aider's own, rounded (no price for the mock's model)
        assert worker.tokens_in and worker.tokens_out, why
    assert_only_loopback(*traces_of(aider_workers))


def test_in_worktrees_of_a_host_repository_each_file_lands_in_its_own_worktree(hosted_at_root, aider_workers):
    mock, settings = aider_workers(write_the_subtasks_file)
    workers = {"default_timeout": 120}
    three_files_in_worktrees(hosted_at_root, mock, orchestrator=settings, workers=workers)
    assert_only_loopback(*traces_of(aider_workers))


def test_bad_key_fails_the_worker_once_at_once_with_aider_s_message(make_engine, aider_workers):
    mock, settings = aider_workers([], default=AUTH_401)
    engine = make_engine(
        orchestrator=settings,
        workers={"max_retries": 2, "default_timeout": 90},
    )
    started = time.monotonic()
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=120)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.FAILED, why
    assert len(worker.attempts) == 1, f"a bad key must not be retried\n{why}"
    assert worker.error and worker.error.startswith("aider: litellm.AuthenticationError"), why
    assert "Incorrect API key provided" in worker.error, why
    assert time.monotonic() - started < 60, why
    assert [r.turn for r in mock.conversation] == ["ApiError 401"], why
    log = (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text()
    assert get_adapter("aider").parse(log, 0, max_chars=10_000).failure_class == "auth"
    assert_only_loopback(*traces_of(aider_workers))


@pytest.mark.timeout(300)  # aider's own retry loop alone is ~70 s; a loaded machine stretches it
def test_rate_limit_is_transient_and_reports_the_last_error_block(make_engine, aider_workers):
    """aider retries a 429 itself until its delay passes 60 s (about 70 s here), then gives up."""
    limited = ApiError(
        429, "Rate limit reached for requests. Please try again in 1s.", "requests", "rate_limit_exceeded", retry_after=1
    )
    mock, settings = aider_workers([], default=limited, traced=False)
    # One attempt (aider's own loop takes ~70 s): the orchestrator's transient retries are off here
    engine = make_engine(orchestrator=settings, workers={"max_retries": 0, "transient_retries": 0, "default_timeout": 150})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=200)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1, why
    assert worker.failure_class == "transient" and worker.attempts[0].retry_after == 1.0, why
    assert worker.error.startswith("aider: litellm.RateLimitError"), why
    assert "Retrying in" not in worker.error, why
    log = (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text()
    assert log.count("Retrying in") >= 5, why  # aider's own retries, before the last block
    # the adapter's model settings: no retries inside litellm's OpenAI client (27 requests in ~70 s without)
    assert [r.headers.get("x-stainless-retry-count") for r in mock.conversation] == ["0"] * len(mock.conversation), why
    assert len(mock.conversation) == log.count("Retrying in") + 1, why
    parsed = get_adapter("aider").parse(log, 0, max_chars=10_000)
    assert (parsed.failure_class, parsed.retryable, parsed.retry_after) == ("transient", True, 1.0)


def test_a_hanging_model_call_ends_in_timeout_with_no_process_left(make_engine, aider_workers):
    mock, settings = aider_workers([Hang()], traced=False)
    engine = make_engine(orchestrator=settings, workers={"default_timeout": 40, "kill_grace": 0.5})
    worker, why = hang_ends_in_timeout(engine, mock, wait=90)
    assert [r.turn for r in mock.conversation] == ["Hang"], why
