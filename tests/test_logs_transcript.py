"""``./orchestrator.sh logs``: a readable transcript of a CLI's JSON events, the raw lines behind
``--raw``. A job runs the real claude CLI against a loopback mock of the Anthropic API; ``logs`` is
then run as a user runs it (a subprocess of ``python -m orchestrator``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from orchestrator import protocol
from orchestrator.engine.core import Engine
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.workers.adapters.codex import CodexAdapter
from orchestrator.workers.adapters.opencode import OpencodeAdapter

from .conftest import ROOT, explain, find_cli, make_settings, only_worker, run_job
from .mock_model_server import QUIET_ENV, MockModelServer, Text, ToolUse, tool_results

CLAUDE = find_cli("claude")


def logs(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env.update({protocol.HOME: str(home), "PYTHONPATH": str(ROOT)})
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "logs", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
@pytest.mark.real_cli
@pytest.mark.skipif(CLAUDE is None, reason="claude CLI not found (run tests/install_cli.sh)")
def test_logs_of_a_real_claude_worker_read_as_a_transcript_and_raw_behind_a_flag(tmp_path, monkeypatch):
    def script(body):
        if tool_results(body):
            return Text("Done: the greeting is printed.")
        return ToolUse("Bash", {"command": "echo hello-from-the-tool", "description": "greet"}, text="I will greet first.")

    for name in [n for n in os.environ if n.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))]:
        monkeypatch.delenv(name)
    for name, value in {**QUIET_ENV, "HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "home").mkdir()
    with MockModelServer(script, lifetime=180) as mock:
        settings = make_settings(
            tmp_path,
            orchestrator={"worker": "claude", "claude_command": CLAUDE, "planner": "heuristic", "claude_allowed_tools": ["Bash"]},
            workers={"env": mock.client_env(), "default_timeout": 120},
        )
        engine = Engine(settings)
        try:
            job = run_job(engine, "greet", tasks=["greet"], timeout=150)
            worker = only_worker(engine, job)
            assert job.status is JobStatus.COMPLETED and worker.status is WorkerStatus.SUCCESS, explain(engine, job, mock)
        finally:
            engine.shutdown(timeout=10)

    shown = logs(tmp_path, job.id, "worker_1")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "I will greet first." in out
    assert '→ Bash {"command": "echo hello-from-the-tool", "description": "greet"}' in out
    assert "←\n    hello-from-the-tool" in out, out
    assert "= answer: Done: the greeting is printed." in out
    assert "= success, 2 turn(s), cost $" in out and "tokens in" in out, out
    assert '"type":"result"' not in out.replace(" ", ""), "no raw JSON event in the transcript"
    assert "===== attempt 1/" in out, "the orchestrator's own lines stay"

    raw = logs(tmp_path, job.id, "worker_1", "--raw").stdout
    events = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    assert any(e.get("type") == "result" for e in events) and "= answer:" not in raw
    # -f of an ended worker prints the same transcript and returns.
    assert logs(tmp_path, job.id, "worker_1", "-f").stdout == out


def test_codex_events_read_as_a_transcript():
    """Lines in the shape ``codex exec --json`` documents (its adapter's docstring)."""
    adapter = CodexAdapter()
    lines = [
        {"type": "thread.started", "thread_id": "th-1"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "i0", "type": "reasoning", "text": "thinking"}},
        {
            "type": "item.completed",
            "item": {
                "type": "command_execution",
                "command": "bash -lc 'pytest -q'",
                "aggregated_output": "1 passed\n",
                "exit_code": 0,
            },
        },
        {"type": "item.completed", "item": {"type": "file_change", "changes": [{"path": "a.py", "kind": "update"}]}},
        {"type": "item.completed", "item": {"type": "agent_message", "text": "All tests pass."}},
        {"type": "turn.completed", "usage": {"input_tokens": 1200, "cached_input_tokens": 0, "output_tokens": 34}},
    ]
    shown = [adapter.readable(json.dumps(line)) for line in lines] + [adapter.readable("codex: a plain stderr line")]
    assert shown == [
        "· session th-1",
        None,
        None,
        "→ bash -lc 'pytest -q'\n← exit 0\n    1 passed",
        "→ files: update a.py",
        "All tests pass.",
        "= turn completed: 1200 tokens in, 34 out",
        "codex: a plain stderr line",
    ]


def test_opencode_events_recorded_from_the_cli_read_as_a_transcript():
    adapter = OpencodeAdapter()
    recorded = (ROOT / "tests" / "fixtures" / "cli_outputs" / "opencode_multistep.jsonl").read_text().splitlines()
    shown = [text for text in map(adapter.readable, recorded) if text is not None]
    assert shown == [
        "I'll create the file first.",
        '→ write {"content": "print(\'hello\')\\n", "filePath": "/work/hello.py"}\n← completed\n    (no output)',
        "= step finished: cost $0.0061, 1200 tokens in, 150 out",
        "Created hello.py, which prints hello.",
        "= step finished: cost $0.0018, 80 tokens in, 40 out",
    ]
    error = {"type": "error", "error": {"name": "APIError", "data": {"message": "Unauthorized", "statusCode": 401}}}
    assert adapter.readable(json.dumps(error)) == "· error: Unauthorized"
