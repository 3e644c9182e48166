"""Chaos: a worker breaching each resource cap is stopped with its own reason, and the server holds."""

from __future__ import annotations

import threading
import time
import tracemalloc

import psutil
import pytest
import requests

from orchestrator.cli.server import OUTPUT_HIGH_WATERMARK
from orchestrator.models import WorkerStatus

from ..conftest import wait_until
from .conftest import command_worker, metric, tagged_alive

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
MB = 1024 * 1024
NO_CAPS = {"max_memory_mb": 0, "max_processes": 0, "max_log_mb": 0, "max_disk_mb": 0}
INTERVAL = 0.1  # workers.monitor_interval in these tests


def caps(**values):
    return {**NO_CAPS, "monitor_interval": INTERVAL, "kill_grace": 0.5, **values}


def assert_stopped_by(engine, job_id, words):
    """The worker failed once (not retried) for ``words``, its log ends with the marker line,
    and nothing of its tree runs any more."""
    _, (worker,) = engine.queries.snapshot(job_id)
    assert worker.status is WorkerStatus.FAILED and words in worker.exit_reason, worker.exit_reason
    assert len(worker.attempts) == 1 and worker.attempts[0].end_reason == "cap"
    log = engine.workspace.worker_log(job_id, 0, worker.name)
    assert log.read_text(errors="replace").rstrip().splitlines()[-1].startswith("===== attempt 1 stopped: " + words)
    assert tagged_alive(job_id) == []
    return worker


def test_memory_growth_past_the_cap_is_stopped_within_a_sample(make_engine):
    # Given a worker growing by 8 MiB every 50 ms towards 600 MiB, and a 150 MB cap
    cap = 50
    engine = make_engine(orchestrator=command_worker(), workers=caps(max_memory_mb=cap))
    job = engine.submission.submit("x", {"max_retries": 2, "default_timeout": 60}, ["grow 600 8 0.05"])
    engine.queries.wait(job.id, 60)
    worker = assert_stopped_by(engine, job.id, "memory cap")
    # Then it is stopped soon after the step that took its RSS (as it measured itself before
    # each step) over the cap began: no earlier, and no later than a sample and a kill
    log = engine.workspace.worker_log(job.id, 0, worker.name).read_text()
    samples = [(int(p[1]), float(p[3])) for p in (line.split() for line in log.splitlines() if line.startswith("rss "))]
    crossed = max(at for rss, at in samples if rss <= cap)
    assert samples[-1][0] < 400, "stopped long before it reached 600 MiB"
    if worker.attempts[0].enforced.memory.value == "sampled":
        assert worker.peak_rss > cap * MB
    else:  # the kernel held it (its cgroup): it never held more than the cap, and the reason says so
        assert worker.peak_rss <= cap * MB and "killed by the kernel" in worker.exit_reason
    lag = metric("memory_breach_to_stopped", worker.attempts[0].ended_at - crossed, "s")
    assert 0 < lag <= INTERVAL + 0.5


def test_bounded_fork_bomb_past_the_process_cap_keeps_health_fast(make_live):
    # Given a worker forking a bomb of exactly 200 sleeping processes, against a cap of 50
    live = make_live(orchestrator=command_worker(), workers=caps(max_processes=50))
    latencies, codes, stop = [], set(), threading.Event()

    def probe():
        with requests.Session() as session:
            while not stop.is_set():
                started = time.perf_counter()
                codes.add(session.get(live.url + "/health", timeout=10).status_code)
                latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    time.sleep(0.3)  # a baseline before the bomb
    job_id = live.submit(request="x", tasks=["forkbomb 200"], config={"max_retries": 2}).json()["job_id"]
    # When it runs and is stopped
    doc = live.wait(job_id, 60)
    time.sleep(0.3)
    # (where pids.max ends the bomb at once the job is short: the probe goes on to 50 answers)
    wait_until(lambda: len(latencies) >= 50, timeout=30, what="50 answers of /health")
    stop.set()
    thread.join(15)
    # Then the process cap stops it, all 200 are gone, and /health answered fast throughout
    assert doc["status"] == "failed"
    worker = assert_stopped_by(live.engine, job_id, "process cap")
    if worker.attempts[0].enforced.processes.value == "sampled":
        assert 50 < worker.peak_processes <= 201
    else:  # pids.max held it (the shim is not counted: 50 of the worker's own at most)
        assert worker.peak_processes <= 50 and "a fork refused by the kernel" in worker.exit_reason
    assert codes == {200} and len(latencies) >= 50
    p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1]
    metric("health_p99_during_fork_bomb", p99 * 1000, "ms")
    assert 0.05e-3 < p99 < 0.200


def test_log_flood_past_the_cap_ends_near_it_and_the_server_stays_flat(make_live):
    # Given a worker printing 200 MiB as fast as it can, a 150 MB log cap, and a client
    # following its log through the API the whole time
    cap = 150
    live = make_live(orchestrator=command_worker(), workers=caps(max_log_mb=cap))
    server = psutil.Process()  # the waitress server runs in this process (make_live)
    # (a small failing job first, followed the same way: the server's one-time costs, such as
    # compiling the report templates, are paid before the measurement)
    warm = live.submit(request="x", tasks=["fail 3"], config={"max_retries": 0}).json()["job_id"]
    live.call("GET", f"/api/v1/jobs/{warm}/workers/worker_1/log?follow=1")
    live.wait(warm)
    job_id = live.submit(request="x", tasks=["flood 200"], config={"max_retries": 2}).json()["job_id"]
    followed, streaming = [], threading.Event()

    def follow():
        total = 0
        response = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/log?follow=1", stream=True)
        for chunk in response.iter_content(1 << 16):
            total += len(chunk)
            streaming.set()
        followed.append(total)

    thread = threading.Thread(target=follow, daemon=True)
    tracemalloc.start()  # every Python object the server (and the follower) allocates from here
    try:
        thread.start()
        assert streaming.wait(30), "the follower got the first bytes"
        rss_before = server.memory_info().rss  # the server is up, the flood and the stream are on
        heap_before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        live.wait(job_id, 60)
        thread.join(30)
        _, heap_peak = tracemalloc.get_traced_memory()
        rss_after = server.memory_info().rss
    finally:
        tracemalloc.stop()
    # Then it is stopped by the log cap, the log ends with the marker line, its size is near
    # the cap, the follower got all of it, and the server did not buffer it
    assert_stopped_by(live.engine, job_id, "log cap")
    size = live.engine.workspace.worker_log(job_id, 0, "worker_1").stat().st_size
    assert followed and followed[0] == size
    tail = live.call("GET", f"/api/v1/jobs/{job_id}/workers/worker_1/log?tail=1").text
    assert tail.startswith("===== attempt 1 stopped: log cap")
    # Buffering the log anywhere in Flask, waitress or the engine (all Python) would raise the
    # Python heap's peak by up to its size (150 MB). Streaming holds at most waitress's output
    # watermark of unsent bytes across its buffers, up to as much already sent in each (they are
    # pruned lazily), and a few copies of the 1 MiB chunk in flight (read, framing, the follower)
    peak = metric("flood_stream_heap_peak_growth", (heap_peak - heap_before) / MB, "MB")
    bound = 3 * OUTPUT_HIGH_WATERMARK / MB + 4
    assert peak < bound, f"the server's Python heap peaked {peak:.1f} MB above where the stream began (> {bound} MB)"
    # RSS also sees C-level buffers, but is noisy in one shared process (malloc arenas per
    # thread: 2-33 MB seen), so it is held to half the log's size
    grown = (rss_after - rss_before) / MB
    assert abs(grown) < size / MB / 2, f"server RSS grew by {grown:.1f} MB while streaming {size / MB:.0f} MB"
    ratio = metric("flood_log_size_over_cap", size / (cap * MB), "x")
    assert 1.0 < ratio <= 1.25
