"""A node worker process's attempts in flight, in its one kept file, with real files and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cluster import in_flight


@pytest.fixture(autouse=True)
def fresh_process_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(in_flight, "_kept", None)  # as in a node worker before its first attempt


def test_each_attempt_is_written_in_place_in_the_one_file_of_its_process_and_emptied_at_its_end(tmp_path: Path) -> None:
    # Given a node's attempts folder and a process that runs two attempts, one after the other
    mine = tmp_path / f"{os.getpid()}.json"
    in_flight.begin(tmp_path, "a1", "tag-1")
    # Then the first is read back while it runs, with this process's pid
    [found] = in_flight.read_all(tmp_path)
    assert (found.id, found.tag, found.pid) == ("a1", "tag-1", os.getpid()) and found.started_at > 0
    inode = mine.stat().st_ino
    in_flight.end(tmp_path)
    assert in_flight.read_all(tmp_path) == [] and mine.stat().st_size == 0
    # When the second runs
    in_flight.begin(tmp_path, "a-second-with-a-longer-id", "t2")
    # Then it is in the same file (no file made, renamed or deleted per attempt), whole
    assert [p.name for p in tmp_path.iterdir()] == [mine.name] and mine.stat().st_ino == inode
    assert [(f.id, f.tag) for f in in_flight.read_all(tmp_path)] == [("a-second-with-a-longer-id", "t2")]
    in_flight.end(tmp_path)
    assert in_flight.read_all(tmp_path) == [] and mine.exists()


def test_a_record_left_by_a_dead_process_of_the_same_pid_is_set_aside_for_the_sweep(tmp_path: Path) -> None:
    # Given the record of an attempt a dead process of this pid left running
    left = {"id": "old", "tag": "old-tag", "started_at": 1.0, "pid": os.getpid()}
    (tmp_path / f"{os.getpid()}.json").write_text(json.dumps(left))
    # When this process begins its first attempt
    in_flight.begin(tmp_path, "new", "new-tag")
    # Then both are in flight: the old one is kept, under another name, not written over
    assert sorted((f.id, f.tag) for f in in_flight.read_all(tmp_path)) == [("new", "new-tag"), ("old", "old-tag")]
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_each_forked_process_keeps_its_own_file_and_a_cut_short_one_is_no_attempt(tmp_path: Path) -> None:
    # Given this process in an attempt, and another process that began one and died without its end
    in_flight.begin(tmp_path, "here", "t-here")
    script = f"from pathlib import Path; from orchestrator.cluster import in_flight; in_flight.begin(Path({str(tmp_path)!r}), 'there', 't-there')"
    child = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent, check=True)
    assert child.returncode == 0
    # And a record cut short by a crash while it was written (its worker never started)
    (tmp_path / "999999.json").write_text('{"id": "cut", "ta')
    # Then both whole records are read, each with its process's pid; the cut one is none
    found = {f.id: f.pid for f in in_flight.read_all(tmp_path)}
    assert set(found) == {"here", "there"} and found["here"] == os.getpid() and found["there"] != os.getpid()
    # And an empty or missing folder holds none
    assert in_flight.read_all(tmp_path / "missing") == []
