"""Candidates under fake time: first_passing stops the rest at once, a job
ends only after its selections, and a restarted server makes the selections the old one left
undone (or had made) without running any candidate twice. The selection itself is the real one."""

from __future__ import annotations

import threading

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.testing import Script as S

from .helpers import engine_scenarios as scenarios
from .helpers.engine_scenarios import crash_while_running, until

make_rig = scenarios.make_rig


def test_first_passing_cancels_the_other_candidates_as_soon_as_one_passes(make_rig):
    rig = make_rig(auto=False)
    rig.fake.script("worker_1", S(duration=5))
    rig.fake.default = S(duration=1000)
    job = rig.submit(
        [{"id": "a", "task": "x"}], {"attempts": 3, "select": "first_passing", "max_workers": 2, "default_timeout": 3000}
    )
    start = rig.clock.monotonic()
    rig.started(2)
    rig.clock.advance(6)  # worker_1 passes; worker_2 runs on; worker_3 waits for a slot (or just took worker_1's)
    done = rig.wait(job)
    statuses = rig.statuses(done)
    assert statuses["worker_1"] == "success"
    assert statuses["worker_2"] == "cancelled" and statuses["worker_3"] in ("cancelled", "skipped")
    assert rig.clock.monotonic() - start < 500  # nobody waited out the others' 1000 s
    assert done.selections["a"].winner == "worker_1"
    assert done.status is JobStatus.COMPLETED


def test_a_restart_while_candidates_run_chooses_once_they_end(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(duration=10)
    job = crash_while_running(rig, [{"id": "a", "task": "x"}], {"attempts": 2})
    assert rig.engine.takeover.recover() == [job.id]
    rig.clock.release()
    done = rig.wait(job)
    assert done.status is JobStatus.COMPLETED
    assert done.selections["a"].winner in ("worker_1", "worker_2")
    assert sum(1 for w in rig.workers(done).values() if w.selected) == 1
    assert len(rig.fake.handles) == 2  # nothing ran twice


@pytest.mark.slow
def test_a_selection_the_old_server_never_made_is_made_after_a_restart(make_rig):
    rig = make_rig()
    stuck = threading.Event()
    rig.engine.choosing.chooser = lambda *a, **k: stuck.wait() and None  # the server dies mid-choice
    job = rig.submit([{"id": "a", "task": "x"}, {"id": "b", "task": "y", "depends_on": ["a"]}], {"attempts": 2})
    until(
        lambda: (
            ("a" not in rig.engine.queries.get_job(job.id).selections)
            and rig.statuses(rig.engine.queries.get_job(job.id)).get("worker_2") == "success"
        ),
        "both candidates ended",
    )
    rig.restart()
    assert rig.engine.takeover.recover() == [job.id]
    done = rig.wait(job)
    assert done.status is JobStatus.COMPLETED
    assert done.selections["a"].winner in ("worker_1", "worker_2")
    assert rig.workers(done)["worker_3"].status is WorkerStatus.SUCCESS
    assert sorted(done.selections) == ["a", "b"]  # config.attempts makes candidates of every task
    assert len(rig.fake.handles) == 4  # nothing ran twice


def test_the_judges_cost_counts_toward_the_tree_and_its_budget(make_rig):
    from orchestrator.outcomes import JudgeRecord
    from orchestrator.selection import Selection

    rig = make_rig(orchestrator={"claude_command": "true"})  # "installed": the chooser below stands in for the judge
    judged = Selection(
        winner="worker_2", reason="the judge preferred worker_2", ranking=[], judge=JudgeRecord(None, None), cost_usd=0.25
    )
    rig.engine.choosing.chooser = lambda *a, **k: judged
    done = rig.run([{"id": "a", "task": "x"}], {"attempts": 2, "select": "judge", "judge": {"kind": "claude"}})
    assert done.selections["a"].winner == "worker_2" and done.judge_cost_usd == 0.25
    doc = rig.engine.queries.status_document(done.id)
    assert doc["tree"]["cost_usd"] == 0.25, doc["tree"]
    assert rig.engine.tables.tree_cost[done.root_id] == 0.25


@pytest.mark.parametrize("child_fails", [True, False])
def test_a_winner_whose_child_job_did_not_complete_leaves_its_job_partial(make_rig, child_fails):
    """A task run as candidates counts by its winner: one that exited 0 after its child job failed
    (child_incomplete) is chosen, its work lands, and its job is partial; the same winner whose child
    completed (recursive_success) leaves it completed."""
    rig = make_rig()
    rig.fake.script("worker_1", S(children=[["part"]]))
    rig.fake.script("worker_1_1", S(exit=1 if child_fails else 0))
    rig.fake.script("worker_2", S(exit=1))
    job = rig.run([{"id": "a", "task": "x"}], {"attempts": 2, "select": "first_passing", "max_retries": 0})
    statuses = rig.statuses(job)
    assert job.selections["a"].winner == "worker_1", job.selections
    assert statuses["worker_1"] == ("child_incomplete" if child_fails else "recursive_success")
    assert job.status is (JobStatus.PARTIAL if child_fails else JobStatus.COMPLETED)
