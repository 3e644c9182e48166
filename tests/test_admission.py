"""Admission by measured memory: the pure decision (``Room``, ``Peaks``) and the engine's use of it
(``MemoryAdmission``) with a fake memory reading; then a real engine whose reading says little
is free: its worker stays pending saying why, and starts once memory frees."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from orchestrator.cli.progress import render_tree, tree_from_status
from orchestrator.engine.core import Engine
from orchestrator.models import JobRecord, JobStatus, WorkerRecord, WorkerStatus
from orchestrator.process.admission import MB, RECENT, MemoryAdmission, Peaks, Room, size_text
from orchestrator.process.procscan import Memory, machine_memory
from orchestrator.reports.status_document import status_table
from orchestrator.workers.adapters import memory_peaks

from .conftest import make_settings, wait_until

GB = 1024 * MB


# -- the decision ------------------------------------------------------------------------------
def test_a_worker_that_fits_starts_and_takes_its_share_of_the_room():
    room = Room([Memory(total=8 * GB, available=1424 * MB)], reserve=1024 * MB)  # 400 MB to give
    assert room.decide("claude", 300 * MB, alone=True).start
    second = room.decide("claude", 300 * MB, alone=False)
    assert not second.start
    assert second.reason == (
        "waiting for memory: 300 MB needed, 100 MB free (1.4 GB available, 1.0 GB kept free by "
        "workers.memory_reserve_mb, 300 MB still to be taken by running workers)"
    )


def test_the_reserve_is_kept_free():
    room = Room([Memory(total=8 * GB, available=1300 * MB)], reserve=1024 * MB)
    decision = room.decide("claude", 300 * MB, alone=True)
    assert not decision.start and "300 MB needed, 276 MB free (1.3 GB available" in decision.reason


def test_what_running_workers_will_still_grow_by_is_not_given_out():
    room = Room([Memory(total=8 * GB, available=2 * GB)], reserve=1 * GB)
    room.charge("claude", 900 * MB)  # a claude worker that started a moment ago, not yet grown
    assert not room.decide("command", 200 * MB, alone=False).start
    assert room.decide("command", 100 * MB, alone=False).start


def test_a_worker_that_can_never_fit_waits_for_the_others_then_starts_alone_with_a_note():
    room = Room([Memory(total=2 * GB, available=2 * GB)], reserve=1 * GB)
    waits = room.decide("claude", 1536 * MB, alone=False)
    assert not waits.start
    assert "more than the largest machine's 2.0 GB less the 1.0 GB reserve" in waits.reason
    assert waits.reason.endswith("it starts once no other worker runs")
    starts = room.decide("claude", 1536 * MB, alone=True)
    assert starts.start and starts.reason.startswith("started though it may not fit: claude needs 1.5 GB")


def test_on_nodes_a_worker_is_judged_on_the_roomiest_node_that_runs_its_kind():
    small = Memory(total=4 * GB, available=1500 * MB, name="small", kinds=frozenset({"claude", "command"}))
    big = Memory(total=64 * GB, available=40 * GB, name="big", kinds=frozenset({"command"}))
    room = Room([small, big], reserve=1 * GB)
    assert room.decide("command", 2 * GB, alone=False).place == "big"
    first = room.decide("claude", 300 * MB, alone=False)
    assert first.start and first.place == "small"  # big does not run claude
    refused = room.decide("claude", 300 * MB, alone=False)
    assert not refused.start and "free on small" in refused.reason


def test_a_kind_no_measured_machine_runs_is_not_held_back():
    """A node too old to report its memory is left out of the reading: nothing to judge by."""
    room = Room([Memory(total=4 * GB, available=0, name="n1", kinds=frozenset({"command"}))], reserve=1 * GB)
    assert room.decide("claude", 300 * MB, alone=False).start


def test_a_kinds_need_is_its_default_until_measured_then_its_largest_recent_peak():
    peaks = Peaks(memory_peaks())
    assert peaks.need("claude") == memory_peaks()["claude"] * MB
    peaks.learn("claude", None)  # never sampled: teaches nothing
    peaks.learn("claude", 0)
    assert peaks.need("claude") == 300 * MB
    peaks.learn("claude", 500 * MB)
    peaks.learn("claude", 200 * MB)
    assert peaks.need("claude") == 500 * MB
    for _ in range(RECENT):  # the old peak leaves the window
        peaks.learn("claude", 250 * MB)
    assert peaks.need("claude") == 250 * MB
    assert peaks.need("some-new-kind") == 300 * MB


def test_sizes_read_as_people_write_them():
    assert [size_text(n) for n in (-5, 300 * MB, 1229 * MB)] == ["0 MB", "300 MB", "1.2 GB"]


def test_this_machines_memory_is_read():
    found = machine_memory()
    assert 0 < found.available <= found.total and found.name is None and found.runs("claude")


def test_each_reading_of_this_machines_memory_is_now_through_one_kept_descriptor(monkeypatch):
    # Given a first reading (its descriptor opened), then 512 MB taken and touched by this process
    def fresh() -> int:  # MemAvailable as a file opened now reads it
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))

    # (MemAvailable is the machine's: another process freeing as much at that moment hides the move,
    # so the reading is tried again, at most three times, until the 512 MB shows in it)
    opened: list[str] = []
    real_open = os.open
    for _ in range(3):
        first = machine_memory()
        fds = len(os.listdir("/proc/self/fd"))
        taken = b"\x01" * (512 * MB)
        # When memory is read again (every file this process opens meanwhile noted)
        opened.clear()
        monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
        before = fresh()
        again = machine_memory()
        after = fresh()
        monkeypatch.undo()
        del taken
        if first.available - max(before, after) > 128 * MB:
            break
    # Then the reading is now's (the first one's is far outside what a file opened now reads), and
    # no descriptor was opened for it
    assert first.available - max(before, after) > 128 * MB  # (the 512 MB moved it)
    assert min(before, after) - 64 * MB <= again.available <= max(before, after) + 64 * MB
    assert again.total == first.total
    assert "/proc/meminfo" not in opened and len(os.listdir("/proc/self/fd")) == fds


# -- the engine's admission, with a fake reading --------------------------------------------------
@dataclass
class Held:
    record: WorkerRecord
    tag: str


def worker(name: str, kind: str = "claude") -> Held:
    rec = WorkerRecord(name=name, job_id="j1", root_id="j1", index=1, depth=0, task="t", kind=kind)
    return Held(rec, f"j1.{name}.tag")


class Fixture:
    def __init__(self, available: int, reserve_mb: int = 1024) -> None:
        self.available, self.reads, self.sampled, self.told = available, 0, {}, []
        self.admission = MemoryAdmission(
            reserve_mb, self.read, self.peaks, lambda live, why: self.told.append(why), memory_peaks()
        )
        self.job = JobRecord(id="j1", root_id="j1", request="r")

    def read(self):
        self.reads += 1
        return [Memory(total=16 * GB, available=self.available)]

    def peaks(self, tags):
        return {t: self.sampled[t] for t in tags if t in self.sampled}

    def admit(self, *workers):
        self.admission.begin()
        return self.admission.admit(self.job, list(workers))


def test_memory_is_read_once_per_pass_and_workers_started_in_it_are_counted():
    f = Fixture(available=1024 * MB + 700 * MB)
    a, b, c = worker("a"), worker("b"), worker("c")
    assert f.admit(a, b, c) == 2
    assert f.reads == 1
    assert a.record.waiting is None and c.record.waiting.startswith("waiting for memory: 300 MB needed, 100 MB free")
    assert f.told == [c.record.waiting]  # said once, as an event


def test_the_next_pass_still_counts_started_workers_until_they_reach_their_peak():
    f = Fixture(available=1024 * MB + 700 * MB)
    a, b, c = worker("a"), worker("b"), worker("c")
    f.admit(a, b)
    assert f.admit(c) == 0  # the reading has not moved yet: a and b will still take 600 MB
    f.sampled = {a.tag: 300 * MB, b.tag: 300 * MB}  # they have grown; the reading now shows it
    f.available -= 600 * MB
    assert f.admit(c) == 0
    f.admission.ended(a.record)  # its memory is free again
    f.available += 300 * MB
    assert f.admit(c) == 1 and c.record.waiting is None
    assert f.told == [f.told[0]]  # the reason was said when it first waited, not at every pass


def test_a_pass_that_does_not_reach_a_worker_clears_its_reason():
    f = Fixture(available=1024 * MB)
    late = worker("late")
    f.admit(late)
    assert late.record.waiting
    f.admission.begin()  # a pass that stops before it (the global slots are full)
    assert late.record.waiting is None and not f.admission.waiting


def test_an_ended_workers_peak_becomes_its_kinds_need():
    f = Fixture(available=16 * GB)
    a = worker("a", kind="command")
    f.admit(a)
    a.record.peak_rss = 700 * MB
    f.admission.ended(a.record)
    assert f.admission.peaks.need("command") == 700 * MB


def test_reserve_zero_turns_admission_off_without_reading_memory():
    f = Fixture(available=0, reserve_mb=0)
    assert f.admit(worker("a"), worker("b")) == 2 and f.reads == 0


# -- a real engine -------------------------------------------------------------------------------
class Dial:
    """The engine's memory reading, set by the test: the machine reports ``available`` free."""

    def __init__(self, available: int) -> None:
        self.available = available

    def __call__(self):
        return [Memory(total=16 * GB, available=self.available)]


@pytest.fixture
def dialled(tmp_path):
    engines = []

    def factory(dial, **workers):
        settings = make_settings(tmp_path, workers={"memory_reserve_mb": 512, **workers}, simulated={"duration": 0.3})
        engine = Engine(settings, memory=dial)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.shutdown(timeout=10)


@pytest.mark.slow
def test_a_worker_waits_for_memory_saying_why_then_starts_when_memory_frees(dialled):
    # Given a machine whose free memory is all in the reserve
    dial = Dial(available=512 * MB + 10 * MB)
    engine = dialled(dial)
    job = engine.submission.submit("one task", {"max_workers": 2}, ["write a.txt"])
    # Then the worker stays pending, and every view says why
    worker = wait_until(lambda: engine.queries.snapshot(job.id)[1][0].waiting and engine.queries.snapshot(job.id)[1][0])
    assert worker.status is WorkerStatus.PENDING
    assert worker.waiting.startswith("waiting for memory: 30 MB needed, 10 MB free (522 MB available, 512 MB kept free")
    doc = engine.queries.status_document(job.id)
    assert doc["results"]["tasks"][0]["waiting"] == worker.waiting
    assert "↳ waiting for memory: 30 MB needed" in status_table(doc)
    assert any("(waiting for memory: 30 MB needed" in line for line in render_tree(tree_from_status(doc)))
    # When memory frees (no worker of ours ended: the monitor's tick tries again)
    dial.available = 4 * GB
    done = engine.queries.wait(job.id, 30)
    # Then it ran, and its record no longer says it waits
    assert done.status is JobStatus.COMPLETED
    assert engine.queries.snapshot(job.id)[1][0].waiting is None


@pytest.mark.slow
def test_a_worker_that_can_never_fit_runs_alone_with_a_note(dialled):
    # Given a machine too small for even one simulated worker above its reserve
    dial = Dial(available=16 * GB)
    engine = dialled(dial, memory_reserve_mb=16 * 1024 - 1)  # 1 MB of room: no worker fits
    job = engine.queries.wait(engine.submission.submit("two", {"max_workers": 2}, ["a", "b"]).id, 30)
    _, workers = engine.queries.snapshot(job.id)
    # Then each started, one at a time, and the job's notes say why
    assert job.status is JobStatus.COMPLETED
    first, second = sorted(workers, key=lambda w: w.started_at)
    assert first.attempts[-1].ended_at <= second.started_at
    notes = [n for n in job.notes if "started though it may not fit" in n]
    assert len(notes) == 2 and "simulated needs 30 MB" in notes[0]
