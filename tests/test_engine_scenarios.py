"""Engine scenarios in fake time: the engine's decisions (dispatch, limits, retries and backoff,
timeouts and the kill ladder, deadlines, budgets, recursion caps, cancel, recovery after a
restart, job outcomes) through its public interface (submit, wait, cancel, snapshot, recover),
with orchestrator.testing's FakeExecutor and FakeClock instead of processes and real time.

No process starts here: an autouse fixture (testing.no_processes) makes subprocess.Popen,
os.fork and os.posix_spawn raise. What only real processes prove (the shim, the kill ladder on
a real tree, the tag sweep) stays in test_engine.py, test_shim.py, test_executor_contract.py and the chaos suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from orchestrator import protocol
from orchestrator.checkouts.locks import PathLocks
from orchestrator.engine.recovery import LOST_REASON
from orchestrator.errors import ConfigError, Conflict, JobNotFound, ValidationError
from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.process.executor import Sample
from orchestrator.testing import Script, claude_result

from .helpers import engine_scenarios as scenarios
from .helpers.engine_scenarios import WAIT, crash_while_running, on_disk, until

# The scenarios' fixtures, shared with other test files (tests/helpers/engine_scenarios.py): a rig
# per test, and no process may start (autouse).
make_rig = scenarios.make_rig
rig = scenarios.rig
no_processes = scenarios.no_processes


def attempts_of(worker):
    return [(a.exit_code, a.signal, a.end_reason) for a in worker.attempts]


# -- dispatch and limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "max_workers", "global_max", "running"),
    [
        (5, 2, 16, 2),  # the job's own limit
        (5, 5, 3, 3),  # the server's limit
        (2, 5, 16, 2),  # fewer tasks than either limit
        (4, 1, 1, 1),  # both at one
    ],
)
def test_workers_start_within_the_job_and_server_limits(make_rig, tasks, max_workers, global_max, running):
    rig = make_rig(auto=False, workers={"global_max_workers": global_max})
    job = rig.submit([f"t{i}" for i in range(tasks)], {"max_workers": max_workers})
    statuses = list(rig.statuses(job).values())
    assert statuses.count("running") == running and statuses.count("pending") == tasks - running
    assert rig.engine.counts()["slots_used"] == running
    rig.clock.release()
    assert rig.wait(job).status is JobStatus.COMPLETED
    assert len(rig.fake.handles) == tasks


def test_the_monitor_watches_the_workers_a_scan_of_every_held_worker_finds_running(make_rig):
    # Given 8 workers, 3 at a time, the clock held (the first three run, five wait)
    rig = make_rig(auto=False, workers={"global_max_workers": 3})
    job = rig.submit([f"t{i}" for i in range(8)], {"max_workers": 3})
    tables = rig.engine.tables

    def scan():  # what the monitor read before: every worker held, whose attempt's process runs
        with tables.locked():
            found = [live for live in tables.workers.values() if live.execution is not None]
            return sorted(live.record.key for live in found if live.execution.handle and not live.execution.handle.exited)

    until(lambda: len(scan()) == 3, "three running attempts")
    # Then the workers the monitor samples (kept as they start and end) are the scan's
    watched = rig.engine.worker_threads.watched()
    assert sorted(w.key for w in watched) == scan() == [f"depth_0_worker_{i}" for i in (1, 2, 3)]
    assert len(tables.executing) == 3
    # And once every worker has ended, none is left to sample, as the scan finds
    rig.clock.release()
    assert rig.wait(job).status is JobStatus.COMPLETED
    assert rig.engine.worker_threads.watched() == [] and scan() == [] and tables.executing == {}


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


def test_no_process_can_start_during_a_scenario():
    with pytest.raises(AssertionError, match="tried to start a process"):
        subprocess.Popen(["true"])
    with pytest.raises(AssertionError, match="tried to start a process"):
        os.fork()


# -- retries and backoff ------------------------------------------------------------------------

S = Script
KILLED_OUTSIDE = "killed by SIGKILL (out of memory, or killed from outside; not retried)"


@pytest.mark.parametrize(
    ("scripts", "config", "status", "attempts", "reason"),
    [
        pytest.param(
            [S(exit=1), S(exit=0)], {}, "success", [(1, None, "exit"), (0, None, "exit")], "exit code 0", id="fails-then-succeeds"
        ),
        pytest.param([S(exit=1)], {}, "failed", [(1, None, "exit")] * 3, "exit code 1", id="max_retries-spent"),
        pytest.param([S(exit=1)], {"max_retries": 0}, "failed", [(1, None, "exit")], "exit code 1", id="no-retries"),
        pytest.param([S(exit=1)], {"max_retries": 1}, "failed", [(1, None, "exit")] * 2, "exit code 1", id="one-retry"),
        pytest.param(
            [S(exit=2), S(exit=3), S(exit=0)],
            {},
            "success",
            [(2, None, "exit"), (3, None, "exit"), (0, None, "exit")],
            "exit code 0",
            id="last-retry-succeeds",
        ),
        pytest.param(
            [S(dies_by=signal.SIGSEGV), S()],
            {},
            "success",
            [(None, signal.SIGSEGV, "signal"), (0, None, "exit")],
            "exit code 0",
            id="crash-by-signal-retried",
        ),
        pytest.param(
            [S(dies_by=signal.SIGTERM), S(dies_by=signal.SIGTERM), S(dies_by=signal.SIGTERM)],
            {},
            "failed",
            [(None, signal.SIGTERM, "signal")] * 3,
            "killed by SIGTERM",
            id="signal-every-time",
        ),
        pytest.param(
            [S(dies_by=signal.SIGKILL), S()],
            {},
            "failed",
            [(None, signal.SIGKILL, "signal")],
            KILLED_OUTSIDE,
            id="sigkill-not-retried",
        ),
        pytest.param(
            [S(spawn_error="missing"), S()],
            {},
            "failed",
            [(None, None, "spawn_error")],
            "could not start",
            id="missing-command-not-retried",
        ),
        pytest.param(
            [S(spawn_error="oserror"), S()],
            {},
            "failed",
            [(None, None, "spawn_error")],
            "could not start",
            id="spawn-oserror-not-retried",
        ),
        pytest.param(
            [S(exit=147)], {"max_retries": 0}, "failed", [(147, None, "exit")], "exit code 147", id="exit-147-is-an-exit-code"
        ),
    ],
)
def test_an_attempts_end_decides_the_status_and_whether_it_is_retried(rig, scripts, config, status, attempts, reason):
    rig.fake.script("worker_1", *scripts)
    job = rig.run(["work"], config)
    worker = rig.workers(job)["worker_1"]
    assert worker.status.value == status
    assert attempts_of(worker) == attempts
    assert worker.exit_reason == reason
    assert len(rig.fake.attempts("worker_1")) == sum(1 for a in attempts if a[2] != "spawn_error")
    assert [int(h.env[protocol.ATTEMPT]) for h in rig.fake.attempts("worker_1")] == list(
        range(1, len(rig.fake.attempts("worker_1")) + 1)
    )


def test_a_missing_command_says_how_to_fix_it(rig):
    rig.fake.script("worker_1", S(spawn_error="missing"))
    job = rig.run(["work"])
    worker = rig.workers(job)["worker_1"]
    assert "Install it, or set orchestrator.worker in config.yaml to its full path." in worker.error
    assert job.status is JobStatus.FAILED


def test_retries_wait_a_doubling_backoff_with_jitter(make_rig):
    rig = make_rig(workers={"retry_backoff": 2.0})
    rig.fake.script("worker_1", S(exit=1), S(exit=1), S(exit=0))
    job = rig.run(["work"])
    a = rig.workers(job)["worker_1"].attempts
    first, second = a[1].started_at - a[0].ended_at, a[2].started_at - a[1].ended_at
    assert 2.0 <= first <= 2.5 + 1e-6
    assert 4.0 <= second <= 5.0 + 1e-6


def test_the_backoff_is_capped_by_retry_backoff_max(make_rig):
    rig = make_rig(workers={"retry_backoff": 10.0, "retry_backoff_max": 12.0})
    rig.fake.script("worker_1", S(exit=1), S(exit=1), S(exit=0))
    job = rig.run(["work"])
    a = rig.workers(job)["worker_1"].attempts
    assert 12.0 <= a[2].started_at - a[1].ended_at <= 15.0 + 1e-6


def test_the_worker_log_says_why_and_when_an_attempt_is_retried(rig):
    rig.fake.script("worker_1", S(exit=1, output=["first try broke"]), S(output=["fixed"]))
    job = rig.run(["work"])
    log = rig.engine.workspace.worker_log(job.id, 0, "worker_1").read_text()
    assert "first try broke\n" in log and "fixed\n" in log
    assert "===== attempt 1 failed (exit code 1); retry 1/2 in " in log
    assert log.count("===== attempt 1/3 started ") == 1 and log.count("===== attempt 2/3 started ") == 1


def test_a_cancel_during_the_backoff_ends_the_worker_without_another_attempt(make_rig):
    rig = make_rig(auto=False, workers={"retry_backoff": 100.0, "retry_backoff_max": 100.0})
    rig.fake.script("worker_1", S(exit=1, duration=1))
    job = rig.submit(["work"])
    rig.started(1)
    rig.clock.advance(1)
    log = rig.engine.workspace.worker_log(job.id, 0, "worker_1")
    until(lambda: log.exists() and "retry 1/2 in" in log.read_text(), "the retry's backoff")
    rig.engine.cancel(job.id)
    done = rig.wait(job)
    worker = rig.workers(done)["worker_1"]
    assert (done.status, worker.status) == (JobStatus.CANCELLED, WorkerStatus.CANCELLED)
    assert worker.exit_reason == "cancelled while waiting to retry"
    assert len(rig.fake.handles) == 1


# -- failure classes (what the CLI's structured output says), through the claude adapter ---------


def claude(**kw):
    cost = kw.pop("cost", 0.01)
    return S(exit=kw.pop("exit", 1 if "status" in kw or kw.get("error") else 0), output=claude_result(cost, **kw))


@pytest.mark.parametrize(
    ("scripts", "workers", "config", "status", "attempts", "reason", "failure"),
    [
        pytest.param(
            [claude(status=401, text="Invalid API key")],
            {},
            {},
            "failed",
            1,
            "exit code 1 (authentication failed: not retried)",
            "auth",
            id="401-auth",
        ),
        pytest.param(
            [claude(status=403)], {}, {}, "failed", 1, "exit code 1 (authentication failed: not retried)", "auth", id="403-auth"
        ),
        pytest.param(
            [claude(status=400)],
            {},
            {},
            "failed",
            1,
            "exit code 1 (the service refused the request: not retried)",
            "bad_request",
            id="400-bad-request",
        ),
        pytest.param(
            [claude(status=429), claude()],
            {},
            {"max_retries": 0},
            "success",
            2,
            "exit code 0",
            None,
            id="429-retried-outside-max_retries",
        ),
        pytest.param(
            [claude(status=529)],
            {"transient_retries": 2},
            {},
            "failed",
            3,
            "exit code 1 (rate limit or overload); transient, gave up after 2 transient retries (workers.transient_retries)",
            "transient",
            id="529-gives-up",
        ),
        pytest.param(
            [claude(status=503)],
            {"transient_retries": 0},
            {},
            "failed",
            1,
            "exit code 1 (rate limit or overload); transient, gave up after 0 transient retries (workers.transient_retries)",
            "transient",
            id="503-no-transient-budget",
        ),
        pytest.param(
            [claude(status=429), claude(error=True, text="boom"), claude()],
            {},
            {"max_retries": 1},
            "success",
            3,
            "exit code 0",
            None,
            id="transient-and-plain-budgets-apart",
        ),
        pytest.param(
            [claude(error=True, text="boom")],
            {},
            {"max_retries": 1},
            "failed",
            2,
            "exit code 1",
            None,
            id="plain-error-spends-max_retries",
        ),
        pytest.param(
            [claude(exit=0, error=True, text="it broke")],
            {},
            {"max_retries": 0},
            "failed",
            1,
            "exit code 0 but the worker reported a failure",
            None,
            id="exit-0-with-is_error",
        ),
    ],
)
def test_the_failure_class_decides_the_retry_budget(make_rig, scripts, workers, config, status, attempts, reason, failure):
    rig = make_rig(orchestrator={"worker": "claude"}, workers=workers)
    rig.fake.script("worker_1", *scripts)
    job = rig.run(["work"], config)
    worker = rig.workers(job)["worker_1"]
    assert worker.status.value == status
    assert len(worker.attempts) == attempts == len(rig.fake.attempts("worker_1"))
    assert worker.exit_reason == reason
    assert worker.failure_class == failure


def test_a_transient_failure_waits_four_backoffs_first(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"}, workers={"retry_backoff": 1.0})
    rig.fake.script("worker_1", claude(status=503), claude())
    a = rig.workers(rig.run(["work"]))["worker_1"].attempts
    assert a[0].failure_class == "transient" and a[1].failure_class is None
    assert 4.0 <= a[1].started_at - a[0].ended_at <= 5.0 + 1e-6


def test_a_retry_after_the_service_sent_is_honoured(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"})
    rig.fake.script("worker_1", claude(status=429, retry_after=30), claude())
    worker = rig.workers(rig.run(["work"]))["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS
    assert worker.attempts[0].retry_after == 30
    assert worker.attempts[1].started_at - worker.attempts[0].ended_at == pytest.approx(30, abs=1e-3)


def test_a_retry_after_longer_than_the_cap_fails_at_once(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"}, workers={"transient_backoff_max": 120})
    rig.fake.script("worker_1", claude(status=429, retry_after=500), claude())
    worker = rig.workers(rig.run(["work"]))["worker_1"]
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1
    assert worker.exit_reason.endswith("; the service asked to wait 500s, longer than workers.transient_backoff_max=120s")


def test_every_attempts_cost_is_charged_to_the_worker(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"})
    rig.fake.script("worker_1", claude(status=429, cost=0.1), claude(status=429, cost=0.2), claude(cost=0.3))
    worker = rig.workers(rig.run(["work"]))["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS and len(worker.attempts) == 3
    assert worker.cost_usd == pytest.approx(0.6)
    assert (worker.tokens_in, worker.tokens_out) == (30, 15)


# -- timeouts and the kill ladder ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "workers", "rung", "duration"),
    [
        pytest.param(S(hang=True), {}, "SIGTERM", 5.0, id="ends-on-sigterm"),
        pytest.param(S(hang=True, ignores_first_signal=True), {}, "SIGKILL", 10.0, id="sigkill-after-the-grace"),
        pytest.param(S(hang=True, ignores_first_signal=True), {"kill_grace": 0.0}, "SIGKILL", 5.0, id="no-grace"),
        pytest.param(S(hang=True, ignores_first_signal=True), {"kill_grace": 2.5}, "SIGKILL", 7.5, id="short-grace"),
    ],
)
def test_a_timed_out_attempt_records_the_rung_that_ended_it(make_rig, script, workers, rung, duration):
    rig = make_rig(workers=workers)
    rig.fake.script("worker_1", script)
    job = rig.run(["work"], {"default_timeout": 5})
    worker = rig.workers(job)["worker_1"]
    (attempt,) = worker.attempts
    assert worker.status is WorkerStatus.TIMEOUT and job.status is JobStatus.FAILED
    assert (attempt.end_reason, attempt.kill_rung) == ("timeout", rung)
    assert worker.exit_reason == f"timed out after 5s (ended by {rung})"
    assert worker.error.startswith("Worker timeout: timed out after 5s") and "Raise default_timeout" in worker.error
    assert attempt.duration == pytest.approx(duration, abs=0.2)
    assert rig.fake.attempts("worker_1")[0].signals == (
        [signal.SIGTERM] if rung == "SIGTERM" else [signal.SIGTERM, signal.SIGKILL]
    )


def test_the_ladder_starts_with_the_adapters_first_signal(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"})
    rig.fake.script("worker_1", S(hang=True, exit_on_signal=0, output=[]))  # claude exits 0 on SIGINT
    worker = rig.workers(rig.run(["work"], {"default_timeout": 5}))["worker_1"]
    assert rig.fake.attempts("worker_1")[0].signals == [signal.SIGINT]
    assert worker.status is WorkerStatus.TIMEOUT and worker.attempts[0].kill_rung == "SIGINT"
    assert worker.attempts[0].exit_code == 0  # its true status; the timeout still decides


def test_a_timeout_is_not_retried_unless_configured(rig):
    rig.fake.script("worker_1", S(hang=True))
    worker = rig.workers(rig.run(["work"], {"default_timeout": 5, "max_retries": 2}))["worker_1"]
    assert len(worker.attempts) == 1 and worker.status is WorkerStatus.TIMEOUT


def test_retry_on_timeout_retries_a_timed_out_attempt(make_rig):
    rig = make_rig(workers={"retry_on_timeout": True})
    rig.fake.script("worker_1", S(hang=True), S(duration=1))
    worker = rig.workers(rig.run(["work"], {"default_timeout": 5}))["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS
    assert [a.end_reason for a in worker.attempts] == ["timeout", "exit"]


def test_a_worker_that_ends_just_before_its_timeout_succeeds(rig):
    rig.fake.script("worker_1", S(duration=29.5))
    worker = rig.workers(rig.run(["work"], {"default_timeout": 30}))["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS and worker.attempts[0].kill_rung is None
    assert worker.attempts[0].duration == pytest.approx(29.5, abs=0.2)


def test_each_attempt_gets_a_whole_timeout(rig):
    rig.fake.script("worker_1", S(exit=1, duration=20), S(duration=25))
    worker = rig.workers(rig.run(["work"], {"default_timeout": 30}))["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS and [a.end_reason for a in worker.attempts] == ["exit", "exit"]


def test_an_attempt_that_ended_in_time_but_is_seen_late_is_judged_by_its_exit(make_rig):
    # Its thread ran late (a loaded machine): by the time it looks, the deadline has passed, but
    # the attempt had exited at 29.5 s. It was classified "timeout (ended by exit)" before.
    rig = make_rig(auto=False)
    rig.fake.default = S(duration=29.5)
    job = rig.submit(["a"], {"default_timeout": 30})
    until(lambda: rig.fake.handles and rig.fake.handles[0].waits, "its first wait")
    rig.clock.advance(31)
    worker = rig.workers(rig.wait(job))["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS and attempts_of(worker) == [(0, None, "exit")]


def test_a_worker_that_outlives_its_timeout_by_a_little_times_out(rig):
    rig.fake.script("worker_1", S(duration=30.5))
    worker = rig.workers(rig.run(["work"], {"default_timeout": 30}))["worker_1"]
    assert worker.status is WorkerStatus.TIMEOUT and worker.attempts[0].kill_rung == "SIGTERM"


# -- job outcomes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scripts", "job_status", "statuses"),
    [
        pytest.param({}, "completed", ["success", "success", "success"], id="all-succeed"),
        pytest.param({"worker_2": S(exit=1)}, "partial", ["success", "failed", "success"], id="one-fails"),
        pytest.param({n: S(exit=1) for n in ("worker_1", "worker_2", "worker_3")}, "failed", ["failed"] * 3, id="all-fail"),
        pytest.param({"worker_3": S(hang=True)}, "partial", ["success", "success", "timeout"], id="one-times-out"),
        pytest.param(
            {"worker_1": S(dies_by=signal.SIGKILL), "worker_2": S(hang=True)},
            "partial",
            ["failed", "timeout", "success"],
            id="mixed",
        ),
    ],
)
def test_a_jobs_outcome_follows_from_its_workers(rig, scripts, job_status, statuses):
    for name, script in scripts.items():
        rig.fake.script(name, script)
    job = rig.run(["a", "b", "c"], {"max_retries": 0, "default_timeout": 5})
    assert job.status.value == job_status
    assert list(rig.statuses(job).values()) == statuses
    assert job.ended_at is not None and rig.engine.workspace.load_job(job.id).status.value == job_status


def test_a_worker_is_a_recursive_success_only_when_its_child_jobs_complete(rig):
    """A worker that exits 0 after a child job it started failed is child_incomplete, its exit
    reason names that child job and how it ended, and its root job is partial, never completed."""
    rig.fake.script("worker_1", S(children=[["good"]]))
    rig.fake.script("worker_2", S(children=[["bad"]]))
    rig.fake.script("worker_2_1", S(exit=1))
    job = rig.run(["one", "two"], {"max_retries": 0})
    workers = rig.workers(job)
    assert workers["worker_1"].status is WorkerStatus.RECURSIVE_SUCCESS
    child_id = workers["worker_2"].child_job_ids[0]
    assert workers["worker_2"].status is WorkerStatus.CHILD_INCOMPLETE
    assert workers["worker_2"].exit_reason == f"exit code 0; child job {child_id} ended failed"
    assert job.status is JobStatus.PARTIAL
    assert rig.jobs(job)[child_id].status is JobStatus.FAILED
    # On disk as in memory.
    assert rig.engine.workspace.load_job(job.id).status is JobStatus.PARTIAL


def test_only_the_child_jobs_of_a_workers_last_attempt_decide_its_status(rig):
    """Attempt 1 starts a child job that fails, then fails itself; attempt 2 succeeds with none: the
    worker is success and its job completed (what attempt 1's child did went with attempt 1). A
    retry whose own child job fails is child_incomplete, naming that child only."""
    rig.fake.script("worker_1", S(children=[["bad"]], exit=1), S(exit=0))
    rig.fake.script("worker_1_1", S(exit=1))
    rig.fake.script("worker_2", S(children=[["bad too"]], exit=1), S(children=[["again"]]))
    rig.fake.script("worker_2_1", S(exit=1))
    rig.fake.script("worker_2_2", S(exit=1))
    job = rig.run(["one", "two"], {"max_retries": 1})
    workers = rig.workers(job)
    assert len(workers["worker_1"].attempts) == 2 and len(workers["worker_1"].child_job_ids) == 1
    assert workers["worker_1"].status is WorkerStatus.SUCCESS, workers["worker_1"].exit_reason
    first, second = workers["worker_2"].child_job_ids
    assert workers["worker_2"].status is WorkerStatus.CHILD_INCOMPLETE
    assert workers["worker_2"].exit_reason == f"exit code 0; child job {second} ended failed"
    assert job.status is JobStatus.PARTIAL


def test_a_failed_grandchild_makes_every_job_above_it_partial(rig):
    """worker_1_1 exits 0 after its child job (the grandchild) ended partial: it is child_incomplete,
    so its job is partial, so worker_1 is child_incomplete too, and the root is partial."""
    rig.fake.script("worker_1", S(children=[["child"]]))
    rig.fake.script("worker_1_1", S(children=[["grandchild ok", "grandchild bad"]]))
    rig.fake.script("worker_1_1_2", S(exit=1))
    job = rig.run(["parent"], {"max_retries": 0, "max_recursion_depth": 2})
    jobs = rig.jobs(job)
    (child_id,) = rig.workers(job)["worker_1"].child_job_ids
    (grandchild_id,) = rig.workers(jobs[child_id])["worker_1_1"].child_job_ids
    assert jobs[grandchild_id].status is JobStatus.PARTIAL
    assert rig.workers(jobs[child_id])["worker_1_1"].status is WorkerStatus.CHILD_INCOMPLETE
    assert rig.workers(jobs[child_id])["worker_1_1"].exit_reason == f"exit code 0; child job {grandchild_id} ended partial"
    assert jobs[child_id].status is JobStatus.PARTIAL
    assert rig.workers(job)["worker_1"].status is WorkerStatus.CHILD_INCOMPLETE
    assert rig.workers(job)["worker_1"].exit_reason == f"exit code 0; child job {child_id} ended partial"
    assert job.status is JobStatus.PARTIAL


def test_a_worker_ends_after_its_child_jobs_even_when_its_process_ended_first(rig):
    rig.fake.script("worker_1", S(children=[["slow child"]], wait_for_children=False, duration=1))
    rig.fake.script("worker_1_1", S(duration=20))
    job = rig.run(["parent"])
    worker = rig.workers(job)["worker_1"]
    child = rig.jobs(job)[worker.child_job_ids[0]]
    assert worker.status is WorkerStatus.RECURSIVE_SUCCESS
    assert child.status is JobStatus.COMPLETED and worker.ended_at >= child.ended_at
    assert worker.attempts[0].duration < 5  # its process ended long before


def test_a_workers_path_locks_go_after_its_process_ends_and_never_under_the_engines_lock(rig):
    """Under rq the lock table is in Redis: a release held inside the engine's lock made every
    thread waiting for that lock wait for a round trip to Redis at each worker's end. Both ends are
    proved: a worker whose slot is freed at once, and one whose process ended before its child job."""
    engine = rig.engine
    calls: list[tuple[str, bool, bool]] = []  # (worker, the engine's lock held, its process ended)

    class Recording(PathLocks):
        def release_worker(self, root_id, worker):
            held = engine.tables.held()
            with engine.tables.locked():
                (live,) = [w for (root, _), w in engine.tables.workers.items() if root == root_id and w.record.name == worker]
                calls.append((worker, held, live.phase.process_ended))
            return super().release_worker(root_id, worker)

    engine.locks = Recording(engine.clock, engine.settings.tasks)
    rig.fake.script("worker_1", S(children=[["slow child"]], wait_for_children=False, duration=1))
    rig.fake.script("worker_1_1", S(duration=5))
    job = rig.run(["parent", "plain"])
    assert rig.workers(job)["worker_1"].status is WorkerStatus.RECURSIVE_SUCCESS
    assert sorted(calls) == [("worker_1", False, True), ("worker_1_1", False, True), ("worker_2", False, True)]


# -- recursion caps -----------------------------------------------------------------------------


def test_a_child_job_runs_one_level_deeper_with_the_worker_protocol_in_its_environment(rig):
    rig.fake.script("worker_1", S(children=[["sub"]]))
    job = rig.run(["parent"])
    (child_handle,) = rig.fake.attempts("worker_1_1")
    env = child_handle.env
    assert env[protocol.DEPTH] == "1" and env[protocol.WORKER_ID] == "worker_1_1"
    assert env[protocol.ROOT_JOB_ID] == job.id and env[protocol.JOB_ID] == f"{job.id}-c1"
    assert env[protocol.ATTEMPT] == "1"


@pytest.mark.parametrize(
    ("config", "recursion", "children", "refusal"),
    [
        pytest.param({"max_recursion_depth": 0}, {}, [["x"]], "Max recursion depth reached: worker worker_1 of job", id="depth"),
        pytest.param(
            {"max_children_per_worker": 1},
            {},
            [["x"], ["y"]],
            "Max children per worker reached: worker worker_1 of job",
            id="children-per-worker",
        ),
        pytest.param({"enable_recursion": False}, {}, [["x"]], "recursion is disabled for job", id="recursion-off"),
        pytest.param({}, {"max_workers_per_root": 3}, [["x", "y"]], "2 tasks asked for, but tree", id="tree-has-little-room"),
        pytest.param({}, {"max_workers_per_root": 2}, [["x"]], "Max workers per root tree reached: tree", id="tree-full"),
    ],
)
def test_a_child_job_past_a_cap_is_refused_and_the_worker_goes_on(make_rig, config, recursion, children, refusal):
    rig = make_rig(recursion=recursion)
    rig.fake.script("worker_1", S(children=children))
    job = rig.run(["parent", "sibling"], config)
    handle = rig.fake.attempts("worker_1")[0]
    assert len(handle.refusals) == 1 and refusal in handle.refusals[0]
    assert len(handle.children) == len(children) - 1
    worker = rig.workers(job)["worker_1"]
    assert worker.status is (WorkerStatus.RECURSIVE_SUCCESS if handle.children else WorkerStatus.SUCCESS)
    assert len(worker.child_job_ids) == len(handle.children)
    assert "spawn refused: " in rig.engine.workspace.worker_log(job.id, 0, "worker_1").read_text()


def test_a_grandchild_past_the_depth_limit_is_refused_at_its_level(rig):
    rig.fake.script("worker_1", S(children=[["child"]]))
    rig.fake.script("worker_1_1", S(children=[["grandchild"]]))
    job = rig.run(["parent"], {"max_recursion_depth": 1})
    (refused,) = rig.fake.attempts("worker_1_1")[0].refusals
    assert "is at depth 1 and this tree's max_recursion_depth is 1" in refused
    assert sorted(j.depth for j in rig.jobs(job).values()) == [0, 1]


def test_a_root_job_with_more_tasks_than_the_tree_allows_is_refused(make_rig):
    rig = make_rig(recursion={"max_workers_per_root": 3})
    with pytest.raises(ValidationError, match="4 tasks exceed recursion.max_workers_per_root=3; give at most 3"):
        rig.submit(["a", "b", "c", "d"])
    assert rig.fake.handles == []


def test_a_child_jobs_limits_only_shrink_down_the_tree(rig):
    rig.fake.script("worker_1", S(children=[["x"]], child_config={"max_workers": 4, "max_retries": 1}))
    job = rig.run(["parent"], {"max_workers": 2})
    child = next(j for j in rig.jobs(job).values() if j.depth == 1)
    assert child.config.max_workers == 2 and child.config.max_retries == 1
    assert "max_workers=4 lowered to 2, the parent job's value (limits only shrink down a tree)" in child.notes


# -- the cost budget ----------------------------------------------------------------------------


def test_once_the_tree_spent_its_budget_pending_workers_are_skipped(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"}, workers={"global_max_workers": 1})
    rig.fake.default = claude(cost=0.3)
    job = rig.run(["a", "b", "c", "d"], {"max_cost_usd": 0.5})
    assert rig.statuses(job) == {"worker_1": "success", "worker_2": "success", "worker_3": "skipped", "worker_4": "skipped"}
    skipped = rig.workers(job)["worker_3"]
    assert skipped.exit_reason == "skipped: the tree's AI cost $0.6000 reached its budget max_cost_usd=$0.5000"
    assert skipped.attempts == [] and len(rig.fake.handles) == 2
    assert job.status is JobStatus.PARTIAL


def test_a_tree_under_its_budget_runs_every_worker(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"})
    rig.fake.default = claude(cost=0.1)
    job = rig.run(["a", "b", "c"], {"max_cost_usd": 1.0})
    assert job.status is JobStatus.COMPLETED
    assert sum(w.cost_usd for w in rig.workers(job).values()) == pytest.approx(0.3)


def test_a_spent_budget_refuses_child_jobs(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"})
    rig.fake.script("worker_1", S(children=[["pricey"], ["more"]], output=claude_result(0.01)))
    rig.fake.script("worker_1_1", claude(cost=0.6))
    job = rig.run(["parent"], {"max_cost_usd": 0.5})
    handle = rig.fake.attempts("worker_1")[0]
    assert len(handle.children) == 1 and rig.statuses(job) == {"worker_1": "recursive_success"}
    (refused,) = handle.refusals
    assert refused.startswith("no child job: the tree's AI cost $0.6000 reached its budget max_cost_usd=$0.5000")


def test_the_budget_counts_the_cost_of_child_jobs_toward_the_root(make_rig):
    rig = make_rig(orchestrator={"worker": "claude"})
    rig.fake.script("worker_1", S(children=[["pricey"]], output=claude_result(0.01)))
    rig.fake.script("worker_1_1", claude(cost=0.6))
    rig.fake.default = claude(cost=0.01)
    # The root job runs one worker at a time: its others wait while worker_1's child job spends the budget
    job = rig.run(["parent", "later", "last"], {"max_cost_usd": 0.5, "max_workers": 1})
    assert rig.statuses(job) == {"worker_1": "recursive_success", "worker_2": "skipped", "worker_3": "skipped"}
    assert rig.workers(job)["worker_2"].exit_reason.startswith("skipped: the tree's AI cost $0.6000 reached its budget")
    second = rig.run(["another tree"], {"max_cost_usd": 0.5})
    assert second.status is JobStatus.COMPLETED  # a budget is per root tree


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_ends_running_workers_and_skips_pending_ones(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(hang=True)
    job = rig.submit(["a", "b", "c"], {"max_workers": 1})
    rig.started(1)
    rig.engine.cancel(job.id)
    done = rig.wait(job)
    workers = rig.workers(done)
    assert done.status is JobStatus.CANCELLED
    assert rig.statuses(done) == {"worker_1": "cancelled", "worker_2": "skipped", "worker_3": "skipped"}
    assert workers["worker_1"].exit_reason == "cancelled (ended by SIGTERM)"
    assert workers["worker_1"].attempts[0].end_reason == "cancelled"
    assert workers["worker_2"].exit_reason == "skipped: the job was cancelled before it started"
    rig.clock.release()
    assert len(rig.fake.handles) == 1  # nothing starts after the cancel


def test_cancel_runs_the_kill_ladder_on_a_stubborn_worker(make_rig):
    rig = make_rig(auto=False, workers={"kill_grace": 3.0})
    rig.fake.default = S(hang=True, ignores_first_signal=True)
    job = rig.submit(["a"])
    rig.started(1)
    rig.engine.cancel(job.id)
    rig.clock.release()  # the grace passes in fake time
    worker = rig.workers(rig.wait(job))["worker_1"]
    assert worker.status is WorkerStatus.CANCELLED and worker.attempts[0].kill_rung == "SIGKILL"
    assert rig.fake.handles[0].signals == [signal.SIGTERM, signal.SIGKILL]


def test_cancel_propagates_through_the_subtree(make_rig):
    rig = make_rig(auto=False)
    rig.fake.script("worker_1", S(children=[["c1", "c2"]]))
    rig.fake.script("worker_1_1", S(children=[["g1"]]))
    rig.fake.script("worker_1_2", S(hang=True))
    rig.fake.script("worker_1_1_1", S(hang=True))
    job = rig.submit(["parent"])
    until(lambda: len(rig.jobs(job)) == 3, "three levels of jobs")
    rig.started(4)
    rig.engine.cancel(job.id)
    done = rig.wait(job)
    jobs = rig.jobs(done)
    assert sorted((j.depth, j.status.value) for j in jobs.values()) == [(0, "cancelled"), (1, "cancelled"), (2, "cancelled")]
    _, workers = rig.engine.queries.snapshot(job.id)
    assert {w.name: w.status.value for w in workers} == {
        "worker_1": "cancelled",
        "worker_1_1": "cancelled",
        "worker_1_2": "cancelled",
        "worker_1_1_1": "cancelled",
    }


def test_cancel_of_a_subtree_skips_its_pending_workers(make_rig):
    rig = make_rig(auto=False)
    rig.fake.script("worker_1", S(children=[["c1", "c2", "c3"]], child_config={"max_workers": 1}))
    rig.fake.script("worker_1_1", S(hang=True))
    job = rig.submit(["parent"])
    rig.started(2)
    rig.engine.cancel(job.id)
    rig.wait(job)
    _, workers = rig.engine.queries.snapshot(job.id)
    assert {w.name: w.status.value for w in workers} == {
        "worker_1": "cancelled",
        "worker_1_1": "cancelled",
        "worker_1_2": "skipped",
        "worker_1_3": "skipped",
    }


def test_cancelling_a_child_job_leaves_its_parent_running(make_rig):
    rig = make_rig(auto=False)
    rig.fake.script("worker_1", S(children=[["c"]]))
    rig.fake.script("worker_1_1", S(hang=True))
    job = rig.submit(["parent"])
    rig.started(2)
    child_id = f"{job.id}-c1"
    assert rig.engine.cancel(child_id).id == child_id
    child = rig.engine.queries.wait(child_id, WAIT)
    assert child.status is JobStatus.CANCELLED
    rig.clock.release()
    done = rig.wait(job)
    worker = rig.workers(done)["worker_1"]
    assert worker.status is WorkerStatus.CHILD_INCOMPLETE
    assert worker.exit_reason == f"exit code 0; child job {child_id} ended cancelled"
    assert done.status is JobStatus.PARTIAL  # its own work done, its child's not: never completed


def test_a_finished_job_cannot_be_cancelled(rig):
    job = rig.run(["a"])
    with pytest.raises(Conflict, match=f"job {job.id} is already completed; there is nothing to cancel"):
        rig.engine.cancel(job.id)


def test_cancel_of_an_unknown_job_says_so(rig):
    with pytest.raises(JobNotFound):
        rig.engine.cancel("0123456789ab")


def test_a_child_job_for_a_cancelled_worker_is_refused(make_rig):
    rig = make_rig(auto=False)
    rig.fake.script("worker_1", S(hang=True))
    job = rig.submit(["parent"])
    rig.started(1)
    rig.engine.cancel(job.id)
    rig.wait(job)
    with pytest.raises(Conflict, match="no child job was started"):
        rig.engine.submission.submit("late child", None, ["x"], parent_job_id=job.id, parent_worker="worker_1")


# -- the tree deadline --------------------------------------------------------------------------

DEADLINE = {"recursion": {"tree_deadline": 30}, "workers": {"monitor_interval": 0.05}}


def test_a_tree_past_its_deadline_is_cancelled_with_a_note(make_rig):
    rig = make_rig(auto=False, **DEADLINE)
    rig.fake.default = S(hang=True)
    job = rig.submit(["a", "b"], {"default_timeout": 300})
    rig.started(2)
    rig.clock.advance(31)
    done = rig.wait(job)
    assert done.status is JobStatus.CANCELLED
    assert "cancelled: the tree ran past its deadline of 30s (recursion.tree_deadline)" in done.notes
    assert rig.statuses(done) == {"worker_1": "cancelled", "worker_2": "cancelled"}


def test_a_tree_within_its_deadline_runs_on(make_rig):
    rig = make_rig(auto=False, **DEADLINE)
    rig.fake.default = S(duration=20)
    job = rig.submit(["a"])
    rig.started(1)
    rig.clock.advance(10)
    time.sleep(0.2)  # several monitor passes, in real time
    assert rig.engine.queries.get_job(job.id).status is JobStatus.RUNNING
    rig.clock.release()
    done = rig.wait(job)
    assert done.status is JobStatus.COMPLETED and not any("deadline" in n for n in done.notes)


def test_the_deadline_cancels_the_child_jobs_too(make_rig):
    rig = make_rig(auto=False, **DEADLINE)
    rig.fake.script("worker_1", S(children=[["c"]]))
    rig.fake.script("worker_1_1", S(hang=True))
    job = rig.submit(["parent"], {"default_timeout": 300})
    rig.started(2)
    rig.clock.advance(31)
    done = rig.wait(job)
    assert sorted((j.depth, j.status.value) for j in rig.jobs(done).values()) == [(0, "cancelled"), (1, "cancelled")]


# -- resource caps (the executor's samples) -----------------------------------------------------

MB = 1024 * 1024
CAPS = {"workers": {"monitor_interval": 0.05, "max_memory_mb": 100, "max_processes": 10}}


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        pytest.param(
            Sample(rss=200 * MB, processes=1), "memory cap: 200 MB > 100 MB (workers.max_memory_mb, sampled)", id="memory"
        ),
        pytest.param(
            Sample(rss=MB, processes=50), "process cap: 50 processes > 10 (workers.max_processes, sampled)", id="processes"
        ),
    ],
)
def test_a_worker_over_a_resource_cap_is_stopped_and_not_retried(make_rig, usage, reason):
    rig = make_rig(auto=False, **CAPS)
    rig.fake.default = S(hang=True, usage=usage)
    job = rig.submit(["a"], {"max_retries": 2})
    done = rig.wait(job)
    worker = rig.workers(done)["worker_1"]
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == 1
    assert worker.exit_reason == f"{reason} (ended by SIGKILL)"  # a cap breach kills at once, no grace
    assert worker.error == f"stopped: {reason}" and worker.attempts[0].end_reason == "cap"


def test_a_worker_within_its_caps_has_its_peaks_recorded(make_rig):
    rig = make_rig(auto=False, **CAPS)
    rig.fake.default = S(duration=5, usage=Sample(rss=10 * MB, processes=3, cpu_seconds=1.5))
    job = rig.submit(["a"])
    until(lambda: rig.engine.monitor.usage, "a resource sample")
    rig.clock.release()
    worker = rig.workers(rig.wait(job))["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS
    assert (worker.peak_rss, worker.peak_processes, worker.cpu_seconds) == (10 * MB, 3, 1.5)


# -- recovery after a restart -------------------------------------------------------------------


def test_a_restarted_server_adopts_a_running_attempt(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(duration=10)
    job = crash_while_running(rig, ["a"])
    assert rig.engine.takeover.recover() == [job.id]
    rig.clock.release()
    done = rig.wait(job)
    worker = rig.workers(done)["worker_1"]
    assert done.status is JobStatus.COMPLETED and attempts_of(worker) == [(0, None, "exit")]
    assert len(rig.fake.handles) == 1  # nothing ran twice
    assert any(n.startswith("recovered at server start") and "1 adopt" in n for n in done.notes)


def test_an_attempt_spawned_but_not_yet_recorded_is_adopted_not_started_again(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(duration=10)
    job = crash_while_running(rig, ["a"], recorded=False)
    assert on_disk(rig, job, "worker_1").attempts == []
    assert rig.engine.takeover.recover() == [job.id]
    rig.clock.release()
    done = rig.wait(job)
    assert done.status is JobStatus.COMPLETED and len(rig.fake.handles) == 1
    assert len(rig.workers(done)["worker_1"].attempts) == 1


def test_an_attempt_that_ended_while_no_server_ran_gets_its_true_status(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(exit=3, duration=5)
    job = crash_while_running(rig, ["a"], {"max_retries": 0})
    rig.clock.advance(10)  # it ends while no server watches: its exit file says how
    assert rig.engine.takeover.recover() == [job.id]
    done = rig.wait(job)
    worker = rig.workers(done)["worker_1"]
    assert worker.status is WorkerStatus.FAILED and worker.exit_reason == "exit code 3"
    assert attempts_of(worker) == [(3, None, "exit")] and len(rig.fake.handles) == 1


def test_an_attempt_that_failed_while_no_server_ran_is_retried_by_the_new_one(make_rig):
    rig = make_rig(auto=False)
    rig.fake.script("worker_1", S(exit=3, duration=5), S())
    job = crash_while_running(rig, ["a"], {"max_retries": 1})
    rig.clock.advance(10)
    rig.engine.takeover.recover()
    rig.clock.release()
    worker = rig.workers(rig.wait(job))["worker_1"]
    assert worker.status is WorkerStatus.SUCCESS
    assert attempts_of(worker) == [(3, None, "exit"), (0, None, "exit")] and len(rig.fake.handles) == 2


def test_an_attempt_that_left_no_trace_is_lost_not_rerun(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(hang=True, vanishes=True)
    job = crash_while_running(rig, ["a"])
    assert rig.engine.takeover.recover() == [job.id]
    done = rig.wait(job)
    worker = rig.workers(done)["worker_1"]
    assert worker.status is WorkerStatus.FAILED and worker.exit_reason == worker.error == LOST_REASON
    assert worker.attempts[0].end_reason == "lost" and len(rig.fake.handles) == 1
    assert done.status is JobStatus.FAILED


def test_an_unrecorded_attempt_whose_exit_file_holds_no_status_is_lost_not_started_again(make_rig):
    """Its spawn made its exit file (shim.reserve_exit_file): a restart knows it began, though no record
    says so and its shim is gone without a status (a full disk, a SIGKILL)."""
    rig = make_rig(auto=False)
    rig.fake.default = S(hang=True, vanishes=True)
    job = crash_while_running(rig, ["a"], recorded=False)
    assert on_disk(rig, job, "worker_1").attempts == []
    assert rig.engine.takeover.recover() == [job.id]
    done = rig.wait(job)
    worker = rig.workers(done)["worker_1"]
    assert worker.status is WorkerStatus.FAILED and worker.exit_reason == LOST_REASON
    assert [a.number for a in worker.attempts] == [1] and len(rig.fake.handles) == 1


def test_a_worker_that_never_started_starts_after_the_restart(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(duration=10)
    job = crash_while_running(rig, ["a", "b"], {"max_workers": 1})
    assert on_disk(rig, job, "worker_2").status is WorkerStatus.PENDING
    rig.engine.takeover.recover()
    rig.clock.release()
    done = rig.wait(job)
    assert done.status is JobStatus.COMPLETED
    assert [h.worker for h in rig.fake.handles] == ["worker_1", "worker_2"]


def test_processes_of_the_tree_that_nothing_accounts_for_are_killed(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(duration=10)
    job = crash_while_running(rig, ["a"])
    rig.fake.strays.add(f"{job.id}.depth_0_worker_9.dead")
    rig.engine.takeover.recover()
    rig.clock.release()
    done = rig.wait(job)
    assert rig.fake.strays == set() and done.status is JobStatus.COMPLETED  # the adopted one was kept
    assert any("1 unaccounted process(es) of its tree killed" in n for n in done.notes)
    prefix, kept = rig.fake.swept_prefixes[-1]
    assert prefix == f"{job.id}." and kept == {rig.fake.handles[0].tag}


def test_an_adopted_attempts_timeout_counts_from_its_first_start(make_rig):
    rig = make_rig(auto=False)
    rig.fake.default = S(hang=True)
    job = crash_while_running(rig, ["a"], {"default_timeout": 20, "max_retries": 0})
    rig.clock.advance(15)  # the server is down for 15 s
    rig.engine.takeover.recover()
    rig.clock.release()
    worker = rig.workers(rig.wait(job))["worker_1"]
    assert worker.status is WorkerStatus.TIMEOUT
    assert worker.attempts[0].duration == pytest.approx(20, abs=0.6)


def test_a_finished_tree_is_not_recovered(rig):
    job = rig.run(["a"])
    engine = rig.restart()
    assert engine.takeover.recover() == []
    assert engine.queries.get_job(job.id).status is JobStatus.COMPLETED


# -- admission: what submit refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "tasks", "config", "error", "message"),
    [
        pytest.param("", None, None, ValidationError, "request is empty", id="empty-request"),
        pytest.param(42, None, None, ValidationError, "request must be a string", id="request-not-text"),
        pytest.param(
            "x" * 101, None, None, ValidationError, "request is 101 characters; the limit is 100", id="request-too-long"
        ),
        pytest.param("x", "a", None, ValidationError, "tasks must be a non-empty list of strings", id="tasks-not-a-list"),
        pytest.param("x", [], None, ValidationError, "tasks must be a non-empty list of strings", id="no-tasks"),
        pytest.param("x", ["a", "  "], None, ValidationError, "tasks[1] must be a non-empty string", id="blank-task"),
        pytest.param("x", ["a"] * 4, None, ValidationError, "4 tasks given; at most 3 are accepted", id="too-many-tasks"),
        pytest.param(
            "x", ["y" * 101], None, ValidationError, "tasks[0] is longer than orchestrator.max_request_chars", id="task-too-long"
        ),
        pytest.param("x", ["a"], "fast", ValidationError, "config must be a JSON object", id="config-not-an-object"),
        pytest.param("x", ["a"], {"bogus": 1}, ConfigError, "unknown config key(s): bogus", id="unknown-key"),
        pytest.param("x", ["a"], {"max_workers": 999}, ConfigError, "is above this server's limit", id="over-the-limit"),
        pytest.param("x", ["a"], {"current_depth": 9}, Exception, "config.current_depth=9 is past", id="too-deep"),
    ],
)
def test_submit_refuses_a_bad_request_and_starts_nothing(make_rig, request_, tasks, config, error, message):
    rig = make_rig(orchestrator={"max_request_chars": 100, "max_tasks": 3})
    with pytest.raises(error) as raised:
        rig.engine.submission.submit(request_, config, tasks)
    assert message in str(raised.value)
    assert rig.engine.queries.list_jobs() == [] and rig.fake.handles == []


def test_submitted_tasks_are_normalised(rig):
    job = rig.run(["  write   the\tparser "])
    assert job.tasks == ["write the parser"] and rig.workers(job)["worker_1"].task == "write the parser"


# -- what the records say ----------------------------------------------------------------------


def test_the_worker_log_holds_the_attempt_markers_and_the_output(rig):
    rig.fake.default = S(output=["hello", "RESULT: fine"])
    job = rig.run(["a"])
    log = rig.engine.workspace.worker_log(job.id, 0, "worker_1").read_text()
    assert log.startswith("===== attempt 1/3 started ")
    assert "\nhello\nRESULT: fine\n===== attempt 1 exited with code 0 after " in log
    assert rig.workers(job)["worker_1"].output == "hello\nRESULT: fine"


def test_attempt_durations_are_measured_on_the_engines_clock(rig):
    rig.fake.default = S(duration=42)
    worker = rig.workers(rig.run(["a"], {"default_timeout": 60}))["worker_1"]
    assert worker.attempts[0].duration == pytest.approx(42, abs=0.2)


def test_the_records_on_disk_match_what_the_engine_reports(rig):
    rig.fake.script("worker_2", S(exit=1))
    job = rig.run(["a", "b", "c"], {"max_retries": 1})
    jobs, workers = rig.engine.workspace.load_tree(job.id)
    assert {w.name: (w.status.value, len(w.attempts)) for w in workers} == {
        name: (w.status.value, len(w.attempts)) for name, w in rig.workers(job).items()
    }
    assert jobs[0].status is JobStatus.PARTIAL


def test_the_final_report_lists_every_worker(rig):
    rig.fake.script("worker_2", S(exit=1))
    job = rig.run(["alpha", "beta"], {"max_retries": 0})
    text = rig.engine.queries.read_report(job.id, "final")
    assert "alpha" in text and "beta" in text and "partial" in text.lower()


def test_the_worker_environment_names_the_attempt(rig):
    rig.fake.script("worker_1", S(exit=1), S(exit=1), S())
    rig.run(["a"])
    assert [h.env[protocol.ATTEMPT] for h in rig.fake.attempts("worker_1")] == ["1", "2", "3"]
    assert {h.env[protocol.WORKER_DIR] for h in rig.fake.attempts("worker_1")} == {
        str(rig.engine.workspace.worker_dir(rig.fake.handles[0].env[protocol.ROOT_JOB_ID], 0, "worker_1"))
    }


# -- a person in the loop (approval.py) -----------------------------------------------------------


def test_a_waiting_job_outlives_its_deadline_and_a_kill_9_restart_and_its_child_job_was_not_gated(make_rig):
    rig = make_rig(auto=False, **DEADLINE)
    rig.fake.script("worker_1", S(children=[["child task"]]))
    job = rig.submit(["parent", "b"], {"approval": "before_merge"})
    rig.clock.release()
    waiting = rig.engine.queries.wait(job.id, WAIT)
    assert waiting.status is JobStatus.WAITING and waiting.approval.earned == "completed"
    children = [j for j in rig.jobs(job).values() if j.depth == 1]
    assert [c.status for c in children] == [JobStatus.COMPLETED] and children[0].approval is None  # its end was not gated
    rig.clock.advance(60)  # past recursion.tree_deadline: a waiting job runs nothing, so no deadline ends it
    time.sleep(0.3)  # several monitor passes, in real time
    assert rig.engine.queries.get_job(job.id).status is JobStatus.WAITING
    engine = rig.restart()
    engine.takeover.recover()
    assert engine.queries.get_job(job.id).status is JobStatus.WAITING
    assert not any(n.startswith("recovered at server start") for n in engine.queries.get_job(job.id).notes)
    done = engine.approvals.decide(job.id, "approve", "fine")
    assert done.status is JobStatus.COMPLETED and done.approval.state == "approved"
    with pytest.raises(Conflict, match="not waiting for approval"):
        engine.approvals.decide(job.id, "reject", "too late")


def test_a_partial_job_waits_and_approve_ends_it_partial_a_failed_one_does_not_wait(make_rig):
    rig = make_rig()
    rig.fake.script("worker_2", S(exit=1))
    job = rig.submit(["a", "b"], {"approval": "before_merge", "max_retries": 0})
    waiting = rig.engine.queries.wait(job.id, WAIT)
    assert waiting.status is JobStatus.WAITING and waiting.approval.earned == "partial"
    assert rig.engine.approvals.decide(job.id, "approve").status is JobStatus.PARTIAL
    rig.fake.default = S(exit=1)
    failed = rig.run(["c"], {"approval": "before_merge", "max_retries": 0})
    assert failed.status is JobStatus.FAILED and failed.approval is None
