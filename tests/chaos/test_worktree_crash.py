"""A server running worktree workers is SIGKILLed and restarted: every
worker's work ends up committed on its branch, whether it ran on across the restart, ended
while no server ran, or was lost (its shim killed too); checkpoints stay right across it; git
is left with no stale worktree entry and no lock file; and the user's repository (branch,
index, files, status, stash, refs outside the prefix, their own worktrees) is exactly as it
was before the job, after the crash, and after the job is deleted.

A real server process (api_server.py) on a free port, in a folder inside a real repository made
here, with command workers (``sh -c``) that write files and sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ..conftest import API_KEY, ROOT, wait_until
from ..test_worktree import PREFIX, git, snapshot, user_env
from .conftest import tagged_alive

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


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


def test_a_server_killed_while_worktree_workers_run_and_commit_loses_no_work_and_leaves_git_clean(tmp_path):
    host, folder = make_repo(tmp_path)
    # A dead worktree entry inside the workspace (a job folder deleted by hand): the start prunes it.
    stale = folder / "workspace" / "job_old" / "depth_0" / "worker_1"
    git(host, "worktree", "add", "-q", "-b", "orchestrator/old/worker_1", str(stale))
    shutil.rmtree(folder / "workspace" / "job_old")
    marks = tmp_path / "marks"
    marks.mkdir()
    server = Server(folder, writable=marks)
    before = host_state(host, folder, tmp_path)
    tasks = [
        "echo one > one.txt; sleep 15; echo more >> one.txt",  # runs on across the restart
        "echo two > two.txt; sleep 4",  # ends while no server runs
        "echo three > three.txt; sleep 60",  # lost: its shim is killed too, with its work uncommitted
        "sleep 60",  # lost, with no work
        # Fails while no server runs; its retry (under the new server) starts from the checkpoint.
        f"if [ -e {marks}/retry ]; then echo good > good.txt; else touch {marks}/retry; echo bad > bad.txt; sleep 5; exit 1; fi",
    ]
    server.start()
    try:
        root = server.call(
            "POST", "/api/v1/orchestrate", json={"request": "crash", "tasks": tasks, "config": {"max_retries": 1}}
        ).json()["job_id"]
        work = folder / "workspace" / f"job_{root}" / "depth_0"

        def all_running() -> bool:
            records = server.records(root)
            return len(records) == 5 and all(r["status"] == "running" and r["attempts"] for r in records.values())

        wait_until(all_running, timeout=60, what="five running workers")
        wait_until(
            lambda: all(
                (work / w / f).exists()
                for w, f in [("worker_1", "one.txt"), ("worker_2", "two.txt"), ("worker_3", "three.txt"), ("worker_5", "bad.txt")]
            ),
            timeout=30,
            what="the workers' files",
        )
        server.kill()
        for name in ("worker_3", "worker_4"):  # lost: nothing of them survives, not even an exit status
            for pid in tagged_alive(f"{root}.depth_0_{name}."):
                with contextlib.suppress(ProcessLookupError):  # a sandbox's processes die with its launcher
                    os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: not tagged_alive(f"{root}.depth_0_worker_3.") and not tagged_alive(f"{root}.depth_0_worker_4."), timeout=10
        )
        time.sleep(7)  # worker_2 and worker_5's first attempt end meanwhile
        assert host_state(host, folder, tmp_path) == before  # the crash itself touched nothing
        server.start()
        wait_until(
            lambda: server.call("GET", f"/api/v1/jobs/{root}").json()["status"] in ("partial", "failed", "completed"), timeout=90
        )
        records = server.records(root)
        # Each took the path it is here for (a loaded machine could have let one end before the kill).
        log = (folder / "workspace" / f"job_{root}" / "logs" / "orchestrator.log").read_text()
        assert re.search("depth_0_worker_1 running: attempt 1 re-adopted .*: still running", log)
        for name in ("worker_2", "worker_5"):
            assert re.search(f"depth_0_{name} running: attempt 1 re-adopted .*: ended while no server ran", log), name
        assert "recovered: 3 adopt, 2 lost" in log
        assert {n: r["status"] for n, r in records.items()} == {
            "worker_1": "success",
            "worker_2": "success",
            "worker_3": "failed",
            "worker_4": "failed",
            "worker_5": "success",
        }

        def show(name: str, path: str) -> str:
            return git(host, "show", f"orchestrator/{root}/{name}:{path}")

        # Every worker's work is on its branch, and its record names the commit.
        assert show("worker_1", "one.txt") == "one\nmore\n"
        assert show("worker_2", "two.txt") == "two\n"
        assert show("worker_3", "three.txt") == "three\n"
        assert show("worker_5", "good.txt") == "good\n"
        assert "bad.txt" not in git(host, "ls-tree", "--name-only", f"orchestrator/{root}/worker_5")
        for name, files in [
            ("worker_1", ["one.txt"]),
            ("worker_2", ["two.txt"]),
            ("worker_3", ["three.txt"]),
            ("worker_5", ["good.txt"]),
        ]:
            rec = records[name]
            assert rec["branch"] == f"orchestrator/{root}/{name}", name
            assert rec["commit"] == git(host, "rev-parse", rec["branch"]).strip(), name
            assert [f["path"] for f in rec["files_changed"]] == files, name
        # The lost worker with no work: its worktree went, its branch stays at its base.
        lost = records["worker_4"]
        assert lost["diffstat"] == "no changes" and lost["files_changed"] == []
        assert git(host, "rev-parse", lost["branch"]).strip() == git(host, "rev-parse", "main").strip()
        assert not (work / "worker_4").exists() and (work / "worker_3").is_dir()
        # The retry went back to the checkpoint its failed attempt started from.
        points = server.call("GET", f"/api/v1/jobs/{root}/workers/worker_5/checkpoints").json()["checkpoints"]
        assert [p["started_from"] for p in points] == ["base", "reset"] and points[0]["checkpoint"] == points[1]["checkpoint"]
        # git is clean: no stale entry of ours (the old one pruned at start), no lock file left.
        listed = git(host, "worktree", "list", "--porcelain").split("\n\n")
        ours = [block for block in listed if "/workspace/" in block]
        assert len(ours) == 4 and not any("prunable" in block for block in ours), ours
        assert not any("job_old" in block for block in listed)
        assert list((host / ".git").rglob("*.lock")) == []
        assert host_state(host, folder, tmp_path) == before
        # Deleting the job (its result branch too) takes its worktrees and branches, nothing else.
        assert server.call("DELETE", f"/api/v1/jobs/{root}", params={"branches": "all"}).status_code == 204
        assert git(host, "for-each-ref", f"{PREFIX}{root}/") == ""
        assert [b for b in git(host, "worktree", "list", "--porcelain").split("\n\n") if "/workspace/" in b] == []
        assert host_state(host, folder, tmp_path) == before
    finally:
        server.stop()
        for pid in tagged_alive(f"{locals().get('root', 'none')}."):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
