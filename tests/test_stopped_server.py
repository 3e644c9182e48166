"""A server stopped (SIGSTOP) while its workers run, then continued: deadlines and durations are
the workers' own, by their recorded start and their exit file's time, not by when the server woke."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import wait_until
from .helpers.worktree_crash import Server, host_state, make_repo

pytestmark = pytest.mark.slow

TIMEOUT = 6
STOP = 12  # seconds the server is stopped: longer than any worker's timeout
BACKSTOP = TIMEOUT + 1 + 2  # its keeper's deadline: + kill_grace (the helper's config) + attempts.BACKSTOP_MARGIN


@pytest.mark.parametrize("sandbox", ["on", "off"], ids=["sandboxed", "unsandboxed"])
def test_a_stopped_server_times_out_by_the_workers_own_clock_and_records_their_own_durations(tmp_path, sandbox):
    """Stopped for 30 s, a server let a `sleep 45` under a 20 s timeout run on and recorded it
    `success`, and recorded a 10 s worker as 31.9 s (its end was when the server woke); later it
    stopped the `sleep 45` only once it woke, at 35 s: now its keeper stops it at its own deadline."""
    # Given a server running three workers under a 6 s timeout: one that runs on, one that ends by
    # itself past its timeout and one that ends well within it, each while the server is stopped
    host, folder = make_repo(tmp_path)
    server = Server(folder)
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("workers:\n", f'workers:\n  sandbox: "{sandbox}"\n'))
    before = host_state(host, folder, tmp_path)
    server.start()
    try:
        # (sleep 7: past its 6 s timeout, and 2 s before its keeper's backstop, so a slow start under load keeps it its own)
        tasks = ["sleep 40", "sleep 7", "sleep 2"]
        config = {"default_timeout": TIMEOUT, "max_retries": 0, "merge_strategy": "manual"}
        answer = server.call("POST", "/api/v1/orchestrate", json={"request": "wait", "tasks": tasks, "config": config})
        assert answer.status_code == 202, answer.text
        root = answer.json()["job_id"]

        def all_running():
            records = server.records(root).values()  # "running" is on disk once it ran 0.1 s
            return len(records) == 3 and all(r["status"] == "running" for r in records)

        wait_until(all_running, timeout=30, what="three workers running")
        # When the server is stopped for longer than the timeout, and then continued
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(STOP)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        done = server.call("GET", f"/api/v1/jobs/{root}/wait?timeout=25").json()
        assert done["status"] not in ("running", "pending"), done["status"]
        records = server.records(root)
        runs = {r["task"]: (r, r["attempts"][-1]) for r in records.values()}
        seconds = {task: attempt["ended_at"] - attempt["started_at"] for task, (_, attempt) in runs.items()}
        # Then the worker that would have run on was stopped while the server slept, at its backstop
        # deadline (TIMEOUT + kill_grace + 2 s), by its keeper, and the woken server records a timeout saying so
        record, attempt = runs["sleep 40"]
        assert record["status"] == "timeout" and attempt["end_reason"] == "timeout", record
        assert attempt["kill_rung"] == "SIGTERM" and BACKSTOP - 0.5 < seconds["sleep 40"] < STOP, (attempt, seconds)
        keeper = "its shim" if sandbox == "on" else "its workspace's supervisor"
        assert f"its deadline passed while no server watched it, and {keeper} stopped it" in record["error"], record
        # the one that ended by itself past its timeout while the server slept timed out, by its exit file's time
        record, attempt = runs["sleep 7"]
        assert record["status"] == "timeout" and attempt["exit_code"] == 0 and attempt["kill_rung"] is None, record
        assert "seen later" in record["error"]
        assert 6.9 <= seconds["sleep 7"] < STOP, seconds  # was the time the server woke
        # and the one that ended within its timeout succeeded, with its own duration
        record, attempt = runs["sleep 2"]
        assert record["status"] == "success", record
        assert 1.9 <= seconds["sleep 2"] < TIMEOUT, seconds  # was about STOP
    finally:
        # killed, not stopped: every worker has ended by now, and a SIGTERM'd server takes 60 s to
        # leave its HTTP loop here (seen before this change too)
        server.kill()
    assert host_state(host, folder, tmp_path) == before
