"""The status tables (states.py): every legal transition is accepted, illegal ones are refused
with a message naming the record, from and to; strict (the tests, via conftest) raises, else
the refusal is logged and the old status kept. Pure: no process, no server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from orchestrator import protocol, states
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.states import IllegalTransition, WorkerPhase


def job(status: JobStatus) -> JobRecord:
    return JobRecord(id="20260101-000000-abcd", root_id="20260101-000000-abcd", request="x", status=status)


def worker(status: WorkerStatus) -> WorkerRecord:
    return WorkerRecord(
        job_id="20260101-000000-abcd",
        root_id="20260101-000000-abcd",
        name="worker_2",
        index=2,
        depth=0,
        task="t",
        kind="simulated",
        status=status,
    )


@dataclass
class Held:
    record: WorkerRecord
    phase: WorkerPhase


def held(phase: WorkerPhase) -> Held:
    return Held(worker(WorkerStatus.RUNNING), phase)


def test_the_tests_run_strict():
    assert states.strict(), f"tests/conftest.py sets {protocol.STRICT_STATES}=1"


def test_the_tables_cover_every_status_and_terminal_ones_lead_nowhere():
    assert set(states.JOB_TRANSITIONS) == set(JobStatus)
    assert set(states.WORKER_TRANSITIONS) == set(WorkerStatus)
    assert set(states.PHASE_TRANSITIONS) == set(WorkerPhase)
    assert {s for s, to in states.JOB_TRANSITIONS.items() if not to} == {s for s in JobStatus if s.terminal}
    # A worker that ran leads only back to running: a continue round (engine/continuing.py); a skipped one nowhere.
    ran = {s for s in WorkerStatus if s.terminal and s is not WorkerStatus.SKIPPED}
    assert all(states.WORKER_TRANSITIONS[s] == {WorkerStatus.RUNNING} for s in ran)
    assert not states.WORKER_TRANSITIONS[WorkerStatus.SKIPPED]
    assert not states.PHASE_TRANSITIONS[WorkerPhase.SETTLED]
    assert "planning" not in {s.value for s in JobStatus}, "PLANNING was never used: a job exists once planned"


@pytest.mark.parametrize(("old", "new"), [(a, b) for a, to in states.JOB_TRANSITIONS.items() for b in sorted(to)])
def test_each_legal_job_transition_is_accepted(old, new):
    record = job(old)
    assert states.set_job_status(record, new) and record.status is new


@pytest.mark.parametrize(("old", "new"), [(a, b) for a, to in states.WORKER_TRANSITIONS.items() for b in sorted(to)])
def test_each_legal_worker_transition_is_accepted(old, new):
    record = worker(old)
    assert states.set_worker_status(record, new) and record.status is new


@pytest.mark.parametrize(("old", "new"), [(a, b) for a, to in states.PHASE_TRANSITIONS.items() for b in sorted(to, key=str)])
def test_each_legal_phase_transition_is_accepted(old, new):
    live = held(old)
    assert states.set_phase(live, new) and live.phase is new


def test_writing_the_same_status_again_is_no_transition():
    record = worker(WorkerStatus.RUNNING)  # each retry's attempt says "running" again
    assert states.set_worker_status(record, WorkerStatus.RUNNING) and record.status is WorkerStatus.RUNNING
    done = job(JobStatus.COMPLETED)
    assert states.set_job_status(done, JobStatus.COMPLETED)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (JobStatus.PENDING, JobStatus.COMPLETED),  # a job never ends before it runs
        (JobStatus.COMPLETED, JobStatus.RUNNING),
        (JobStatus.CANCELLED, JobStatus.FAILED),
        (JobStatus.RUNNING, JobStatus.PENDING),
    ],
)
def test_illegal_job_transitions_are_refused_naming_the_job(old, new):
    record = job(old)
    with pytest.raises(IllegalTransition) as refused:
        states.set_job_status(record, new)
    message = str(refused.value)
    assert f"job {record.id}" in message and f"{old.value} -> {new.value}" in message
    assert record.status is old


def test_a_running_worker_may_end_child_incomplete_and_run_again_in_a_continue_round():
    record = worker(WorkerStatus.RUNNING)
    assert states.set_worker_status(record, WorkerStatus.CHILD_INCOMPLETE) and record.status.terminal
    assert states.set_worker_status(record, WorkerStatus.RUNNING) and record.status is WorkerStatus.RUNNING


def test_child_incomplete_is_ok_to_land_but_not_complete():
    """Its own work counts (it lands, unblocks, may win), but nothing counts it as succeeded."""
    assert WorkerStatus.CHILD_INCOMPLETE.ok and not WorkerStatus.CHILD_INCOMPLETE.complete
    assert {s for s in WorkerStatus if s.complete} == {WorkerStatus.SUCCESS, WorkerStatus.RECURSIVE_SUCCESS}
    assert {s for s in WorkerStatus if s.ok} == {
        WorkerStatus.SUCCESS,
        WorkerStatus.RECURSIVE_SUCCESS,
        WorkerStatus.CHILD_INCOMPLETE,
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (WorkerStatus.PENDING, WorkerStatus.SUCCESS),  # never ran: it cannot have succeeded
        (WorkerStatus.PENDING, WorkerStatus.CHILD_INCOMPLETE),
        (WorkerStatus.CHILD_INCOMPLETE, WorkerStatus.SUCCESS),  # only a continue round (running) leads out
        (WorkerStatus.SKIPPED, WorkerStatus.CHILD_INCOMPLETE),
        (WorkerStatus.RUNNING, WorkerStatus.SKIPPED),  # it started: it is not "never started"
        (WorkerStatus.SKIPPED, WorkerStatus.RUNNING),
        (WorkerStatus.FAILED, WorkerStatus.RECURSIVE_SUCCESS),
        (WorkerStatus.CANCELLED, WorkerStatus.PENDING),
    ],
)
def test_illegal_worker_transitions_are_refused_naming_the_worker(old, new):
    record = worker(old)
    with pytest.raises(IllegalTransition) as refused:
        states.set_worker_status(record, new)
    message = str(refused.value)
    assert "worker depth_0_worker_2 of job 20260101-000000-abcd" in message
    assert f"{old.value} -> {new.value}" in message
    assert record.status is old


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (WorkerPhase.WAITING, WorkerPhase.LENDING),  # only a running worker can start a child job
        (WorkerPhase.EXITED, WorkerPhase.RUNNING),
        (WorkerPhase.SETTLED, WorkerPhase.SETTLING),
        (WorkerPhase.RUNNING, WorkerPhase.SETTLING),  # settled only after its process exited
        (WorkerPhase.EXITED, WorkerPhase.EXITED),  # its process cannot end twice
        (WorkerPhase.SETTLED, WorkerPhase.SETTLED),
    ],
)
def test_illegal_phase_transitions_are_refused(old, new):
    live = held(old)
    with pytest.raises(IllegalTransition, match=f"phase of worker depth_0_worker_2 .*{old.value} -> {new.value}"):
        states.set_phase(live, new)
    assert live.phase is old


def test_in_production_a_refusal_is_logged_and_the_old_status_kept(monkeypatch, caplog):
    monkeypatch.delenv(protocol.STRICT_STATES)
    record = worker(WorkerStatus.SKIPPED)
    with caplog.at_level(logging.ERROR, logger="orchestrator.states"):
        assert states.set_worker_status(record, WorkerStatus.RUNNING) is False
    assert record.status is WorkerStatus.SKIPPED
    assert "illegal transition of worker depth_0_worker_2" in caplog.text and "skipped -> running" in caplog.text
    assert "kept skipped" in caplog.text


def test_phases_say_what_the_old_flags_said():
    assert [p for p in WorkerPhase if p.holds_slot] == [WorkerPhase.RUNNING]
    assert [p for p in WorkerPhase if p.process_ended] == [WorkerPhase.EXITED, WorkerPhase.SETTLING, WorkerPhase.SETTLED]


def test_a_live_worker_exits_once_with_its_outcome():
    from orchestrator.engine.tables import LiveWorker, Outcome

    live = LiveWorker(record=worker(WorkerStatus.PENDING), job=job(JobStatus.RUNNING), tag="t")
    assert live.phase is WorkerPhase.WAITING and live.outcome is None
    skipped = Outcome(WorkerStatus.SKIPPED, "skipped: the job was cancelled before it started")
    live.exited(skipped)
    assert live.phase is WorkerPhase.EXITED and live.outcome is skipped
    with pytest.raises(IllegalTransition, match="exited -> exited"):
        live.exited(Outcome(WorkerStatus.FAILED, "lost"))
    assert live.outcome is skipped
