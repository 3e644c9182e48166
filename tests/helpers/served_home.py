"""A real server (api_server.py) in a folder of its own outside the host, its config naming the
host repository: what the kill -9 tests start, stop and start again, and what the plugin test runs
from a venv of its own with its plugin kind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from ..conftest import API_KEY, ROOT, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@dataclass(frozen=True)
class ServedHome:
    home: Path
    url: str
    env: dict[str, str]
    python: str = sys.executable  # the interpreter that runs api_server.py (a venv's, with a plugin installed)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": API_KEY}

    def start(self, failpoints: str = "", *, log: Path | None = None, timeout: float = 30) -> subprocess.Popen[bytes]:
        """The server, answering (or already exited: a failpoint may stop it at once); its output
        appended to ``log`` (else dropped)."""
        extra = {"ORCHESTRATOR_FAILPOINTS": failpoints} if failpoints else {}
        with open(log, "ab") if log is not None else open(os.devnull, "wb") as out:
            server = subprocess.Popen(
                [self.python, str(ROOT / "api_server.py")], env={**self.env, **extra}, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until(lambda: answers(self.url) or server.poll() is not None, timeout=timeout, what="the server answers")
        except BaseException:  # never left running behind a test that failed here
            server.kill()
            server.wait(timeout=30)
            raise
        return server


def command_worker(command: list[str]) -> str:
    """config.yaml's lines for the ``command`` kind running ``command``."""
    return f"orchestrator:\n  worker: command\n  command: {json.dumps(command)}\n"


def served_home(
    tmp_path: Path,
    host: Path,
    command: list[str] | None = None,
    git_extra: str = "",
    *,
    worker: str | None = None,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
) -> ServedHome:
    """``tmp_path/home`` with a config.yaml: the API key, a free port, the worker (``worker``: its
    YAML lines, sections ``orchestrator:`` and ``workers:``; else the ``command`` kind running
    ``command``), and ``git.repo`` naming ``host`` (plus ``git_extra``, YAML lines under ``git:``).
    ``python`` runs the server; ``env`` is added to its environment (none of the caller's
    ``ORCHESTRATOR_*`` reaches it)."""
    if worker is None:
        if command is None:
            raise ValueError("served_home needs the worker: a command, or its YAML lines (worker=)")
        worker = command_worker(command)
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    (home / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\n{worker}git:\n  repo: {json.dumps(str(host))}\n{git_extra}'
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    environ |= {**(env or {}), "ORCHESTRATOR_HOME": str(home)}
    return ServedHome(home, f"http://127.0.0.1:{port}", environ, python)
