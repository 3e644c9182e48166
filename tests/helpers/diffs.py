"""Helpers of tests/test_diffs.py, used by other test files too."""

from __future__ import annotations

import pytest

from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine

from ..conftest import API_KEY, Live
from .worktree import make_host


@pytest.fixture
def hosted_live(tmp_path):
    """A real server whose folder sits in a host repository (worktree isolation), workers running
    ``sh -c TASK``; returns (live, host, folder)."""
    host, folder = make_host(tmp_path)
    started = []

    def factory(**sections):
        overrides = {
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
            "workers": {"retry_backoff": 0.05, "retry_backoff_max": 0.2, "kill_grace": 0.5, "default_timeout": 30},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
        }
        for name, values in sections.items():
            overrides.setdefault(name, {}).update(values)
        settings = load_settings(base_dir=folder, environ={}, overrides=overrides)
        engine = Engine(settings)
        server = start_in_thread(settings, engine, port=0)
        started.append((server, engine))
        live = Live(server.url, API_KEY, engine)
        live.server = server
        return live

    yield factory, host, folder
    for server, engine in started:
        engine.shutdown(timeout=10)
        server.close()


# File content and a file name that would run script if a page ever parsed them as HTML.
EVIL = "<script>window.__pwned=1</script><img src=x onerror=alert(1)>"
