"""A real server (api_server.py) in a folder of its own outside the host, its config naming the
host repository: what the kill -9 tests start, stop and start again."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": API_KEY}

    def start(self, failpoints: str = "") -> subprocess.Popen[bytes]:
        """The server, answering (or already exited: a failpoint may stop it at once)."""
        extra = {"ORCHESTRATOR_FAILPOINTS": failpoints} if failpoints else {}
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "api_server.py")],
            env={**self.env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: answers(self.url) or server.poll() is not None, timeout=30, what="the server answers")
        return server


def served_home(tmp_path: Path, host: Path, command: list[str], git_extra: str = "") -> ServedHome:
    """``tmp_path/home`` with a config.yaml: the API key, a free port, the ``command`` worker, and
    ``git.repo`` naming ``host`` (plus ``git_extra``, YAML lines under ``git:``)."""
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    (home / "config.yaml").write_text(
        f'api:\n  api_key: "{API_KEY}"\n  port: {port}\n'
        f"orchestrator:\n  worker: command\n  command: {json.dumps(command)}\n"
        f"git:\n  repo: {json.dumps(str(host))}\n{git_extra}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env["ORCHESTRATOR_HOME"] = str(home)
    return ServedHome(home, f"http://127.0.0.1:{port}", env)
