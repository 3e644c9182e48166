"""Resource caps over a worker's whole process tree, with real processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from orchestrator.models import WorkerStatus
from orchestrator.process.cgroups import Confined
from orchestrator.process.executor import LocalExecutor
from orchestrator.process.monitor import DISK_SHARE, Caps, DiskPacer, ResourceMonitor, Usage, Watched, cpu_seconds

from .conftest import fake_command, only_worker, run_job, wait_until

pytestmark = pytest.mark.slow


def capped_engine(make_engine, **workers):
    caps = {
        "max_memory_mb": 0,
        "max_processes": 0,
        "max_log_mb": 0,
        "max_disk_mb": 0,
        "monitor_interval": 0.1,
        "kill_grace": 0.5,
        **workers,
    }
    return make_engine(orchestrator={"worker": "command", "command": fake_command()}, workers=caps)


@pytest.mark.parametrize(
    "task, caps, words",
    [
        ("grow 400", {"max_memory_mb": 150}, "memory cap"),
        ("procs 12", {"max_processes": 6}, "process cap"),
        ("flood 400", {"max_log_mb": 20}, "log cap"),
        ("disk 40", {"max_disk_mb": 10}, "disk cap"),
    ],
)
def test_a_breached_cap_stops_the_worker_with_its_own_reason(make_engine, task, caps, words):
    engine = capped_engine(make_engine, **caps)
    job = run_job(engine, "x", tasks=[task], config={"max_retries": 2, "default_timeout": 60})
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.FAILED and words in worker.exit_reason
    assert len(worker.attempts) == 1, "a cap breach is not retried"
    assert worker.attempts[0].end_reason == "cap"
    log = (engine.workspace.job_dir(job.id) / worker.log_path).read_text(errors="replace")
    assert log.rstrip().splitlines()[-1].startswith("===== attempt 1 stopped: " + words)
    assert engine.runner.tagged(engine.worker_tag(worker)) == []


def test_a_capped_flood_leaves_a_bounded_log(make_engine):
    engine = capped_engine(make_engine, max_log_mb=10)
    job = run_job(engine, "x", tasks=["flood 400"], config={"default_timeout": 60})
    worker = only_worker(engine, job)
    size = (engine.workspace.job_dir(job.id) / worker.log_path).stat().st_size
    assert 10 * 2**20 < size < 150 * 2**20  # stopped well before the 400 MiB it meant to write


def test_peaks_are_recorded_for_a_worker_within_its_caps(make_engine):
    engine = capped_engine(make_engine)
    job = run_job(engine, "x", tasks=["procs 3"], config={"default_timeout": 1.5})
    worker = only_worker(engine, job)
    assert worker.status is WorkerStatus.TIMEOUT
    assert worker.peak_processes == 4 and worker.peak_rss > 10 * 2**20


def test_caps_name_the_setting_and_zero_means_no_cap():
    caps = Caps(memory_mb=100, processes=0, log_mb=0, disk_mb=0)
    assert "workers.max_memory_mb" in caps.breach(200 * 2**20, 10_000, 0, None)
    assert caps.breach(50 * 2**20, 10_000, 10**12, 10**12) is None


def test_a_tree_past_its_deadline_is_cancelled_whole(make_live):
    import time

    # Given a two-level tree of hanging workers and a 3 s tree deadline
    live = make_live(
        orchestrator={"worker": "command", "command": fake_command()},
        recursion={"tree_deadline": 3},
        workers={"kill_grace": 0.3, "monitor_interval": 0.1},
    )
    started = time.monotonic()
    job_id = live.submit(request="x", tasks=["tree-hang"], config={"max_recursion_depth": 1}).json()["job_id"]
    doc = live.wait(job_id, timeout=30)
    # Then it ends cancelled soon after the deadline, every job of it too, and says why
    assert doc["status"] == "cancelled" and 3 <= time.monotonic() - started < 8
    jobs, workers = live.engine.queries.snapshot(job_id)
    assert len(jobs) == 2 and {j.status.value for j in jobs} == {"cancelled"}
    assert any("recursion.tree_deadline" in note for note in doc["notes"])
    assert all(live.engine.runner.tagged(tag) == [] for tag in live.engine.worker_tags())


def test_usage_keeps_peaks_and_adds_up_cpu_across_attempts():
    usage = Usage()
    usage.record(100.0, rss=10, processes=2, cpu=0.2)
    usage.record(100.0, rss=30, processes=1, cpu=0.5)
    usage.record(100.0, rss=5, processes=1, cpu=0.3)  # a descendant reaped by init took its time along
    assert (usage.peak_rss, usage.peak_processes, usage.cpu_seconds) == (30, 2, 0.5)
    usage.record(200.0, rss=1, processes=1, cpu=0.1)  # attempt 2 counts from zero, on top of attempt 1
    assert usage.cpu_seconds == pytest.approx(0.6)


class TagRunner:
    """Answers the local executor's process-table scan with given pids per tag."""

    perl = "/usr/bin/perl"

    def __init__(self, pids):
        self.pids = pids

    def tagged_many(self, tags, since=0.0):
        return {tag: self.pids.get(tag, []) for tag in tags}

    confined = Confined()  # nothing confined: the tag scan
    bridged: set[str] = set()  # no network bridge


def test_a_sample_measures_cpu_per_worker_tag_even_when_keys_repeat(tmp_path):
    # Given a process that has burnt 0.3 s of CPU, and two trees whose workers share a key
    busy = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass\ntime.sleep(60)"])
    try:
        wait_until(lambda: cpu_seconds(busy.pid) >= 0.28, what="0.3 s of CPU burnt")  # in 10 ms ticks

        def watched(tag):
            return Watched("depth_0_worker_1", tag, 1.0, tmp_path / "log", tmp_path, abort=lambda reason: None)

        monitor = ResourceMonitor(
            LocalExecutor(TagRunner({"tree-a": [busy.pid]})),
            Caps(0, 0, 0, 0),
            1.0,
            lambda: [watched("tree-a"), watched("tree-b")],
        )
        # When the monitor samples once
        monitor.sample()
        # Then the busy process counts for its own tree's worker only
        assert 0.28 <= monitor.usage["tree-a"].cpu_seconds < 1.0
        assert monitor.usage["tree-a"].peak_rss > 1 << 20
        assert monitor.usage["tree-b"].cpu_seconds == 0.0
    finally:
        busy.kill()
        busy.wait()
    assert cpu_seconds(busy.pid) == 0.0  # gone: nothing, not an error


def test_peaks_and_cpu_reach_the_record_and_leave_the_monitor(make_engine):
    engine = capped_engine(make_engine)
    # (a worker that burns a known CPU time: python's start-up alone is under the 10 ms tick
    # that /proc counts in, per process, and was read as 0.0 in about a third of the runs)
    job = run_job(engine, "x", tasks=["procs 2 0.3"], config={"default_timeout": 3})
    worker = only_worker(engine, job)
    assert worker.cpu_seconds is not None and 0.28 <= worker.cpu_seconds < 1.5
    assert worker.peak_processes == 3 and worker.peak_rss > 1 << 20
    assert engine.monitor.usage == {}


def test_workers_take_their_usage_while_the_monitor_samples(tmp_path):
    # Given a monitor holding many workers' usage, sampling on its own thread
    # (before the lock, a worker thread's pop during the stale-entry sweep raised
    # "dictionary changed size during iteration" in the monitor, and a sample was lost)
    monitor = ResourceMonitor(
        LocalExecutor(TagRunner({})),
        Caps(0, 0, 0, 0),
        1.0,
        lambda: [Watched("depth_0_worker_1", "live", 1.0, tmp_path / "log", tmp_path, abort=lambda r: None)],
    )
    tags = [f"t{n}" for n in range(200_000)]
    for tag in tags:
        monitor.usage[tag] = Usage(seen=time.monotonic() + 3600)  # never stale in this test
    errors: list[BaseException] = []
    done = threading.Event()

    def sampling():
        while not done.is_set():
            try:
                monitor.sample()
            except BaseException as exc:  # noqa: BLE001 - the failure this test looks for
                errors.append(exc)
                return

    sampler = threading.Thread(target=sampling)
    sampler.start()
    # When worker threads take their entries meanwhile
    try:
        taken = [monitor.take_usage(tag) for tag in tags]
    finally:
        done.set()
        sampler.join(10)
    # Then every entry is handed out once and the monitor never failed
    assert errors == []
    assert all(isinstance(u, Usage) for u in taken)
    assert set(monitor.usage) == {"live"}


def _burn(seconds: float) -> int:
    """A reading that costs ``seconds`` of this thread's CPU (a walk of a large checkout)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return 7


def test_a_cheap_disk_reading_is_taken_every_interval():
    pacer = DiskPacer(0.02)
    assert pacer.read("a", lambda: 5) == 5
    assert pacer.read("a", lambda: 6) is None  # not yet due
    time.sleep(0.03)
    assert pacer.read("a", lambda: 6) == 6


def test_a_costly_disk_reading_is_spaced_out_to_its_share_of_a_cpu():
    # Given readings that each cost 30 ms of CPU, an interval of 10 ms
    pacer = DiskPacer(0.01)
    started = time.monotonic()
    assert pacer.read("a", lambda: _burn(0.03)) == 7
    # Then the next is due only once the walks took at most DISK_SHARE of the time since
    spacing = 0.03 / DISK_SHARE
    time.sleep(0.05)
    assert pacer.read("a", lambda: _burn(0.03)) is None
    # A second worker's first walk is due at once, and its next is spaced by what both walks cost
    before_b = time.monotonic()
    assert pacer.read("b", lambda: _burn(0.03)) == 7
    assert pacer._due["b"] >= before_b + 2 * spacing
    assert wait_until(lambda: time.monotonic() - started >= spacing, timeout=10)
    assert pacer.read("a", lambda: _burn(0.03)) == 7
    assert pacer.read("a", lambda: 0) is None
    # When b ends, its walks no longer count
    pacer.keep(["a"])
    assert pacer._cost.keys() == {"a"}


def test_a_worker_whose_disk_walks_are_spaced_out_is_still_stopped_at_its_disk_cap(make_engine, monkeypatch):
    # Given disk walks so dear against their share of a CPU that each worker's comes seconds apart
    from orchestrator.process import monitor

    monkeypatch.setattr(monitor, "DISK_SHARE", 1e-4)
    walks: list[float] = []
    read = monitor.DiskPacer.read

    def counted(self, key, reading):
        value = read(self, key, reading)
        if value is not None:
            walks.append(time.monotonic())
        return value

    monkeypatch.setattr(monitor.DiskPacer, "read", counted)
    write_later = "sleep 1.5; head -c 41943040 /dev/zero > big; sleep 100"
    engine = make_engine(
        orchestrator={"worker": "command", "command": ["sh", "-c", write_later]},
        workers={"max_memory_mb": 0, "max_processes": 0, "max_log_mb": 0, "max_disk_mb": 10, "monitor_interval": 0.1},
    )
    # When a worker, its folder walked already, writes 40 MB into it, then hangs
    job = run_job(engine, "x", tasks=["write later"], config={"max_retries": 0, "default_timeout": 120})
    worker = only_worker(engine, job)
    # Then the next walk finds it over its cap and it is stopped with that reason
    assert worker.status is WorkerStatus.FAILED and "disk cap" in worker.exit_reason
    assert worker.attempts[0].end_reason == "cap"
    assert len(walks) >= 2 and min(b - a for a, b in zip(walks, walks[1:])) > 0.3  # spaced, not every 0.1 s interval
