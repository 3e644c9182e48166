"""Engine scenarios in fake time: the engine's decisions (dispatch, limits, retries and backoff,
timeouts and the kill ladder, deadlines, budgets, recursion caps, cancel, recovery after a
restart, job outcomes) through its public interface (submit, wait, cancel, snapshot, recover),
with tests/fake_executor.py's FakeExecutor and FakeClock instead of processes and real time.

No process starts here: an autouse fixture makes subprocess.Popen, os.fork and os.posix_spawn
raise. What only real processes prove (the shim, the kill ladder on a real tree, the tag
sweep) stays in test_engine.py, test_shim.py, test_executor_contract.py and the chaos suite.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from orchestrator import protocol
from orchestrator.engine import Engine
from orchestrator.errors import ConfigError, Conflict, JobNotFound, ValidationError
from orchestrator.executor import Sample
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.recovery import LOST_REASON

from .conftest import make_settings
from .fake_executor import FakeClock, FakeExecutor, Script, claude_result

DEFAULTS = {
    "workers": {"retry_backoff": 1.0, "retry_backoff_max": 60.0, "kill_grace": 5.0, "default_timeout": 30.0,
                "max_retries": 2, "monitor_interval": 0.25},
    "recursion": {"tree_deadline": 0},
    "orchestrator": {"worker": "simulated"},
}
WAIT = 10  # real seconds a scenario may take before it counts as hung


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    """The claim "without starting a process" is enforced, not hoped for."""
    def refused(*args, **kwargs):
        raise AssertionError("an engine scenario tried to start a process")

    monkeypatch.setattr(subprocess, "Popen", refused)
    for name in ("fork", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refused)


class Rig:
    """An engine on a FakeExecutor and a FakeClock, over a workspace in memory-backed storage."""

    def __init__(self, base: Path, *, auto: bool = True, **sections):
        merged = {name: dict(values) for name, values in DEFAULTS.items()}
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        self.settings = make_settings(base, **merged)
        self.clock = FakeClock(auto=auto)
        self.fake = FakeExecutor(self.clock)
        self.engines: list[Engine] = []
        self.engine = self.new_engine()

    def new_engine(self) -> Engine:
        engine = Engine(self.settings, executor=self.fake, clock=self.clock)
        self.fake.engine = engine
        self.engines.append(engine)
        return engine

    def submit(self, tasks, config=None, request="job"):
        return self.engine.submit(request, config, tasks)

    def run(self, tasks, config=None, request="job"):
        job = self.submit(tasks, config, request)
        done = self.engine.wait(job.id, WAIT)
        assert done.status.terminal, f"job {job.id} still {done.status.value}"
        return done

    def wait(self, job):
        done = self.engine.wait(job.id, WAIT)
        assert done.status.terminal, f"job {job.id} still {done.status.value}"
        return done

    def workers(self, job):
        """The job's own workers by name, as the engine reports them."""
        _, workers = self.engine.snapshot(job.root_id)
        return {w.name: w for w in workers if w.job_id == job.id}

    def jobs(self, job):
        jobs, _ = self.engine.snapshot(job.root_id)
        return {j.id: j for j in jobs}

    def statuses(self, job):
        return {name: w.status.value for name, w in sorted(self.workers(job).items())}

    def restart(self):
        """The server is killed (kill -9) and a new one starts on the same workspace and machine."""
        self.fake.kill_server()
        engine = self.new_engine()
        self.fake.restart(engine)
        self.engine = engine
        return engine

    def close(self):
        for engine in self.engines:
            engine.shutdown(timeout=5)


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


def attempts_of(worker):
    return [(a.exit_code, a.signal, a.end_reason) for a in worker.attempts]


def until(predicate, what, timeout=WAIT):
    """For the few scenarios that act while a worker runs (manual clock): real time, bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.002)


# -- dispatch and limits ---------------------------------------------------------------------

@pytest.mark.parametrize(("tasks", "max_workers", "global_max", "running"), [
    (5, 2, 16, 2),  # the job's own limit
    (5, 5, 3, 3),  # the server's limit
    (2, 5, 16, 2),  # fewer tasks than either limit
    (4, 1, 1, 1),  # both at one
])
def test_workers_start_within_the_job_and_server_limits(make_rig, tasks, max_workers, global_max, running):
    rig = make_rig(auto=False, workers={"global_max_workers": global_max})
    job = rig.submit([f"t{i}" for i in range(tasks)], {"max_workers": max_workers})
    statuses = list(rig.statuses(job).values())
    assert statuses.count("running") == running and statuses.count("pending") == tasks - running
    assert rig.engine.counts()["slots_used"] == running
    rig.clock.release()
    assert rig.wait(job).status is JobStatus.COMPLETED
    assert len(rig.fake.handles) == tasks


def test_a_job_at_its_own_limit_leaves_the_free_server_slot_to_the_next_job(make_rig):
    rig = make_rig(auto=False, workers={"global_max_workers": 2})
    first = rig.submit(["a1", "a2"], {"max_workers": 1})
    second = rig.submit(["b1"])
    assert rig.statuses(first) == {"worker_1": "running", "worker_2": "pending"}
    assert rig.statuses(second) == {"worker_1": "running"}
    rig.clock.release()
    assert rig.wait(first).status is rig.wait(second).status is JobStatus.COMPLETED


def test_the_server_limit_is_shared_by_all_jobs(make_rig):
    rig = make_rig(auto=False, workers={"global_max_workers": 2})
    first = rig.submit(["a1", "a2"])
    second = rig.submit(["b1"])
    assert rig.statuses(first) == {"worker_1": "running", "worker_2": "running"}
    assert rig.statuses(second) == {"worker_1": "pending"}
    assert rig.engine.counts() == {"jobs_running": 2, "workers_running": 2, "slots_used": 2}
    rig.clock.release()
    rig.wait(second)


def test_a_free_slot_goes_to_the_oldest_job_first(make_rig):
    rig = make_rig(auto=False, workers={"global_max_workers": 1})
    first = rig.submit(["a1", "a2"])
    second = rig.submit(["b1"])
    rig.clock.release()
    rig.wait(first), rig.wait(second)
    order = [(h.env[protocol.JOB_ID], h.worker) for h in rig.fake.handles]
    assert order == [(first.id, "worker_1"), (first.id, "worker_2"), (second.id, "worker_1")]


def test_workers_of_one_job_start_in_task_order(make_rig):
    rig = make_rig(workers={"global_max_workers": 1})
    job = rig.run(["one", "two", "three"])
    assert [h.worker for h in rig.fake.handles] == ["worker_1", "worker_2", "worker_3"]
    assert [w.task for w in rig.workers(job).values()] == ["one", "two", "three"]


def test_a_parent_lends_its_slot_to_its_child_job_so_a_tree_finishes_under_a_limit_of_one(make_rig):
    rig = make_rig(workers={"global_max_workers": 1})
    rig.fake.script("worker_1", Script(children=[["sub a"]]))
    rig.fake.script("worker_1_1", Script(children=[["sub sub"]]))
    job = rig.run(["parent"])
    assert job.status is JobStatus.COMPLETED
    assert rig.statuses(job) == {"worker_1": "recursive_success"}
    jobs = rig.jobs(job)
    assert sorted((j.depth, j.status.value) for j in jobs.values()) == [(0, "completed"), (1, "completed"), (2, "completed")]
    assert rig.engine.counts()["slots_used"] == 0


def test_a_lent_slot_goes_to_the_oldest_pending_job_first(make_rig):
    # worker_1 asks for a child job while worker_2 of the (older) root job still waits: worker_2 goes first
    rig = make_rig(workers={"global_max_workers": 1})
    rig.fake.script("worker_1", Script(children=[["sub"]]))
    job = rig.run(["parent", "sibling"])
    assert [h.worker for h in rig.fake.handles] == ["worker_1", "worker_2", "worker_1_1"]
    assert rig.statuses(job) == {"worker_1": "recursive_success", "worker_2": "success"}


def test_a_child_job_with_several_tasks_names_its_workers_after_the_parent(rig):
    rig.fake.script("worker_1", Script(children=[["x", "y"], ["z"]]))
    job = rig.run(["parent"])
    children = [j for j in rig.jobs(job).values() if j.depth == 1]
    assert sorted(n for j in children for n in j.worker_names) == ["worker_1_1", "worker_1_2", "worker_1_3"]
    assert all(j.parent_worker == "worker_1" and j.parent_job_id == job.id for j in children)
    assert rig.workers(job)["worker_1"].child_job_ids == [j.id for j in sorted(children, key=lambda j: j.id)]
