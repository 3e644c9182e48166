"""procscan: the one walk over the process table that the sweep, the tree sweep and the shim
search share. Real processes, found by the tag in their environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.process import procscan
from orchestrator.process.procscan import TAG_VAR, process_alive, process_start_id, scan, tag_in, tagged_processes
from orchestrator.process.runner import ProcessRunner
from tests.conftest import wait_until


def test_tag_in_reads_the_first_whole_entry_only():
    assert tag_in(b"A=1\0ORCHESTRATOR_TAG=r.k.1\0B=2") == "r.k.1"
    assert tag_in(b"ORCHESTRATOR_TAG=first") == "first"
    assert tag_in(b"MY_ORCHESTRATOR_TAG=no\0X=1") is None  # another variable that ends like ours
    assert tag_in(b"MY_ORCHESTRATOR_TAG=no\0ORCHESTRATOR_TAG=yes\0") == "yes"
    assert tag_in(b"ORCHESTRATOR_TAG=a\0ORCHESTRATOR_TAG=b\0") == "a"  # getenv's answer
    assert tag_in(b"ORCHESTRATOR_TAG=\0") == ""
    assert tag_in(b"") is None


# Tags are found machine-wide: this process's own, so that another pytest-xdist worker's run of this file is not swept.
ONE, TWO = f"ps1-{os.getpid()}.", f"ps2-{os.getpid()}."


@pytest.fixture
def tagged_children():
    """Three sleeping children: two of tree ps1 (one to keep), one of tree ps2."""
    tags = [ONE + "depth_0_worker_1.1", ONE + "depth_0_worker_2.1", TWO + "depth_0_worker_1.1"]
    procs = {
        tag: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env={**os.environ, TAG_VAR: tag})
        for tag in tags
    }
    yield procs
    for proc in procs.values():
        proc.kill()
        proc.wait()


def test_one_scan_serves_exact_tags_and_prefixes(tagged_children):
    pids = {tag: proc.pid for tag, proc in tagged_children.items()}
    wait_until(lambda: len(scan(lambda tag: tag.startswith((ONE, TWO)))) == 3)
    assert scan({ONE + "depth_0_worker_1.1", "absent"}.__contains__) == {
        ONE + "depth_0_worker_1.1": [pids[ONE + "depth_0_worker_1.1"]]
    }
    tree = scan(lambda tag: tag.startswith(ONE) and tag != ONE + "depth_0_worker_2.1")
    assert tree == {ONE + "depth_0_worker_1.1": [pids[ONE + "depth_0_worker_1.1"]]}
    found = [p for p in tagged_processes(lambda tag: tag.startswith(TWO), details=True)]
    assert [(p.pid, p.tag) for p in found] == [(pids[TWO + "depth_0_worker_1.1"], TWO + "depth_0_worker_1.1")]
    assert found[0].environ is not None and found[0].environ[TAG_VAR] == TWO + "depth_0_worker_1.1"
    assert found[0].argv is not None and found[0].argv[0] == sys.executable


def test_a_zombie_is_not_found_and_not_alive(tagged_children):
    proc = tagged_children[TWO + "depth_0_worker_1.1"]
    start = process_start_id(proc.pid)
    assert process_alive(proc.pid, start)
    proc.kill()
    wait_until(lambda: not process_alive(proc.pid, start))  # a zombie until reaped below
    assert TWO + "depth_0_worker_1.1" not in scan(lambda tag: tag.startswith(TWO))
    proc.wait()


@pytest.mark.skipif(not procscan.HAS_PROC, reason="reads /proc")
def test_one_look_tells_a_running_process_its_zombie_and_its_end(tagged_children):
    # Given a running child of this process, with the start time that names it
    proc = tagged_children[ONE + "depth_0_worker_2.1"]
    start = process_start_id(proc.pid)
    assert start is not None
    # Then one look says it runs, whose child it is and when it started (the same as process_start_id)
    seen = procscan.look(proc.pid)
    assert seen is not None and seen.parent == os.getpid() and seen.start_id == start
    assert seen.running(start) and not seen.running(str(int(start) + 1))  # another start time: another process
    assert seen.zombie_of(start) is None
    # When it ends and is not yet reaped
    proc.kill()
    wait_until(lambda: procscan.zombie_of(proc.pid, start) is not None)
    # Then it is a zombie of this process, no longer running, and no zombie of another start time
    seen = procscan.look(proc.pid)
    assert seen is not None and not seen.running(start) and not process_alive(proc.pid, start)
    assert seen.zombie_of(start) == os.getpid() and seen.zombie_of(str(int(start) + 1)) is None
    # And once reaped there is nothing to look at
    proc.wait()
    assert procscan.look(proc.pid) is None and procscan.zombie_of(proc.pid, start) is None


def test_the_runner_sweeps_a_tree_but_keeps_what_it_is_told(tagged_children):
    runner = ProcessRunner()
    killed = runner.sweep_prefix(ONE, keep={ONE + "depth_0_worker_2.1"})
    assert killed == 1
    assert tagged_children[ONE + "depth_0_worker_1.1"].wait(5) == -9
    assert tagged_children[ONE + "depth_0_worker_2.1"].poll() is None
    assert runner.tagged(ONE + "depth_0_worker_2.1") == [tagged_children[ONE + "depth_0_worker_2.1"].pid]


@pytest.mark.skipif(not procscan._PROC.is_dir(), reason="the /proc path; psutil is the fallback elsewhere")
def test_the_psutil_fallback_finds_the_same(tagged_children, monkeypatch):
    # Each child's environment is readable once its exec is done (just after the spawn it is empty).
    on_proc = wait_until(lambda: (found := scan(lambda tag: tag.startswith((ONE, TWO)))) and len(found) == 3 and found)
    monkeypatch.setattr(procscan, "_PROC", procscan.Path("/nonexistent-proc"))
    monkeypatch.setattr(procscan, "HAS_PROC", False)  # (asked once, at import)
    assert scan(lambda tag: tag.startswith((ONE, TWO))) == on_proc


def test_a_small_file_is_read_whole_with_its_time_by_one_descriptor(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"exit 0\n")
    large.write_bytes(b"x" * 200_000)  # more than one read's worth: read on to its end
    for path in (small, large):
        data, written = procscan.read_small_stamped(path)
        assert data == path.read_bytes() and written == path.stat().st_mtime
    with pytest.raises(FileNotFoundError):
        procscan.read_small_stamped(tmp_path / "missing")
