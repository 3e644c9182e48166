"""Timing figures for a job tree: efficiency, concurrency, bottlenecks, the critical path,
queue waits, and resources (CPU, memory, cost, tokens) rolled up per job and tree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from orchestrator.models import Attempt, JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.reports.analytics import TimelineRow, analyse, queue_wait, text_timeline, worker_elapsed
from orchestrator.reports.status_document import job_status

from .conftest import run_job

T = 1_700_000_000.0  # a fixed epoch, so every figure below is hand-checkable


def job(job_id="r1", depth=0, start=0.0, end=None, **kw):
    return JobRecord(
        id=job_id,
        root_id="r1",
        request="req",
        depth=depth,
        started_at=T + start,
        ended_at=None if end is None else T + end,
        **kw,
    )


def worker(name, start, end, *, depth=0, status=WorkerStatus.SUCCESS, job_id="r1", **kw):
    """A worker with one attempt from ``start`` to ``end`` seconds after T (end None: running)."""
    return WorkerRecord(
        job_id=job_id,
        root_id="r1",
        name=name,
        index=1,
        depth=depth,
        task=f"task {name}",
        kind="simulated",
        status=status,
        attempts=[Attempt(1, T + start, None if end is None else T + end)],
        started_at=T + start,
        ended_at=None if end is None else T + end,
        **kw,
    )


def row(start, end, key="depth_0_w", attempt=1, status="success"):
    return TimelineRow(key, "w", "r1", 0, attempt, start, end, status)


def test_two_workers_in_parallel_are_fully_efficient():
    a = analyse([job(end=10)], [worker("w1", 0, 10), worker("w2", 0, 10)])
    assert (a.peak_concurrency, a.busy, a.wall) == (2, 20.0, 10.0)
    assert a.parallel_efficiency == pytest.approx(1.0)


def test_back_to_back_workers_never_overlap():
    a = analyse([job(end=20)], [worker("w1", 0, 10), worker("w2", 10, 20)])
    assert (a.peak_concurrency, a.busy, a.wall) == (1, 20.0, 20.0)
    assert a.parallel_efficiency == pytest.approx(1.0)


def test_a_short_worker_next_to_a_long_one_wastes_a_quarter():
    a = analyse([job(end=10)], [worker("w1", 0, 10), worker("w2", 0, 5)])
    assert a.peak_concurrency == 2
    assert a.parallel_efficiency == pytest.approx(0.75)


def test_planning_time_counts_in_wall_and_shifts_the_timeline():
    # Given a job that planned for 5s before its only worker ran for 5s
    a = analyse([job(start=0, end=10)], [worker("w1", 5, 10)])
    assert a.wall == 10.0
    assert a.parallel_efficiency == pytest.approx(0.5)
    assert (a.rows[0].start, a.rows[0].end) == (5.0, 10.0)


def test_slowest_worker_is_the_longest_one():
    a = analyse([job(end=30)], [worker("w1", 0, 4), worker("w2", 1, 28), worker("w3", 2, 9)])
    assert a.slowest_worker == "depth_0_w2"
    assert a.slowest_duration == pytest.approx(27.0)


def test_bottleneck_level_is_the_depth_with_the_longest_span():
    workers = [
        worker("w1", 0, 40),
        worker("w2", 0, 5),
        worker("w1_1", 5, 20, depth=1, job_id="r1.1"),
        worker("w1_2", 10, 50, depth=1, job_id="r1.1"),
    ]
    a = analyse([job(end=50), job("r1.1", depth=1, start=5, end=50)], workers)
    assert a.level_waits == {0: 40.0, 1: 45.0}
    assert a.bottleneck_level == 1


def test_equal_spans_name_the_shallower_level():
    workers = [worker("w1", 0, 10), worker("w1_1", 10, 20, depth=1)]
    assert analyse([job(end=20)], workers).bottleneck_level == 0


def test_running_attempts_end_at_now():
    # Given a worker still running, started 2s after its job
    running = worker("w1", 2, None, status=WorkerStatus.RUNNING)
    a = analyse([job(end=None)], [running], now=T + 10)
    assert a.rows[0].end == 10.0
    assert (a.busy, a.wall, a.ended_at) == (8.0, 10.0, T + 10)
    assert a.slowest_duration == 8.0
    assert worker_elapsed(running, T + 10) == 8.0


def test_without_now_running_attempts_end_at_the_latest_known_time():
    workers = [worker("w1", 0, None, status=WorkerStatus.RUNNING), worker("w2", 0, 6)]
    a = analyse([job(end=None)], workers)
    assert a.wall == 6.0
    assert [r.end for r in a.rows] == [6.0, 6.0]


def test_empty_tree_gives_zeros_not_errors():
    a = analyse([], [])
    assert (a.wall, a.busy, a.peak_concurrency, a.total, a.success_rate) == (0.0, 0.0, 0, 0, 0.0)
    assert a.parallel_efficiency is None and a.slowest_worker is None
    assert a.bottleneck_level is None and a.level_waits == {} and a.rows == []
    assert a.cost_usd is None and a.started_at is None


def test_a_job_without_workers_has_wall_time_but_no_efficiency():
    a = analyse([job(end=3)], [])
    assert a.wall == 3.0
    assert a.parallel_efficiency is None


def test_counts_and_success_rate():
    statuses = [
        WorkerStatus.SUCCESS,
        WorkerStatus.RECURSIVE_SUCCESS,
        WorkerStatus.FAILED,
        WorkerStatus.TIMEOUT,
        WorkerStatus.CANCELLED,
        WorkerStatus.SKIPPED,
        WorkerStatus.RUNNING,
        WorkerStatus.SUCCESS,
    ]
    workers = [worker(f"w{i}", 0, 1, status=s) for i, s in enumerate(statuses)]
    a = analyse([job(end=1)], workers)
    assert (a.total, a.succeeded, a.failed) == (8, 3, 4)
    assert a.success_rate == pytest.approx(3 / 8)
    assert a.counts["success"] == 2 and a.counts["timeout"] == 1
    assert "pending" not in a.counts


def test_cost_and_tokens_sum_only_known_values():
    workers = [
        worker("w1", 0, 1, cost_usd=0.25, tokens_in=100, tokens_out=10),
        worker("w2", 0, 1, cost_usd=None, tokens_in=50),
    ]
    a = analyse([job(end=1)], workers)
    assert a.cost_usd == pytest.approx(0.25)
    assert (a.tokens_in, a.tokens_out) == (150, 10)
    assert analyse([job(end=1)], [worker("w3", 0, 1)]).cost_usd is None


def test_each_retry_is_its_own_row_and_counts_as_busy_time():
    w = worker("w1", 0, 3, status=WorkerStatus.FAILED)
    w.attempts.append(Attempt(2, T + 4, T + 9))
    a = analyse([job(end=9)], [w])
    assert [(r.attempt, r.status) for r in a.rows] == [(1, "retried"), (2, "failed")]
    assert a.busy == 8.0 and a.peak_concurrency == 1


def test_zero_length_attempts_count_as_one_running():
    a = analyse([job(end=0)], [worker("w1", 0, 0)])
    assert a.peak_concurrency == 1
    assert a.parallel_efficiency is None  # wall is 0


def test_text_timeline_places_bars_on_a_shared_scale():
    lines = text_timeline([row(0, 10, "a"), row(10, 20, "b")], width=4)
    assert lines[0].startswith("a |██░░|")
    assert lines[1].startswith("b |░░██|")


def test_text_timeline_keeps_zero_length_and_zero_span_rows_visible():
    assert "|█░░░|" in text_timeline([row(0, 0)], width=4)[0]
    lines = text_timeline([row(0, 10, "a"), row(5, 5, "b")], width=4)
    assert "|░░█░|" in lines[1]


def test_text_timeline_labels_retries_and_aligns_bars():
    lines = text_timeline([row(0, 5, "depth_0_worker_10"), row(5, 10, "depth_0_w", attempt=2)], 8)
    assert lines[1].startswith("depth_0_w#2")
    assert lines[0].index("|") == lines[1].index("|")


def test_text_timeline_handles_no_rows_and_a_thousand_rows():
    assert text_timeline([]) == []
    lines = text_timeline([row(i, i + 5, f"depth_0_worker_{i}") for i in range(1000)], width=40)
    assert len(lines) == 1000
    assert all(len(line.split("|")[1]) == 40 for line in lines)


# -- critical path, queue wait, roll-ups -------------------------------------------------
def child_job(job_id, parent_worker, start, end, depth=1, parent="r1"):
    return job(job_id, depth=depth, start=start, end=end, parent_job_id=parent, parent_worker=parent_worker)


def path_of(a):
    return [(s.kind, s.name, s.start, s.end) for s in a.critical_path]


def test_critical_path_of_a_flat_job_is_its_last_worker():
    a = analyse([job(end=12)], [worker("w1", 0, 4), worker("w2", 1, 12), worker("w3", 2, 9)])
    assert path_of(a) == [("worker", "depth_0_w2", 1.0, 12.0)]
    assert a.critical_path[0].duration == 11.0


def test_critical_path_descends_into_the_child_job_the_worker_waited_for():
    # Given w1 that spawned child job c1 (whose w1_2 ended last) and a shorter sibling w2
    jobs = [job(end=30), child_job("c1", "w1", 2, 28)]
    workers = [
        worker("w1", 0, 29, status=WorkerStatus.RECURSIVE_SUCCESS, child_job_ids=["c1"]),
        worker("w2", 0, 20),
        worker("w1_1", 3, 10, depth=1, job_id="c1"),
        worker("w1_2", 5, 27, depth=1, job_id="c1"),
    ]
    a = analyse(jobs, workers)
    # Then the chain is w1 -> its child job -> that job's last worker, with durations
    assert path_of(a) == [("worker", "depth_0_w1", 0.0, 29.0), ("job", "c1", 2.0, 28.0), ("worker", "depth_1_w1_2", 5.0, 27.0)]
    assert [s.duration for s in a.critical_path] == [29.0, 26.0, 22.0]
    assert a.critical_path[1].depth == 1 and a.critical_path[2].job_id == "c1"


def test_critical_path_follows_the_latest_of_several_child_jobs_two_levels_down():
    jobs = [
        job(end=50),
        child_job("c1", "w1", 1, 20),
        child_job("c2", "w1", 21, 48),
        child_job("c3", "w1_2", 22, 47, depth=2, parent="c2"),
    ]
    workers = [
        worker("w1", 0, 49, child_job_ids=["c1", "c2"], status=WorkerStatus.RECURSIVE_SUCCESS),
        worker("w1_1", 1, 19, depth=1, job_id="c1"),
        worker("w1_2", 21, 47.5, depth=1, job_id="c2", child_job_ids=["c3"]),
        worker("w1_2_1", 22, 46, depth=2, job_id="c3"),
    ]
    names = [s.name for s in analyse(jobs, workers).critical_path]
    assert names == ["depth_0_w1", "c2", "depth_1_w1_2", "c3", "depth_2_w1_2_1"]


def test_critical_path_of_a_running_tree_counts_up_to_now():
    jobs = [job(end=None), child_job("c1", "w1", 1, None)]
    workers = [
        worker("w1", 0, None, status=WorkerStatus.RUNNING, child_job_ids=["c1"]),
        worker("w2", 0, 3),
        worker("w1_1", 2, None, depth=1, job_id="c1", status=WorkerStatus.RUNNING),
    ]
    a = analyse(jobs, workers, now=T + 10)
    assert path_of(a) == [("worker", "depth_0_w1", 0.0, 10.0), ("job", "c1", 1.0, 10.0), ("worker", "depth_1_w1_1", 2.0, 10.0)]


def test_a_worker_waiting_for_its_children_is_not_done_when_its_process_is():
    # w1's process ended at 5 but it is still waiting for child job c1: it is on the path, not w2
    w1 = worker("w1", 0, 5, status=WorkerStatus.RUNNING, child_job_ids=["c1"])
    w1.ended_at = None
    jobs = [job(end=None), child_job("c1", "w1", 1, None)]
    workers = [w1, worker("w2", 0, 8), worker("w1_1", 1, None, depth=1, job_id="c1", status=WorkerStatus.RUNNING)]
    assert [s.name for s in analyse(jobs, workers, now=T + 9).critical_path] == ["depth_0_w1", "c1", "depth_1_w1_1"]


def test_critical_path_is_empty_when_nothing_ran():
    assert analyse([job(end=1)], []).critical_path == []
    assert analyse([], []).critical_path == []


def test_queue_wait_runs_from_the_plan_to_the_first_attempt():
    # Given a job whose plan was ready at 0 and max_workers 1: w2 waited for w1's slot
    retried = worker("w3", 4, 6, status=WorkerStatus.FAILED)
    retried.attempts.append(Attempt(2, T + 8, T + 9))
    pending = worker("w4", 0, 0, status=WorkerStatus.PENDING)
    pending.attempts, pending.started_at, pending.ended_at = [], None, None
    skipped = worker("w5", 0, 0, status=WorkerStatus.SKIPPED)
    skipped.attempts, skipped.started_at = [], None
    a = analyse([job(end=None)], [worker("w1", 0.5, 4), worker("w2", 4, 8), retried, pending, skipped], now=T + 10)
    # Then each wait is first attempt - plan; a pending one counts to now; a skipped one has none
    assert a.queue_waits == {"depth_0_w1": 0.5, "depth_0_w2": 4.0, "depth_0_w3": 4.0, "depth_0_w4": 10.0}
    assert a.longest_queue_wait == ("depth_0_w4", 10.0)
    assert a.queue_wait_total == pytest.approx(18.5)


def test_queue_wait_falls_back_to_the_record_creation_time():
    w = worker("w1", 3, 5, created_at=T + 1)
    assert queue_wait(w, None) == 2.0
    assert queue_wait(worker("w2", 3, 5), None) is None  # no creation time known: no guess


def test_resources_roll_up_per_job_and_for_the_tree():
    jobs = [job(end=30), child_job("c1", "w1", 2, 28)]
    workers = [
        worker("w1", 0, 29, child_job_ids=["c1"], cpu_seconds=1.5, peak_rss=100, cost_usd=0.25, tokens_in=10, tokens_out=1),
        worker("w2", 0, 10, cpu_seconds=0.5, peak_rss=300),
        worker("w1_1", 3, 10, depth=1, job_id="c1", cpu_seconds=2.0, peak_rss=200, cost_usd=0.5, tokens_in=5),
        worker("w1_2", 5, 27, depth=1, job_id="c1"),
    ]
    a = analyse(jobs, workers)
    root, child = a.jobs
    assert (root.job_id, root.own.workers, root.subtree.workers) == ("r1", 2, 4)
    assert (root.own.worker_seconds, root.own.cpu_seconds, root.own.peak_rss) == (39.0, 2.0, 300)
    assert (root.own.cost_usd, root.own.tokens_in, root.own.tokens_out) == (0.25, 10, 1)
    assert (root.subtree.worker_seconds, root.subtree.cpu_seconds, root.subtree.peak_rss) == (68.0, 4.0, 300)
    assert (root.subtree.cost_usd, root.subtree.tokens_in, root.subtree.tokens_out) == (0.75, 15, 1)
    assert (child.own.workers, child.own.cpu_seconds, child.own.cost_usd, child.own.tokens_out) == (2, 2.0, 0.5, None)
    assert child.subtree == child.own and child.parent_worker == "w1"
    assert (a.cpu_seconds, a.peak_rss, a.cost_usd, a.busy) == (4.0, 300, 0.75, 68.0)
    assert root.to_dict()["subtree"]["cost_usd"] == 0.75 and root.to_dict()["cpu_seconds"] == 2.0


def test_unsampled_workers_leave_cpu_and_memory_unknown():
    a = analyse([job(end=1)], [worker("w1", 0, 1)])
    assert (a.cpu_seconds, a.peak_rss) == (None, None)
    assert a.jobs[0].own.to_dict() == {
        "workers": 1,
        "worker_seconds": 1.0,
        "cpu_seconds": None,
        "peak_rss": None,
        "cost_usd": None,
        "tokens_in": None,
        "tokens_out": None,
    }


def test_a_record_written_before_cpu_seconds_existed_still_loads():
    data = worker("w1", 0, 1).to_dict()
    del data["cpu_seconds"]
    assert WorkerRecord.from_dict(data).cpu_seconds is None
    assert WorkerRecord.from_dict({**data, "cpu_seconds": 0.75}).cpu_seconds == 0.75


# -- the status document ------------------------------------------------------------------
def status_of(jobs, workers, job_id="r1", now=T + 30):
    return job_status(job_id, jobs, workers, Path("/nonexistent"), now=now)


def test_status_keeps_its_keys_and_adds_performance():
    jobs = [job(end=30, status=JobStatus.COMPLETED), child_job("c1", "w1", 2, 28)]
    w1 = worker("w1", 1, 29, child_job_ids=["c1"], cpu_seconds=1.5, peak_rss=2048, peak_processes=3, cost_usd=0.25)
    w1.created_at = T
    workers = [w1, worker("w2", 0, 10, created_at=T), worker("w1_1", 6, 27, depth=1, job_id="c1", created_at=T + 2)]
    doc = status_of(jobs, workers)
    # The original spec's status keys (job_id, status, results) and the earlier ones are all still there
    assert {"job_id", "status", "results", "progress", "tree", "duration"} <= set(doc)
    assert {"jobs", "workers", "completed", "succeeded", "max_depth", "cost_usd", "tokens_in", "tokens_out"} <= set(doc["tree"])
    task = doc["results"]["tasks"][0]
    assert {"worker_id", "status", "output", "files_created", "child_job_id", "child_results", "cost_usd"} <= set(task)
    # New: resources per worker, in the tree totals, and a performance section
    assert (task["queue_wait"], task["cpu_seconds"], task["peak_rss"], task["peak_processes"]) == (1.0, 1.5, 2048, 3)
    assert task["child_results"][0]["queue_wait"] == 4.0
    assert (doc["tree"]["cpu_seconds"], doc["tree"]["peak_rss"], doc["tree"]["worker_seconds"]) == (1.5, 2048, 59.0)
    perf = doc["performance"]
    assert [s["name"] for s in perf["critical_path"]] == ["depth_0_w1", "c1", "depth_1_w1_1"]
    assert perf["critical_path"][0] == {
        "kind": "worker",
        "name": "depth_0_w1",
        "job_id": "r1",
        "depth": 0,
        "start": 1.0,
        "end": 29.0,
        "status": "success",
        "queue_wait": 1.0,
        "duration": 28.0,
    }
    assert perf["queue_wait"] == {"total": 5.0, "max": 4.0, "worker": "depth_1_w1_1"}
    assert (perf["wall"], perf["worker_seconds"], perf["peak_concurrency"]) == (30.0, 59.0, 3)
    assert perf["slowest_worker"] == {"worker": "depth_0_w1", "duration": 28.0}
    assert perf["level_spans"] == {"0": 29.0, "1": 21.0}
    assert [(j["job_id"], j["workers"], j["subtree"]["workers"], j["cost_usd"]) for j in perf["jobs"]] == [
        ("r1", 2, 3, 0.25),
        ("c1", 1, 1, None),
    ]
    json.dumps(doc)  # all of it is plain JSON


def test_status_of_a_child_job_covers_only_its_subtree():
    jobs = [job(end=30), child_job("c1", "w1", 2, 28)]
    workers = [
        worker("w1", 0, 29, child_job_ids=["c1"], cpu_seconds=5.0),
        worker("w1_1", 3, 27, depth=1, job_id="c1", cpu_seconds=1.0),
    ]
    doc = status_of(jobs, workers, "c1")
    assert doc["tree"]["cpu_seconds"] == 1.0 and doc["tree"]["workers"] == 1
    assert [s["name"] for s in doc["performance"]["critical_path"]] == ["depth_1_w1_1"]
    assert [j["job_id"] for j in doc["performance"]["jobs"]] == ["c1"]


# -- CPU time of a real worker ---------------------------------------------------------------
BURN = (
    "import os, sys, time\n"
    "while time.process_time() < float(sys.argv[1]): pass\n"
    "t = os.times()\n"
    "print('cpu', t.user + t.system + t.children_user + t.children_system)\n"
)


@pytest.mark.slow
def test_a_worker_that_burns_cpu_has_its_cpu_time_recorded(make_engine, tmp_path):
    # Given a command worker that burns 0.5 s of CPU and prints what it burnt
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    engine = make_engine(
        orchestrator={"worker": "command", "command": [sys.executable, str(script), "{task}"]}, workers={"monitor_interval": 0.05}
    )
    done = run_job(engine, "burn", tasks=["0.5"])
    (w,) = engine.queries.snapshot(done.id)[1]
    true = float(w.output.split("cpu")[-1])
    # Then its record holds about that much: sampled, so a little under, never over
    assert w.status is WorkerStatus.SUCCESS and true >= 0.45  # os.times() counts in 10 ms ticks
    assert true - 0.2 <= w.cpu_seconds <= true + 0.05, (w.cpu_seconds, true)


@pytest.mark.slow
def test_cpu_of_reaped_descendants_counts_for_their_worker(make_engine, tmp_path):
    # Given a worker whose CPU is all burnt by two children it runs one after the other
    burn = tmp_path / "burn.py"
    burn.write_text(BURN)
    parent = tmp_path / "parent.py"
    parent.write_text(
        f"import subprocess, sys\nfor _ in range(2): subprocess.run([sys.executable, {str(burn)!r}, '0.3'], check=True)\n"
    )
    engine = make_engine(
        orchestrator={"worker": "command", "command": [sys.executable, str(parent), "{task}"]}, workers={"monitor_interval": 0.05}
    )
    done = run_job(engine, "burn", tasks=["x"])
    (w,) = engine.queries.snapshot(done.id)[1]
    # Then both children's CPU is in the worker's figure (the first was reaped long before the end)
    assert w.status is WorkerStatus.SUCCESS
    assert 0.45 <= w.cpu_seconds <= 0.75, w.cpu_seconds


def test_a_status_without_tasks_is_the_same_document_but_the_entries():
    """``with_tasks=False`` (``run``'s closing lines, which read no worker's entry): every other key
    is what the whole document says, and so are the summary, merge lines and exit code shown from it."""
    from orchestrator.cli.progress import summary
    from orchestrator.cli.scripts import exit_code
    from orchestrator.reports.status_document import merge_lines

    jobs = [job(end=30, status=JobStatus.COMPLETED), child_job("c1", "w1", 2, 28)]
    workers = [worker("w1", 1, 29, child_job_ids=["c1"]), worker("w2", 0, 10), worker("w1_1", 6, 27, depth=1, job_id="c1")]
    whole = job_status("r1", jobs, workers, Path("/nonexistent"), now=T + 30)
    lean = job_status("r1", jobs, workers, Path("/nonexistent"), now=T + 30, with_tasks=False)
    assert len(whole["results"]["tasks"]) == 2 and lean["results"]["tasks"] == []
    assert {**whole, "results": {**whole["results"], "tasks": []}} == lean
    assert (summary(lean), merge_lines(lean), exit_code(lean)) == (summary(whole), merge_lines(whole), exit_code(whole))
