"""Chaos: a worker that always fails is tried exactly max_retries + 1 times, spaced, one at a time."""

from __future__ import annotations

import pytest

from orchestrator.models import WorkerStatus

from .conftest import command_worker, metric, tagged_alive

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_retries_are_exactly_counted_spaced_by_the_backoff_and_never_overlap(make_engine):
    # Given a worker whose every attempt runs 0.2 s then exits 3, 3 retries, a 0.2 s backoff
    backoff, retries, runs = 0.2, 3, 0.2
    # Unconfined: each attempt records its host pids and probes the last one's (a sandbox's are its namespace's)
    workers = {"retry_backoff": backoff, "retry_backoff_max": 10, "sandbox": "off"}
    engine = make_engine(orchestrator=command_worker(), workers=workers)
    job = engine.submission.submit("x", {"max_retries": retries}, [f"attempt-fail 3 {runs:g}"])
    engine.queries.wait(job.id, 60)
    _, (worker,) = engine.queries.snapshot(job.id)
    # Then it failed after exactly max_retries + 1 attempts, each its own process
    assert worker.status is WorkerStatus.FAILED and len(worker.attempts) == retries + 1
    assert [a.exit_code for a in worker.attempts] == [3] * (retries + 1)
    record = engine.workspace.worker_dir(job.id, 0, worker.name) / "attempts.log"
    lines = [line.split() for line in record.read_text().splitlines()]
    assert [kind for kind, *_ in lines] == ["start", "end"] * (retries + 1), "one attempt at a time"
    spans = [(float(a[3]), float(b[3])) for a, b in zip(lines[::2], lines[1::2])]
    for (start, end), attempt in zip(zip(lines[::2], lines[1::2]), worker.attempts):
        assert start[1] == end[1] and attempt.pid in (int(start[1]), int(start[2])), "the record names its process"
        assert start[4] == "0", "no earlier attempt's process was still alive when this one started"
    assert len({a.pid for a in worker.attempts}) == retries + 1
    # and spaced by at least the backoff (doubling), plus no more than its jitter and a spawn
    ratios = []
    for n in range(1, retries + 1):
        wanted = backoff * 2 ** (n - 1)
        engine_gap = worker.attempts[n].started_at - worker.attempts[n - 1].ended_at
        process_gap = spans[n][0] - spans[n - 1][1]
        assert wanted <= engine_gap <= wanted * 1.25 + 0.5
        assert wanted <= process_gap <= wanted * 1.25 + 0.5
        ratios.append(process_gap / wanted)
    assert tagged_alive(job.id) == []
    tightest = metric("retry_gap_over_backoff_min", min(ratios), "x")
    assert 1.0 <= tightest <= 1.25 + 0.5 / backoff
