"""Costs that must not grow with the size of a tree: what the follower of a running job reads per
change (the event log, the live view). Counted, never timed: bench/bench_scale.py has the figures."""

from __future__ import annotations

import io
import re
import threading
import time
from collections import deque

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.cli import progress
from orchestrator.cli.progress import ProgressView
from orchestrator.events import EventBus
from orchestrator.models import JobRecord

from .helpers.progress import small_tree


class CountingDeque(deque):
    """A deque that counts the events handed out by walking it (either way)."""

    walked = 0

    def __iter__(self):
        for item in super().__iter__():
            CountingDeque.walked += 1
            yield item

    def __reversed__(self):
        for item in super().__reversed__():
            CountingDeque.walked += 1
            yield item


def test_reading_the_newest_events_does_not_walk_the_whole_log():
    # Given a tree with 5,000 events, and another tree's events in between (sequence numbers are global)
    bus = EventBus()
    for i in range(5000):
        bus.publish("aaaaaaaaaaaa", type="worker", job_id="aaaaaaaaaaaa", status="running", worker=f"worker_{i}")
        if i % 1000 == 0:
            bus.publish("bbbbbbbbbbbb", type="job", job_id="bbbbbbbbbbbb", status="running")
    bus._events["aaaaaaaaaaaa"] = CountingDeque(bus._events["aaaaaaaaaaaa"], maxlen=20_000)
    last = bus.last_seq("aaaaaaaaaaaa")
    CountingDeque.walked = 0
    # When a follower that has seen all but the last three asks (and waits) for what is new
    newest = bus.since("aaaaaaaaaaaa", last - 3)
    waited = bus.wait("aaaaaaaaaaaa", last - 3, 0.0)
    # Then it gets exactly those three, in order, and the walk stops where its knowledge starts
    assert [e.worker for e in newest] == ["worker_4997", "worker_4998", "worker_4999"] == [e.worker for e in waited]
    assert CountingDeque.walked <= 2 * 4, f"{CountingDeque.walked} events walked to return 6"
    # And the edges still hold: nothing new, everything, an unknown tree
    assert bus.since("aaaaaaaaaaaa", last) == [] and bus.wait("aaaaaaaaaaaa", last, 0.0) == []
    assert [e.seq for e in bus.since("aaaaaaaaaaaa", 0)] == sorted(e.seq for e in bus.since("aaaaaaaaaaaa", 0))
    assert len(bus.since("aaaaaaaaaaaa", 0)) == 5000 and bus.since("cccccccccccc", 0) == []


def test_a_follower_that_fell_behind_the_bounded_log_gets_what_is_left():
    bus = EventBus(max_per_root=10)
    for i in range(25):
        bus.publish("aaaaaaaaaaaa", type="worker", job_id="aaaaaaaaaaaa", status="running", worker=f"worker_{i}")
    assert [e.worker for e in bus.since("aaaaaaaaaaaa", 3)] == [f"worker_{i}" for i in range(15, 25)]


def test_on_a_terminal_the_tree_is_read_again_only_when_a_redraw_is_due(monkeypatch):
    # Given a clock we move by hand, and a tree whose reading takes 1 s of it
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    jobs, workers = small_tree()
    reads = []

    def read():
        reads.append(clock[0])
        clock[0] += 1.0  # a big tree: reading and drawing it takes a second
        return jobs, workers

    out = io.StringIO()
    view = ProgressView(out, tty=True, size=(100, 30))
    # When changes keep coming
    view.refresh(read)
    for _step in range(40):
        clock[0] += 0.25
        view.refresh(read)
    # Then the tree was read at most once per 9 s of pause after each 1 s read (not at every change)
    assert len(reads) == 2 and reads[1] - reads[0] >= 10.0, reads
    assert out.getvalue().count("workers done") == 2


def test_without_a_terminal_changed_prints_only_new_states():
    jobs, workers = small_tree()
    out = io.StringIO()
    view = ProgressView(out, tty=False)
    view.changed(workers[:2])
    view.changed(workers[:2])  # nothing new
    assert len(out.getvalue().splitlines()) == 2


@pytest.mark.slow
def test_run_follows_a_job_without_copying_the_tree_at_every_event(make_engine, monkeypatch):
    # Given a job of 24 quick workers, two at a time (so changes arrive in a dozen waves or more)
    engine = make_engine(orchestrator={"worker": "command", "command": ["true"]}, workers={"max_workers": 2, "max_retries": 0})
    copies = []
    snapshot = engine.queries.snapshot
    follower = threading.current_thread()

    def counted(root_id, job_id=None, *, outcomes=False):
        # The follower's copies: not the engine's own (the reports', outcomes=True; the landing's, on its threads)
        if not outcomes and threading.current_thread() is follower:
            copies.append(job_id)
        return snapshot(root_id, job_id, outcomes=outcomes)

    monkeypatch.setattr(engine.queries, "snapshot", counted)
    # (and the job's record, which lists every worker of the job, copied by the follower's thread)
    job_copies = []
    copy_job = JobRecord.copy

    def counted_copy(record):
        if threading.current_thread() is follower:
            job_copies.append(record.id)
        return copy_job(record)

    job = engine.submission.submit("x", {"max_workers": 2}, [f"task {i}" for i in range(24)])
    monkeypatch.setattr(JobRecord, "copy", counted_copy)
    out = io.StringIO()
    # When `run` follows it without a terminal
    cli_main._follow(engine, job.id, ProgressView(out, tty=False))
    # Then the whole tree was copied at the start and at the end, plus once per job event
    # (before: once per wake-up, a dozen times or more), and each worker's states are all there
    job_events = [e for e in engine.events.since(job.root_id, 0) if e.type == "job"]
    assert len(copies) <= 2 + len(job_events), f"{len(copies)} copies of the tree for {len(job_events)} job events"
    # And the job's record was copied only by those copies of the tree and the first read (its
    # root), not once more per wake-up to read its status and per worker event to look it up
    worker_events = [e for e in engine.events.since(job.root_id, 0) if e.type == "worker"]
    assert len(job_copies) <= len(copies) + 1, f"{len(job_copies)} copies of the job for {len(worker_events)} worker events"
    lines = re.findall(r"^\[ *[0-9.]+s\] (depth_0_worker_\d+) +(\w+)", out.getvalue(), re.M)
    finals = {}
    for name, state in lines:
        finals[name] = state
    assert len(finals) == 24 and set(finals.values()) == {"success"}, finals
    assert len(lines) == len(set(lines)), "a state was printed twice"


# -- pacing: a level report re-rendered as each child job of its level ends ----------------------
def test_a_paced_refresh_runs_at_once_then_merges_the_requests_of_its_pause():
    from orchestrator.engine.pacing import Pacer

    pacer = Pacer(factor=4.0)
    runs = []

    def run(label):
        def go():
            runs.append((label, threading.current_thread() is main))
            time.sleep(0.05)  # a run costs 50 ms: the pause after it is 200 ms

        return go

    main = threading.current_thread()
    # When three requests come at once
    pacer.request("level", run("first"))
    pacer.request("level", run("second"))
    pacer.request("level", run("third"))
    # Then the first ran at once in the caller's thread, and the rest wait for the pause
    assert runs == [("first", True)]
    deadline = time.monotonic() + 5
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    # And the pause ended with one run of the latest request, on another thread
    assert runs == [("first", True), ("third", False)]
    pacer.close()


def test_a_forgotten_key_drops_its_pending_run():
    from orchestrator.engine.pacing import Pacer

    pacer = Pacer(factor=10.0)
    runs = []
    pacer.request(("root", 1), lambda: (runs.append(1), time.sleep(0.02)))
    pacer.request(("root", 1), lambda: runs.append(2))
    pacer.forget(lambda key: key[0] == "root")
    time.sleep(0.5)
    assert runs == [1]
    # and a key seen again starts afresh: due at once
    pacer.request(("root", 1), lambda: runs.append(3))
    assert runs == [1, 3]


@pytest.mark.slow
def test_the_level_report_of_many_child_jobs_is_rendered_once_for_all_of_them(make_live, monkeypatch):
    # Given a root of six compound subtasks: six child jobs of three workers at depth 1, ending together
    from orchestrator import reports
    from orchestrator.engine.pacing import Pacer

    live = make_live(simulated={"duration": 0.05})
    live.engine.reporting.level_renders = Pacer(factor=1000.0)  # a long pause: what merges is certain, not timed
    depths = []
    render = reports.render_level_report

    def counted(depth, *args, **kwargs):
        depths.append(depth)
        return render(depth, *args, **kwargs)

    monkeypatch.setattr(reports, "render_level_report", counted)
    tasks = [f"Build service {n} with auth, orders and payments" for n in "abcdef"]
    job_id = live.submit(request="six services", tasks=tasks, config={"max_recursion_depth": 1}).json()["job_id"]
    doc = live.wait(job_id)
    assert doc["status"] == "completed" and doc["tree"]["jobs"] == 7, doc["tree"]
    # Then depth 1's report was rendered for the first child job and once more at the end, not
    # once per child job (before: 6 + 1)
    assert depths.count(1) == 2, depths
    # And the report on disk is the whole level: every one of the 18 workers
    level = (live.engine.workspace.job_dir(job_id) / "depth_1" / "LEVEL_1_REPORT.md").read_text()
    assert all(f"worker_{p}_{k}" in level for p in range(1, 7) for k in range(1, 4))
