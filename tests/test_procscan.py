"""procscan: the one walk over the process table that the sweep, the tree sweep and the shim
search share. Real processes, found by the tag in their environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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


# A process inside execve shows an empty environment for a moment (its new image's not laid out yet).
EXEC_LOOP = 'n=$1; [ "$n" -gt 0 ] && exec /bin/sh "$0" $((n-1))'


@pytest.mark.skipif(not procscan.HAS_PROC, reason="the /proc walk")
def test_a_process_that_execs_in_a_loop_is_found_by_every_scan(tmp_path):
    # Given a tagged process that does nothing but exec itself (about one read in eight of its
    # environment falls inside an execve, where the kernel shows it empty)
    script = tmp_path / "again.sh"
    script.write_text(EXEC_LOOP + "\n")
    tag = f"execs-{os.getpid()}.w.1"
    since = time.time()
    proc = subprocess.Popen(["/bin/sh", str(script), "1000000"], env={"PATH": os.environ["PATH"], TAG_VAR: tag})
    try:
        assert wait_until(lambda: scan({tag}.__contains__, since).get(tag) == [proc.pid], timeout=10)
        # When the process table is scanned again and again while it execs
        missed = [i for i in range(300) if scan({tag}.__contains__, since).get(tag) != [proc.pid] and proc.poll() is None]
        # Then every scan finds it (before the pauses, about 40 of 300 missed it)
        assert missed == []
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not procscan.HAS_PROC, reason="the /proc walk")
def test_a_zombie_and_a_kernel_thread_are_not_waited_for_as_if_they_were_in_an_exec(tmp_path):
    # Given a live process, a zombie (ended, not reaped) and, where this /proc shows it, kthreadd (pid 2)
    live = subprocess.Popen(["sleep", "30"])
    zombie = subprocess.Popen(["true"])
    try:
        assert wait_until(lambda: procscan._is_zombie(str(zombie.pid)), timeout=10)
        # Then only the live one may be inside an exec; the others have no environment to wait for
        assert procscan._may_be_executing(str(live.pid))
        assert not procscan._may_be_executing(str(zombie.pid))
        assert not procscan._may_be_executing("999999999")  # gone
        kthreadd = Path("/proc/2/stat")
        if kthreadd.exists() and b"(kthreadd)" in kthreadd.read_bytes():
            assert not procscan._may_be_executing("2")
    finally:
        for proc in (live, zombie):
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not procscan.HAS_PROC, reason="the /proc walk")
def test_a_process_started_without_an_environment_is_read_again_then_given_as_it_is(monkeypatch):
    # Given a young process started with an empty environment (env -i)
    since = time.time()
    bare = subprocess.Popen(["env", "-i", "sleep", "30"])
    pauses: list[float] = []
    try:
        assert wait_until(lambda: procscan._cmdline(bare.pid)[:1] == ["sleep"], timeout=10)
        # When the young processes' environments are read
        with monkeypatch.context() as patched:
            patched.setattr(procscan.time, "sleep", pauses.append)
            found = dict(procscan._environs(since))
        # Then it is read again after each pause, and given with none (not skipped: a sandbox's
        # untagged process is still its worker's, by its PID namespace)
        assert found[str(bare.pid)] == b""
        assert pauses == list(procscan.EXEC_PAUSES)
    finally:
        bare.kill()
        bare.wait()


@pytest.mark.skipif(not procscan.HAS_PROC, reason="reads /proc")
def test_one_read_gives_a_process_cpu_and_its_start():
    # Given a process that has burnt 0.2 s of CPU
    busy = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 0.2: pass\ntime.sleep(60)"])
    try:
        wait_until(lambda: procscan.cpu_seconds(busy.pid) >= 0.18, what="0.2 s of CPU burnt")
        times = procscan.process_times(busy.pid)
        # Then its stat gives both: the CPU, and the start that names it as process_start_id does
        assert times is not None and 0.18 <= times[0] < 1.0
        assert times[1] == process_start_id(busy.pid)
    finally:
        busy.kill()
        busy.wait()
    assert procscan.process_times(busy.pid) is None and procscan.cpu_seconds(busy.pid) == 0.0


@pytest.mark.skipif(not procscan.HAS_PROC, reason="reads /proc")
@pytest.mark.skipif(subprocess.run(["which", "bwrap"], capture_output=True).returncode != 0, reason="no bubblewrap")
def test_a_sandbox_s_own_processes_are_told_once_each_by_their_pid_and_start(monkeypatch):
    # Given a PID namespace of bubblewrap's: its launcher here, its init (pid 1) and a command (pid 2) inside
    argv = ["bwrap", "--unshare-pid", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    launcher = subprocess.Popen([*argv, "sh", "-c", "sleep 60 & wait"])
    try:
        wait_until(
            lambda: len(procscan.descendants([launcher.pid])[launcher.pid]) >= 3, what="init, sh and sleep inside the sandbox"
        )
        inside = procscan.descendants([launcher.pid])[launcher.pid]
        reads = []
        read_small = procscan.read_small
        monkeypatch.setattr(procscan, "read_small", lambda path: reads.append(path) or read_small(path))
        monkeypatch.setattr(procscan, "_NAMESPACE_PIDS", {})
        told = {}
        for pid in [launcher.pid, *inside]:
            times = procscan.process_times(pid)
            assert times is not None
            told[pid] = procscan.sandbox_machinery(pid, start_id=times[1])
            # the same answer as a reading without a start (read afresh)
            assert told[pid] == procscan.sandbox_machinery(pid)
        # Then the launcher is not the sandbox's (it is in this namespace), init and sh are, sleep (pid 3) only bridged
        assert not told[launcher.pid] and sum(told.values()) == 2
        sleep = next(pid for pid, own in told.items() if not own and pid != launcher.pid)
        assert procscan.sandbox_machinery(sleep, bridged=True, start_id=procscan.process_times(sleep)[1])
        # and each process's status was read once with its start, not again
        reads.clear()
        for pid in [launcher.pid, *inside]:
            procscan.sandbox_machinery(pid, start_id=procscan.process_times(pid)[1])
        assert not [path for path in reads if path.endswith("/status")]
        # but a process by that pid with another start (the pid reused) is read afresh
        procscan.sandbox_machinery(launcher.pid, start_id="another")
        assert reads[-1] == f"/proc/{launcher.pid}/status"
    finally:
        launcher.kill()
        launcher.wait()
