"""Helpers of tests/test_real_gemini.py, used by other test files too."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..conftest import (
    find_cli,
)
from ..mock_gemini_server import (
    MockGeminiServer,
)

GEMINI = find_cli("gemini")

API_KEY = "mock-gemini-key-0000"


def gemini_home(folder: Path, max_attempts: int | None = 2) -> Path:
    """A GEMINI_CLI_HOME of the test's: API-key auth, no usage statistics, ``max_attempts`` per request
    (None: not set, so a worker gets the adapter's bound)."""
    settings: dict = {"security": {"auth": {"selectedType": "gemini-api-key"}}, "privacy": {"usageStatisticsEnabled": False}}
    if max_attempts is not None:
        settings["general"] = {"maxAttempts": max_attempts}
    (folder / ".gemini").mkdir(parents=True, exist_ok=True)
    (folder / ".gemini" / "settings.json").write_text(json.dumps(settings))
    return folder


def gemini_env(mock: MockGeminiServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE"))}
    env.update({"GEMINI_CLI_HOME": str(home), "GOOGLE_GEMINI_BASE_URL": mock.url, "GEMINI_API_KEY": API_KEY})
    return env


@pytest.fixture
def gemini_workers(monkeypatch, tmp_path):
    """Start a mock; point workers' gemini at it through the environment the engine copies."""
    started = []

    def start(script, *, lifetime=150.0, default=None):
        mock = MockGeminiServer(script, lifetime=lifetime, default=default).start()
        started.append(mock)
        for name, value in gemini_env(mock, gemini_home(tmp_path / "gemini-home", None)).items():
            if os.environ.get(name) != value:
                monkeypatch.setenv(name, value)
        for name in [
            n
            for n in os.environ
            if n.startswith(("GEMINI", "GOOGLE")) and n not in ("GEMINI_CLI_HOME", "GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY")
        ]:
            monkeypatch.delenv(name)
        return mock

    yield start
    for mock in started:
        mock.stop()
