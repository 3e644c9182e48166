"""Helpers of tests/chaos/test_worktree_crash.py, used by other test files too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from ..conftest import API_KEY, ROOT, wait_until
from .worktree import PREFIX, git, snapshot, user_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_repo(tmp: Path) -> tuple[Path, Path]:
    """A host repository with the orchestrator's folder in it (its state ignored), and a user
    mid-work: a dirty tracked file, a staged file, an untracked one, a stash entry, branches and
    a tag that look like ours but are not, a worktree of their own elsewhere, and one whose
    folder is away (an unmounted disk)."""
    host = tmp / "host repo"
    folder = host / "tools" / "orch"
    folder.mkdir(parents=True)
    git(host, "init", "-q", "-b", "main")
    (host / "app.py").write_text("print('v1')\n")
    (host / "notes.md").write_text("notes\n")
    (folder / ".gitignore").write_text("/workspace/*\n/.server.*\n/logs/\n/config.yaml\n")
    git(host, "add", "-A")
    git(host, "commit", "-qm", "one", env=user_env())
    (host / "app.py").write_text("print('stashed')\n")
    git(host, "stash", "-q", env=user_env())
    (host / "app.py").write_text("print('dirty')\n")
    (host / "staged.txt").write_text("staged\n")
    git(host, "add", "staged.txt")
    (host / "untracked.txt").write_text("untracked\n")
    for branch in ("orchestrator-other/x", "orchestratorx/y"):
        git(host, "branch", branch)
    git(host, "tag", "orchestrator/v1")
    git(host, "worktree", "add", "-q", "-b", "feature", str(tmp / "user tree"))
    git(host, "worktree", "add", "-q", "-b", "away", str(tmp / "usb" / "away"))
    shutil.move(str(tmp / "usb" / "away"), str(tmp / "unplugged"))
    return host, folder


def host_state(host: Path, folder: Path, tmp: Path) -> dict[str, object]:
    """test_worktree's snapshot (the server's own ignored files aside) and the user's worktrees."""
    state = snapshot(host, folder)
    state["files"] = {k: v for k, v in state["files"].items() if "/.server." not in k and "/logs/" not in k}  # type: ignore[union-attr]
    listed = git(host, "worktree", "list", "--porcelain").split("\n\n")
    state["worktrees"] = [block for block in listed if "/workspace/" not in block and PREFIX not in block]
    state["user tree"] = git(tmp / "user tree", "status", "--porcelain") + git(tmp / "user tree", "rev-parse", "HEAD")
    return state


class Server:
    def __init__(self, folder: Path, writable: Path | None = None) -> None:
        """``writable``: a folder outside the workers' checkouts that their sandbox lets them write."""
        self.folder, self.port = folder, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (folder / "config.yaml").write_text(
            f'api:\n  api_key: "{API_KEY}"\n  port: {self.port}\n  rate_limit_worker: 0\n'
            'orchestrator:\n  worker: "command"\n  command: ["sh", "-c", "{task}"]\n'
            "workers:\n  max_workers: 8\n  kill_grace: 1\n  retry_backoff: 0.05\n"
            + (f"  sandbox_writable: [{json.dumps(str(writable))}]\n" if writable else "")
            + "git:\n  isolation: worktree\n"
        )
        self.env = {**os.environ, "ORCHESTRATOR_HOME": str(folder)}
        self.env.pop("ORCHESTRATOR_CONFIG", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "api_server.py")], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self.healthy, timeout=60, what="the server answers")

    def healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the server exited with {self.process.returncode}")
        try:
            return requests.get(self.url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)

    def call(self, method: str, path: str, **kwargs):
        return requests.request(method, self.url + path, headers={"X-API-Key": API_KEY}, timeout=30, **kwargs)

    def records(self, root: str) -> dict[str, dict]:
        folder = self.folder / "workspace" / f"job_{root}" / "state" / "workers"
        return {p.stem.removeprefix("depth_0_"): json.loads(p.read_text()) for p in folder.glob("*.json")}
