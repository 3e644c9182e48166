"""Task graphs in fake time: the scheduler's decisions through the engine's
public interface, with orchestrator.testing's fakes instead of processes (folder isolation: readiness
is a prerequisite's success; test_graph_jobs.py proves the worktree merges with real git)."""

from __future__ import annotations

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.testing import Script as S

from .helpers import engine_scenarios as scenarios
from .helpers.engine_scenarios import crash_while_running, until

# The scenarios' fixtures: a rig per test, and no process may start.
make_rig = scenarios.make_rig
no_processes = scenarios.no_processes


def chain(*ids: str) -> list[dict]:
    return [{"id": t, "task": t, "depends_on": [ids[i - 1]] if i else []} for i, t in enumerate(ids)]


def order(rig) -> list[str]:
    return [h.worker for h in rig.fake.handles]


def test_a_chain_runs_one_task_at_a_time_in_its_order_whatever_the_plan_order(make_rig):
    rig = make_rig()
    tasks = [
        {"id": "c", "task": "c", "depends_on": ["b"]},
        {"id": "a", "task": "a"},
        {"id": "b", "task": "b", "depends_on": ["a"]},
    ]
    done = rig.run(tasks, {"max_workers": 3})
    assert done.status is JobStatus.COMPLETED
    assert order(rig) == ["worker_2", "worker_3", "worker_1"]
    workers = rig.workers(done)
    assert workers["worker_1"].started_at >= workers["worker_3"].ended_at >= workers["worker_2"].ended_at
    assert workers["worker_2"].unblocked == ["b"] and workers["worker_3"].unblocked == ["c"]
    assert workers["worker_1"].unblocked == []


def test_independent_tasks_beside_a_chain_use_the_free_slots(make_rig):
    rig = make_rig(auto=False)  # time moves only when told
    rig.fake.script("worker_1", S(duration=5))
    tasks = [*chain("a", "b"), {"id": "x", "task": "x"}, {"id": "y", "task": "y"}]
    job = rig.submit(tasks, {"max_workers": 2})
    rig.started(2)
    assert sorted(order(rig)) == ["worker_1", "worker_3"]  # a and x; b waits on a
    rig.clock.advance(1)  # x ends; a still runs
    rig.started(3)
    assert order(rig)[2] == "worker_4"  # y takes x's slot, not b
    rig.clock.release()
    done = rig.wait(job)
    assert done.status is JobStatus.COMPLETED and order(rig)[3] == "worker_2"


def test_a_task_waiting_on_a_child_incomplete_worker_starts_its_work_being_done(make_rig):
    """A child_incomplete worker's own work is done (``WorkerStatus.ok``): a task that depends on it
    runs; the job is partial all the same."""
    rig = make_rig()
    rig.fake.script("worker_1", S(children=[["bad"]]))
    rig.fake.script("worker_1_1", S(exit=1))
    job = rig.run(chain("a", "b"), {"max_retries": 0})
    assert rig.statuses(job) == {"worker_1": "child_incomplete", "worker_2": "success"}
    assert job.status is JobStatus.PARTIAL


def test_a_failed_task_skips_everything_downstream_and_the_rest_completes(make_rig):
    rig = make_rig()
    rig.fake.script("worker_1", S(exit=2))
    tasks = [*chain("a", "b", "c"), {"id": "x", "task": "x"}]
    done = rig.run(tasks, {"max_retries": 0})
    statuses = rig.statuses(done)
    assert statuses == {"worker_1": "failed", "worker_2": "skipped", "worker_3": "skipped", "worker_4": "success"}
    workers = rig.workers(done)
    assert workers["worker_3"].exit_reason == "skipped: dependency a failed: exit code 2"
    assert done.status is JobStatus.PARTIAL and sorted(order(rig)) == ["worker_1", "worker_4"]


def test_on_failure_stop_cancels_the_running_and_skips_the_pending(make_rig):
    rig = make_rig(auto=False)  # time moves only when told: x is surely still running when a fails
    rig.fake.script("worker_1", S(exit=2, duration=1))
    rig.fake.script("worker_3", S(duration=100))
    tasks = [*chain("a", "b"), {"id": "x", "task": "x"}]
    job = rig.submit(tasks, {"max_retries": 0, "on_failure": "stop", "default_timeout": 500})
    rig.started(2)
    rig.clock.advance(2)
    until(lambda: rig.engine.queries.get_job(job.id).error is not None, "the job stopped")
    rig.clock.release()
    done = rig.wait(job)
    assert rig.statuses(done) == {"worker_1": "failed", "worker_2": "skipped", "worker_3": "cancelled"}
    assert done.status is JobStatus.FAILED and done.error == "stopped: task a failed (on_failure: stop)"
    assert (
        "skipped: the job stopped: task a failed (on_failure: stop) before it started"
        == rig.workers(done)["worker_2"].exit_reason
    )


def test_on_failure_continue_starts_dependents_once_their_prerequisites_ended(make_rig):
    rig = make_rig()
    rig.fake.script("worker_1", S(exit=2))
    done = rig.run(chain("a", "b"), {"max_retries": 0, "on_failure": "continue"})
    assert rig.statuses(done) == {"worker_1": "failed", "worker_2": "success"}
    assert rig.workers(done)["worker_1"].unblocked == ["b"]


def test_a_retried_prerequisite_unblocks_only_once_it_succeeds(make_rig):
    rig = make_rig()
    rig.fake.script("worker_1", S(exit=1), S())
    done = rig.run(chain("a", "b"), {"max_retries": 1})
    assert done.status is JobStatus.COMPLETED and order(rig) == ["worker_1", "worker_1", "worker_2"]


def test_a_graph_goes_on_in_order_after_a_restart(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(duration=10)
    job = crash_while_running(rig, chain("a", "b", "c"))
    assert rig.engine.takeover.recover() == [job.id]
    rig.clock.release()
    done = rig.wait(job)
    assert done.status is JobStatus.COMPLETED
    assert order(rig) == ["worker_1", "worker_2", "worker_3"]  # a adopted, then b and c once each


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_cancelled_graph_job_ends_cancelled(make_rig, policy):
    rig = make_rig(auto=False)
    rig.fake.default = S(duration=50)
    job = rig.submit(chain("a", "b"), {"on_failure": policy})
    rig.started(1)
    rig.engine.cancel(job.id)
    rig.clock.release()
    done = rig.wait(job)
    assert done.status is JobStatus.CANCELLED
    assert rig.statuses(done) == {"worker_1": "cancelled", "worker_2": "skipped"}
    assert rig.workers(done)["worker_2"].status is WorkerStatus.SKIPPED
