"""A server SIGKILLed while it deletes a finished worktree job (``DELETE /api/v1/jobs/{id}``)
and started again: the job is never left half there (its record gone and its folder kept,
listed as completed and 404 everywhere else, invisible to prune). The deletion sets the tree
aside in one rename first; the next start finishes what the kill cut short: the folder, the
worktrees' entries and the worker branches go, the result branch stays, and the user's
repository is exactly as it was.

A real server process (api_server.py) in a folder inside a real repository made here
(test_worktree_crash's), killed by a fail point between the steps of the deletion, and by a
real SIGKILL from this test while the server removes the tree's files.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from ..conftest import wait_until
from ..helpers.worktree_crash import Server, host_state, make_repo
from ..test_worktree import PREFIX, git
from .conftest import metric

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
BULK = 20_000  # files in the tree beside its worktrees: removing them takes a while, the kill lands meanwhile


def finished_job(server: Server, host: Path) -> str:
    root = server.call(
        "POST", "/api/v1/orchestrate", json={"request": "to delete", "tasks": ["echo a > a.txt", "echo b > b.txt"]}
    ).json()["job_id"]
    wait_until(
        lambda: server.call("GET", f"/api/v1/jobs/{root}").json()["status"] == "completed", timeout=60, what="the job ends"
    )
    assert len(git(host, "for-each-ref", "--format=%(refname)", f"{PREFIX}{root}/").split()) >= 2  # its worker branches
    return root


def job_worktrees(host: Path) -> list[str]:
    return [line for line in git(host, "worktree", "list", "--porcelain").splitlines() if "/workspace/" in line]


def assert_gone(server: Server, host: Path, root: str, before: dict[str, object], tmp: Path) -> None:
    """Not listed, 404, no folder (set aside or not), no worktree entry, no worker branch (the
    result branch may stay: a plain DELETE keeps it), and the host as it was."""
    listed = server.call("GET", "/api/v1/jobs").json()["jobs"]
    assert root not in [j["job_id"] for j in listed]
    assert server.call("GET", f"/api/v1/jobs/{root}/status").status_code == 404
    workspace = server.folder / "workspace"
    assert not (workspace / f"job_{root}").exists()
    assert not list(workspace.glob(f".deleting/job_{root}*"))
    assert set(git(host, "for-each-ref", "--format=%(refname)", f"{PREFIX}{root}/").split()) <= {f"{PREFIX}{root}/result"}
    assert job_worktrees(host) == []
    assert host_state(host, server.folder, tmp) == before


def delete_in_background(server: Server, root: str) -> threading.Thread:
    """``DELETE`` from a thread: the server dies under it (no answer comes)."""

    def call() -> None:
        try:
            server.call("DELETE", f"/api/v1/jobs/{root}")
        except requests.RequestException:
            pass

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("point", ["delete_set_aside", "delete_git_removed"])
def test_a_server_killed_between_the_steps_of_a_delete_finishes_it_at_its_next_start(tmp_path, point):
    host, folder = make_repo(tmp_path)
    server = Server(folder)
    before = host_state(host, folder, tmp_path)
    server.env["ORCHESTRATOR_FAILPOINTS"] = f"{point}=1"
    server.start()
    try:
        root = finished_job(server, host)
        with pytest.raises(requests.ConnectionError):
            server.call("DELETE", f"/api/v1/jobs/{root}")
        assert server.process is not None and server.process.wait(10) == -signal.SIGKILL
        # Dead mid-delete: the tree is set aside already, so nothing lists it even before the restart.
        assert not (folder / "workspace" / f"job_{root}").exists()
        assert [p.name for p in (folder / "workspace" / ".deleting").iterdir()] == [f"job_{root}.workers"]
        del server.env["ORCHESTRATOR_FAILPOINTS"]
        began = time.monotonic()
        server.start()
        seconds = metric(f"restart_after_kill_at_{point}_s", time.monotonic() - began, "s")
        assert 0 < seconds < 60
        assert_gone(server, host, root, before, tmp_path)
        assert f"finished deleting job tree {root}" in (folder / "logs" / "server.log").read_text()
    finally:
        server.stop()


def test_a_server_sigkilled_while_it_removes_a_deleted_trees_files_leaves_no_half_listed_job(tmp_path):
    host, folder = make_repo(tmp_path)
    server = Server(folder)
    before = host_state(host, folder, tmp_path)
    server.start()
    try:
        root = finished_job(server, host)
        bulk = folder / "workspace" / f"job_{root}" / "reports" / "bulk"
        bulk.mkdir()
        for i in range(BULK):
            (bulk / f"{i}.txt").write_bytes(b"x")
        # The folder's own inode, wherever a rename takes it: its time changes at the first file removed.
        fd = os.open(bulk, os.O_RDONLY | os.O_DIRECTORY)
        try:
            mtime = os.fstat(fd).st_mtime_ns
            assert server.process is not None
            delete_in_background(server, root)
            deadline = time.monotonic() + 60
            while os.fstat(fd).st_mtime_ns == mtime and time.monotonic() < deadline:
                pass
            server.process.send_signal(signal.SIGKILL)
            assert server.process.wait(10) == -signal.SIGKILL
            left = metric("files_left_at_kill", len(os.listdir(fd)), "files")
            assert 0 < left < BULK  # killed while it removed them, not before nor after
        finally:
            os.close(fd)
        server.start()
        assert_gone(server, host, root, before, tmp_path)
    finally:
        server.stop()
