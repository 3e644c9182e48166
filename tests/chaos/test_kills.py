"""Chaos: workers killed from outside, hung past their timeout, hiding grandchildren, slow to stop."""

from __future__ import annotations

import os
import random
import signal
import time

import psutil
import pytest

from orchestrator.models import WorkerStatus

from ..conftest import wait_until
from .conftest import alive, command_worker, metric, running, tagged_alive

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def fake_cli_process(tag):
    """The worker's own process (python fake_cli.py ...), not the orchestrator's shim around it;
    None while it has not exec'd yet."""
    for pid in tagged_alive(tag):
        try:
            proc = psutil.Process(pid)
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if len(argv) > 1 and argv[1].endswith("fake_cli.py"):
            return proc
    return None


def test_twenty_workers_ten_sigkilled_at_random(make_engine):
    # Given 20 workers printing a numbered line every 0.1 s for 4 s, all running at once
    seed = int(time.time())
    rng = random.Random(seed)
    # Unconfined ladder: it SIGKILLs workers by host pid (sandboxed: tests/test_sandbox.py, test_hostile.py)
    engine = make_engine(orchestrator=command_worker(), workers={"max_workers": 20, "global_max_workers": 20, "sandbox": "off"})
    job = engine.submission.submit("x", {"max_retries": 2, "max_workers": 20}, ["ok 40 0.1"] * 20)
    victims = {f"worker_{i + 1}": rng.uniform(0.3, 2.5) for i in rng.sample(range(20), 10)}
    killed_at = {}
    # When 10 of them, picked at random, are SIGKILLed at random times from outside
    deadline = time.monotonic() + 30
    while len(killed_at) < len(victims) and time.monotonic() < deadline:
        _, workers = engine.queries.snapshot(job.id)
        for w in workers:
            if w.name not in victims or w.name in killed_at or not w.attempts or w.attempts[0].pid is None:
                continue
            if time.time() < w.attempts[0].started_at + victims[w.name]:
                continue
            proc = fake_cli_process(engine.worker_tag(w))
            if proc is None:
                continue  # not exec'd yet: next round
            assert w.attempts[0].pid in (proc.pid, proc.ppid())  # the recorded pid is itself, or its shim
            killed_at[w.name] = time.time()
            os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.01)
    assert len(killed_at) == 10, f"seed {seed}: only {len(killed_at)} victims were still running to kill"
    done = engine.queries.wait(job.id, 60)
    # Then the 10 are failed by SIGKILL soon after, never retried; the 10 others succeed whole
    _, workers = engine.queries.snapshot(job.id)
    lags = []
    for w in workers:
        assert len(w.attempts) == 1, f"seed {seed}: {w.name} has {len(w.attempts)} attempts (0 retries wanted)"
        if w.name in killed_at:
            assert w.status is WorkerStatus.FAILED and w.attempts[0].end_reason == "signal"
            assert w.attempts[0].signal == signal.SIGKILL and "SIGKILL" in w.exit_reason
            lags.append(w.ended_at - killed_at[w.name])
        else:
            assert w.status is WorkerStatus.SUCCESS, f"seed {seed}: {w.name} {w.status.value}: {w.exit_reason}"
            log = (engine.workspace.job_dir(job.id) / w.log_path).read_text()
            assert [line for line in log.splitlines() if line.startswith("line ")] == [f"line {i}" for i in range(1, 41)]
    assert done.status.value == "partial"
    assert tagged_alive(job.id) == [], "no process of the tree may outlive it"
    worst = metric("sigkill_to_failed_max", max(lags), "s")
    assert 0 < min(lags) and worst <= 1.0, f"seed {seed}: lags {sorted(lags)}"


def test_hung_worker_ignoring_sigterm_times_out_by_sigkill_on_time(make_engine):
    # Given a worker (and 2 children of it) ignoring SIGTERM, a 1 s timeout and a 0.5 s grace
    timeout, grace = 1.0, 0.5
    engine = make_engine(orchestrator=command_worker(), workers={"kill_grace": grace})
    job = engine.submission.submit("x", {"default_timeout": timeout, "max_retries": 2}, ["ignore-term 2"])
    engine.queries.wait(job.id, 30)
    _, (worker,) = engine.queries.snapshot(job.id)
    # Then it is a timeout ended by SIGKILL, inside [timeout + grace, timeout + grace + 1 s]
    assert worker.status is WorkerStatus.TIMEOUT and len(worker.attempts) == 1
    attempt = worker.attempts[0]
    assert attempt.end_reason == "timeout" and attempt.kill_rung == "SIGKILL"
    assert tagged_alive(job.id) == [], "the worker and both its children are gone"
    took = metric("timeout_sigkill_end", attempt.ended_at - attempt.started_at, "s")
    assert timeout + grace <= took <= timeout + grace + 1.0


@pytest.mark.parametrize("leader", ["obeys-term", "ignores-term"])
def test_double_forked_grandchildren_are_gone_soon_after_a_cancel(make_live, leader):
    # Given a worker that started 3 grandchildren which setsid(), double-fork and ignore SIGTERM
    grace = 1.0
    # Unconfined ladder: it watches the worker's recorded pids from the host (sandboxed: tests/test_sandbox.py)
    live = make_live(orchestrator=command_worker(), workers={"kill_grace": grace, "sandbox": "off"})
    task = "grandchildren 3" + (" ignore-term" if leader == "ignores-term" else "")
    job_id = live.submit(request="x", tasks=[task]).json()["job_id"]
    pid_file = live.engine.workspace.worker_dir(job_id, 0, "worker_1") / "children.pids"
    wait_until(lambda: pid_file.is_file() and len(pid_file.read_text().split()) == 6, what="6 recorded pids")
    wait_until(lambda: "grandchildren" in live.engine.workspace.worker_log(job_id, 0, "worker_1").read_text())
    pids = [int(p) for p in pid_file.read_text().split()]
    procs = [psutil.Process(pid) for pid in pids if alive(pid)]
    assert len(procs) == 3, "the 3 intermediates exited, the 3 grandchildren run"
    # When the job is cancelled through the API
    started = time.time()
    assert live.call("POST", f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    while any(running(p) for p in procs) and time.time() - started < 10:
        time.sleep(0.005)
    gone = time.time() - started
    # Then every recorded pid is gone within grace + 1 s (and not before the grace when the
    # leader ignores SIGTERM: the grandchildren are swept once the leader is SIGKILLed)
    assert not any(alive(pid) and psutil.Process(pid).create_time() <= started for pid in pids)
    doc = live.wait(job_id, 30)
    assert doc["status"] == "cancelled" and doc["results"]["tasks"][0]["status"] == "cancelled"
    assert tagged_alive(job_id) == []
    metric(f"grandchildren_gone_after_cancel_{leader.replace('-', '_')}", gone, "s")
    assert (grace if leader == "ignores-term" else 0.0) <= gone <= grace + 1.0


@pytest.mark.parametrize("stop_takes, grace, rung", [(1.0, 3.0, "SIGTERM"), (3.0, 1.0, "SIGKILL")])
def test_a_slow_sigterm_handler_gets_its_grace_and_no_more(make_engine, stop_takes, grace, rung):
    # Given a worker that needs stop_takes seconds to exit after SIGTERM
    engine = make_engine(orchestrator=command_worker(), workers={"kill_grace": grace})
    job = engine.submission.submit("x", {"max_retries": 2}, [f"slow-term {stop_takes:g}"])
    log = engine.workspace.worker_log(job.id, 0, "worker_1")
    wait_until(lambda: log.is_file() and "slow to stop" in log.read_text(), what="the handler installed")
    # When it is cancelled
    started = time.time()
    engine.cancel(job.id)
    engine.queries.wait(job.id, 30)
    _, (worker,) = engine.queries.snapshot(job.id)
    # Then it ends on its own when that fits the grace, else by SIGKILL at the grace
    attempt = worker.attempts[0]
    assert worker.status is WorkerStatus.CANCELLED and attempt.kill_rung == rung and len(worker.attempts) == 1
    assert "got SIGTERM" in log.read_text()
    assert tagged_alive(job.id) == []
    took = metric(f"slow_term_{stop_takes:g}s_grace_{grace:g}s_end", attempt.ended_at - started, "s")
    expected = min(stop_takes, grace)
    assert expected <= took <= expected + 1.0
