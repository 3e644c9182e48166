"""Helpers of tests/test_engine_scenarios.py, used by other test files too."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from orchestrator import testing
from orchestrator.models import WorkerStatus

from ..conftest import make_settings

DEFAULTS = {
    "workers": {
        "retry_backoff": 1.0,
        "retry_backoff_max": 60.0,
        "kill_grace": 5.0,
        "default_timeout": 30.0,
        "max_retries": 2,
        "monitor_interval": 0.25,
    },
    "recursion": {"tree_deadline": 0},
    "orchestrator": {"worker": "simulated"},
    "git": {"isolation": "folder"},  # auto asks git (a process) whether the folder is in a repository
}

WAIT = 10  # real seconds a scenario may take before it counts as hung


@pytest.fixture(autouse=True)
def no_processes():
    """The claim "without starting a process" is enforced, not hoped for (testing.no_processes)."""
    with testing.no_processes():
        yield


class Rig(testing.Rig):
    """testing.Rig on the scenarios' settings (DEFAULTS, then ``sections``), in a temp workspace."""

    def __init__(self, base: Path, *, auto: bool = True, **sections):
        merged = {name: dict(values) for name, values in DEFAULTS.items()}
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        super().__init__(make_settings(base, **merged), auto=auto, wait=WAIT)

    def started(self, count):
        """Until ``count`` attempts have started (manual clock: before moving time on)."""
        until(lambda: len(self.fake.handles) >= count, f"{count} attempt(s) started")

    def jobs(self, job):
        jobs, _ = self.engine.queries.snapshot(job.root_id)
        return {j.id: j for j in jobs}

    def statuses(self, job):
        return {name: w.status.value for name, w in sorted(self.workers(job).items())}


@pytest.fixture
def make_rig():
    base = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    rigs = []

    def factory(*, auto=True, **sections):
        rig = Rig(base / str(len(rigs)), auto=auto, **sections)
        rigs.append(rig)
        return rig

    yield factory
    for rig in rigs:
        rig.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def rig(make_rig):
    return make_rig()


def until(predicate, what, timeout=WAIT):
    """For the few scenarios that act while a worker runs (manual clock): real time, bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.002)


def on_disk(rig, job, name):
    _, workers = rig.engine.workspace.load_tree(job.root_id)
    return next(w for w in workers if w.name == name)


def crash_while_running(rig, tasks, config=None, *, recorded=True):
    """Submit, let worker_1 start (and, with ``recorded``, its "running" record reach the disk),
    then kill the server and start a new one on the same workspace."""
    job = rig.submit(tasks, config)
    rig.started(1)
    if recorded:
        # worker_1's own handle: with candidates, worker_2's may be the first to start, and a
        # clock moved on before worker_1's first wait fixed its end would never reach it
        until(lambda: any(h.waits for h in rig.fake.handles if h.worker == "worker_1"), "worker_1's first wait")
        rig.clock.advance(0.5)  # past execution.RUNNING_RECORD_DELAY
        until(lambda: on_disk(rig, job, "worker_1").status is WorkerStatus.RUNNING, "the running record on disk")
    rig.restart()
    return job
