"""Timing figures for a job tree: efficiency, concurrency, bottlenecks, totals."""
from __future__ import annotations

import pytest

from orchestrator.analytics import TimelineRow, analyse, text_timeline, worker_elapsed
from orchestrator.models import Attempt, JobRecord, WorkerRecord, WorkerStatus

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
