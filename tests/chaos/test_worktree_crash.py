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
import os
import re
import shutil
import signal
import time

import pytest

from ..conftest import wait_until
from ..helpers.worktree_crash import Server, host_state, make_repo
from ..test_worktree import PREFIX, git
from .conftest import tagged_alive

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


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
        "echo one > one.txt; sleep 40; echo more >> one.txt",  # runs on across the restart
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
