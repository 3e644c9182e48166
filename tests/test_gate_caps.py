"""The workers' caps hold for the processes the orchestrator runs on a worker's checkout (issue 48 item 5):
a quality gate and ``git.setup`` run the worker's (or the project's) code there, so a gate that forks
past ``workers.max_processes`` or writes past ``workers.max_disk_mb`` is stopped at that cap, its
result names it, the worker fails closed, and nothing it started outlives it.

A real server on a host repository, a ``command`` worker (tests/helpers/nesting.py's), real gates
and a real ``git.setup``, in the worker's sandbox (bubblewrap, Landlock). As root the process cap is
the kernel's (a cgroup's ``pids.max``); as an ordinary user (tests/run_as_user.sh) it is sampled, and
the reason says which.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator.models import WorkerStatus
from orchestrator.process.cgroups import hierarchies

from .helpers import nesting as nesting_helpers
from .helpers.worktree import snapshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
served = nesting_helpers.served

# Sleeping children past the cap: 200 tries under a cap of 64 (each one a unique command line).
FORKS = "for i in $(seq 200); do sleep 4321 & done; wait"
# A 20 MiB file in the checkout under a disk cap of 5 MiB.
BIG = "head -c 20971520 /dev/zero > big.bin; echo wrote"
CAPS = {"max_processes": 64, "max_disk_mb": 5, "max_log_mb": 0}


def held_by() -> str:
    """What holds the process cap here, as a reason names it: a cgroup's pids.max (root, a delegated
    subtree), else sampling (an ordinary user on a v1 machine: tests/run_as_user.sh)."""
    found = hierarchies().bases.get("pids")
    return found[0].value if found is not None else "sampled"


def sleepers() -> list[int]:
    """Live processes running ``sleep 4321`` (the fork gate's children)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline == b"sleep\x004321\x00":
                found.append(int(entry.name))
    return found


def run_one(live, task: str = "write a.txt=hello") -> tuple[dict, list]:
    """One job of one worker: its end document and its worker records."""
    root_id = live.submit(request="one", tasks=[task]).json()["job_id"]
    doc = nesting_helpers.wait(live, root_id)
    _, workers = live.engine.queries.snapshot(root_id)
    return doc, workers


def gone_soon(timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := sleepers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_gate_that_forks_past_the_process_cap_is_stopped_at_it_and_the_worker_fails(served, backend):
    host, folder, start = served
    before = snapshot(host, folder)
    gates = [{"name": "forks", "run": FORKS, "shell": True, "timeout": 120}]
    live = start(sandbox="on", sections={"workers": {"sandbox_backend": backend, **CAPS}, "tasks": {"gates": gates}})
    started = time.monotonic()
    doc, (worker,) = run_one(live)
    assert doc["status"] == "failed", doc
    (gate,) = worker.gates
    assert gate.status == "failed" and gate.reason.startswith("stopped at a worker's cap: process cap"), gate
    assert f"workers.max_processes, {held_by()})" in gate.reason, gate.reason
    assert worker.status is WorkerStatus.FAILED and "process cap" in (worker.exit_reason or ""), worker.exit_reason
    assert time.monotonic() - started < 100  # stopped at the cap, not at its timeout
    assert gone_soon() == []  # none of its children outlives it
    assert snapshot(host, folder) == before  # the user's branch, index, tree and refs as they were


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_gate_that_writes_past_the_disk_cap_is_stopped_at_it_and_the_worker_fails(served, backend):
    host, folder, start = served
    before = snapshot(host, folder)
    gates = [{"name": "big", "run": BIG, "shell": True, "timeout": 120}]
    live = start(sandbox="on", sections={"workers": {"sandbox_backend": backend, **CAPS}, "tasks": {"gates": gates}})
    doc, (worker,) = run_one(live)
    assert doc["status"] == "failed", doc
    (gate,) = worker.gates
    assert gate.status == "failed" and gate.reason.startswith("stopped at a worker's cap: disk cap"), gate
    assert "workers.max_disk_mb" in gate.reason, gate.reason
    assert worker.status is WorkerStatus.FAILED and "disk cap" in (worker.exit_reason or "")
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_gate_held_at_the_file_size_limit_names_it(served, backend):
    """With max_log_mb set too, no file may pass the larger of the two caps (RLIMIT_FSIZE, as the
    worker's): the kernel refuses the gate's 20 MiB file at 5 MiB."""
    host, folder, start = served
    gates = [{"name": "big", "run": BIG, "shell": True, "timeout": 120}]
    workers = {"sandbox_backend": backend, **CAPS, "max_log_mb": 5}
    live = start(sandbox="on", sections={"workers": workers, "tasks": {"gates": gates}})
    doc, (worker,) = run_one(live)
    (gate,) = worker.gates
    assert gate.status == "failed" and "disk cap" in gate.reason and "workers.max_disk_mb" in gate.reason, gate
    assert doc["status"] == "failed"


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_git_setup_that_forks_past_the_process_cap_fails_the_worker_naming_it(served, backend):
    host, folder, start = served
    before = snapshot(host, folder)
    sections = {"workers": {"sandbox_backend": backend, **CAPS}}
    live = start(sandbox="on", sections=sections, isolation="worktree", setup=["sh", "-c", FORKS])
    doc, (worker,) = run_one(live)
    assert doc["status"] == "failed", doc
    assert worker.status is WorkerStatus.FAILED, worker
    reason = worker.exit_reason or ""
    assert "setup failed: stopped at a worker's cap: process cap" in reason, reason
    assert f"workers.max_processes, {held_by()})" in reason, reason
    assert gone_soon() == []
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_git_setup_that_writes_past_the_disk_cap_fails_the_worker_naming_it(served, backend):
    host, folder, start = served
    before = snapshot(host, folder)
    sections = {"workers": {"sandbox_backend": backend, **CAPS}}
    live = start(sandbox="on", sections=sections, isolation="worktree", setup=["sh", "-c", BIG])
    doc, (worker,) = run_one(live)
    assert doc["status"] == "failed", doc
    reason = worker.exit_reason or ""
    assert "setup failed: stopped at a worker's cap: disk cap" in reason and "workers.max_disk_mb" in reason, reason
    assert snapshot(host, folder) == before


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_scoring_command_that_forks_past_the_process_cap_is_stopped_at_it(served, backend):
    """``scoring.command`` runs on a candidate's checkout: held at the process cap, and ended there
    (not left at the cap until scoring.timeout), its measures' status naming the cap."""
    host, folder, start = served
    sections = {
        "workers": {"sandbox_backend": backend, **CAPS},
        "scoring": {"command": ["sh", "-c", FORKS], "timeout": 120},
    }
    live = start(sandbox="on", sections=sections)
    started = time.monotonic()
    root_id = live.submit(request="best of two", tasks=["write a.txt=hi"], config={"attempts": 2, "select": "best"}).json()[
        "job_id"
    ]
    nesting_helpers.wait(live, root_id)
    (selection,) = live.engine.queries.get_job(root_id).selections.values()
    said = [str(row.measures.get("scoring_command")) for row in selection.ranking]
    assert len(said) == 2 and all(s.startswith("stopped at a worker's cap: process cap") for s in said), said
    assert all(f"workers.max_processes, {held_by()})" in s for s in said), said
    assert time.monotonic() - started < 100  # stopped at the cap, not at scoring.timeout
    assert gone_soon() == []
