"""Helpers of tests/test_approval.py, used by other test files too."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from orchestrator.cli.server import start_in_thread
from orchestrator.config import load_settings
from orchestrator.engine.core import Engine

from ..conftest import API_KEY
from .worktree import make_host


class Served:
    """A real waitress server whose folder sits inside a host repository; ``restart`` stops it
    (as a server stops: shutdown) and starts a new engine and server on the same folder."""

    def __init__(self, tmp_path: Path, **sections: dict) -> None:
        self.host, self.folder = make_host(tmp_path)
        self.sections = sections  # settings beyond the defaults below, section by section
        self.started: list[tuple[object, Engine]] = []
        self.start()

    def start(self) -> None:
        overrides: dict[str, dict] = {
            "workers": {"retry_backoff": 0.05, "kill_grace": 0.5, "default_timeout": 30},
            "orchestrator": {"worker": "command", "command": ["sh", "-c", "{task}"]},
            "api": {"api_key": API_KEY, "host": "127.0.0.1", "port": 0},
        }
        for name, values in self.sections.items():
            overrides.setdefault(name, {}).update(values)
        settings = load_settings(base_dir=self.folder, environ={}, overrides=overrides)
        self.engine = Engine(settings)
        self.engine.takeover.recover()  # as server.serve does at start
        self.server = start_in_thread(settings, self.engine, port=0)
        self.url = self.server.url
        self.started.append((self.server, self.engine))

    def restart(self) -> None:
        self.engine.shutdown(timeout=10)
        self.server.close()
        self.start()

    def call(self, method: str, path: str, key: str | None = API_KEY, **kwargs) -> requests.Response:
        headers = {"X-API-Key": key} if key else {}
        return requests.request(method, self.url + path, headers=headers, **{"timeout": 30, **kwargs})

    def submit(self, tasks: list[str], config: dict | None = None) -> str:
        body = {"request": "add two files", "tasks": tasks, "config": {"approval": "before_merge", **(config or {})}}
        answer = self.call("POST", "/api/v1/orchestrate", json=body)
        assert answer.status_code == 202, answer.text
        return answer.json()["job_id"]

    def wait(self, job_id: str) -> dict:
        return self.call("GET", f"/api/v1/jobs/{job_id}/wait?timeout=60", timeout=90).json()

    def close(self) -> None:
        for server, engine in self.started:
            engine.shutdown(timeout=10)
            server.close()  # type: ignore[attr-defined]


@pytest.fixture
def served(tmp_path):
    served = Served(tmp_path)
    yield served
    served.close()


TASKS = ["echo a > a.txt", "echo b > b.txt"]


def waiting_job(served: Served, config: dict | None = None) -> tuple[str, dict]:
    """Submit a two-worker job with approval and wait until it waits: nothing merged yet."""
    job_id = served.submit(TASKS, config)
    doc = served.wait(job_id)  # wait returns on a job waiting for approval
    assert doc["status"] == "waiting", doc
    return job_id, doc
