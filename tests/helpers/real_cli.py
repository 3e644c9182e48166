"""Helpers of tests/test_real_cli.py, used by other test files too."""

from __future__ import annotations

import os

import pytest

from ..mock_model_server import (
    MockModelServer,
    Text,
    ToolUse,
    tool_results,
    working_directory,
)

API_KEY = "sk-ant-mock-key-0000"


@pytest.fixture
def claude_workers(monkeypatch, tmp_path):
    """Start a mock and give every worker its URL through the environment the engine copies."""
    started = []

    def start(script, *, lifetime=90.0, default=None, **extra):
        mock = MockModelServer(script, lifetime=lifetime, default=default).start()
        started.append(mock)
        for name in [n for n in os.environ if n.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))]:
            monkeypatch.delenv(name)
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        for name, value in {
            **mock.client_env(API_KEY),
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            **extra,
        }.items():
            monkeypatch.setenv(name, value)
        return mock

    yield start
    for mock in started:
        mock.stop()


def write_then_report(name: str, content: str, final: str):
    def script(body):
        if tool_results(body):
            return Text(final)
        return ToolUse("Write", {"file_path": f"{working_directory(body)}/{name}", "content": content})

    return script
