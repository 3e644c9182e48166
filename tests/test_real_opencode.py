"""The real ``opencode`` CLI (opencode-ai 1.18.33) against a loopback mock of the OpenAI Chat
Completions API, through an OpenAI-compatible provider in its config.

No model service is reached: ``tests/mock_chat_server.py`` answers on 127.0.0.1. Each test gives
opencode a fresh HOME and XDG folders (a machine where opencode never ran), its config in
``OPENCODE_CONFIG_CONTENT`` (provider ``mock`` with ``baseURL`` on the mock, autoupdate off,
sharing disabled), ``OPENCODE_DISABLE_MODELS_FETCH``/``_AUTOUPDATE``/``_SHARE``, and a copy of the
plugin folder tests/install_cli.sh prepared (.cli/opencode-config), so opencode installs nothing.
Every run is traced with strace and every connect must go to 127.0.0.1 (``tests/net_guard.py``).

Parallel first runs race on creating opencode's SQLite database; the adapter
gives each worker its own ``OPENCODE_DB``: three parallel workers on a fresh HOME all succeed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from orchestrator.models import WorkerStatus
from orchestrator.workers.adapters import get_adapter

from .conftest import (
    ROOT,
    explain,
    find_cli,
    hang_ends_in_timeout,
    only_worker,
    run_job,
    three_files_in_worktrees,
    three_files_written,
)
from .mock_chat_server import AUTH_401, ApiError, Hang, MockChatServer, Text, ToolCall, subtask, tool_results
from .net_guard import STRACE, assert_only_loopback, trace_launches

OPENCODE = find_cli("opencode")
PLUGIN_FOLDER = ROOT / ".cli" / "opencode-config"
MODEL = "mock/mock-model"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_cli,
    pytest.mark.skipif(
        OPENCODE is None, reason="opencode not found at .cli/node_modules/.bin/opencode nor on PATH (run tests/install_cli.sh)"
    ),
    pytest.mark.skipif(
        not (PLUGIN_FOLDER / "node_modules" / "@opencode-ai" / "plugin").is_dir(),
        reason="no opencode plugin folder at .cli/opencode-config (run tests/install_cli.sh)",
    ),
    pytest.mark.skipif(STRACE is None, reason="strace not installed (Debian package strace)"),
]


def is_title_request(body) -> bool:
    """opencode asks for a session title on the side, with a system prompt of its own."""
    return any(m.get("role") == "system" and "title generator" in str(m.get("content")) for m in body.get("messages") or [])


@pytest.fixture
def opencode_workers(monkeypatch, tmp_path):
    """Start a mock; give workers a fresh HOME/XDG and opencode's config through the environment
    the engine copies. Returns ``start(script) -> (mock, orchestrator settings)``."""
    started = []
    traces = tmp_path / "traces"

    def start(script, *, lifetime=200.0, traced=True):
        def choose(body):
            return Text("Mock session") if is_title_request(body) else script(body)

        mock = MockChatServer(choose, lifetime=lifetime).start()
        started.append(mock)
        home = tmp_path / "home"
        xdg = {
            "XDG_CONFIG_HOME": home / ".config",
            "XDG_DATA_HOME": home / ".local" / "share",
            "XDG_CACHE_HOME": home / ".cache",
            "XDG_STATE_HOME": home / ".local" / "state",
        }
        shutil.copytree(PLUGIN_FOLDER, xdg["XDG_CONFIG_HOME"] / "opencode")
        config = {
            "$schema": "https://opencode.ai/config.json",
            "autoupdate": False,
            "share": "disabled",
            "model": MODEL,
            "provider": {
                "mock": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Mock",
                    "options": {"baseURL": mock.url + "/v1", "apiKey": "sk-mock-0000"},
                    "models": {"mock-model": {"name": "Mock model"}},
                }
            },
        }
        for name in [n for n in os.environ if n.startswith(("OPENCODE", "OPENAI", "XDG_"))]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(home))
        for name, path in xdg.items():
            monkeypatch.setenv(name, str(path))
        monkeypatch.setenv("OPENCODE_CONFIG_CONTENT", json.dumps(config))
        for flag in ("OPENCODE_DISABLE_MODELS_FETCH", "OPENCODE_DISABLE_AUTOUPDATE", "OPENCODE_DISABLE_SHARE"):
            monkeypatch.setenv(flag, "1")
        program = OPENCODE
        if traced:
            trace_launches(monkeypatch, traces)
        return mock, {"worker": "opencode", "opencode_command": program, "planner": "heuristic", "opencode_model": MODEL}

    start.traces = traces
    yield start
    for mock in started:
        mock.stop()


def write_then_report(body):
    """Write the subtask's file (``Write a.txt``) by a path relative to opencode's directory, then say so."""
    task = subtask(body) or "?"
    name = task.split()[-1]
    if tool_results(body):
        return Text(f"Wrote {name}")
    return ToolCall("write", {"filePath": name, "content": f"{task}\n"})


def test_three_parallel_first_runs_write_their_files_on_loopback_only(make_engine, opencode_workers, tmp_path):
    mock, settings = opencode_workers(write_then_report)
    engine = make_engine(orchestrator=settings, workers={"default_timeout": 120})
    job, workers, why = three_files_written(engine, mock)
    starts = sorted(w.attempts[0].started_at for w in workers)
    ends = sorted(w.attempts[0].ended_at for w in workers)
    assert starts[-1] < ends[0], "the three first runs must overlap (that is the race)"
    for worker in workers:
        name = worker.task.split()[-1]
        assert len(worker.attempts) == 1, why
        assert worker.output == f"Wrote {name}", why
        assert worker.tokens_in and worker.tokens_in >= 5800, why  # two steps of 2900 prompt tokens
        db = engine.workspace.state_dir(job.root_id) / "prompts" / f"depth_0_{worker.name}.opencode" / "opencode.db"
        assert db.is_file(), f"each worker has its own database\n{why}"
    assert not (tmp_path / "home" / ".local" / "share" / "opencode" / "opencode.db").exists()
    assert_only_loopback(*sorted(Path(opencode_workers.traces).glob("connect.*")))


def test_in_worktrees_of_a_host_repository_each_file_lands_in_its_own_worktree(hosted_at_root, opencode_workers):
    # opencode resolves a worktree's .git pointer to the main repository and works at its root
    # unless its directory is pinned: the files landed in the host's own checkout.
    mock, settings = opencode_workers(write_then_report)
    workers = {"default_timeout": 120}
    three_files_in_worktrees(hosted_at_root, mock, orchestrator=settings, workers=workers)
    assert_only_loopback(*sorted(Path(opencode_workers.traces).glob("connect.*")))


def test_bad_key_fails_the_worker_once_at_once_with_opencode_s_message(make_engine, opencode_workers):
    mock, settings = opencode_workers(lambda body: AUTH_401)
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
    assert worker.error and worker.error.startswith("opencode: Incorrect API key provided"), why
    assert "(APIError 401)" in worker.error, why
    assert time.monotonic() - started < 60, why
    assert [r.turn for r in mock.conversation if r.turn != "Text"] == ["ApiError 401"], why
    log = (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text()
    assert get_adapter("opencode").parse(log, 1, max_chars=10_000).failure_class == "auth"
    assert_only_loopback(*sorted(Path(opencode_workers.traces).glob("connect.*")))


def test_rate_limit_is_transient_with_its_retry_after(make_engine, opencode_workers):
    limited = ApiError(
        429, "Rate limit reached for requests. Please try again in 1s.", "requests", "rate_limit_exceeded", retry_after=1
    )
    mock, settings = opencode_workers(lambda body: limited, traced=False)
    # A transient failure is retried by the orchestrator even with max_retries 0 (here once), after
    # the retry-after opencode reported
    engine = make_engine(
        orchestrator=settings, workers={"max_retries": 0, "transient_retries": 1, "retry_backoff": 0.05, "default_timeout": 90}
    )
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=120)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 2, why
    assert worker.failure_class == "transient" and worker.attempts[0].retry_after == 1.0, why
    assert worker.attempts[1].started_at - worker.attempts[0].ended_at >= 1.0, why  # the service's retry-after
    assert worker.error.startswith("opencode: Rate limit reached"), why
    log = (engine.workspace.job_dir(job.root_id) / worker.log_path).read_text()
    parsed = get_adapter("opencode").parse(log, 1, max_chars=10_000)
    assert (parsed.failure_class, parsed.retryable, parsed.retry_after) == ("transient", True, 1.0)


def test_a_hanging_model_call_ends_in_timeout_with_no_process_left(make_engine, opencode_workers):
    mock, settings = opencode_workers(lambda body: Hang(), traced=False)
    engine = make_engine(
        orchestrator=settings, workers={"default_timeout": 45, "kill_grace": 0.5}
    )  # a first run starts slowly under load
    worker, why = hang_ends_in_timeout(engine, mock, wait=90)
    assert "Hang" in [r.turn for r in mock.conversation], why


def test_a_provider_in_the_users_opencode_json_is_reached_under_the_default_network(make_engine, opencode_workers, monkeypatch):
    # The provider is in the user's $XDG_CONFIG_HOME/opencode/opencode.json alone (no
    # OPENCODE_CONFIG_CONTENT): read at the server's start, its baseURL is one the workers' proxy
    # lets them reach. Before, opencode said "Cannot connect to API", taken for an overload and retried.
    mock, settings = opencode_workers(lambda body: Text("Hello from the gateway"), traced=False)
    content = os.environ["OPENCODE_CONFIG_CONTENT"]
    monkeypatch.delenv("OPENCODE_CONFIG_CONTENT")
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "opencode" / "opencode.json"
    config.write_text(json.dumps(json.loads(content), indent=2))
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    engine = make_engine(orchestrator=settings, workers={"default_timeout": 60})
    job = run_job(engine, "Say hi", tasks=["Say hi"], timeout=90)
    worker = only_worker(engine, job)
    why = explain(engine, job, mock)
    assert engine.settings.workers.sandbox_network == "allow" and worker.sandbox in ("bubblewrap", "landlock"), why
    assert worker.status is WorkerStatus.SUCCESS and worker.output == "Hello from the gateway", why
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before  # the user's config, untouched
