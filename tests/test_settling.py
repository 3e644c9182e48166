"""The settling pass: workers whose work has been read are settled together (one lock section,
their final records written with shared syncs), each exactly once, each record final on disk
before anyone is told; and the batched write it uses (``atomic_write_many``)."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from orchestrator.engine.announce import Announcer
from orchestrator.events import EventBus
from orchestrator.models import JobRecord, JobStatus, WorkerStatus
from orchestrator.workspace import filesystem
from orchestrator.workspace.filesystem import atomic_write_many
from orchestrator.workspace.layout import Workspace

from .conftest import fake_command, make_settings, run_job


def test_many_files_are_written_whole_with_no_temp_file_left(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "one.json").write_bytes(b"old")
    items = [(tmp_path / "a" / "one.json", b"1"), (tmp_path / "a" / "two.json", b"2"), (tmp_path / "b" / "three.json", b"3")]
    atomic_write_many(items)
    assert [path.read_bytes() for path, _ in items] == [b"1", b"2", b"3"]
    assert sorted(os.listdir(tmp_path / "a")) == ["one.json", "two.json"]
    assert os.listdir(tmp_path / "b") == ["three.json"]


def test_a_file_that_cannot_be_written_leaves_every_other_as_it_was_and_no_temp_file(tmp_path):
    # Given two records on disk, and a batch whose last file's folder does not exist
    first, second = tmp_path / "one.json", tmp_path / "two.json"
    first.write_bytes(b"old one")
    second.write_bytes(b"old two")
    with pytest.raises(FileNotFoundError):
        atomic_write_many([(first, b"new one"), (second, b"new two"), (tmp_path / "missing" / "three.json", b"3")])
    # Then no file was replaced (each is renamed only once every one is written) and no temp file is left
    assert first.read_bytes() == b"old one" and second.read_bytes() == b"old two"
    assert sorted(os.listdir(tmp_path)) == ["one.json", "two.json"]


def test_every_file_is_synced_before_the_first_is_renamed(tmp_path, monkeypatch):
    events: list[str] = []
    real_sync, real_replace = filesystem._fdatasync, os.replace
    monkeypatch.setattr(filesystem, "_fdatasync", lambda fd: (events.append("sync"), real_sync(fd)))
    monkeypatch.setattr(filesystem.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b)))
    atomic_write_many([(tmp_path / f"{i}.json", b"x") for i in range(4)])
    assert events == ["sync"] * 4 + ["rename"] * 4


def test_workers_ending_together_are_each_settled_once_with_their_final_records_on_disk(make_engine):
    # Given 40 no-op workers, 16 at a time, and the settling pass watched
    engine = make_engine(orchestrator={"worker": "command", "command": ["true"]})
    runner = engine.worker_threads
    passes: list[list[str]] = []
    told: dict[str, str] = {}
    settle = runner._settle
    lock = threading.Lock()

    def watched(batch):
        with lock:
            passes.append([ended.live.record.name for ended in batch])
        settle(batch)
        for ended in batch:  # by the time its pass returns its record is final on disk
            rec = ended.live.record
            on_disk = json.loads(engine.workspace.worker_record_path(rec.root_id, rec.depth, rec.name).read_bytes())
            with lock:
                told[rec.name] = on_disk["status"]

    runner._settle = watched
    runner._settling._operation = watched
    job = run_job(engine, "x", tasks=[f"noop {i}" for i in range(40)], config={"max_workers": 16})
    # Then the job completed, every worker was in exactly one pass, and its record said success when it was told
    assert job.status is JobStatus.COMPLETED
    names = [name for batch in passes for name in batch]
    assert sorted(names) == sorted(set(names)) and len(names) == 40
    assert set(told.values()) == {WorkerStatus.SUCCESS.value}
    _, workers = engine.queries.snapshot(job.root_id)
    assert all(w.status is WorkerStatus.SUCCESS and w.ended_at for w in workers if w.job_id == job.id)


def test_a_worker_whose_settling_fails_in_the_engine_leaves_the_others_of_its_pass_settled(make_engine, caplog):
    # Given workers settled in passes, one of which fails in the engine for one worker
    engine = make_engine(orchestrator={"worker": "command", "command": fake_command()})
    runner = engine.worker_threads
    real = runner._end_in_section
    broken: list[str] = []

    def end_in_section(ended, settled, waiting):
        if ended.live.record.task == "sleep 0.5" and not broken:
            broken.append(ended.live.record.name)
            raise RuntimeError("a bug")
        real(ended, settled, waiting)

    runner._end_in_section = end_in_section
    job = engine.submission.submit("x", {"max_workers": 4}, ["sleep 0.5", "sleep 0.5", "sleep 0.5", "sleep 0.5"])
    engine.queries.wait(job.id, 5)
    # Then the engine says so, and every other worker settled
    _, workers = engine.queries.snapshot(job.root_id)
    settled = {w.name for w in workers if w.job_id == job.id and w.status is WorkerStatus.SUCCESS}
    assert broken and settled == {w.name for w in workers if w.job_id == job.id} - set(broken)
    assert "settling it failed in the engine" in caplog.text


def test_a_settling_pass_appends_its_lines_to_orchestrator_log_together_each_once_in_order(make_engine, monkeypatch):
    # Given 40 no-op workers, 16 at a time, and every append to a tree's orchestrator.log counted
    engine = make_engine(orchestrator={"worker": "command", "command": ["true"]})
    appends: list[int] = []
    real_append = Workspace.append_log

    def append_log(self, path, data, **kwargs):
        if path.name == "orchestrator.log":
            appends.append(data.count(b"\n"))
        return real_append(self, path, data, **kwargs)

    monkeypatch.setattr(Workspace, "append_log", append_log)
    job = run_job(engine, "x", tasks=[f"noop {i}" for i in range(40)], config={"max_workers": 16})
    assert job.status is JobStatus.COMPLETED
    lines = engine.workspace.orchestrator_log(job.id).read_text().splitlines()
    # Then each worker's end is told there once, after its start, and the log is every line appended
    for i in range(1, 41):
        told = [n for n, line in enumerate(lines) if f" depth_0_worker_{i} " in line]
        ends = [n for n in told if " success: " in lines[n]]
        assert len(ends) == 1 and len(told) == 2 and told[0] < ends[0], [lines[n] for n in told]
    assert sum(appends) == len(lines)
    # And the 40 ends took fewer appends than lines: a pass's lines went in one write
    assert len(appends) < len(lines) and max(appends) > 1


def test_gathered_lines_are_appended_in_order_one_write_per_tree_even_when_the_pass_fails(tmp_path, monkeypatch):
    # Given an announcer on a real workspace with two trees, and its appends counted
    settings = make_settings(tmp_path)
    workspace = Workspace(tmp_path / "ws")
    announcer = Announcer(settings, workspace, EventBus())
    first = JobRecord(id="aaaaaaaaaaaa", root_id="aaaaaaaaaaaa", request="r")
    second = JobRecord(id="bbbbbbbbbbbb", root_id="bbbbbbbbbbbb", request="r")
    for job in (first, second):
        workspace.create_job_tree(job.root_id)
    writes: list[tuple[str, int]] = []
    real_append = Workspace.append_log

    def append_log(self, path, data, **kwargs):
        writes.append((path.parent.parent.name, data.count(b"\n")))
        return real_append(self, path, data, **kwargs)

    monkeypatch.setattr(Workspace, "append_log", append_log)
    # When lines of both trees are told in a gathered section (nested once) that then fails
    with pytest.raises(RuntimeError), announcer.gathered():
        announcer.line(first, "one")
        with announcer.gathered():
            announcer.line(second, "two")
            announcer.line(first, "three")
        assert writes == []  # nothing written before the outer section ends
        raise RuntimeError("a bug in the pass")
    # Then each tree got one write with its lines in order, and a line outside a section is written at once
    assert sorted(writes) == [("job_aaaaaaaaaaaa", 2), ("job_bbbbbbbbbbbb", 1)]
    announcer.line(first, "four")
    assert writes[-1] == ("job_aaaaaaaaaaaa", 1)
    said = [line.split(" ", 1)[1] for line in workspace.orchestrator_log(first.root_id).read_text().splitlines()]
    assert said == ["one", "three", "four"]
    assert workspace.orchestrator_log(second.root_id).read_text().endswith(" two\n")


@pytest.mark.parametrize("path", ["/w/state/workers/depth_0_worker_1.json", "state/x.json", "x.json"])
def test_a_temp_file_is_hidden_beside_its_file_and_unique(path):
    first, second = filesystem._temp_path(Path(path)), filesystem._temp_path(Path(path))
    folder, name = os.path.split(path)
    assert first != second
    for temp in (first, second):
        assert os.path.dirname(temp) == folder
        assert re.fullmatch(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.tmp", os.path.basename(temp)), temp


def test_a_sink_without_tree_ended_is_told_a_trees_end_by_its_job_event_alone(tmp_path):
    # Given an announcer with a sink that knows only job and worker events (tree_ended is optional),
    # and one that also takes tree_ended
    class EventsOnly:
        def __init__(self):
            self.events = []

        def job_event(self, job, event):
            self.events.append(event.to_dict().get("message"))

        def worker_event(self, job, record, event):
            pass

    class Full(EventsOnly):
        def tree_ended(self, job, jobs, workers):
            self.events.append(f"tree {job.id} {len(jobs)} {len(workers)}")

    announcer = Announcer(make_settings(tmp_path), Workspace(tmp_path / "ws"), EventBus())
    only, full = EventsOnly(), Full()
    announcer.sinks += [only, full]
    job = JobRecord(id="aaaaaaaaaaaa", root_id="aaaaaaaaaaaa", request="r")
    # When a root's tree ends (as engine/ending.py tells it, then its job event)
    announcer.tree_ended(job, [job], [])
    announcer.job(job, "job completed")
    # Then the first is told by its job event, without raising, and the second by both
    assert only.events == ["job completed"]
    assert full.events == ["tree aaaaaaaaaaaa 1 0", "job completed"]
